//go:build windows

package deploy

import (
	"context"
	"os"
	"os/exec"
	"syscall"
)

// shellCommand returns cmd running command through cmd.exe, the shell a
// Windows administrator writes hooks for (there is no /bin/sh). The command
// line is given whole (windowsCmdLine) because cmd.exe does not parse its
// arguments the way Go's escaping expects. There are no process groups:
// cancellation kills cmd.exe only, and WaitDelay bounds the wait for its
// children.
func shellCommand(ctx context.Context, command string) (*exec.Cmd, error) {
	comspec := os.Getenv("ComSpec")
	if comspec == "" {
		comspec = `C:\Windows\System32\cmd.exe`
	}
	cmd := exec.CommandContext(ctx, comspec)
	cmd.SysProcAttr = &syscall.SysProcAttr{CmdLine: windowsCmdLine(comspec, command)}
	return cmd, nil
}
