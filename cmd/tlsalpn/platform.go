package main

import "errors"

// errServeWindows is why serve refuses to start on Windows rather than run
// half-working: its configuration is reloaded with SIGHUP, which Windows
// cannot send (signal.Notify accepts it and never delivers it, so a reload
// would be lost silently), and nothing there has run its tests.
var errServeWindows = errors.New("serve is not supported on windows: it is reloaded with SIGHUP, which windows cannot send; run serve on Linux, macOS or FreeBSD")

// servePlatform reports whether serve can run on goos (runtime.GOOS; a
// parameter so that every system's answer is tested on any of them).
func servePlatform(goos string) error {
	if goos == "windows" {
		return errServeWindows
	}
	return nil
}
