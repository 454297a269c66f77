// Package proxy is tlsalpn's front door on :443. It peeks at each TLS
// ClientHello without consuming it, answers ACME TLS-ALPN-01 validation
// handshakes itself, and hands every other connection to a backend chosen by
// SNI: untouched, byte for byte (passthrough, so nginx or HAProxy keep
// terminating TLS as before), or after terminating TLS with a managed
// certificate.
//
// The rule that makes it safe to put in front of production: a connection
// gets a validation certificate only when its ClientHello offers exactly
// acme-tls/1 for a name with a challenge pending now. When another ACME
// client is kept beside tlsalpn, such a hello for a name with no challenge
// of tlsalpn's own pending may instead be relayed, untouched, to where
// that client answers (responder.Lookup decides; Challenge.Forward says
// where). Any other acme-tls/1 hello goes to the backend like everything
// else, so a backend that solves its own challenges keeps working.
package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/clienthello"
	"github.com/tlsalpn/tlsalpn/internal/acceptretry"
	"github.com/tlsalpn/tlsalpn/responder"
)

// Config is the part of the front door's configuration that can change on
// a reload.
type Config struct {
	Routes []Route
	// ClientHelloTimeout bounds the wait for a complete ClientHello (and
	// PROXY header); slow or silent clients are dropped after it.
	ClientHelloTimeout time.Duration // default 10 s
	// IdleTimeout closes a proxied connection when neither side has sent
	// anything for this long.
	IdleTimeout time.Duration // default 10 min
	// DialTimeout bounds connecting to a backend.
	DialTimeout time.Duration // default 5 s
	// MaxConns caps concurrent client connections; more are closed at
	// once. The default leaves room under the usual 20,000-descriptor
	// limit for both ends of every connection.
	MaxConns int // default 8,000
	// MaxHelloWaitsPerSource caps the connections one source (an IPv4
	// address, or an IPv6 /64) may have open that have not yet sent a
	// whole ClientHello; more are closed at once. A browser opens a
	// handful at a time and sends its hello within a round trip, so the
	// default leaves room for a large office behind one NAT, while one
	// machine can no longer fill the front door with silent sockets.
	// A connection from TrustedProxies is counted under the client its
	// PROXY header names, not the balancer's address, which speaks for
	// many. See gate for the eviction that protects against many sources.
	MaxHelloWaitsPerSource int // default 128
	// TrustedProxies are the networks (an L4 load balancer) allowed, and
	// required, to prefix connections with a PROXY protocol v1 or v2
	// header. Connections from anywhere else must start with TLS.
	TrustedProxies []netip.Prefix
}

// Defaults.
const (
	DefaultClientHelloTimeout = 10 * time.Second
	DefaultIdleTimeout        = 10 * time.Minute
	DefaultDialTimeout        = 5 * time.Second
	DefaultMaxConns           = 8000
	DefaultMaxHelloWaits      = 128 // per source
)

// CertSource provides the certificates the front door terminates TLS with.
type CertSource interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// state is one immutable generation of configuration.
type state struct {
	cfg        Config
	routes     *routeTable
	terminator *terminator
	relays     bool // some route is passthrough
}

// Server is the front door. Create it with New, run it with Serve.
type Server struct {
	acme   *responder.Responder
	certs  CertSource
	tls    *terminateTLS // nil without certs
	logger *slog.Logger
	obs    Observer // nil: nothing observed

	cur    atomic.Pointer[state]
	active atomic.Int64

	relay relayer // the event loops passthrough connections run on

	hellos helloReaderPool // buffered readers ClientHellos are read through
	bufs   bufferPool      // copy buffers of connections relayed by pipe

	gate gate // admission: the connection limits and eviction

	logFull, logSource, logEvict logEvery // Warn at most once a second each

	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	listeners map[net.Listener]struct{}
	shutdown  bool
	wg        sync.WaitGroup
}

// New validates cfg and returns a Server. acme answers validation
// handshakes; certs (may be nil when no route terminates TLS) provides
// certificates for terminating routes.
func New(cfg Config, acme *responder.Responder, certs CertSource, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{acme: acme, certs: certs, logger: logger, conns: map[net.Conn]struct{}{}, listeners: map[net.Listener]struct{}{}}
	if certs != nil {
		s.tls = newTerminateTLS(certs)
	}
	st, err := s.compile(cfg)
	if err != nil {
		return nil, err
	}
	s.cur.Store(st)
	return s, nil
}

func (s *Server) compile(cfg Config) (*state, error) {
	if cfg.ClientHelloTimeout <= 0 {
		cfg.ClientHelloTimeout = DefaultClientHelloTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxHelloWaitsPerSource <= 0 {
		cfg.MaxHelloWaitsPerSource = DefaultMaxHelloWaits
	}
	routes := append([]Route(nil), cfg.Routes...)
	rt, err := compileRoutes(routes)
	if err != nil {
		return nil, err
	}
	cfg.Routes = routes
	if s.obs != nil {
		for i := range routes {
			routes[i].obs = s.obs.Route(routes[i])
		}
	}
	st := &state{cfg: cfg, routes: rt}
	for i := range routes {
		st.relays = st.relays || routes[i].Mode == Passthrough
	}
	for i := range routes {
		if routes[i].Mode != Passthrough {
			if s.certs == nil {
				return nil, fmt.Errorf("route to %s terminates TLS but no certificates are managed", routes[i].Backend)
			}
			st.terminator = newTerminator(s.certs, s.tls, &s.bufs, s.logger)
			if s.obs != nil {
				st.terminator.refused = s.obs.Refused
			}
			break
		}
	}
	return st, nil
}

// Reload replaces the configuration. Established connections keep the
// configuration they started with; new ones get the new one. An invalid
// configuration is refused and the current one stays.
func (s *Server) Reload(cfg Config) error {
	st, err := s.compile(cfg)
	if err != nil {
		return fmt.Errorf("new configuration refused, the current one stays: %w", err)
	}
	old := s.cur.Swap(st)
	if old.terminator != nil {
		old.terminator.retire() // its connections finish on their own
	}
	return nil
}

// Active reports the number of client connections being handled.
func (s *Server) Active() int64 { return s.active.Load() }

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("proxy: server closed")

// Serve accepts connections on ln until Shutdown or ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	// The event loops serve a front door that relays; one that only
	// terminates TLS accepts here, as the loops would hand each of its
	// connections to a goroutine anyway, at the cost of a socket's
	// duplicate and its registration with the runtime's poller (full
	// handshakes/s: 0.90x of a minimal crypto/tls server through the
	// loops, 3 runs of bench/proxy.sh). A reload that adds a relayed
	// route relays it from goroutines, as on systems other than Linux.
	if s.cur.Load().relays {
		if err, ok := s.serveLoops(ctx, ln); ok {
			return err
		}
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var backoff acceptretry.Backoff
	for {
		conn, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.shutdown
			s.mu.Unlock()
			if closed || ctx.Err() != nil {
				return ErrServerClosed
			}
			if delay, ok := backoff.Next(err); ok {
				s.logger.Warn("accept failed; retrying", "error", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("accepting on %s: %w", ln.Addr(), err)
		}
		backoff.Reset()
		st := s.cur.Load()
		w, ok := s.admit(conn, connSource(conn.RemoteAddr(), &st.cfg), st)
		if !ok {
			conn.Close()
			continue
		}
		if !s.track(conn) {
			s.gate.release(w)
			conn.Close()
			return ErrServerClosed
		}
		go s.handle(conn, st, w)
	}
}

// admit passes conn through the gate, closing it or the connection it
// evicts, and says so in the log (once a second at most for each reason:
// under a flood the log must not become the next thing to fall over).
// c is counted under src (invalid: exempt); a refused c is the caller's
// to close, as a connection of the loops is closed by its loop.
func (s *Server) admit(c gated, src netip.Addr, st *state) (*waiter, bool) {
	cfg := &st.cfg
	w, victim, v := s.gate.admit(c, src, cfg.MaxConns, cfg.MaxHelloWaitsPerSource)
	if victim != nil {
		if s.logEvict.allow(time.Second) {
			s.logger.Warn("near the connection limit; closing the oldest connections that have not sent a ClientHello",
				"remote", victim.conn.RemoteAddr(), "max", cfg.MaxConns, "evicted_so_far", s.gate.evicted.Load())
		}
		s.refused(RefusedEvicted)
		victim.conn.Close()
	}
	switch v {
	case sourceIsFull:
		s.refused(RefusedSourceLimit)
		s.refusedSource(src, cfg)
		return nil, false
	case allFull:
		if s.logFull.allow(time.Second) {
			s.logger.Warn("connection limit reached by connections that have sent their ClientHello; closing new connections",
				"max", cfg.MaxConns, "refused_so_far", s.gate.refusedFull.Load())
		}
		s.refused(RefusedLimit)
		return nil, false
	}
	return w, true
}

// connSource is the source the gate counts a connection from remote under:
// none for a trusted balancer, which speaks for many clients (each is
// counted by the address its PROXY header gives).
func connSource(remote net.Addr, cfg *Config) netip.Addr {
	if len(cfg.TrustedProxies) > 0 && fromTrusted(remote, cfg.TrustedProxies) {
		return netip.Addr{}
	}
	return sourceOf(remote)
}

// trackLoop counts a connection the loops accepted, as track does; false
// after Shutdown.
func (s *Server) trackLoop() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	s.wg.Add(1)
	s.active.Add(1)
	return true
}

func (s *Server) untrackLoop() {
	s.active.Add(-1)
	s.wg.Done()
}

// adopt makes a connection the loops handed to a goroutine one that
// Shutdown closes at its deadline; it is counted already.
func (s *Server) adopt(c net.Conn) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.active.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.active.Add(-1)
	s.wg.Done()
}

// Shutdown stops accepting, then waits for connections to finish until ctx
// ends, and closes those still open. It is SIGTERM's graceful drain.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	listeners := make([]net.Listener, 0, len(s.listeners))
	for ln := range s.listeners {
		listeners = append(listeners, ln)
	}
	s.mu.Unlock()
	// Closed without s.mu: a loop's listener waits for its loop, which
	// may be taking s.mu to count a connection it has just accepted.
	for _, ln := range listeners {
		ln.Close()
	}
	if t := s.cur.Load().terminator; t != nil {
		t.retire()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	defer s.relay.stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	n := len(s.conns)
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.relay.closeAll() // the relayed ones, whose sockets the relay owns
	<-done
	return fmt.Errorf("closed %d connections still open at the drain deadline: %w", n, ctx.Err())
}

// refusedSource logs, once a second at most, that src had its share of
// connections waiting for their ClientHello and one more was closed.
func (s *Server) refusedSource(src netip.Addr, cfg *Config) {
	if s.logSource.allow(time.Second) {
		s.logger.Warn("one source has too many connections that have not sent a ClientHello; closing its new ones",
			"source", src, "max_per_source", cfg.MaxHelloWaitsPerSource, "refused_so_far", s.gate.refusedSource.Load())
	}
}

// handle runs one client connection, which the gate admitted as w.
// readHello reads the connection's ClientHello (after a PROXY header from
// a trusted balancer), within the ClientHello timeout and the per-source
// limits. It returns the hello, every byte read (to replay to whoever
// takes the connection), and the client's address; false when the
// connection is to be closed, which it has logged.
func (s *Server) readHello(conn net.Conn, cfg *Config, w *waiter) (*clienthello.Info, []byte, net.Addr, bool) {
	conn.SetReadDeadline(time.Now().Add(cfg.ClientHelloTimeout))

	client := conn.RemoteAddr()
	trusted := len(cfg.TrustedProxies) > 0 && fromTrusted(conn.RemoteAddr(), cfg.TrustedProxies)
	if !trusted {
		// A PROXY header would come first; a balancer is trusted not
		// to dribble.
		if err := clienthello.AwaitRecord(conn); err != nil {
			s.refused(helloRefusal(err, nil))
			s.logger.Debug("refused connection", "remote", client, "error", fmt.Errorf("waiting for the ClientHello: %w", err))
			return nil, nil, nil, false
		}
	}
	// One read usually brings the whole ClientHello; reading it record by
	// record would cost a system call per header. What is read past it is
	// replayed with it.
	br := s.hellos.get(conn)
	release := func() {
		if br != nil {
			s.hellos.put(br)
			br = nil
		}
	}
	defer release()
	var src io.Reader = br
	if trusted {
		hdr, rest, err := readProxyHeader(br)
		if err != nil {
			s.refused(RefusedBadProxyHeader)
			s.logger.Debug("refused connection from trusted proxy", "remote", conn.RemoteAddr(), "error", err)
			return nil, nil, nil, false
		}
		if hdr != nil {
			client = hdr
			if src := sourceOf(hdr); !s.gate.move(w, src, cfg.MaxHelloWaitsPerSource) {
				s.refused(RefusedSourceLimit)
				s.refusedSource(src, cfg)
				return nil, nil, nil, false
			}
		}
		src = rest
	}

	hello, err := clienthello.Read(src)
	if err != nil {
		s.refused(helloRefusal(err, hello))
		s.logger.Debug("refused connection", "remote", client, "error", err)
		return nil, nil, nil, false
	}
	if !s.gate.hello(w) {
		s.refused(RefusedEvicted)
		s.logger.Debug("connection evicted before its ClientHello was complete", "remote", client)
		return nil, nil, nil, false
	}
	// Bytes read past the ClientHello (a PROXY reader's buffer) are
	// replayed after it.
	prefix := hello.Raw
	if r, ok := src.(*bufio.Reader); ok && r.Buffered() > 0 {
		extra, _ := r.Peek(r.Buffered())
		prefix = append(prefix[:len(prefix):len(prefix)], extra...)
	}
	// Everything read is in prefix now: give the buffer back, so that a
	// connection that then sits idle for hours does not hold it.
	release()
	return hello, prefix, client, true
}

func (s *Server) handle(conn net.Conn, st *state, w *waiter) {
	hello, prefix, client, ok := s.readHello(conn, &st.cfg, w)
	if !ok {
		s.gate.release(w)
		conn.Close()
		s.untrack(conn)
		return
	}
	conn.SetReadDeadline(time.Time{})
	name := challenge.NormalizeServerName(hello.ServerName)
	var c *responder.Challenge
	if s.acme != nil {
		// One lookup decides: the handshake that follows serves what it
		// found. Any other acme-tls/1 hello is the backend's.
		var err error
		if c, err = s.acme.Lookup(name, hello.ALPN); err != nil && s.obs != nil {
			s.obs.ChallengeNotPending()
		}
	}
	s.dispatch(conn, w, name, c, prefix, client)
}

// dispatch serves a connection whose ClientHello (for name, with prefix
// everything read) is in: to the challenge c when it is one, else by
// route. It is where the loops hand a connection to a goroutine, too.
func (s *Server) dispatch(conn net.Conn, w *waiter, name string, c *responder.Challenge, prefix []byte, client net.Addr) {
	defer s.untrack(conn)
	defer s.gate.release(w)
	defer conn.Close()
	// forwarded, when set, is where another ACME client answers this
	// validation hello: relayed untouched there, by the same call as any
	// passthrough route (a call of its own here grew the stack of every
	// relayed connection by 4 KiB: BenchmarkIdleProxiedMemory).
	var forwarded *Route
	if c != nil {
		if forwarded = s.forwardRoute(c, name, client); forwarded == nil {
			s.acme.ServeConn(clienthello.Replay(conn, prefix, client), c)
			return
		}
	}
	// Route by the configuration current now, not the one at accept: a
	// reload while the client was still sending its hello applies to it,
	// and the older generation's terminator may already be retired.
	for {
		st := s.cur.Load()
		route := forwarded
		if route == nil {
			route = st.routes.match(name)
		}
		if route == nil {
			s.refused(RefusedNoRoute)
			s.logger.Debug("no route for server name; closing", "server_name", name, "remote", client)
			return
		}
		if route.Mode == Passthrough {
			s.passthrough(conn, prefix, client, route, &st.cfg)
			return
		}
		if st.terminator.serve(clienthello.Replay(conn, prefix, client), route, &st.cfg) || s.cur.Load() == st {
			return
		}
		// A reload retired st's terminator before it took the
		// connection, which is untouched: route it again.
	}
}

func (s *Server) passthrough(conn net.Conn, prefix []byte, client net.Addr, route *Route, cfg *Config) {
	backend, err := dialBackend(route, cfg, client, conn.LocalAddr())
	if err != nil {
		s.refused(RefusedBackendDown)
		s.logger.Warn("backend unreachable; closing client connection", "backend", route.Backend, "remote", client, "error", err)
		return
	}
	defer backend.Close()
	var up, down int64
	if o := route.obs; o != nil {
		o.Opened(Relayed)
		defer func() { o.Closed(Relayed, up, down) }()
	}
	backend.SetWriteDeadline(time.Now().Add(cfg.IdleTimeout))
	if _, err := backend.Write(prefix); err != nil {
		s.logger.Debug("replaying ClientHello to backend", "backend", route.Backend, "error", err)
		return
	}
	var ok bool
	if up, down, ok = s.relay.relay(conn, backend, cfg.IdleTimeout); !ok {
		up, down = pipe(conn, backend, cfg.IdleTimeout, &s.bufs)
	}
	up += int64(len(prefix))
}

// helloReaderPool holds the buffered readers ClientHellos are read
// through, so that a connection costs no 4 KiB reader of its own. Each
// Server owns one; the zero value is ready.
type helloReaderPool struct{ p sync.Pool }

// get returns a reader reading from r.
func (h *helloReaderPool) get(r io.Reader) *bufio.Reader {
	if v := h.p.Get(); v != nil {
		br := v.(*bufio.Reader)
		br.Reset(r)
		return br
	}
	return bufio.NewReaderSize(r, 4096)
}

// put returns br, which then holds no reference to its connection.
func (h *helloReaderPool) put(br *bufio.Reader) {
	br.Reset(nil)
	h.p.Put(br)
}

// Listen opens the front door's listening socket. TCP keep-alive probes are
// off, on accepted and dialled connections alike: the idle timeout already
// ends dead connections, and setting the probes costs four system calls on
// every connection, a tenth of what proxying a short one costs.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(ctx, "tcp", addr)
}

// forwardRoute is the route to where another ACME client answers name's
// challenges when c is such a challenge (Challenge.Forward), or nil when c
// is tlsalpn's own, to be answered here.
//
//go:noinline
func (s *Server) forwardRoute(c *responder.Challenge, name string, client net.Addr) *Route {
	addr := c.Forward()
	if addr == "" {
		return nil
	}
	s.logger.Info("forwarding tls-alpn-01 handshake", "server_name", name, "remote", client, "to", addr)
	return &Route{Backend: addr, Mode: Passthrough}
}
