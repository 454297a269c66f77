package etcdtest

import "syscall"

// sysProcAttr gives a member its own process group and has the kernel kill it if the test
// binary dies without running its cleanups (a timeout panic, a SIGKILL).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
