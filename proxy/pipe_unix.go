//go:build unix

package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// spliceHalf moves bytes between two TCP sockets. Small messages (the
// requests and responses of keep-alive traffic) are read with one
// non-blocking read into a pooled buffer and written: two system calls,
// the fewest possible. When a read fills the buffer, what else is queued is
// moved with splice(2), without copying it through user space.
func spliceHalf(dst, src *net.TCPConn, idle time.Duration, act *activity, bufs *bufferPool) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		total                     int64
		readDeadline, writeDeadln time.Time
	)
	for {
		// The read deadline is moved only when it has fallen half the idle
		// time behind the last activity: resetting a timer per message
		// would cost more than the copy. When it then fires early, it is
		// re-armed for exactly the rest, so a connection closes after
		// idle, not up to twice that.
		if want := act.lastTime().Add(idle); want.Sub(readDeadline) > idle/2 {
			readDeadline = want
			src.SetReadDeadline(readDeadline)
		}
		var (
			bp   *[]byte
			n    int
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
			bp = bufs.get()
			for {
				n, rerr = unix.Read(int(fd), *bp)
				if rerr != unix.EINTR {
					break
				}
			}
			if rerr == unix.EAGAIN {
				bufs.put(bp)
				bp = nil
				return false // wait for readability, holding nothing
			}
			return true
		})
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if rest := idle - act.idleFor(time.Now()); rest > 0 {
					readDeadline = time.Now().Add(rest)
					src.SetReadDeadline(readDeadline)
					continue // not idle yet: data moved since the deadline was set
				}
			}
			return total, err
		}
		if rerr != nil || n <= 0 {
			bufs.put(bp)
			return total, rerr // nil at EOF
		}
		act.touch()
		if now := time.Now(); writeDeadln.Sub(now) < idle/2 {
			writeDeadln = now.Add(idle)
			dst.SetWriteDeadline(writeDeadln)
		}
		_, werr := dst.Write((*bp)[:n])
		full := n == len(*bp)
		bufs.put(bp)
		total += int64(n)
		if werr != nil {
			return total, werr
		}
		if full {
			m, err := spliceQueued(dst, src, rc)
			total += m
			if err != nil {
				return total, err
			}
		}
	}
}

// spliceQueued splices what is queued on src right now, without waiting
// for more.
func spliceQueued(dst, src *net.TCPConn, rc syscall.RawConn) (int64, error) {
	var (
		queued int
		qerr   error
	)
	if err := rc.Control(func(fd uintptr) { queued, qerr = unix.IoctlGetInt(int(fd), queuedIoctl) }); err != nil {
		return 0, err
	}
	if qerr != nil || queued == 0 {
		return 0, qerr
	}
	return dst.ReadFrom(&io.LimitedReader{R: src, N: int64(min(queued, copyChunk))})
}
