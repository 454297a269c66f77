//go:build !unix && !windows

package fs

import (
	"fmt"
	"os"
	"runtime"
)

// lockCall names the system call in errors.
const lockCall = "lock"

// tryLock refuses: without a file lock this system offers, Lock could not
// exclude other processes, and a lock that does not exclude is worse than
// an error.
func tryLock(*os.File) (bool, error) {
	return false, fmt.Errorf("file locks are not supported on %s", runtime.GOOS)
}

func unlock(*os.File) error { return nil }
