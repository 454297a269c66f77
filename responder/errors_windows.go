package responder

import (
	"errors"
	"syscall"

	"golang.org/x/sys/windows"
)

func isAddrInUse(err error) bool { return errors.Is(err, windows.WSAEADDRINUSE) }

func isPermission(err error) bool {
	return errors.Is(err, windows.WSAEACCES) || errors.Is(err, windows.ERROR_ACCESS_DENIED)
}

// isTemporaryAccept reports whether an Accept error passes with time: out
// of sockets or buffers, or a client that gave up before it was accepted.
func isTemporaryAccept(err error) bool {
	for _, errno := range []syscall.Errno{windows.WSAEMFILE, windows.WSAENOBUFS, windows.WSAECONNABORTED, windows.WSAECONNRESET} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}
