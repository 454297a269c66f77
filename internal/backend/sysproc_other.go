//go:build !unix

package backend

import (
	"os/exec"
	"syscall"
)

// Neither server runs here (findBinary skips); these only let the package
// build for tests that import it.

func sysProcAttr() *syscall.SysProcAttr { return nil }

func killGroup(cmd *exec.Cmd) { cmd.Process.Kill() }

const (
	sigStop          = syscall.SIGTERM
	sigReloadNginx   = syscall.SIGHUP
	sigReloadHAProxy = syscall.Signal(31)
)
