package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// terminator terminates TLS with managed certificates for the routes whose
// mode is http or tcp. One generation of configuration owns one; a reload
// retires it and its HTTP servers stop taking connections, while those they
// already have run to completion.
type terminator struct {
	certs  CertSource
	logger *slog.Logger
	tls    *terminateTLS
	bufs   *bufferPool // the Server's
	// refused is the Server's Observer.Refused, or nil.
	refused func(Refusal)

	mu      sync.Mutex
	fronts  map[string]*httpFront // by backend address
	retired bool
}

// terminateTLS is one TLS configuration per mode, made once per Server: a
// configuration per connection would cost a ticket key each time and no
// client could resume, and one per configuration generation would end
// every client's resumption at each reload (SIGHUP). Its session ticket
// keys are the Server's too, for the same reason.
type terminateTLS struct {
	http, tcp *tls.Config
	keys      *ticketKeys
}

// Session ticket keys: a new one every ticketKeyRotation, and the one
// before it kept to decrypt tickets it issued, so that a ticket resumes for
// between 12 and 24 hours and a key stolen from memory opens no session
// older than a day.
const (
	ticketKeyRotation = 12 * time.Hour
	ticketKeysKept    = 2 // the current key and the previous one
)

func newTerminateTLS(certs CertSource) *terminateTLS {
	cfg := func(protos []string) *tls.Config {
		return &tls.Config{GetCertificate: certs.GetCertificate, NextProtos: protos, MinVersion: tls.VersionTLS12}
	}
	tc := &terminateTLS{http: cfg([]string{"h2", "http/1.1"}), tcp: cfg(nil)}
	tc.keys = &ticketKeys{now: time.Now, every: ticketKeyRotation, keep: ticketKeysKept, cfgs: []*tls.Config{tc.http, tc.tcp}}
	tc.keys.rotateIfDue()
	return tc
}

// ticketKeys rotates the session ticket keys of some TLS configurations on
// a schedule. crypto/tls would rotate keys of its own, but keeps each for a
// week; and keys set here are the ones a future cluster can share. Rotation
// is done by the first handshake after it is due, not by a timer, so that a
// Server owns no goroutine until it serves.
type ticketKeys struct {
	now   func() time.Time // time.Now; a test's clock
	every time.Duration
	keep  int
	cfgs  []*tls.Config

	due  atomic.Int64 // UnixNano when the next key is due; read per handshake
	mu   sync.Mutex   // serialises rotations
	keys [][32]byte   // newest first
}

// rotateIfDue makes a new key the one tickets are issued with, when one is
// due, and drops the keys older than the kept ones: tickets they issued no
// longer resume. The common case is one atomic load.
func (k *ticketKeys) rotateIfDue() {
	now := k.now()
	if now.UnixNano() < k.due.Load() {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.UnixNano() < k.due.Load() {
		return // another handshake rotated it
	}
	var key [32]byte
	rand.Read(key[:]) // never fails (crypto/rand)
	keys := append([][32]byte{key}, k.keys...)
	if len(keys) > k.keep {
		keys = keys[:k.keep]
	}
	k.keys = keys
	for _, c := range k.cfgs {
		c.SetSessionTicketKeys(keys) // safe while handshakes run
	}
	k.due.Store(now.Add(k.every).UnixNano())
}

func newTerminator(certs CertSource, tc *terminateTLS, bufs *bufferPool, logger *slog.Logger) *terminator {
	return &terminator{certs: certs, logger: logger, fronts: map[string]*httpFront{}, tls: tc, bufs: bufs}
}

// serve handles one client connection whose ClientHello is replayed by conn,
// and returns when the connection is finished. It returns false, without
// having read from conn, when t was retired before it could take conn.
func (t *terminator) serve(conn net.Conn, route *Route, cfg *Config) bool {
	t.tls.keys.rotateIfDue()
	o := route.obs
	switch route.Mode {
	case TerminateTCP:
		var cc net.Conn = conn
		var counted *countConn
		if o != nil {
			o.Opened(Terminated)
			counted = &countConn{Conn: conn, on: true}
			cc = counted
		}
		tc := tls.Server(cc, t.tls.tcp)
		if !t.handshake(tc, route, cfg) {
			if o != nil {
				o.Closed(Terminated, counted.in.Load(), counted.out.Load())
			}
			return true
		}
		backend, err := dialBackend(route, cfg, conn.RemoteAddr(), conn.LocalAddr())
		if err != nil {
			t.logger.Warn("backend unreachable; closing client connection", "backend", route.Backend, "remote", conn.RemoteAddr(), "error", err)
			if t.refused != nil {
				t.refused(RefusedBackendDown)
			}
			tc.Close()
			if o != nil {
				o.Closed(Terminated, counted.in.Load(), counted.out.Load())
			}
			return true
		}
		pipe(tc, backend, cfg.IdleTimeout, t.bufs)
		if o != nil {
			o.Closed(Terminated, counted.in.Load(), counted.out.Load())
		}
	case TerminateHTTP:
		front := t.front(route, cfg)
		if front == nil {
			return false
		}
		nc := &notifyConn{countConn: countConn{Conn: conn, on: o != nil}, done: make(chan struct{})}
		tc := tls.Server(nc, t.tls.http)
		if o != nil {
			// Done here rather than by the HTTP server, so that it
			// is timed; the server's own Handshake is then a no-op.
			o.Opened(Terminated)
			if !t.handshake(tc, route, cfg) {
				o.Closed(Terminated, nc.in.Load(), nc.out.Load())
				return true
			}
		}
		if !front.ln.push(tc) {
			if o != nil {
				tc.Close()
				o.Closed(Terminated, nc.in.Load(), nc.out.Load())
				return true // the handshake consumed the hello: it cannot be routed again
			}
			return false
		}
		<-nc.done // the HTTP server closes it when the client is done
		if o != nil {
			o.Closed(Terminated, nc.in.Load(), nc.out.Load())
		}
	}
	return true
}

// handshake completes tc's TLS handshake within the ClientHello timeout,
// tells route's observer how long it took, and reports whether it
// succeeded; a failed one is logged and closed.
func (t *terminator) handshake(tc *tls.Conn, route *Route, cfg *Config) bool {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ClientHelloTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if route.obs != nil {
		route.obs.Handshake(time.Since(start), err)
	}
	if err != nil {
		t.logger.Debug("TLS handshake failed", "remote", tc.RemoteAddr(), "error", err)
		if t.refused != nil {
			t.refused(RefusedHandshakeFailed)
		}
		tc.Close()
		return false
	}
	return true
}

// front returns the HTTP server for route's backend, starting it on first use.
func (t *terminator) front(route *Route, cfg *Config) *httpFront {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.retired {
		return nil
	}
	if f := t.fronts[route.Backend]; f != nil {
		return f
	}
	target := &url.URL{Scheme: "http", Host: route.Backend}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded() // X-Forwarded-For, -Host, -Proto (https)
			pr.Out.Host = pr.In.Host
		},
		ErrorLog: slog.NewLogLogger(t.logger.Handler(), slog.LevelWarn),
	}
	f := &httpFront{ln: newChanListener()}
	f.srv = &http.Server{
		Handler:           rp,
		ReadHeaderTimeout: cfg.ClientHelloTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(t.logger.Handler(), slog.LevelDebug),
	}
	go f.srv.Serve(f.ln)
	t.fronts[route.Backend] = f
	return f
}

// retire stops the HTTP servers taking new connections and shuts them
// down gracefully: idle kept-alive connections close now (HTTP/2 ones after
// a GOAWAY) and busy ones once their requests are done, so that clients
// reconnect to the new generation and a drain need not wait for clients
// that would keep an idle connection open until IdleTimeout.
func (t *terminator) retire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.retired = true
	for _, f := range t.fronts {
		f.ln.Close()
		go f.srv.Shutdown(context.Background()) // returns once its connections have ended
	}
}

type httpFront struct {
	ln  *chanListener
	srv *http.Server
}

// chanListener hands connections the front door accepted to an http.Server.
type chanListener struct {
	ch        chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero} }

// notifyConn tells, by closing done, when the HTTP server closed it, and
// counts the bytes that crossed it.
type notifyConn struct {
	countConn
	once sync.Once
	done chan struct{}
}

// countConn counts the bytes that cross a client connection each way,
// TLS records included, as for a relayed connection; only when on (an
// Observer wants them).
type countConn struct {
	net.Conn
	on      bool
	in, out atomic.Int64
}

func (c *countConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.on {
		c.in.Add(int64(n))
	}
	return n, err
}

func (c *countConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if c.on {
		c.out.Add(int64(n))
	}
	return n, err
}

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}
