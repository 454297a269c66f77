//go:build unix && !linux

package backend

import (
	"os/exec"
	"syscall"
)

// sysProcAttr puts a server in its own process group, so that killGroup
// reaches its workers too.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// killGroup kills a server and all its workers.
func killGroup(cmd *exec.Cmd) { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
