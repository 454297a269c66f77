// Package responder answers ACME TLS-ALPN-01 validation handshakes (RFC 8737).
//
// A validation certificate is self-signed and names exactly one identifier, so a
// normal client that received it would see a broken site, and a security scanner
// would flag it. The responder therefore serves one only when the ClientHello
// offers exactly the ALPN protocol "acme-tls/1" and its server name is a
// challenge that is pending now; every other handshake is left to the server's
// own configuration, or refused by the standalone listener.
//
// It can be used two ways: as a standalone listener (Serve), while a command
// such as "tlsalpn issue" validates; or inside any Go TLS server through
// TLSConfig or GetConfigForClient, so that the server keeps serving its real
// certificates while it also answers the CA.
//
// The challenges may also be another ACME client's, kept beside tlsalpn:
// published through ualpn's socket protocol (ServeUALPN), read from the
// directory it writes them to, or relayed to where it answers (see
// KeepClient). The rule above holds for them all.
package responder

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/internal/acceptretry"
)

// HandshakeTimeout bounds one validation connection from accept to close; the
// CA itself gives up after 10 s (Boulder) or 15 s (Pebble).
const HandshakeTimeout = 10 * time.Second

// maxConcurrent bounds the handshakes the standalone listener runs at once, so
// that a flood of connections cannot exhaust memory while a challenge is up.
const maxConcurrent = 256

// Event describes one handshake that offered acme-tls/1. It lets a caller
// show the CA's validation connections as they happen, and lets the issuer
// poll the authorization as soon as the CA has been served instead of on a
// blind timer (RFC 8555 §7.5.1).
type Event struct {
	RemoteAddr net.Addr
	ServerName string   // as normalised (lower case, no trailing dot, A-label)
	ALPN       []string // the protocols the client offered
	// Served is true when a validation certificate was chosen for this
	// handshake; Err says why not otherwise.
	Served bool
	Err    error
}

// ErrNoChallenge is the reason a validation handshake was refused when no
// challenge is pending for its server name. RFC 8737 §5 forbids agreeing to
// acme-tls/1 blindly.
var ErrNoChallenge = errors.New("no pending tls-alpn-01 challenge for this server name")

// ErrNotACME is the reason the standalone listener refuses a handshake that
// does not offer exactly acme-tls/1: it has no real certificate to give.
var ErrNotACME = errors.New("client did not offer exactly ALPN acme-tls/1; this listener only answers ACME validation")

// Challenge is one published challenge, as Lookup finds it for a
// handshake. It is opaque: a front door passes it back to ServeConn, so
// that one lookup decides the whole handshake.
type Challenge struct {
	name string // as normalised; the key in Responder.pending
	cert *tls.Certificate
	seen chan struct{} // capacity 1; a send means "the CA has been served"
	done chan struct{} // closed by the Unpublish that removes this entry
	// forward, when set, is the address this handshake is relayed to,
	// byte for byte, instead of being answered here (cert is nil): the
	// third outcome of Lookup, for another ACME client's responder.
	forward string
}

// Forward returns the address a front door must relay this validation
// handshake to, untouched, or "" when it is answered here (ServeConn).
func (c *Challenge) Forward() string { return c.forward }

// withdrawn reports whether c was unpublished since it was looked up.
func (c *Challenge) withdrawn() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Responder holds the pending challenge certificates and answers for them.
// Its zero value is not usable; call New.
//
// At most one challenge is pending per server name. Two orders may need the
// same name validated at once (two certificates that share a name renewing
// together), but a validation handshake cannot say which of them it is for:
// the CA sends only the SNI and the ALPN protocol acme-tls/1, and the token
// that would tell two challenges apart is not in the handshake (RFC 8737 §3).
// Whichever certificate were served, the other challenge would fail. So
// challenges for one name take turns: Publish for a name that is already
// pending waits until that challenge is unpublished.
type Responder struct {
	logger  *slog.Logger
	observe func(Event)
	// handshakeTimeout is HandshakeTimeout; tests shorten it.
	handshakeTimeout time.Duration
	// ualpnTTL is ualpnAuthTTL; tests shorten it.
	ualpnTTL time.Duration

	// holds counts the Publish calls that succeeded or are still waiting,
	// not yet unpublished, and tells the pending hook (WithPendingHook).
	// Its lock is apart from mu so that a slow hook never holds up a
	// handshake's lookup.
	holds holdCount

	mu      sync.RWMutex
	pending map[string]*Challenge // keyed by the SNI the CA sends

	// keep is how challenges of another ACME client are found (a
	// challenge directory, an address to forward to); nil for none.
	keep atomic.Pointer[KeepClient]
}

// Option configures a Responder.
type Option func(*Responder)

// WithLogger sets the logger; by default nothing is logged.
func WithLogger(l *slog.Logger) Option { return func(r *Responder) { r.logger = l } }

// WithObserver calls fn for every handshake that offered acme-tls/1. fn runs
// on the handshake's goroutine and must not block.
func WithObserver(fn func(Event)) Option { return func(r *Responder) { r.observe = fn } }

// WithPendingHook calls fn(ctx, true) before the first challenge is
// published (ctx is that Publish's) and fn(ctx, false) after the last one
// is withdrawn: "first pending, last withdrawn". Whatever must hold while
// the CA may connect hangs on it: a front door stops steering connections
// past itself, a standalone listener binds. A Publish that waits for its
// name's turn counts as pending. If fn(ctx, true) fails, that Publish
// fails with its error and publishes nothing, because the CA's
// connection would not reach this responder; an error from fn(ctx,
// false) is logged. Calls to fn are serialised.
func WithPendingHook(fn func(ctx context.Context, pending bool) error) Option {
	return func(r *Responder) { r.holds.hook = fn }
}

// New returns a Responder with no pending challenges.
func New(opts ...Option) *Responder {
	r := &Responder{pending: make(map[string]*Challenge), handshakeTimeout: HandshakeTimeout, ualpnTTL: ualpnAuthTTL}
	for _, o := range opts {
		o(r)
	}
	if r.logger == nil {
		r.logger = slog.New(slog.DiscardHandler)
	}
	return r
}

// Publish makes cert the answer for handshakes whose SNI is serverName (the
// value challenge.ServerName gives for the identifier). The returned channel
// receives a value, without blocking the responder, each time a validation
// handshake for serverName is served; the issuer uses it to time its polling.
//
// If a challenge is already pending for serverName, Publish waits until it
// is unpublished, because a handshake cannot tell two challenges for one
// name apart (see Responder); several waiters for one name are published
// one at a time, in no particular order. If ctx ends first, Publish returns
// an error wrapping ctx.Err() and publishes nothing, leaving the pending
// challenge as it was.
//
// Every successful Publish must be followed by exactly one Unpublish for the
// same name, and a failed one by none: Unpublish withdraws whatever is
// pending for the name, which, as the name's challenges take turns, is the
// caller's own only if the calls are paired.
func (r *Responder) Publish(ctx context.Context, serverName string, cert *tls.Certificate) (<-chan struct{}, error) {
	name := challenge.NormalizeServerName(serverName)
	if name == "" {
		return nil, fmt.Errorf("publishing challenge for %q: not a valid server name", serverName)
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, fmt.Errorf("publishing challenge for %q: no certificate", serverName)
	}
	if err := r.holds.acquire(ctx); err != nil {
		return nil, fmt.Errorf("publishing challenge for %q: %w", serverName, err)
	}
	e := &Challenge{name: name, cert: cert, seen: make(chan struct{}, 1), done: make(chan struct{})}
	for {
		r.mu.Lock()
		cur := r.pending[name]
		if cur == nil {
			r.pending[name] = e
			r.mu.Unlock()
			return e.seen, nil
		}
		r.mu.Unlock()
		// Another waiter may take the turn first when cur is
		// withdrawn; then wait for that one.
		select {
		case <-cur.done:
		case <-ctx.Done():
			r.holds.release(ctx, r.logger)
			return nil, fmt.Errorf("publishing challenge for %q: waited for another pending challenge for that name to be withdrawn: %w", serverName, ctx.Err())
		}
	}
}

// Unpublish withdraws the challenge pending for serverName, so that later
// handshakes for it are refused, and lets the next Publish waiting for
// serverName, if any, go ahead. Unpublishing a name that is not pending is
// not an error and does nothing. Pair it with one successful Publish: see
// there.
func (r *Responder) Unpublish(ctx context.Context, serverName string) error {
	name := challenge.NormalizeServerName(serverName)
	r.mu.Lock()
	e := r.pending[name]
	if e != nil {
		delete(r.pending, name)
		close(e.done)
	}
	r.mu.Unlock()
	if e != nil {
		r.holds.release(ctx, r.logger)
	}
	return nil
}

// Pending reports how many challenges are published now.
func (r *Responder) Pending() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.pending)
}

// PendingNames returns the server names a challenge is published for
// now, sorted.
func (r *Responder) PendingNames() []string {
	r.mu.RLock()
	names := make([]string, 0, len(r.pending))
	for n := range r.pending {
		names = append(names, n)
	}
	r.mu.RUnlock()
	slices.Sort(names)
	return names
}

// IsValidationHello reports whether hello is a TLS-ALPN-01 validation
// attempt: the client offers exactly one protocol, acme-tls/1, as the CA does.
// A client offering acme-tls/1 among others (a browser never does) is treated
// as a normal client, so it can never be handed a validation certificate.
func IsValidationHello(alpn []string) bool {
	return len(alpn) == 1 && alpn[0] == challenge.ALPNProto
}

// Lookup decides whether a handshake offering alpn for serverName is
// answered here: it returns (nil, nil) when it is not a validation
// handshake (see IsValidationHello); the pending Challenge when it is one
// for a name with a challenge published, or with a valid certificate in
// the challenge directory (see KeepClient); a Challenge whose Forward is
// the address to relay the handshake to when no challenge of ours is
// pending and forwarding is configured for the name; and (nil,
// ErrNoChallenge) otherwise. It is the one place the acme-tls/1 decision
// is made, for GetConfigForClient and for a front door that peeked the
// ClientHello and hands the connection to ServeConn (or, for a forwarded
// one, relays it) with what Lookup returned.
func (r *Responder) Lookup(serverName string, alpn []string) (*Challenge, error) {
	if !IsValidationHello(alpn) {
		return nil, nil
	}
	name := challenge.NormalizeServerName(serverName)
	if c := r.lookup(name); c != nil {
		return c, nil
	}
	if k := r.keep.Load(); k != nil && name != "" {
		if c := k.lookup(name, r.logger); c != nil {
			return c, nil
		}
	}
	return nil, ErrNoChallenge
}

func (r *Responder) lookup(name string) *Challenge {
	if name == "" {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.pending[name]
}

// GetConfigForClient returns the TLS configuration for a validation
// handshake, an error refusing it when no challenge is pending for its SNI,
// and (nil, nil) for every other handshake, so that a server's own
// configuration applies unchanged. It has the signature of
// tls.Config.GetConfigForClient.
func (r *Responder) GetConfigForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	c, err := r.Lookup(hello.ServerName, hello.SupportedProtos)
	if c == nil && err == nil {
		return nil, nil
	}
	return r.answer(hello, c)
}

// answer serves c, as Lookup found it for hello, or refuses hello when c
// is nil or was withdrawn since.
func (r *Responder) answer(hello *tls.ClientHelloInfo, c *Challenge) (*tls.Config, error) {
	var remote net.Addr
	if hello.Conn != nil {
		remote = hello.Conn.RemoteAddr()
	}
	ev := Event{RemoteAddr: remote, ALPN: hello.SupportedProtos}
	if c != nil && c.forward != "" {
		// Only a front door that peeked the hello can relay it; a
		// handshake already under way here cannot be.
		ev.ServerName = c.name
		ev.Err = ErrForwardOnly
		r.emit(ev)
		return nil, fmt.Errorf("tls-alpn-01 handshake for %q from %v: %w", hello.ServerName, remote, ErrForwardOnly)
	}
	if c == nil || c.withdrawn() {
		ev.ServerName = challenge.NormalizeServerName(hello.ServerName)
		ev.Err = ErrNoChallenge
		r.emit(ev)
		return nil, fmt.Errorf("tls-alpn-01 handshake for %q from %v: %w", hello.ServerName, remote, ErrNoChallenge)
	}
	ev.ServerName = c.name
	ev.Served = true
	r.emit(ev)
	return &tls.Config{
		Certificates: []tls.Certificate{*c.cert},
		NextProtos:   []string{challenge.ALPNProto},
		// The CA requires TLS 1.2 at least; nothing older is offered.
		MinVersion: tls.VersionTLS12,
		// No resumption either way: a ticket issued here would let a
		// later normal handshake resume into this validation
		// certificate, and a validation handshake resuming a normal
		// session would show the CA the server's real certificate.
		SessionTicketsDisabled: true,
		// VerifyConnection runs once the server has sent its certificate:
		// the CA has what it came for, so the issuer may poll now.
		VerifyConnection: func(tls.ConnectionState) error {
			select {
			case c.seen <- struct{}{}:
			default:
			}
			return nil
		},
	}, nil
}

func (r *Responder) emit(ev Event) {
	if ev.Served {
		r.logger.Info("serving tls-alpn-01 challenge", "server_name", ev.ServerName, "remote", ev.RemoteAddr)
	} else {
		r.logger.Warn("refused tls-alpn-01 handshake", "server_name", ev.ServerName, "remote", ev.RemoteAddr, "reason", ev.Err)
	}
	if r.observe != nil {
		r.observe(ev)
	}
}

// TLSConfig returns a copy of base (which may be nil) that answers
// validation handshakes before base's own GetConfigForClient, if any, is
// consulted. Install it in any Go TLS server to solve TLS-ALPN-01 on the
// port that server already owns.
func (r *Responder) TLSConfig(base *tls.Config) *tls.Config {
	var cfg *tls.Config
	if base == nil {
		cfg = &tls.Config{}
	} else {
		cfg = base.Clone()
	}
	next := cfg.GetConfigForClient
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		c, err := r.GetConfigForClient(hello)
		if c != nil || err != nil {
			return c, err
		}
		if next != nil {
			return next(hello)
		}
		return nil, nil
	}
	return cfg
}

// ConfigureHTTPServer makes srv, a net/http server that serves TLS,
// answer validation handshakes too: it installs TLSConfig on srv.TLSConfig
// and tells srv to close acme-tls/1 connections after the handshake, which
// net/http would otherwise serve as HTTP/1.1.
func (r *Responder) ConfigureHTTPServer(srv *http.Server) {
	srv.TLSConfig = r.TLSConfig(srv.TLSConfig)
	if srv.TLSNextProto == nil {
		// A non-nil TLSNextProto without "h2" is net/http's historic way
		// to turn HTTP/2 off; keep what the nil map meant by saying so.
		if srv.Protocols == nil {
			srv.Protocols = new(http.Protocols)
			srv.Protocols.SetHTTP1(true)
			srv.Protocols.SetHTTP2(true)
		}
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	srv.TLSNextProto[challenge.ALPNProto] = func(_ *http.Server, c *tls.Conn, _ http.Handler) { c.Close() }
}

// standaloneConfig refuses everything that is not a validation handshake.
func (r *Responder) standaloneConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			c, err := r.GetConfigForClient(hello)
			if c == nil && err == nil {
				return nil, fmt.Errorf("handshake for %q offering %q: %w", hello.ServerName, hello.SupportedProtos, ErrNotACME)
			}
			return c, err
		},
	}
}

// Serve answers validation handshakes on ln until ctx ends, then closes ln
// and waits for the handshakes in flight. Each connection gets one
// handshake and is closed without application data (RFC 8737 §4). Serve
// returns nil when ctx ended it, or the listener's error; ln is closed
// either way.
func (r *Responder) Serve(ctx context.Context, ln net.Listener) error {
	cfg := r.standaloneConfig()
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxConcurrent)
	defer wg.Wait()
	return acceptEach(ctx, ln, "validation connections", func(conn net.Conn) {
		select {
		case sem <- struct{}{}:
		default:
			// Over the limit: drop rather than queue; the CA retries
			// from other vantage points.
			conn.Close()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r.handle(ctx, conn, cfg)
		}()
	})
}

// acceptEach gives each connection accepted on ln to each, in the loop,
// until ctx ends (then it returns nil) or ln fails for good (then that
// error, saying what was being accepted). Temporary failures (EMFILE and
// the like) are paused through, not spun on. ln is closed however it
// ends: a listener left bound with nobody accepting would make the CA, or
// the hook's client, wait for its own timeout. Serve and ServeUALPN share
// it, so both listeners keep serving through the same failures.
func acceptEach(ctx context.Context, ln net.Listener, what string, each func(net.Conn)) error {
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var backoff acceptretry.Backoff
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if delay, ok := backoff.Next(err); ok {
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("accepting %s on %s: %w", what, ln.Addr(), err)
		}
		backoff.Reset()
		each(conn)
	}
}

func (r *Responder) handle(ctx context.Context, conn net.Conn, cfg *tls.Config) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(r.handshakeTimeout))
	tc := tls.Server(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, r.handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		r.logger.Debug("validation handshake failed", "remote", conn.RemoteAddr(), "error", err)
		return
	}
	// No application data: close_notify and done.
	tc.Close()
}
