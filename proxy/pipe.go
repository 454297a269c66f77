package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// copyChunk caps one splice: large enough that a bulk transfer costs a few
// system calls per megabyte, small enough to keep latency fair.
const copyChunk = 1 << 20

// bufPool holds the buffers of the fallback copy path (used when an end
// is not a plain TCP socket, e.g. a terminated TLS connection). Buffers are
// taken only while data is moving, never while a connection waits, so an
// idle connection costs its two goroutines and nothing else.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// activity is the last time either direction of a connection moved data;
// the connection is idle only when both directions are.
type activity struct{ last atomic.Int64 }

func (a *activity) touch()                              { a.last.Store(time.Now().UnixNano()) }
func (a *activity) idleFor(now time.Time) time.Duration { return now.Sub(time.Unix(0, a.last.Load())) }

// pipe copies client→backend and backend→client until both directions end,
// either connection fails, or nothing moves for idle. A direction that sees
// EOF half-closes its destination, so protocols that close one way first
// keep working. It returns the bytes copied each way.
func pipe(client, backend net.Conn, idle time.Duration) (up, down int64) {
	var act activity
	act.touch()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		down, err = copyHalf(client, backend, idle, &act)
		if err != nil {
			// An error (reset, idle timeout) ends the connection both ways.
			client.Close()
			backend.Close()
		}
	}()
	var err error
	up, err = copyHalf(backend, client, idle, &act)
	if err != nil {
		client.Close()
		backend.Close()
	}
	wg.Wait()
	client.Close()
	backend.Close()
	return up, down
}

type closeWriter interface{ CloseWrite() error }

// copyHalf copies src to dst until EOF (then half-closes dst) or an error.
func copyHalf(dst, src net.Conn, idle time.Duration, act *activity) (int64, error) {
	srcTCP, ok1 := src.(*net.TCPConn)
	dstTCP, ok2 := dst.(*net.TCPConn)
	var (
		n   int64
		err error
	)
	if ok1 && ok2 {
		n, err = spliceHalf(dstTCP, srcTCP, idle, act)
	} else {
		n, err = bufferHalf(dst, src, idle, act)
	}
	if err == nil {
		if cw, ok := dst.(closeWriter); ok {
			cw.CloseWrite()
		}
	}
	return n, err
}

// spliceHalf moves bytes between two TCP sockets with splice(2), without
// copying them through user space. It waits for the source to become
// readable before taking a pipe from the runtime's pool, and splices only
// what is already queued (FIONREAD), so no pipe and no buffer is held
// while the connection waits.
func spliceHalf(dst, src *net.TCPConn, idle time.Duration, act *activity) (int64, error) {
	rc, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	var total int64
	for {
		queued, err := waitReadable(rc, src, idle, act)
		if err != nil {
			return total, err
		}
		if queued == 0 {
			return total, nil // EOF
		}
		dst.SetWriteDeadline(time.Now().Add(idle))
		n, err := dst.ReadFrom(&io.LimitedReader{R: src, N: int64(min(queued, copyChunk))})
		total += n
		act.touch()
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, nil
		}
	}
}

// waitReadable blocks until src has bytes queued (it returns how many) or
// is at EOF (0), honouring the shared idle timeout: a deadline that passes
// while the other direction was active is simply extended.
//
// It peeks before it waits: readiness the runtime saw earlier (a FIN that
// arrived with the last data) may already have been consumed by a splice,
// so "nothing queued" must be told apart from "end of stream" by asking
// the socket, never by waiting for an edge that will not come again.
func waitReadable(rc syscall.RawConn, src *net.TCPConn, idle time.Duration, act *activity) (int, error) {
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		var (
			queued int
			ioErr  error
		)
		err := rc.Read(func(fd uintptr) bool {
			queued, ioErr = peekQueued(int(fd))
			return !errors.Is(ioErr, unix.EAGAIN)
		})
		if err == nil {
			return queued, ioErr
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if rest := idle - act.idleFor(time.Now()); rest > 0 {
				continue // the other direction is busy: not idle
			}
		}
		return 0, err
	}
}

// peekQueued reports the bytes queued on a non-blocking socket: EAGAIN when
// there are none yet, 0 at end of stream, or the socket's error (a reset).
func peekQueued(fd int) (int, error) {
	var b [1]byte
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1,
			unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == unix.EINTR:
			continue
		case errno != 0:
			return 0, errno
		case n == 0:
			return 0, nil
		}
		return unix.IoctlGetInt(fd, unix.TIOCINQ) // FIONREAD
	}
}

// bufferHalf is the portable copy for ends that are not TCP sockets.
func bufferHalf(dst, src net.Conn, idle time.Duration, act *activity) (int64, error) {
	var total int64
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		bp := bufPool.Get().(*[]byte)
		n, rerr := src.Read(*bp)
		if n > 0 {
			act.touch()
			dst.SetWriteDeadline(time.Now().Add(idle))
			_, werr := dst.Write((*bp)[:n])
			total += int64(n)
			if werr != nil {
				bufPool.Put(bp)
				return total, werr
			}
		}
		bufPool.Put(bp)
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return total, nil
			}
			if errors.Is(rerr, os.ErrDeadlineExceeded) && idle-act.idleFor(time.Now()) > 0 {
				continue
			}
			return total, rerr
		}
	}
}
