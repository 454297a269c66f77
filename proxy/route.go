package proxy

import (
	"errors"
	"net/netip"
	"strings"
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

	// obs counts this route's connections: set by the Server when it
	// compiles a configuration with an Observer, nil otherwise.
	obs RouteObserver
	// dialAddr is Backend when it is an address (no name to resolve): the
	// event loops dial only those themselves.
	dialAddr netip.AddrPort
}

// routeTable matches server names to routes; it is immutable once built,
// so a reload swaps a whole table atomically. The maps hold indexes into
// routes: checkRoutes needs a name's route index to word a duplicate,
// and the table it fills as it checks is the one that routes, so a
// reload normalises each name once.
type routeTable struct {
	routes   []Route
	exact    map[string]int32
	wildcard map[string]int32 // keyed by the parent: "example.com" for "*.example.com"
	fallback int32            // -1: no default route
}

// compileRoutes builds the table for routes, or returns every problem
// CheckRoutes would report, joined; it sets each empty Mode to
// Passthrough. The table refers to routes, which the caller must not
// change afterwards.
func compileRoutes(routes []Route) (*routeTable, error) {
	t, errs := checkRoutes(routes)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for i := range routes {
		r := &routes[i]
		if r.Mode == "" {
			r.Mode = Passthrough
		}
		if ap, err := netip.ParseAddrPort(r.Backend); err == nil && ap.Addr().Zone() == "" {
			r.dialAddr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		}
	}
	return t, nil
}

// match finds the route for a normalised server name ("" when the client
// sent no SNI): exact first, then the one-label wildcard, then the default.
func (t *routeTable) match(name string) *Route {
	if name != "" {
		if i, ok := t.exact[name]; ok {
			return &t.routes[i]
		}
		if i := strings.IndexByte(name, '.'); i > 0 {
			if r, ok := t.wildcard[name[i+1:]]; ok {
				return &t.routes[r]
			}
		}
	}
	if t.fallback < 0 {
		return nil
	}
	return &t.routes[t.fallback]
}
