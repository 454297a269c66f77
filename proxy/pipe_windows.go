package proxy

import (
	"net"
	"time"
)

// spliceHalf copies through a buffer on Windows, which has no splice(2)
// and no non-blocking read on a Go socket's descriptor.
func spliceHalf(dst, src *net.TCPConn, idle time.Duration, act *activity) (int64, error) {
	return bufferHalf(dst, src, idle, act)
}
