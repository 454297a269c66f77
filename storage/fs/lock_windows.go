package fs

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// lockCall names the system call in errors.
const lockCall = "LockFileEx"

// allBytes locks the whole file, whatever its length, as Go's own
// cmd/go/internal/lockedfile does.
const allBytes = ^uint32(0)

// tryLock takes an exclusive LockFileEx lock on file without waiting; ok
// is false when another handle holds it. Like flock, the lock belongs to
// the handle, so it excludes other processes and other Locks of this one.
func tryLock(file *os.File) (ok bool, err error) {
	ol := new(windows.Overlapped)
	err = windows.LockFileEx(windows.Handle(file.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, allBytes, allBytes, ol)
	if errors.Is(err, windows.ERROR_LOCK_VIOLATION) {
		return false, nil
	}
	return err == nil, err
}

func unlock(file *os.File) error {
	return windows.UnlockFileEx(windows.Handle(file.Fd()), 0, allBytes, allBytes, new(windows.Overlapped))
}
