//go:build unix

package fs

import (
	"os"
	"syscall"
)

// inode returns fi's inode number, so that a file replaced by rename with
// the same size and modification time still shows as changed.
func inode(fi os.FileInfo) uint64 {
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(sys.Ino)
	}
	return 0
}
