//go:build unix

package fs

import (
	"errors"
	"os"
	"syscall"
)

// lockCall names the system call in errors.
const lockCall = "flock"

// tryLock takes an exclusive flock(2) on file without waiting; ok is false
// when another open file description holds it. flock locks belong to the
// open file description, so they exclude other processes and other Locks
// of this one alike, on Linux, the BSDs and macOS.
func tryLock(file *os.File) (ok bool, err error) {
	err = syscall.Flock(int(file.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EINTR) {
		return false, nil
	}
	return err == nil, err
}

func unlock(file *os.File) error { return syscall.Flock(int(file.Fd()), syscall.LOCK_UN) }
