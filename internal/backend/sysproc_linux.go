package backend

import (
	"os/exec"
	"syscall"
)

// sysProcAttr puts a server in its own process group, so that killGroup
// reaches its workers too, and has the kernel stop its master if the test
// process dies without running its cleanups (a timeout panic).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// killGroup kills a server and all its workers.
func killGroup(cmd *exec.Cmd) { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
