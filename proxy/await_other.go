//go:build !linux

package proxy

import "net"

// queuedIoctl asks how many bytes a socket has queued to be read:
// FIONREAD, _IOR('f', 127, int) on macOS and the BSDs, which
// golang.org/x/sys/unix does not export there.
const queuedIoctl = 0x4004667f

// awaitFirstRecord has nothing to wait with here: the ClientHello reader
// holds its buffer from the first byte.
func awaitFirstRecord(net.Conn) error { return nil }
