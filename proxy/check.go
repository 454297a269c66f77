package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// The routes are checked here, by the package that uses them, and nowhere
// else: a configuration file maps each *RouteError to the line of the
// field it names, and New and Reload refuse what CheckRoutes reports.

// RouteField names the field of a Route an error is about; the values are
// the keys a configuration file uses for them.
type RouteField string

// The fields of a Route.
const (
	FieldNames     RouteField = "names"
	FieldBackend   RouteField = "backend"
	FieldMode      RouteField = "mode"
	FieldSendProxy RouteField = "send_proxy"
)

// RouteError is one problem with one route.
type RouteError struct {
	Route int        // index into the routes
	Field RouteField // FieldNames, FieldBackend, FieldMode or FieldSendProxy
	Name  int        // index into Names, when Field is FieldNames and the error is about one name
	Err   error
}

func (e *RouteError) Error() string {
	if e.Field == FieldNames || e.Field == "" {
		return fmt.Sprintf("route %d: %v", e.Route+1, e.Err)
	}
	return fmt.Sprintf("route %d: %s: %v", e.Route+1, e.Field, e.Err)
}

func (e *RouteError) Unwrap() error { return e.Err }

var (
	// ErrNoNames is a route that lists no server names.
	ErrNoNames = errors.New("no names: list the server names the route serves, or \"*\" for the default route")
	// ErrNoBackend is a route without a backend address.
	ErrNoBackend = errors.New("no backend: give the host:port of the server the route's names go to")
)

// UnknownModeError is a Mode other than Passthrough, TerminateHTTP and
// TerminateTCP.
type UnknownModeError struct{ Mode string }

func (e *UnknownModeError) Error() string {
	return fmt.Sprintf("unknown mode %q: want passthrough (TLS goes to the backend untouched), http (terminate TLS, proxy HTTP) or tcp (terminate TLS, pipe bytes)", e.Mode)
}

// Modes are the route modes, in the order messages list them.
func Modes() []Mode { return []Mode{Passthrough, TerminateHTTP, TerminateTCP} }

// DuplicateNameError is a name routed twice: by the same route, or by the
// route First as well. Name "*" is a second default route.
type DuplicateNameError struct {
	Name      string
	First     int  // index of the route that has it first
	SameRoute bool // listed twice in one route
}

func (e *DuplicateNameError) Error() string {
	switch {
	case e.SameRoute:
		return fmt.Sprintf("%q is listed twice in this route", e.Name)
	case e.Name == "*":
		return fmt.Sprintf("a second default route \"*\" (the first is route %d)", e.First+1)
	}
	return fmt.Sprintf("%q is already routed by route %d: a name may appear in one route only", e.Name, e.First+1)
}

// CheckRoutes reports every problem with routes, each a *RouteError, in
// the order of the routes; none means New and Reload accept them.
func CheckRoutes(routes []Route) []error {
	_, errs := checkRoutes(routes)
	return errs
}

// checkRoutes is CheckRoutes, and also returns the routing table it fills
// as it goes (meaningful only when there are no errors): normalising a
// name is most of the cost of a reload, so it is done once, here, and not
// again to build the table.
func checkRoutes(routes []Route) (*routeTable, []error) {
	var errs []error
	fail := func(i int, f RouteField, name int, err error) {
		errs = append(errs, &RouteError{Route: i, Field: f, Name: name, Err: err})
	}
	names := 0
	for _, r := range routes {
		names += len(r.Names)
	}
	t := &routeTable{routes: routes, exact: make(map[string]int32, names), wildcard: map[string]int32{}, fallback: -1}
	// Hosting configurations send many routes to one backend: its
	// address is checked once per run of routes that share it.
	var lastBackend string
	var lastBackendErr error
	for i, r := range routes {
		if len(r.Names) == 0 {
			fail(i, "", -1, ErrNoNames)
		}
		for j, n := range r.Names {
			key, wild, err := routeKey(n)
			if err != nil {
				fail(i, FieldNames, j, err)
				continue
			}
			m := t.exact
			if wild {
				m = t.wildcard
			}
			f, dup := m[key]
			if key == "*" {
				f, dup = t.fallback, t.fallback >= 0
			}
			if dup {
				fail(i, FieldNames, j, &DuplicateNameError{Name: n, First: int(f), SameRoute: int(f) == i})
				continue
			}
			if key == "*" {
				t.fallback = int32(i)
			} else {
				m[key] = int32(i)
			}
		}
		if r.Backend == "" {
			fail(i, FieldBackend, -1, ErrNoBackend)
		} else {
			if r.Backend != lastBackend {
				lastBackend, lastBackendErr = r.Backend, CheckAddr(r.Backend, "8443", false)
			}
			if lastBackendErr != nil {
				fail(i, FieldBackend, -1, lastBackendErr)
			}
		}
		switch r.Mode {
		case "", Passthrough, TerminateHTTP, TerminateTCP:
		default:
			fail(i, FieldMode, -1, &UnknownModeError{Mode: string(r.Mode)})
		}
		if r.SendProxy < 0 || r.SendProxy > 2 {
			fail(i, FieldSendProxy, -1, fmt.Errorf("want 0, 1 or 2, got %d", r.SendProxy))
		}
	}
	return t, errs
}

// routeKey is the form in which a route name is matched: "*" for the
// default route, the A-label parent with wild set for a wildcard
// ("example.com" for "*.example.com"), else the A-label name.
func routeKey(n string) (key string, wild bool, err error) {
	switch {
	case n == "*":
		return n, false, nil
	case n == "":
		return "", false, errors.New("empty name: give a server name such as example.com, or \"*\" for the default route")
	case strings.HasPrefix(n, "*."):
		if strings.Contains(n[2:], "*") {
			return "", false, fmt.Errorf("%q: a wildcard must be the whole first label and only that, as in \"*.example.com\"", n)
		}
		if err := challenge.CheckHostname(n[2:]); err != nil {
			return "", false, fmt.Errorf("wildcard %q: %w", n, err)
		}
		return challenge.NormalizeServerName(n[2:]), true, nil
	case strings.Contains(n, "*"):
		return "", false, fmt.Errorf("%q: a wildcard must be the whole first label, as in \"*.example.com\", or \"*\" alone for the default route", n)
	}
	if _, err := netip.ParseAddr(strings.Trim(n, "[]")); err == nil {
		return "", false, fmt.Errorf("%q is an IP address, and clients send no server name when they connect to an address: such connections take the default route \"*\"", n)
	}
	if err := challenge.CheckHostname(n); err != nil {
		return "", false, err
	}
	return challenge.NormalizeServerName(n), false, nil
}

// CheckAddr says what is wrong with a host:port address, or nil.
// examplePort is the port its suggestions use; emptyHostOK allows ":443",
// which a listener takes as every address.
func CheckAddr(s, examplePort string, emptyHostOK bool) error {
	example := "127.0.0.1:" + examplePort
	if emptyHostOK {
		example = ":" + examplePort
	}
	if s == "" {
		return fmt.Errorf("empty: write host:port, e.g. %q", example)
	}
	if strings.Contains(s, "://") {
		hp := example
		if u, err := url.Parse(s); err == nil && u.Host != "" {
			hp = u.Host
			if u.Port() == "" {
				port, ok := map[string]string{"http": "80", "https": "443"}[u.Scheme]
				if !ok {
					port = examplePort
				}
				hp = net.JoinHostPort(u.Hostname(), port)
			}
		}
		return fmt.Errorf("%q is a URL: write a TCP address, host:port, such as %q", s, hp)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if a, err := netip.ParseAddr(s); err == nil && a.Is6() {
			return fmt.Errorf("%q has no port: write host:port, with an IPv6 address in brackets, e.g. %q", s, net.JoinHostPort(s, examplePort))
		}
		if strings.Count(s, ":") > 1 {
			return fmt.Errorf("%q: put an IPv6 address in brackets, e.g. \"[2001:db8::1]:%s\"", s, examplePort)
		}
		if !strings.Contains(s, ":") {
			return fmt.Errorf("%q has no port: write host:port, e.g. %q", s, net.JoinHostPort(s, examplePort))
		}
		return fmt.Errorf("%q is not host:port: write e.g. %q", s, example)
	}
	if host == "" && !emptyHostOK {
		return fmt.Errorf("%q has no host: write e.g. %q", s, "127.0.0.1:"+port)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("%q: the port must be a number, e.g. %q", s, net.JoinHostPort(host, examplePort))
	}
	if n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %d is out of range: ports are 1 to 65535", s, n)
	}
	return nil
}
