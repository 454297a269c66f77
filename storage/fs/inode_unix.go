//go:build unix

package fs

import (
	"os"
	"syscall"
)

// inode is fi's inode number: a file replaced by rename keeps its size and
// may keep its modification time, but not its inode.
func inode(fi os.FileInfo) uint64 {
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(sys.Ino)
	}
	return 0
}
