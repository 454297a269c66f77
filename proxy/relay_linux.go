package proxy

import (
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The relay moves the bytes of established passthrough connections with a
// few event loops, in the manner of HAProxy, instead of two goroutines per
// connection. A goroutine per direction costs a scheduler wake-up, and an
// extra read that ends in EAGAIN, for every message; on a machine where
// the proxy, the web server and the clients share two cores that is most
// of the proxy's cost (go tool pprof with TLSALPN_CPUPROFILE shows it).
// Here one level-triggered epoll_wait serves every ready connection of a
// loop, and each message costs one read and one write. An idle connection
// costs two small structs and the parked goroutine that accepted it; no
// buffer.
//
// The loop owns the sockets it relays (duplicated descriptors: the Go
// connections are closed so the runtime's poller lets go of them) and is
// the only one to close them; Shutdown asks it to, with closeAll. epoll
// events carry an identifier, not the descriptor number.

// relayReadSize is what one read takes at most. It is the loop's one shared
// buffer: data is written on at once, and only what the destination cannot
// take yet is copied aside.
const relayReadSize = 64 << 10

// relayEnd is one socket of a relayed connection: bytes read from it go to
// peer, and pending holds bytes waiting to be written to it.
type relayEnd struct {
	id      uint64
	fd      int // owned by the loop: a duplicate, see relay
	peer    *relayEnd
	r       *relayConn
	eof     bool   // read side finished
	shut    bool   // write side shut down
	pending []byte // to be written to this end
	events  uint32 // current epoll interest
	added   bool
}

type relayConn struct {
	a, b     *relayEnd
	idle     time.Duration
	last     time.Time // last byte moved
	done     chan struct{}
	finished bool
	up, down int64
}

type relayLoop struct {
	epfd   int
	wakeFD int

	mu      sync.Mutex
	queue   []*relayConn
	killAll bool // set by Shutdown at its deadline
	stopped bool // set by stop: exit once no connection is left
	dead    bool // the loop has exited: take nothing more

	ends   map[uint64]*relayEnd
	conns  map[*relayConn]struct{}
	nextID uint64
	buf    []byte
}

// relayer distributes connections over loops; its zero value is unused.
type relayer struct {
	once  sync.Once
	loops []*relayLoop
	next  atomic.Uint64
	err   error
}

func (rl *relayer) start() error {
	rl.once.Do(func() {
		// One loop per two cores. A loop's time is nearly all the
		// kernel's (read and write on TCP sockets), so it keeps a core
		// busy on its own; more loops than that only add threads that
		// contend with the accepting goroutines and with the backend,
		// which usually shares the machine. Measured on two cores: one
		// loop carried 6% more new connections per second than two,
		// and keep-alive requests within the noise (2-3% either way).
		n := max(1, runtime.GOMAXPROCS(0)/2)
		for range n {
			l, err := newRelayLoop()
			if err != nil {
				rl.err = err
				return
			}
			rl.loops = append(rl.loops, l)
			go l.run()
		}
	})
	return rl.err
}

// relay moves bytes between client and backend until both directions end,
// either fails, or nothing moves for idle. It returns the bytes copied each
// way, like pipe, and closes both connections. ok is false when the relay
// cannot take these connections (not TCP); the caller then uses pipe.
func (rl *relayer) relay(client, backend net.Conn, idle time.Duration) (up, down int64, ok bool) {
	cc, ok1 := client.(*net.TCPConn)
	bc, ok2 := backend.(*net.TCPConn)
	if !ok1 || !ok2 || rl.start() != nil {
		return 0, 0, false
	}
	// The loop takes duplicates of the two descriptors and the Go
	// connections are closed: that takes them out of the runtime's own
	// poller (which would otherwise be woken for every message too) and
	// leaves the sockets, still open through the duplicates, to the loop.
	cfd, err1 := dupFD(cc)
	if err1 != nil {
		return 0, 0, false
	}
	bfd, err2 := dupFD(bc)
	if err2 != nil {
		unix.Close(cfd)
		return 0, 0, false
	}
	client.Close()
	backend.Close()
	r := &relayConn{idle: idle, last: time.Now(), done: make(chan struct{})}
	r.a = &relayEnd{fd: cfd, r: r}
	r.b = &relayEnd{fd: bfd, r: r}
	r.a.peer, r.b.peer = r.b, r.a
	l := rl.loops[rl.next.Add(1)%uint64(len(rl.loops))]
	l.enqueue(r)
	<-r.done
	return r.up, r.down, true
}

// closeAll ends every relayed connection at once: Shutdown's deadline.
func (rl *relayer) closeAll() {
	for _, l := range rl.loops {
		l.mu.Lock()
		l.killAll = true
		l.mu.Unlock()
		l.wake()
	}
}

// stop ends the loops once their connections are done; the relayer must
// not be used afterwards. Shutdown calls it when the drain is over.
func (rl *relayer) stop() {
	for _, l := range rl.loops {
		l.mu.Lock()
		l.stopped = true
		l.mu.Unlock()
		l.wake()
	}
}

func dupFD(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return nfd, derr
}

func newRelayLoop() (*relayLoop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, err
	}
	return &relayLoop{epfd: epfd, wakeFD: wfd, ends: map[uint64]*relayEnd{}, conns: map[*relayConn]struct{}{},
		nextID: 1, buf: make([]byte, relayReadSize)}, nil
}

func (l *relayLoop) enqueue(r *relayConn) {
	l.mu.Lock()
	if l.dead {
		l.mu.Unlock()
		unix.Close(r.a.fd)
		unix.Close(r.b.fd)
		close(r.done)
		return
	}
	l.queue = append(l.queue, r)
	l.mu.Unlock()
	l.wake()
}

func (l *relayLoop) wake() {
	var one = [8]byte{1}
	unix.Write(l.wakeFD, one[:])
}

func (l *relayLoop) run() {
	runtime.LockOSThread()
	events := make([]unix.EpollEvent, 256)
	lastSweep := time.Now()
	for {
		n, err := unix.EpollWait(l.epfd, events, 1000)
		if err != nil && err != unix.EINTR {
			// Cannot happen with a valid epoll descriptor; if it does,
			// end every connection rather than leave them hanging.
			l.mu.Lock()
			l.dead = true
			queue := l.queue
			l.queue = nil
			l.mu.Unlock()
			for _, r := range queue {
				l.register(r, time.Now())
			}
			for r := range l.conns {
				l.finish(r)
			}
			return
		}
		now := time.Now()
		for i := 0; i < n; i++ {
			ev := &events[i]
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				var b [8]byte
				unix.Read(l.wakeFD, b[:])
				continue
			}
			e := l.ends[id]
			if e == nil || e.r.finished {
				continue
			}
			l.handle(e, ev.Events, now)
		}
		l.mu.Lock()
		queue, killAll, stopped := l.queue, l.killAll, l.stopped
		l.queue, l.killAll = nil, false
		l.mu.Unlock()
		if killAll {
			for r := range l.conns {
				l.finish(r)
			}
		}
		for _, r := range queue {
			l.register(r, now)
		}
		if stopped && len(l.conns) == 0 {
			l.mu.Lock()
			l.dead = true
			l.mu.Unlock()
			unix.Close(l.epfd)
			unix.Close(l.wakeFD)
			return
		}
		if now.Sub(lastSweep) >= time.Second {
			lastSweep = now
			for r := range l.conns {
				if now.Sub(r.last) >= r.idle {
					l.finish(r)
				}
			}
		}
	}
}

// register adds a new connection's two sockets, reading from both.
func (l *relayLoop) register(r *relayConn, now time.Time) {
	r.last = now
	l.conns[r] = struct{}{}
	for _, e := range []*relayEnd{r.a, r.b} {
		e.id = l.nextID
		l.nextID++
		l.ends[e.id] = e
		if !l.setInterest(e, unix.EPOLLIN|unix.EPOLLRDHUP) {
			l.finish(r)
			return
		}
	}
}

// setInterest changes what epoll reports for e; false when the socket is
// gone.
//
// No interest means out of epoll altogether: epoll reports hang-ups and
// errors whatever the interest, and level-triggered it would report them
// on every wait. A socket that is out of epoll still reports its errors to
// the reads and writes made on it.
func (l *relayLoop) setInterest(e *relayEnd, events uint32) bool {
	if events == 0 {
		if !e.added {
			return true
		}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, e.fd, nil); err != nil {
			return false
		}
		e.added, e.events = false, 0
		return true
	}
	if e.added && e.events == events {
		return true
	}
	op := unix.EPOLL_CTL_MOD
	if !e.added {
		op = unix.EPOLL_CTL_ADD
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(uint32(e.id)), Pad: int32(uint32(e.id >> 32))}
	if err := unix.EpollCtl(l.epfd, op, e.fd, &ev); err != nil {
		return false
	}
	e.added, e.events = true, events
	return true
}

func (l *relayLoop) handle(e *relayEnd, events uint32, now time.Time) {
	r := e.r
	if events&unix.EPOLLOUT != 0 && len(e.pending) > 0 {
		if !l.flush(e, now) {
			l.finish(r)
			return
		}
	}
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 && !e.eof && len(e.peer.pending) == 0 {
		if !l.readFrom(e, now) {
			l.finish(r)
			return
		}
	}
	if r.a.eof && r.b.eof && len(r.a.pending) == 0 && len(r.b.pending) == 0 {
		l.finish(r)
	}
}

// readFrom reads what src has and writes it to its peer; what the peer
// cannot take now waits in peer.pending, and src is not read again until
// it is written. false means the connection is over (an error).
func (l *relayLoop) readFrom(src *relayEnd, now time.Time) bool {
	var (
		n    int
		rerr error
	)
	for {
		n, rerr = unix.Read(src.fd, l.buf)
		if rerr != unix.EINTR {
			break
		}
	}
	switch {
	case rerr == unix.EAGAIN:
		return true
	case rerr != nil:
		return false
	case n == 0:
		// End of stream: stop reading, and pass the half-close on once
		// everything read before it is written.
		src.eof = true
		if !l.update(src) {
			return false
		}
		if len(src.peer.pending) == 0 {
			return l.shutWrite(src.peer)
		}
		return true
	}
	r := src.r
	r.last = now
	if src == r.a {
		r.up += int64(n)
	} else {
		r.down += int64(n)
	}
	dst := src.peer
	written, ok := l.write(dst, l.buf[:n])
	if !ok {
		return false
	}
	if written < n {
		dst.pending = append(dst.pending[:0], l.buf[written:n]...)
		// Back-pressure: src is not read until dst drains.
		return l.update(src) && l.update(dst)
	}
	return true
}

// interest is what e waits for: to be read while it has not ended and its
// peer can take more, to be written while bytes wait for it.
func (e *relayEnd) interest() uint32 {
	var ev uint32
	if !e.eof && len(e.peer.pending) == 0 {
		ev |= unix.EPOLLIN | unix.EPOLLRDHUP
	}
	if len(e.pending) > 0 {
		ev |= unix.EPOLLOUT
	}
	return ev
}

// update makes epoll's interest in e match its state.
func (l *relayLoop) update(e *relayEnd) bool { return l.setInterest(e, e.interest()) }

// write writes b to dst without blocking and reports how much it took.
func (l *relayLoop) write(dst *relayEnd, b []byte) (int, bool) {
	total := 0
	for total < len(b) {
		n, err := unix.Write(dst.fd, b[total:])
		if n > 0 {
			total += n
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return total, true
		case err != nil:
			return total, false
		}
	}
	return total, true
}

// flush writes dst's pending bytes; once they are out, its source is read
// again (or, at its end of stream, the half-close is passed on).
func (l *relayLoop) flush(dst *relayEnd, now time.Time) bool {
	n, ok := l.write(dst, dst.pending)
	if !ok {
		return false
	}
	dst.r.last = now
	dst.pending = dst.pending[n:]
	if len(dst.pending) > 0 {
		return true
	}
	dst.pending = nil
	src := dst.peer
	if !l.update(dst) || !l.update(src) {
		return false
	}
	if src.eof {
		return l.shutWrite(dst)
	}
	return true
}

func (l *relayLoop) shutWrite(e *relayEnd) bool {
	if e.shut {
		return true
	}
	e.shut = true
	return unix.Shutdown(e.fd, unix.SHUT_WR) == nil
}

// finish ends a connection: both sockets leave the loop and are closed.
func (l *relayLoop) finish(r *relayConn) {
	if r.finished {
		return
	}
	r.finished = true
	for _, e := range []*relayEnd{r.a, r.b} {
		// Closing the descriptor takes it out of epoll too.
		delete(l.ends, e.id)
		unix.Close(e.fd)
	}
	delete(l.conns, r)
	close(r.done)
}
