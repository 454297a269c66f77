// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)): newline-separated VAR=value assignments sent as one
// datagram to the unix socket named by $NOTIFY_SOCKET. It is what
// Type=notify units need, written out here rather than through libsystemd
// so that the program stays free of cgo; the protocol is these few lines.
package sdnotify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"
)

// Notifier sends states to the service manager. A nil *Notifier, which New
// returns when the process was not started by one, sends nothing, so that
// callers need no condition of their own.
type Notifier struct {
	addr *net.UnixAddr
}

// New returns a Notifier for socket, the value of $NOTIFY_SOCKET: a path,
// or an abstract socket spelled with a leading '@'. An empty socket means
// no service manager is listening, and New returns nil.
func New(socket string) (*Notifier, error) {
	if socket == "" {
		return nil, nil
	}
	if !strings.HasPrefix(socket, "/") && !strings.HasPrefix(socket, "@") {
		// systemd also knows vsock addresses, which are of no use to a
		// daemon on the host it manages.
		return nil, fmt.Errorf("sdnotify: NOTIFY_SOCKET %q is neither a path nor an abstract socket (@name)", socket)
	}
	// Go's net package turns a leading '@' into the abstract namespace's
	// leading NUL byte itself.
	return &Notifier{addr: &net.UnixAddr{Name: socket, Net: "unixgram"}}, nil
}

// Notify sends the assignments (e.g. "READY=1", "STATUS=serving") in one
// datagram, as the protocol wants them: systemd acts on a datagram as a
// whole.
func (n *Notifier) Notify(states ...string) error {
	if n == nil || len(states) == 0 {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sdnotify: connecting to %s: %w", n.addr.Name, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(strings.Join(states, "\n") + "\n")); err != nil {
		return fmt.Errorf("sdnotify: sending %s to %s: %w", strings.Join(states, ", "), n.addr.Name, err)
	}
	return nil
}

// Reloading returns the assignments that announce a reload: RELOADING=1
// with MONOTONIC_USEC, the CLOCK_MONOTONIC time systemd 253 and later
// require with it (Type=notify-reload) to tell this reload from an
// earlier one.
func Reloading() []string {
	states := []string{"RELOADING=1"}
	if us, ok := monotonicUsec(); ok {
		states = append(states, "MONOTONIC_USEC="+strconv.FormatUint(us, 10))
	}
	return states
}

// WatchdogInterval is how often to send WATCHDOG=1, from $WATCHDOG_USEC
// and $WATCHDOG_PID: half the timeout, as sd_watchdog_enabled(3)
// recommends, so that one late ping does not get the service killed. It is
// 0 when the watchdog is off or meant for another process (pid is this
// process's id).
func WatchdogInterval(usec, forPID string, pid int) (time.Duration, error) {
	if usec == "" {
		return 0, nil
	}
	if forPID != "" && forPID != strconv.Itoa(pid) {
		return 0, nil
	}
	n, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("sdnotify: WATCHDOG_USEC %q is not a positive number of microseconds", usec)
	}
	return time.Duration(n) * time.Microsecond / 2, nil
}

// Watchdog sends WATCHDOG=1 every interval until ctx ends, when alive
// reports true; a false alive skips the ping, so that a stuck service
// is restarted. alive nil is always true. A failed send is logged once
// per run of failures: the service keeps running, and systemd, which
// misses the pings, is the one to act.
func (n *Notifier) Watchdog(ctx context.Context, interval time.Duration, alive func() bool, logger *slog.Logger) {
	if n == nil || interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if alive != nil && !alive() {
			continue
		}
		err := n.Notify("WATCHDOG=1")
		switch {
		case err != nil && !failing && !errors.Is(err, context.Canceled):
			logger.Warn("systemd watchdog ping failed; systemd will restart the service if this goes on", "error", err)
			failing = true
		case err == nil:
			failing = false
		}
	}
}
