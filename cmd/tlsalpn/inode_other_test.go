//go:build !unix

package main

import "os"

// fileInode is 0 where os.FileInfo has no inode number. The tests run on
// Linux; this file only lets them compile (and be vetted) elsewhere.
func fileInode(os.FileInfo) uint64 { return 0 }
