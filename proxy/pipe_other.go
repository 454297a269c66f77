//go:build !unix

package proxy

import (
	"net"
	"time"
)

// spliceHalf is bufferHalf where there is no non-blocking read(2) on the
// raw socket and no FIONREAD/SIOCINQ to size a splice (Windows): the copy
// is the portable one, correct but with a buffer per read.
func spliceHalf(dst, src *net.TCPConn, idle time.Duration, act *activity, bufs *bufferPool) (int64, error) {
	return bufferHalf(dst, src, idle, act, bufs)
}
