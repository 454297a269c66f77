package deploy

import "errors"

// ErrNoShell means hooks cannot run on this system: it has neither
// /bin/sh (Unix) nor cmd.exe (Windows).
var ErrNoShell = errors.New("no shell to run hooks with")

// windowsCmdLine is the command line that has cmd.exe run command exactly
// as written: /S /C "…" strips the outer quotes and nothing else, so quotes
// inside the command reach cmd.exe as typed (Go's usual argument escaping
// is for programs that parse their command line like the C runtime, which
// cmd.exe does not); /D skips the AutoRun commands of the registry, so a
// hook runs the same under any account. It is here, not in the Windows
// file, so that its test runs on every system.
func windowsCmdLine(comspec, command string) string {
	return `"` + comspec + `" /D /S /C "` + command + `"`
}
