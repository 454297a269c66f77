//go:build !linux

package clienthello

import "net"

// AwaitRecord has nothing to wait with here: the Read that follows holds
// its buffer from the first byte.
func AwaitRecord(net.Conn) error { return nil }
