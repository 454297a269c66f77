package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/clienthello"
	"github.com/tlsalpn/tlsalpn/responder"
)

// The front door on the relay's event loops: what Serve, handle and
// passthrough do for a connection, done without a goroutine, with the
// fewest system calls. Per new relayed connection: accept4, one read of
// the ClientHello, socket, setsockopt (TCP_NODELAY), connect, two
// epoll_ctl, one write of the PROXY header and the hello together, then
// one read and one write per message and a close per socket. A connection
// whose ClientHello asks for more than a relay (a validation, a
// terminating route, a backend to resolve) is handed to a goroutine with
// what was read, exactly as the goroutine would have read it.

// loopListener is a TCP listener whose connections the loops accept. It
// stands in Server.listeners for the Go listener, whose socket it keeps
// open; its Close takes the socket out of the loops before closing it.
type loopListener struct {
	net.Listener
	srv    *Server
	closed chan struct{}
	failed chan error // a fatal accept error: Serve returns it
	once   sync.Once
	mu     sync.Mutex
	ends   map[*relayLoop]*relayEnd // set on each loop, by the loop
}

// serveLoops serves ln on the event loops; ok is false when it cannot (not
// a TCP listener, or no loop), for Serve to accept on ln itself.
func (s *Server) serveLoops(ctx context.Context, ln net.Listener) (err error, ok bool) {
	tl, isTCP := ln.(*net.TCPListener)
	if !isTCP || s.relay.start() != nil {
		return nil, false
	}
	ll := &loopListener{Listener: ln, srv: s, closed: make(chan struct{}), failed: make(chan error, 1), ends: map[*relayLoop]*relayEnd{}}
	// Each loop takes a duplicate of the listening socket; with several
	// loops, EPOLLEXCLUSIVE wakes one of them per connection.
	var added sync.WaitGroup
	for _, l := range s.relay.loops {
		fd, err := dupFD(tl)
		if err != nil {
			ll.Close()
			return fmt.Errorf("taking listener %s into the event loop: %w", ln.Addr(), err), true
		}
		// Accepted sockets inherit TCP_NODELAY from the listening one,
		// as Go sets it on each connection it accepts: without it, a
		// small write behind one not yet acknowledged waits for the
		// client's delayed ACK (up to 40 ms), a TLS flight in pieces
		// among them.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			unix.Close(fd)
			ll.Close()
			return fmt.Errorf("setting TCP_NODELAY on listener %s: %w", ln.Addr(), err), true
		}
		e := &relayEnd{fd: fd, kind: kindListener, ln: ll}
		added.Add(1)
		if !l.post(func() {
			defer added.Done()
			if l.add(e, l.listenerEvents()) {
				ll.mu.Lock()
				ll.ends[l] = e
				ll.mu.Unlock()
			} else {
				unix.Close(fd)
			}
		}) {
			added.Done()
			unix.Close(fd)
		}
	}
	added.Wait()
	// Every loop holds the socket, or Serve fails: a loop left out
	// would never accept, and none at all would leave Serve waiting
	// for connections nobody takes.
	ll.mu.Lock()
	held := len(ll.ends)
	ll.mu.Unlock()
	if held != len(s.relay.loops) {
		ll.Close()
		return fmt.Errorf("taking listener %s into the event loops: %d of %d could watch it", ln.Addr(), held, len(s.relay.loops)), true
	}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		ll.Close()
		return ErrServerClosed, true
	}
	delete(s.listeners, ln)
	s.listeners[ll] = struct{}{}
	s.mu.Unlock()
	// The socket lives on in the loops' duplicates. The Go listener,
	// left open, would stay in the runtime's poller, whose thread then
	// wakes at every new connection only to find nobody accepting: a
	// fifth of the process's context switches under new connections
	// (perf, sched_switch). Its Addr is kept; ll.Close closes it again,
	// to no effect.
	ln.Close()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ll)
		s.mu.Unlock()
	}()
	stop := context.AfterFunc(ctx, func() { ll.Close() })
	defer stop()
	select {
	case <-ll.closed:
		return ErrServerClosed, true
	case err := <-ll.failed:
		ll.Close()
		return err, true
	}
}

// fail ends Serve with err (the first, when several loops fail).
func (ll *loopListener) fail(err error) {
	select {
	case ll.failed <- err:
	default:
	}
}

// Close takes the listening socket out of every loop, and waits until it
// is, so that no connection is accepted after Close returns.
func (ll *loopListener) Close() error {
	ll.once.Do(func() {
		var removed sync.WaitGroup
		for _, l := range ll.srv.relay.loops {
			removed.Add(1)
			if !l.post(func() {
				defer removed.Done()
				ll.mu.Lock()
				e := ll.ends[l]
				delete(ll.ends, l)
				ll.mu.Unlock()
				if e != nil {
					l.removeListener(e)
				}
			}) {
				removed.Done()
			}
		}
		removed.Wait()
		ll.Listener.Close()
		close(ll.closed)
	})
	return nil
}

func (l *relayLoop) removeListener(e *relayEnd) {
	delete(l.ends, e.id)
	for i, p := range l.paused {
		if p == e {
			l.paused = append(l.paused[:i], l.paused[i+1:]...)
			break
		}
	}
	rawClose(e.fd)
}

// accepted is the front door's part of a connection the loop accepted.
type accepted struct {
	srv    *Server
	l      *relayLoop
	r      *relayConn
	st     *state // the configuration at accept
	w      *waiter
	remote netip.AddrPort

	hello []byte // the ClientHello so far, when it came in pieces
	need  int    // bytes hello must hold before it is worth parsing again

	route     *Route
	out       []byte // the PROXY header and everything read, for the backend once connected
	prefixLen int    // of out, what the client sent
	opened    bool   // route.obs told

	deadline   time.Time
	list       *deadlineList
	prev, next *accepted
}

// Close ends the connection from outside the loop (the gate's eviction).
func (a *accepted) Close() error {
	a.l.post(func() { a.l.finish(a.r) })
	return nil
}

// source is the address the gate counts the connection under.
func (a *accepted) source() netip.Addr { return sourceIP(a.remote.Addr()) }

// RemoteAddr is the client's address.
func (a *accepted) RemoteAddr() net.Addr { return tcpAddr(a.remote) }

func tcpAddr(ap netip.AddrPort) *net.TCPAddr {
	return &net.TCPAddr{IP: ap.Addr().AsSlice(), Port: int(ap.Port()), Zone: ap.Addr().Zone()}
}

// acceptBatch is how many connections a loop accepts from a listener
// before it turns to its other events (the listener, level-triggered,
// reports again at the next turn if more wait). HAProxy's tune.maxaccept
// defaults to 4 for the same reason: under a flood of new connections, a
// connection already relayed waits for every accept of the turn, and
// each costs the loop some 20 µs of system calls (accept, read the
// ClientHello, dial). With 64, a visitor's TLS handshake took 60 ms
// (p50) during a burst of 20,000 connections (bench/hosting.sh, shared
// cores).
const acceptBatch = 4

// acceptFrom accepts what the listener has, a bounded number at a time so
// that a flood of new connections cannot starve established ones.
func (l *relayLoop) acceptFrom(e *relayEnd, now time.Time) {
	for range acceptBatch {
		fd, remote, err := rawAccept4(e.fd)
		switch {
		case err == syscall.EAGAIN:
			return
		case err == syscall.EINTR || err == syscall.ECONNABORTED:
			continue
		case err != nil:
			l.acceptFailed(e, err, now)
			return
		}
		l.backoffs.Reset()
		l.admit(e.ln, fd, remote, now)
	}
}

// acceptFailed rests the listener after a temporary error (out of
// descriptors: accepting again at once would spin), or ends Serve with a
// lasting one.
func (l *relayLoop) acceptFailed(e *relayEnd, err error, now time.Time) {
	err = os.NewSyscallError("accept4", err)
	delay, ok := l.backoffs.Next(err)
	if !ok {
		// Out of epoll at once: level-triggered, the listener would
		// report the same error at every turn until Serve takes it out.
		rawEpollCtl(l.epfd, unix.EPOLL_CTL_DEL, e.fd, nil)
		e.ln.fail(fmt.Errorf("accepting on %s: %w", e.ln.Addr(), err))
		return
	}
	e.ln.srv.logger.Warn("accept failed; retrying", "error", err, "delay", delay)
	l.rest(e, now.Add(delay))
}

// rest takes a listener out of epoll until resume (expire puts it back).
func (l *relayLoop) rest(e *relayEnd, resume time.Time) {
	if rawEpollCtl(l.epfd, unix.EPOLL_CTL_DEL, e.fd, nil) == nil {
		e.resume = resume
		l.paused = append(l.paused, e)
	}
}

// outOfDescriptors rests every listener of the loop when a backend socket
// cannot be made for want of descriptors. Accept4 still has the one that
// each closed client frees, so without the rest the listeners would take
// every waiting client only to close it, and never fail themselves:
// resting, they leave the clients in the listen queue until descriptors
// are free, as they do when accept4 itself fails.
func (l *relayLoop) outOfDescriptors(err error, now time.Time) {
	delay, _ := l.backoffs.Next(err)
	for _, e := range l.ends {
		if e.kind == kindListener && !slices.Contains(l.paused, e) {
			e.ln.srv.logger.Warn("out of file descriptors; accepting again later", "listener", e.ln.Addr(), "error", err, "delay", delay)
			l.rest(e, now.Add(delay))
		}
	}
}

// admit passes a new connection through the gate and starts reading its
// ClientHello; a balancer's connection (PROXY header first) goes to a
// goroutine.
func (l *relayLoop) admit(ll *loopListener, fd int, remote netip.AddrPort, now time.Time) {
	s := ll.srv
	st := s.cur.Load()
	cfg := &st.cfg
	if len(cfg.TrustedProxies) > 0 && trustedIP(remote.Addr(), cfg.TrustedProxies) {
		conn, err := fileConn(fd)
		if err != nil {
			s.logger.Warn("taking a balancer's connection to read its PROXY header", "remote", remote, "error", err)
			return
		}
		w, ok := s.admit(conn, connSource(conn.RemoteAddr(), cfg), st)
		if !ok {
			conn.Close()
			return
		}
		if !s.track(conn) {
			s.gate.release(w)
			conn.Close()
			return
		}
		go s.handle(conn, st, w)
		return
	}
	r := &relayConn{idle: cfg.IdleTimeout}
	a := &accepted{srv: s, l: l, r: r, st: st, remote: remote}
	r.acc = a
	r.a = &relayEnd{fd: fd, kind: kindHello, r: r}
	w, ok := s.admit(a, a.source(), st)
	if !ok {
		rawClose(fd)
		return
	}
	if !s.trackLoop() {
		s.gate.release(w)
		rawClose(fd)
		return
	}
	a.w = w
	l.conns[r] = struct{}{}
	if !l.add(r.a, edgeEvents) {
		l.finish(r)
		return
	}
	a.deadline = now.Add(cfg.ClientHelloTimeout)
	l.hellos.insert(a)
	// The hello is usually in already: a connection waits in the
	// listen queue for its turn, and a client sends its hello as soon
	// as it is connected. Reading it now takes the connection to its
	// backend in this turn of the loop, not the next, which under a
	// flood of new connections is a long way off.
	l.readHello(r.a, 0, now)
}

// fileConn makes a Go connection of a socket the loop accepted, which it
// no longer holds.
func fileConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "")
	defer f.Close()
	return net.FileConn(f)
}

// readHello reads what a client has sent of its ClientHello and, once it
// is whole, routes the connection.
func (l *relayLoop) readHello(e *relayEnd, events uint32, now time.Time) {
	r, a := e.r, e.r.acc
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		e.hup = true
	}
	for {
		n, err := readNow(e.fd, l.buf)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return
		case err != nil:
			l.refuseHello(r, fmt.Errorf("reading ClientHello: %w", os.NewSyscallError("recvfrom", err)), nil)
			return
		case n == 0:
			l.refuseHello(r, fmt.Errorf("reading ClientHello: %w after %d bytes", clienthello.ErrTruncated, len(a.hello)), a.hello)
			return
		}
		data := l.buf[:n]
		if len(a.hello) > 0 {
			a.hello = append(a.hello, data...)
			data = a.hello
		}
		if len(data) < a.need {
			if n < len(l.buf) && !e.hup {
				return
			}
			continue
		}
		hello, err := clienthello.Parse(data)
		if errors.Is(err, clienthello.ErrTruncated) {
			// A hello in pieces waits in a buffer of the bytes it sent
			// (the kernel would hold as many), parsed again only once
			// the record it is in has come whole.
			if len(a.hello) == 0 {
				a.hello = append([]byte(nil), data...)
			}
			a.need = recordsEnd(data)
			if n < len(l.buf) && !e.hup {
				return // drained: the next bytes bring a new edge
			}
			continue
		}
		if err != nil {
			l.refuseHello(r, fmt.Errorf("reading ClientHello: %w", err), data)
			return
		}
		e.readable = n == len(l.buf) || e.hup // more may be queued
		l.route(r, hello, data, now)
		return
	}
}

// recordsEnd is how many bytes data must hold before the record it ends
// in is whole: the end of its last, incomplete record, or of the next
// record header.
func recordsEnd(data []byte) int {
	off := 0
	for off+5 <= len(data) {
		off += 5 + int(binary.BigEndian.Uint16(data[off+3:]))
	}
	if off > len(data) {
		return off
	}
	return off + 5
}

// refuseHello closes a connection whose ClientHello did not come.
func (l *relayLoop) refuseHello(r *relayConn, err error, data []byte) {
	a := r.acc
	a.srv.refused(helloRefusal(err, &clienthello.Info{Raw: data}))
	a.srv.logger.Debug("refused connection", "remote", a.RemoteAddr(), "error", err)
	l.finish(r)
}

// route sends a connection whose ClientHello is whole where it goes: to a
// backend dialled here, or, when it needs more than a relay, to a
// goroutine. data is everything read, the hello first.
func (l *relayLoop) route(r *relayConn, hello *clienthello.Info, data []byte, now time.Time) {
	a := r.acc
	s := a.srv
	l.hellos.remove(a)
	a.hello = nil
	if !s.gate.hello(a.w) {
		s.refused(RefusedEvicted)
		s.logger.Debug("connection evicted before its ClientHello was complete", "remote", a.RemoteAddr())
		l.finish(r)
		return
	}
	name := challenge.NormalizeServerName(hello.ServerName)
	if s.acme != nil {
		c, err := s.acme.Lookup(name, hello.ALPN)
		if c != nil {
			l.handOff(r, name, c, data)
			return
		}
		if err != nil && s.obs != nil {
			s.obs.ChallengeNotPending()
		}
	}
	// The configuration current now, as for a goroutine: a reload while
	// the client was sending its hello applies to it.
	st := s.cur.Load()
	a.st = st
	r.idle = st.cfg.IdleTimeout
	route := st.routes.match(name)
	switch {
	case route == nil:
		s.refused(RefusedNoRoute)
		s.logger.Debug("no route for server name; closing", "server_name", hello.ServerName, "remote", a.RemoteAddr())
		l.finish(r)
	case route.Mode != Passthrough || !route.dialAddr.IsValid():
		l.handOff(r, name, nil, data)
	default:
		l.dial(r, route, data, now)
	}
}

// handOff gives the connection to a goroutine, which carries on from the
// ClientHello as handle would, with data replayed first.
func (l *relayLoop) handOff(r *relayConn, name string, c *responder.Challenge, data []byte) {
	a := r.acc
	s := a.srv
	prefix := append([]byte(nil), data...)
	fd := r.a.fd
	// Out of epoll first: the registration lives as long as any
	// descriptor of the socket, and the Go connection holds a duplicate.
	rawEpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	delete(l.ends, r.a.id)
	delete(l.conns, r)
	r.finished = true
	conn, err := fileConn(fd)
	if err != nil {
		s.logger.Warn("handing a connection to a goroutine", "remote", a.RemoteAddr(), "error", err)
		s.gate.release(a.w)
		s.untrackLoop()
		return
	}
	s.adopt(conn)
	go s.dispatch(conn, a.w, name, c, prefix, a.RemoteAddr())
}

// dial connects to route's backend without waiting; connected carries on.
func (l *relayLoop) dial(r *relayConn, route *Route, data []byte, now time.Time) {
	a := r.acc
	a.route = route
	var hdr []byte
	if route.SendProxy != 0 {
		h, err := proxyHeader(route.SendProxy, a.remote, r.a.fd)
		if err != nil {
			l.backendDown(r, fmt.Errorf("writing PROXY header to backend %s: %w", route.Backend, err))
			return
		}
		hdr = h
	}
	// The header and the hello go in one write.
	a.out = make([]byte, 0, len(hdr)+len(data))
	a.out = append(append(a.out, hdr...), data...)
	a.prefixLen = len(data)
	r.a.kind = kindRelay

	fd, err := rawSocket(route.dialAddr)
	if err == unix.EMFILE || err == unix.ENFILE {
		l.outOfDescriptors(os.NewSyscallError("socket", err), now)
	}
	if err != nil {
		l.backendDown(r, fmt.Errorf("dialling backend %s: %w", route.Backend, os.NewSyscallError("socket", err)))
		return
	}
	b := &relayEnd{fd: fd, kind: kindDial, r: r, peer: r.a}
	r.b, r.a.peer = b, b
	rawSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := rawConnect(fd, route.dialAddr); err != nil && err != unix.EINPROGRESS {
		rawClose(fd)
		r.b = nil
		l.backendDown(r, fmt.Errorf("dialling backend %s: %w", route.Backend, os.NewSyscallError("connect", err)))
		return
	}
	if !l.add(b, edgeEvents) {
		rawClose(fd)
		r.b = nil
		l.backendDown(r, fmt.Errorf("dialling backend %s: cannot watch the socket", route.Backend))
		return
	}
	a.deadline = now.Add(a.st.cfg.DialTimeout)
	l.dials.insert(a)
}

// proxyHeader is the PROXY protocol header for a client connected to the
// socket fd.
func proxyHeader(version int, client netip.AddrPort, fd int) ([]byte, error) {
	local, err := rawGetsockname(fd)
	if err != nil {
		return nil, os.NewSyscallError("getsockname", err)
	}
	h := proxyproto.HeaderProxyFromAddrs(byte(version), tcpAddr(client), tcpAddr(local))
	if h.Command.IsLocal() {
		return nil, fmt.Errorf("cannot express %v → %v in a PROXY header", client, local)
	}
	return h.Format()
}

// connected takes the first events of a backend being dialled: the
// connection is made (writable) or failed.
func (l *relayLoop) connected(b *relayEnd, events uint32, now time.Time) {
	r, a := b.r, b.r.acc
	if events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
		return
	}
	if events&unix.EPOLLERR != 0 || events&unix.EPOLLOUT == 0 {
		soErr, err := rawGetsockoptInt(b.fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err == nil {
			err = unix.Errno(soErr)
		}
		if err == unix.Errno(0) {
			err = unix.ECONNRESET
		}
		l.backendDown(r, fmt.Errorf("dialling backend %s: %w", a.route.Backend, os.NewSyscallError("connect", err)))
		return
	}
	l.dials.remove(a)
	b.kind = kindRelay
	n, err := writeAll(b.fd, a.out)
	if err != nil {
		l.backendDown(r, fmt.Errorf("dialling backend %s: %w", a.route.Backend, os.NewSyscallError("sendto", err)))
		return
	}
	if n < len(a.out) {
		b.pending = a.out[n:]
	}
	a.out = nil
	if o := a.route.obs; o != nil {
		o.Opened(Relayed)
		a.opened = true
	}
	r.up = int64(a.prefixLen)
	r.last = now
	if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP) != 0 {
		b.readable = true
		b.hup = events&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0
	}
	if !l.pump(r.a, now) || !l.pump(b, now) {
		l.finish(r)
	}
}

// backendDown closes a connection whose backend cannot be reached.
func (l *relayLoop) backendDown(r *relayConn, err error) {
	a := r.acc
	a.srv.refused(RefusedBackendDown)
	a.srv.logger.Warn("backend unreachable; closing client connection", "backend", a.route.Backend, "remote", a.RemoteAddr(), "error", err)
	l.finish(r)
}

// finishAccepted is finish's end for a connection the loop accepted.
func (l *relayLoop) finishAccepted(r *relayConn) {
	a := r.acc
	if a.list != nil {
		a.list.remove(a)
	}
	s := a.srv
	if a.opened {
		a.route.obs.Closed(Relayed, r.up, r.down)
	}
	s.gate.release(a.w)
	s.untrackLoop()
}

// expire ends connections whose ClientHello or backend is late, and
// resumes listeners whose rest is over.
func (l *relayLoop) expire(now time.Time) {
	for a := l.hellos.head; a != nil && !a.deadline.After(now); a = l.hellos.head {
		l.refuseHello(a.r, fmt.Errorf("reading ClientHello: %w", os.ErrDeadlineExceeded), a.hello)
	}
	for a := l.dials.head; a != nil && !a.deadline.After(now); a = l.dials.head {
		l.backendDown(a.r, fmt.Errorf("dialling backend %s: %w after %v", a.route.Backend, os.ErrDeadlineExceeded, a.st.cfg.DialTimeout))
	}
	for i := 0; i < len(l.paused); {
		e := l.paused[i]
		if e.resume.After(now) {
			i++
			continue
		}
		l.paused = append(l.paused[:i], l.paused[i+1:]...)
		if err := l.watch(e, l.listenerEvents()); err != nil {
			// Not watched, it would never accept again: Serve ends
			// with the error instead.
			e.ln.fail(fmt.Errorf("accepting on %s again after a rest: %w", e.ln.Addr(), os.NewSyscallError("epoll_ctl", err)))
		}
	}
}

// waitMillis is how long epoll_wait may sleep: until the next deadline,
// and a second at most, for the idle sweep.
func (l *relayLoop) waitMillis(now time.Time) int {
	next := now.Add(time.Second)
	for _, a := range [...]*accepted{l.hellos.head, l.dials.head} {
		if a != nil && a.deadline.Before(next) {
			next = a.deadline
		}
	}
	for _, e := range l.paused {
		if e.resume.Before(next) {
			next = e.resume
		}
	}
	d := next.Sub(now)
	if d <= 0 {
		return 0
	}
	return int((d + time.Millisecond - 1) / time.Millisecond)
}

// deadlineList holds connections in the order of their deadlines. Those
// of one list have nearly always the same timeout, so a new one goes at
// the tail, and a reload that shortens it walks back a little.
type deadlineList struct{ head, tail *accepted }

func (d *deadlineList) insert(a *accepted) {
	a.list = d
	at := d.tail
	for at != nil && at.deadline.After(a.deadline) {
		at = at.prev
	}
	a.prev = at
	if at == nil {
		a.next = d.head
		d.head = a
	} else {
		a.next = at.next
		at.next = a
	}
	if a.next != nil {
		a.next.prev = a
	} else {
		d.tail = a
	}
}

func (d *deadlineList) remove(a *accepted) {
	if a.list != d {
		return
	}
	if a.prev != nil {
		a.prev.next = a.next
	} else {
		d.head = a.next
	}
	if a.next != nil {
		a.next.prev = a.prev
	} else {
		d.tail = a.prev
	}
	a.prev, a.next, a.list = nil, nil, nil
}
