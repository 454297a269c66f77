// Package acceptretry is the one policy for an Accept that failed, shared by
// the listeners that must keep serving through it (proxy's front door and
// responder's standalone listener): retry what passes with time, after a
// pause that doubles from 5 ms to 1 s as net/http's does, and give up on
// anything else, so that a broken listener is reported instead of spun on.
package acceptretry

import "time"

// Backoff paces the retries of one accept loop. The zero value is ready;
// it is not safe for concurrent use (one loop owns it).
type Backoff struct {
	delay time.Duration
}

// Next reports whether err, returned by Accept, passes with time, and if
// so how long to pause before accepting again. Each temporary error in a
// row doubles the pause; Reset starts again from the shortest.
func (b *Backoff) Next(err error) (pause time.Duration, temporary bool) {
	if !Temporary(err) {
		return 0, false
	}
	b.delay = min(max(2*b.delay, 5*time.Millisecond), time.Second)
	return b.delay, true
}

// Reset is called after a successful Accept.
func (b *Backoff) Reset() { b.delay = 0 }
