package acceptretry

import (
	"errors"
	"syscall"

	"golang.org/x/sys/windows"
)

// Temporary reports whether an Accept error passes with time: out of
// sockets or buffers, or a client that gave up before it was accepted.
func Temporary(err error) bool {
	for _, errno := range []syscall.Errno{windows.WSAEMFILE, windows.WSAENOBUFS, windows.WSAECONNABORTED, windows.WSAECONNRESET} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
