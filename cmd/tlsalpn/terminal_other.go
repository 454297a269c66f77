//go:build !linux

package main

// fdIsTerminal is false where not implemented: text logs and progress are
// then asked for with --log-format text.
func fdIsTerminal(fd uintptr) bool { return false }
