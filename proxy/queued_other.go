//go:build !linux

package proxy

// queuedIoctl asks how many bytes a socket has queued to be read:
// FIONREAD, _IOR('f', 127, int) on macOS and the BSDs, which
// golang.org/x/sys/unix does not export there.
const queuedIoctl = 0x4004667f
