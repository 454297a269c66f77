//go:build unix

package fs

import "syscall"

// fileSizeLimit is untyped: syscall.Rlimit's fields are uint64 on Linux and macOS, int64 on FreeBSD.
const fileSizeLimit = 4096

// limitFileSize sets RLIMIT_FSIZE, so that write(2) fails with EFBIG past 4096 bytes.
func limitFileSize() error {
	return syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: fileSizeLimit, Max: fileSizeLimit})
}

// setUmask sets the process umask and returns the previous one.
func setUmask(mask int) int { return syscall.Umask(mask) }
