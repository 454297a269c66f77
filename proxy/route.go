package proxy

import (
	"fmt"
	"net"
	"strings"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// Mode is what the front door does with a connection it has routed.
type Mode string

// The modes of a route.
const (
	// Passthrough splices the TLS bytes, untouched, to the backend, which
	// terminates TLS itself (nginx, HAProxy, Apache on a loopback port).
	Passthrough Mode = "passthrough"
	// TerminateHTTP terminates TLS with a managed certificate and reverse
	// proxies HTTP/1.1 and HTTP/2 requests to the backend over plain HTTP.
	TerminateHTTP Mode = "http"
	// TerminateTCP terminates TLS and pipes the plaintext to the backend.
	TerminateTCP Mode = "tcp"
)

// Route sends the connections for some server names to one backend.
type Route struct {
	// Names are exact names ("example.com") or one-label wildcards
	// ("*.example.com", which matches a.example.com but neither
	// example.com nor a.b.example.com, as in a certificate). "*" alone
	// makes this the default route, for any name no other route claims,
	// including ClientHellos without SNI.
	Names   []string
	Backend string // host:port
	Mode    Mode   // "" means Passthrough
	// SendProxy, 1 or 2, prefixes the backend connection with a PROXY
	// protocol header of that version so the backend logs the client's
	// address; 0 sends none.
	SendProxy int
}

// routeTable matches server names to routes; it is immutable once built,
// so a reload swaps a whole table atomically.
type routeTable struct {
	exact    map[string]*Route
	wildcard map[string]*Route // keyed by the parent: "example.com" for "*.example.com"
	fallback *Route
}

func compileRoutes(routes []Route) (*routeTable, error) {
	t := &routeTable{exact: map[string]*Route{}, wildcard: map[string]*Route{}}
	for i := range routes {
		r := &routes[i]
		if r.Mode == "" {
			r.Mode = Passthrough
		}
		switch r.Mode {
		case Passthrough, TerminateHTTP, TerminateTCP:
		default:
			return nil, fmt.Errorf("route %d: unknown mode %q: use passthrough, http or tcp", i+1, r.Mode)
		}
		if _, port, err := net.SplitHostPort(r.Backend); err != nil || port == "" {
			return nil, fmt.Errorf("route %d: backend %q: want host:port, e.g. 127.0.0.1:8443", i+1, r.Backend)
		}
		if r.SendProxy != 0 && r.SendProxy != 1 && r.SendProxy != 2 {
			return nil, fmt.Errorf("route %d: send_proxy %d: use 1 or 2 (PROXY protocol version), or 0 for none", i+1, r.SendProxy)
		}
		if len(r.Names) == 0 {
			return nil, fmt.Errorf("route %d (backend %s): no names: list the server names it serves, or \"*\" for the default route", i+1, r.Backend)
		}
		for _, n := range r.Names {
			switch {
			case n == "*":
				if t.fallback != nil {
					return nil, fmt.Errorf("route %d: a second default route \"*\" (the first goes to %s)", i+1, t.fallback.Backend)
				}
				t.fallback = r
			case strings.HasPrefix(n, "*."):
				parent := challenge.NormalizeServerName(n[2:])
				if parent == "" {
					return nil, fmt.Errorf("route %d: %q is not a valid wildcard name", i+1, n)
				}
				if prev, dup := t.wildcard[parent]; dup {
					return nil, fmt.Errorf("route %d: %q already routed to %s", i+1, n, prev.Backend)
				}
				t.wildcard[parent] = r
			default:
				name := challenge.NormalizeServerName(n)
				if name == "" {
					return nil, fmt.Errorf("route %d: %q is not a valid server name", i+1, n)
				}
				if prev, dup := t.exact[name]; dup {
					return nil, fmt.Errorf("route %d: %q already routed to %s", i+1, n, prev.Backend)
				}
				t.exact[name] = r
			}
		}
	}
	return t, nil
}

// match finds the route for a normalised server name ("" when the client
// sent no SNI): exact first, then the one-label wildcard, then the default.
func (t *routeTable) match(name string) *Route {
	if name != "" {
		if r := t.exact[name]; r != nil {
			return r
		}
		if i := strings.IndexByte(name, '.'); i > 0 {
			if r := t.wildcard[name[i+1:]]; r != nil {
				return r
			}
		}
	}
	return t.fallback
}
