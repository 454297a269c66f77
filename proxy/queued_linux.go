//go:build linux

package proxy

import "golang.org/x/sys/unix"

// queuedIoctl asks how many bytes a socket has queued to be read.
const queuedIoctl = unix.SIOCINQ
