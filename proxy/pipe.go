package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// copyChunk caps one splice: large enough that a bulk transfer costs a few
// system calls per megabyte, small enough to keep latency fair.
const copyChunk = 1 << 20

// bufSize is the size of a copy buffer. A message that fills it is likely
// part of a bulk transfer, whose rest is then spliced.
const bufSize = 16 << 10

// bufferPool holds copy buffers. A buffer is taken only when data is already
// waiting on the socket and returned as soon as it is written, never held
// while a connection waits, so an idle connection costs its two goroutines
// and nothing else. Each Server owns one (no package-level state: two
// Servers in a process, or a test, share nothing); the zero value is ready.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) get() *[]byte {
	if v := b.p.Get(); v != nil {
		return v.(*[]byte)
	}
	buf := make([]byte, bufSize)
	return &buf
}

func (b *bufferPool) put(buf *[]byte) { b.p.Put(buf) }

// activity is the last time either direction of a connection moved data;
// the connection is idle only when both directions are.
type activity struct{ last atomic.Int64 }

func (a *activity) touch()                              { a.last.Store(time.Now().UnixNano()) }
func (a *activity) idleFor(now time.Time) time.Duration { return now.Sub(a.lastTime()) }
func (a *activity) lastTime() time.Time                 { return time.Unix(0, a.last.Load()) }

// pipe copies client→backend and backend→client with two goroutines. On
// Linux, passthrough connections use the event-loop relay instead
// (relay_linux.go); pipe serves terminated connections and other systems.
//
// pipe copies client→backend and backend→client until both directions end,
// either connection fails, or nothing moves for idle. A direction that sees
// EOF half-closes its destination, so protocols that close one way first
// keep working. It returns the bytes copied each way.
func pipe(client, backend net.Conn, idle time.Duration, bufs *bufferPool) (up, down int64) {
	var act activity
	act.touch()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		down, err = copyHalf(client, backend, idle, &act, bufs)
		if err != nil {
			// An error (reset, idle timeout) ends the connection both ways.
			client.Close()
			backend.Close()
		}
	}()
	var err error
	up, err = copyHalf(backend, client, idle, &act, bufs)
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
func copyHalf(dst, src net.Conn, idle time.Duration, act *activity, bufs *bufferPool) (int64, error) {
	srcTCP, ok1 := src.(*net.TCPConn)
	dstTCP, ok2 := dst.(*net.TCPConn)
	var (
		n   int64
		err error
	)
	if ok1 && ok2 {
		n, err = spliceHalf(dstTCP, srcTCP, idle, act, bufs)
	} else {
		n, err = bufferHalf(dst, src, idle, act, bufs)
	}
	if err == nil {
		if cw, ok := dst.(closeWriter); ok {
			cw.CloseWrite()
		}
	}
	return n, err
}

// bufferHalf is the portable copy for ends that are not TCP sockets.
func bufferHalf(dst, src net.Conn, idle time.Duration, act *activity, bufs *bufferPool) (int64, error) {
	var total int64
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		bp := bufs.get()
		n, rerr := src.Read(*bp)
		if n > 0 {
			act.touch()
			dst.SetWriteDeadline(time.Now().Add(idle))
			_, werr := dst.Write((*bp)[:n])
			total += int64(n)
			if werr != nil {
				bufs.put(bp)
				return total, werr
			}
		}
		bufs.put(bp)
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
