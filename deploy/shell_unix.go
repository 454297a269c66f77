//go:build unix

package deploy

import (
	"context"
	"os/exec"
	"syscall"
)

// shellCommand returns cmd running command through /bin/sh -c, as the
// leader of a new process group that cancellation kills whole. Killing only
// sh would leave its children (the "sleep" in "reload; sleep 5", a
// backgrounded job) holding the output pipe, and Run would wait WaitDelay
// for them however short the hook's timeout.
func shellCommand(ctx context.Context, command string) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd, nil
}
