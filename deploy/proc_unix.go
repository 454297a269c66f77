//go:build unix

package deploy

import (
	"os/exec"
	"syscall"
)

// killProcessGroup makes cmd the leader of a new process group and has
// cancellation kill the whole group. Killing only sh would leave its
// children (the "sleep" in "reload; sleep 5", a backgrounded job) holding
// the output pipe, and Run would wait WaitDelay for them however short the
// hook's timeout.
func killProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
