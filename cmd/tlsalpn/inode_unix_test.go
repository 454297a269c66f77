//go:build unix

package main

import (
	"os"
	"syscall"
)

// fileInode is fi's inode number, so that a file replaced in place shows.
func fileInode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}
