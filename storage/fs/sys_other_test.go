//go:build !unix

package fs

import (
	"fmt"
	"runtime"
)

// limitFileSize fails: there is no RLIMIT_FSIZE here. The tests run on
// Linux; this file only lets them compile (and be vetted) elsewhere.
func limitFileSize() error { return fmt.Errorf("no RLIMIT_FSIZE on %s", runtime.GOOS) }

// setUmask does nothing: there is no umask here.
func setUmask(int) int { return 0 }
