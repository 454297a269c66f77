//go:build !unix

package deploy

import "os/exec"

// killProcessGroup does nothing where there are no process groups: only the
// shell is killed, and WaitDelay bounds the wait for its children.
func killProcessGroup(*exec.Cmd) {}
