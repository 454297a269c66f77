package proxy

import (
	"bytes"
	"errors"
	"net"
	"time"

	"github.com/tlsalpn/tlsalpn/clienthello"
)

// Path is how the front door carried a connection it routed.
type Path string

// The paths. A connection steered by the kernel straight to the backend's
// socket (package steer) never reaches the proxy, so it has no Path here:
// it is not counted by the front door at all.
const (
	// Relayed is a passthrough connection copied byte for byte.
	Relayed Path = "relayed"
	// Terminated is a connection whose TLS the front door terminated
	// (mode http or tcp).
	Terminated Path = "terminated"
)

// Refusal is why the front door closed a connection without routing it.
type Refusal string

// The refusals.
const (
	RefusedLimit           Refusal = "limit"        // max_connections reached by connections past their ClientHello
	RefusedSourceLimit     Refusal = "source_limit" // one source holds max_hello_waits_per_source
	RefusedEvicted         Refusal = "evicted"      // closed before its ClientHello to make room near the limit
	RefusedHelloTimeout    Refusal = "client_hello_timeout"
	RefusedBadHello        Refusal = "bad_client_hello" // not TLS, malformed, or closed before a whole ClientHello
	RefusedUntrustedProxy  Refusal = "untrusted_proxy"  // a PROXY header from outside trusted_proxies
	RefusedBadProxyHeader  Refusal = "bad_proxy_header" // a trusted balancer sent no valid PROXY header
	RefusedNoRoute         Refusal = "no_route"
	RefusedBackendDown     Refusal = "backend_unreachable"
	RefusedHandshakeFailed Refusal = "tls_handshake_failed" // terminate mode
)

// Observer receives what the front door does with connections, for
// metrics. Its methods are called on connection goroutines and must not
// block. Route is called when a configuration is compiled (New, Reload),
// once per route, so that what happens per connection costs no lookup
// and no allocation: the RouteObserver it returns holds that route's
// counters, already resolved.
//
// A nil Observer (the default) costs one nil check per event.
type Observer interface {
	Route(r Route) RouteObserver
	Refused(reason Refusal)
	// ChallengeNotPending is an acme-tls/1 ClientHello for a name with
	// no challenge pending, handed to the backend like any other (RFC
	// 8737 forbids answering it).
	ChallengeNotPending()
}

// RouteObserver counts one route's connections.
type RouteObserver interface {
	// Opened and Closed bracket a connection on path p; up and down are
	// the bytes carried from the client and to it (0 when unknown).
	Opened(p Path)
	Closed(p Path, up, down int64)
	// Handshake is the duration of a TLS handshake the front door
	// terminated for this route; err is its outcome.
	Handshake(d time.Duration, err error)
}

// SetObserver makes o the Server's Observer. Call it before Serve: the
// configuration is compiled again, so that each route has its
// RouteObserver.
func (s *Server) SetObserver(o Observer) error {
	s.obs = o
	return s.Reload(s.cur.Load().cfg)
}

func (s *Server) refused(r Refusal) {
	if s.obs != nil {
		s.obs.Refused(r)
	}
}

// helloRefusal is the Refusal for a connection whose ClientHello could
// not be read: err is the error, hello what Read returned (its Raw holds
// the bytes read). A PROXY protocol header (v1 "PROXY ", v2's signature)
// from an address outside trusted_proxies is told apart, since it means
// a balancer is missing from the configuration.
func helloRefusal(err error, hello *clienthello.Info) Refusal {
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return RefusedHelloTimeout
	}
	if hello != nil && (bytes.HasPrefix(hello.Raw, []byte("PROXY")) || bytes.HasPrefix(hello.Raw, []byte("\r\n\r\n\x00"))) {
		return RefusedUntrustedProxy
	}
	return RefusedBadHello
}
