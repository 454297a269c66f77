//go:build !unix && !windows

package acceptretry

import "errors"

// Temporary reports whether an Accept error passes with time. Without
// Unix errnos to tell exhaustion from breakage, only timeouts count.
func Temporary(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
