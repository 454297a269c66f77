//go:build !linux

package etcdtest

import "syscall"

// sysProcAttr: only Linux has a parent-death signal; elsewhere t.Cleanup is what stops members.
func sysProcAttr() *syscall.SysProcAttr { return nil }
