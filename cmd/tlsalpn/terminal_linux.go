package main

import "golang.org/x/sys/unix"

// fdIsTerminal is isatty(3): whether the terminal attributes can be read.
func fdIsTerminal(fd uintptr) bool {
	_, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
	return err == nil
}
