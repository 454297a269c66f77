//go:build !unix && !windows

package deploy

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
)

// shellCommand refuses: on this system there is neither /bin/sh nor
// cmd.exe, and a hook that silently did not run would leave the server on
// its old certificate.
func shellCommand(context.Context, string) (*exec.Cmd, error) {
	return nil, fmt.Errorf("%w on %s", ErrNoShell, runtime.GOOS)
}
