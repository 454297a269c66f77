package responder

import (
	"errors"

	"golang.org/x/sys/windows"
)

// Winsock reports socket errors with its own codes (WSAE…), not the POSIX
// errno values syscall.EADDRINUSE and the like stand for on Windows, so
// errors.Is against the syscall names would never match.

func isAddrInUse(err error) bool { return errors.Is(err, windows.WSAEADDRINUSE) }

func isPermission(err error) bool {
	return errors.Is(err, windows.WSAEACCES) || errors.Is(err, windows.ERROR_ACCESS_DENIED)
}
