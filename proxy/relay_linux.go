package proxy

import (
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tlsalpn/tlsalpn/internal/acceptretry"
)

// The relay runs passthrough connections on a few event loops, in the
// manner of HAProxy, instead of on goroutines. A connection accepted from
// a TCP listener lives its whole life on one loop: accepted there, its
// ClientHello read there, its backend dialled there, and its bytes moved
// there (front_linux.go). Only what needs the Go runtime leaves the loop
// for a goroutine: an acme-tls/1 validation, a route that terminates TLS,
// a backend named by host name, a balancer's PROXY header.
//
// A goroutine per connection costs scheduler wake-ups and, through the
// runtime's poller, extra system calls (epoll_ctl and a read that ends in
// EAGAIN per message, getsockname and getpeername per socket, a futex per
// hand-off); on a machine where the proxy, the web server and the clients
// share two cores that was most of the proxy's cost: 50 system calls per
// new connection against HAProxy's 34 (strace -c). Here every socket is
// registered once, edge-triggered, for everything it will ever report, so
// no epoll_ctl follows; each message costs one read and one write. An idle
// connection costs two small structs and no goroutine and no buffer.
//
// The loop owns the sockets it runs and is the only one to close them;
// others ask it to, through post. epoll events carry an identifier, not the
// descriptor number, so that a number reused after a close cannot reach the
// wrong connection.

// relayReadSize is what one read takes at most. It is the loop's one shared
// buffer: data is written on at once, and only what the destination cannot
// take yet is copied aside.
const relayReadSize = 64 << 10

// endKind is what a socket of the loop is doing.
type endKind uint8

const (
	kindRelay    endKind = iota // an end of a connection whose bytes are relayed
	kindHello                   // a client whose ClientHello is being read
	kindDial                    // a backend being connected to
	kindListener                // a listening socket
)

// edgeEvents is what every socket is registered for, once: readable,
// writable, the peer's end of stream, edge-triggered. A socket reports
// readable again only when new bytes arrive, so each end keeps what it
// was told in readable and hup and is read until it is drained.
const edgeEvents = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET

// relayEnd is one socket of the loop. For a relayed connection, bytes read
// from it go to peer, and pending holds bytes waiting to be written to it.
type relayEnd struct {
	id       uint64
	fd       int // owned by the loop
	kind     endKind
	peer     *relayEnd
	r        *relayConn
	ln       *loopListener // kindListener
	readable bool          // an edge said bytes (or the end) may be waiting
	hup      bool          // the peer has finished sending: read to the end, short reads or not
	eof      bool          // read side finished
	shut     bool          // write side shut down
	pending  []byte        // to be written to this end
	resume   time.Time     // kindListener: when a rest after an accept error ends
}

// relayConn is one client connection on the loop, with its backend once
// there is one.
type relayConn struct {
	a, b     *relayEnd // the client, and the backend (nil until dialled)
	idle     time.Duration
	last     time.Time // last byte moved
	finished bool
	up, down int64
	done     chan struct{} // closed at finish, for relay; nil for accepted
	acc      *accepted     // the front door's part, for connections the loop accepted
}

type relayLoop struct {
	epfd   int
	wakeFD int
	many   bool // one of several loops sharing listeners

	mu      sync.Mutex
	ops     []func() // run on the loop, in order: see post
	killAll bool     // set by Shutdown at its deadline
	stopped bool     // set by stop: exit once no connection is left
	dead    bool     // the loop has exited: take nothing more

	ends   map[uint64]*relayEnd
	conns  map[*relayConn]struct{}
	nextID uint64
	buf    []byte

	hellos, dials deadlineList // accepted connections not yet relayed, by deadline
	paused        []*relayEnd  // listeners resting after an accept error
	backoffs      acceptretry.Backoff
	spareP        bool // GOMAXPROCS leaves Ps to spare: see wait; read once a second
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
		// contend with the backend, which usually shares the machine.
		n := max(1, runtime.GOMAXPROCS(0)/2)
		for range n {
			l, err := newRelayLoop()
			if err != nil {
				rl.err = err
				return
			}
			l.many = n > 1
			rl.loops = append(rl.loops, l)
			go l.run()
		}
	})
	return rl.err
}

// relay moves bytes between client and backend, connections the Go side
// made, until both directions end, either fails, or nothing moves for idle.
// It returns the bytes copied each way, like pipe, and closes both
// connections. ok is false when the relay cannot take these connections
// (not TCP); the caller then uses pipe.
func (rl *relayer) relay(client, backend net.Conn, idle time.Duration) (up, down int64, ok bool) {
	cc, ok1 := client.(*net.TCPConn)
	bc, ok2 := backend.(*net.TCPConn)
	if !ok1 || !ok2 || rl.start() != nil {
		return 0, 0, false
	}
	// The loop takes duplicates of the two descriptors and the Go
	// connections are closed: that takes them out of the runtime's own
	// poller and leaves the sockets, still open through the duplicates,
	// to the loop.
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
	r.a = &relayEnd{fd: cfd, r: r, readable: true}
	r.b = &relayEnd{fd: bfd, r: r, readable: true}
	r.a.peer, r.b.peer = r.b, r.a
	l := rl.pick()
	if !l.post(func() { l.register(r, time.Now()) }) {
		unix.Close(cfd)
		unix.Close(bfd)
		return 0, 0, true
	}
	<-r.done
	return r.up, r.down, true
}

func (rl *relayer) pick() *relayLoop {
	return rl.loops[rl.next.Add(1)%uint64(len(rl.loops))]
}

// closeAll ends every connection on the loops at once: Shutdown's deadline.
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

func dupFD(c syscall.Conn) (int, error) {
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

// post has f run on the loop, after the events it is handling; false when
// the loop has exited and f will never run.
func (l *relayLoop) post(f func()) bool {
	l.mu.Lock()
	if l.dead {
		l.mu.Unlock()
		return false
	}
	l.ops = append(l.ops, f)
	l.mu.Unlock()
	l.wake()
	return true
}

func (l *relayLoop) wake() {
	var one = [8]byte{1}
	unix.Write(l.wakeFD, one[:])
}

func (l *relayLoop) run() {
	events := make([]unix.EpollEvent, 256)
	lastSweep := time.Now()
	l.spareP = runtime.GOMAXPROCS(0) >= 2
	for {
		n, err := l.wait(events, l.waitMillis(time.Now()))
		if err != nil && err != unix.EINTR {
			// Cannot happen with a valid epoll descriptor; if it does,
			// end every connection rather than leave them hanging, and
			// end Serve on each listener the loop held, loudly: left
			// alone it would wait for connections nobody accepts.
			for _, e := range l.ends {
				if e.kind == kindListener {
					e.ln.fail(fmt.Errorf("event loop for %s failed: %w", e.ln.Addr(), err))
				}
			}
			l.exit()
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
			if e == nil || (e.r != nil && e.r.finished) {
				continue
			}
			switch e.kind {
			case kindListener:
				l.acceptFrom(e, now)
			case kindHello:
				l.readHello(e, ev.Events, now)
			case kindDial:
				l.connected(e, ev.Events, now)
			default:
				l.handle(e, ev.Events, now)
			}
		}
		l.mu.Lock()
		ops, killAll, stopped := l.ops, l.killAll, l.stopped
		l.ops, l.killAll = nil, false
		l.mu.Unlock()
		for _, f := range ops {
			f()
		}
		if killAll {
			for r := range l.conns {
				l.finish(r)
			}
		}
		if stopped && len(l.conns) == 0 {
			l.exit()
			return
		}
		l.expire(now)
		if now.Sub(lastSweep) >= time.Second {
			lastSweep = now
			l.spareP = runtime.GOMAXPROCS(0) >= 2 // it may change at run time
			for r := range l.conns {
				if r.b != nil && r.b.kind == kindRelay && now.Sub(r.last) >= r.idle {
					l.finish(r)
				}
			}
		}
	}
}

// exit ends the loop: every connection and listener it holds is closed,
// and what is posted after is refused.
func (l *relayLoop) exit() {
	l.mu.Lock()
	l.dead = true
	ops := l.ops
	l.ops = nil
	l.mu.Unlock()
	for _, f := range ops {
		f()
	}
	for r := range l.conns {
		l.finish(r)
	}
	for id, e := range l.ends {
		delete(l.ends, id)
		unix.Close(e.fd)
	}
	unix.Close(l.epfd)
	unix.Close(l.wakeFD)
}

// add registers a new socket of the loop, for every event it will report.
func (l *relayLoop) add(e *relayEnd, events uint32) bool {
	e.id = l.nextID
	l.nextID++
	if l.watch(e, events) != nil {
		return false
	}
	l.ends[e.id] = e
	return true
}

// watch puts e's socket in epoll under e's id.
func (l *relayLoop) watch(e *relayEnd, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(uint32(e.id)), Pad: int32(uint32(e.id >> 32))}
	return rawEpollCtl(l.epfd, unix.EPOLL_CTL_ADD, e.fd, &ev)
}

// listenerEvents is what a listening socket is watched for: with several
// loops, EPOLLEXCLUSIVE wakes one of them per connection.
func (l *relayLoop) listenerEvents() uint32 {
	if l.many {
		return unix.EPOLLIN | unix.EPOLLEXCLUSIVE
	}
	return unix.EPOLLIN
}

// register adds a connection the Go side made, and moves what either end
// already has.
func (l *relayLoop) register(r *relayConn, now time.Time) {
	r.last = now
	l.conns[r] = struct{}{}
	if !l.add(r.a, edgeEvents) || !l.add(r.b, edgeEvents) || !l.pump(r.a, now) || !l.pump(r.b, now) {
		l.finish(r)
	}
}

// handle takes the events of one end of a relayed connection.
func (l *relayLoop) handle(e *relayEnd, events uint32, now time.Time) {
	r := e.r
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		e.readable = true
	}
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		e.hup = true
	}
	if r.b == nil || r.b.kind != kindRelay {
		return // the backend is still being dialled: its side reads e later
	}
	if events&unix.EPOLLOUT != 0 && len(e.pending) > 0 {
		if !l.flush(e, now) {
			l.finish(r)
			return
		}
	}
	if !l.pump(e, now) {
		l.finish(r)
		return
	}
	if r.a.eof && r.b.eof && len(r.a.pending) == 0 && len(r.b.pending) == 0 {
		l.finish(r)
	}
}

// pump moves what src has to its peer, until src has nothing more now or
// the peer can take no more; what the peer cannot take waits in its
// pending, and src is not read again until that is written. false means
// the connection is over (an error).
func (l *relayLoop) pump(src *relayEnd, now time.Time) bool {
	dst := src.peer
	r := src.r
	for src.readable && !src.eof && len(dst.pending) == 0 {
		n, err := readNow(src.fd, l.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			src.readable = false
			return true
		case err != nil:
			return false
		case n == 0:
			// End of stream: pass the half-close on (nothing waits
			// for dst: the loop condition).
			src.eof, src.readable = true, false
			if dst.eof && len(src.pending) == 0 {
				return true // both ways done: the close that follows ends both
			}
			return l.shutWrite(dst)
		}
		r.last = now
		if src == r.a {
			r.up += int64(n)
		} else {
			r.down += int64(n)
		}
		written, ok := l.write(dst, l.buf[:n])
		if !ok {
			return false
		}
		if written < n {
			dst.pending = append(dst.pending[:0], l.buf[written:n]...)
			return true
		}
		// A TCP socket that gives less than was asked for has nothing
		// more queued: the next byte brings a new edge. Not so once the
		// peer has finished, whose end of stream must still be read.
		if n < len(l.buf) && !src.hup {
			src.readable = false
		}
	}
	return true
}

// write writes b to dst without blocking and reports how much it took.
func (l *relayLoop) write(dst *relayEnd, b []byte) (int, bool) {
	n, err := writeAll(dst.fd, b)
	return n, err == nil
}

// writeAll writes b to fd until it is written or fd can take no more
// (EAGAIN, not an error).
func writeAll(fd int, b []byte) (int, error) {
	total := 0
	for total < len(b) {
		n, err := writeNow(fd, b[total:])
		if n > 0 {
			total += n
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return total, nil
		case err != nil:
			return total, err
		}
	}
	return total, nil
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
	if src.eof {
		return l.shutWrite(dst)
	}
	return l.pump(src, now)
}

func (l *relayLoop) shutWrite(e *relayEnd) bool {
	if e.shut {
		return true
	}
	e.shut = true
	return rawShutdown(e.fd, unix.SHUT_WR) == nil
}

// finish ends a connection: its sockets leave the loop and are closed.
func (l *relayLoop) finish(r *relayConn) {
	if r.finished {
		return
	}
	r.finished = true
	for _, e := range []*relayEnd{r.a, r.b} {
		if e == nil {
			continue
		}
		// Closing the descriptor takes it out of epoll too.
		delete(l.ends, e.id)
		rawClose(e.fd)
	}
	delete(l.conns, r)
	if r.done != nil {
		close(r.done)
		return
	}
	l.finishAccepted(r)
}

// rawWait is how long the loop waits for events without telling the
// runtime (see wait), in milliseconds.
const rawWait = 1

// wait waits up to msec milliseconds for the loop's events.
//
// Its first millisecond is waited without telling the runtime that the
// goroutine entered a system call: under load the next event comes
// within it, and the loop never enters one. Told at every wait, the
// runtime's monitor found the loop in a system call at each look and
// kept watching it every 20 µs to take its P back: wake-ups of the
// process, a sixth of its CPU time under new connections (perf record:
// runtime.usleep), which put it behind HAProxy on CPU per connection. The
// wait that follows is told: an idle loop gives its P back, so that loops
// of several Servers cannot hold every P between them for longer than
// that millisecond. With one P, waiting untold would stop every other
// goroutine: the loop tells from the start.
func (l *relayLoop) wait(events []unix.EpollEvent, msec int) (int, error) {
	if l.spareP {
		r, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&events[0])),
			uintptr(len(events)), uintptr(min(msec, rawWait)), 0, 0)
		switch {
		case e == syscall.EINTR:
			return 0, nil
		case e != 0:
			return 0, e
		case r > 0 || msec <= rawWait:
			return int(r), nil
		}
		msec -= rawWait
	}
	return unix.EpollWait(l.epfd, events, msec)
}
