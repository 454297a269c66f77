package proxy

import (
	"errors"
	"strings"
	"testing"

	"github.com/tlsalpn/tlsalpn/challenge"
)

func TestCompileRoutesErrors(t *testing.T) {
	const be = "127.0.0.1:8443"
	tests := []struct {
		name   string
		routes []Route
		want   string // substring of the error; "" means valid
	}{
		{"none", nil, ""},
		{"exact, wildcard and default", []Route{{Names: []string{"a.example", "*.b.example"}, Backend: be}, {Names: []string{"*"}, Backend: "[::1]:8443"}}, ""},
		{"modes", []Route{{Names: []string{"a.example"}, Backend: be, Mode: TerminateHTTP}, {Names: []string{"b.example"}, Backend: be, Mode: TerminateTCP, SendProxy: 1}, {Names: []string{"c.example"}, Backend: be, Mode: Passthrough, SendProxy: 2}}, ""},
		{"same name in wildcard and exact", []Route{{Names: []string{"a.example", "*.a.example"}, Backend: be}}, ""},
		{"unknown mode", []Route{{Names: []string{"a.example"}, Backend: be, Mode: "https"}}, `unknown mode "https"`},
		{"backend without port", []Route{{Names: []string{"a.example"}, Backend: "127.0.0.1"}}, `backend: "127.0.0.1" has no port: write host:port`},
		{"backend empty", []Route{{Names: []string{"a.example"}, Backend: ""}}, "no backend: give the host:port"},
		{"backend with empty port", []Route{{Names: []string{"a.example"}, Backend: "127.0.0.1:"}}, "the port must be a number"},
		{"send_proxy 3", []Route{{Names: []string{"a.example"}, Backend: be, SendProxy: 3}}, "send_proxy: want 0, 1 or 2, got 3"},
		{"send_proxy -1", []Route{{Names: []string{"a.example"}, Backend: be, SendProxy: -1}}, "send_proxy: want 0, 1 or 2, got -1"},
		{"no names", []Route{{Backend: be}}, "no names"},
		{"empty name", []Route{{Names: []string{""}, Backend: be}}, "empty name"},
		{"bad name", []Route{{Names: []string{"a b.example"}, Backend: be}}, `"a b.example" has " ", which is not allowed in a host name`},
		{"wildcard inside", []Route{{Names: []string{"a.*.example"}, Backend: be}}, "a wildcard must be the whole first label"},
		{"partial wildcard", []Route{{Names: []string{"*a.example"}, Backend: be}}, "a wildcard must be the whole first label"},
		{"bare wildcard dot", []Route{{Names: []string{"*."}, Backend: be}}, `wildcard "*.": "" is empty`},
		{"double wildcard", []Route{{Names: []string{"*.*.example"}, Backend: be}}, "a wildcard must be the whole first label and only that"},
		{"two defaults", []Route{{Names: []string{"*"}, Backend: be}, {Names: []string{"*"}, Backend: "127.0.0.1:1"}}, "second default route"},
		{"duplicate exact", []Route{{Names: []string{"a.example"}, Backend: be}, {Names: []string{"A.Example."}, Backend: "127.0.0.1:1"}}, "already routed"},
		{"duplicate wildcard", []Route{{Names: []string{"*.a.example"}, Backend: be}, {Names: []string{"*.A.EXAMPLE"}, Backend: "127.0.0.1:1"}}, "already routed"},
		{"error names the route", []Route{{Names: []string{"a.example"}, Backend: be}, {Names: []string{"b.example"}, Backend: be, Mode: "x"}}, "route 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := compileRoutes(append([]Route(nil), tt.routes...))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("compileRoutes: %v, want success", err)
			case tt.want != "" && err == nil:
				t.Fatalf("compileRoutes succeeded, want an error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("compileRoutes: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestNewRefusesTerminateWithoutCerts(t *testing.T) {
	_, err := New(Config{Routes: []Route{{Names: []string{"a.example"}, Backend: "127.0.0.1:1", Mode: TerminateHTTP}}}, nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "no certificates") {
		t.Fatalf("New: %v, want a refusal for a terminating route without certificates", err)
	}
}

func TestRouteMatch(t *testing.T) {
	routes := []Route{
		{Names: []string{"example.com", "WWW.Example.COM."}, Backend: "exact:1"},
		{Names: []string{"*.example.com"}, Backend: "wild:1"},
		{Names: []string{"special.example.com"}, Backend: "special:1"},
		{Names: []string{"*.Other.Example."}, Backend: "other:1"},
		{Names: []string{"*"}, Backend: "default:1"},
	}
	rt, err := compileRoutes(routes)
	if err != nil {
		t.Fatal(err)
	}
	noDefault, err := compileRoutes([]Route{{Names: []string{"example.com"}, Backend: "exact:1"}, {Names: []string{"*.example.com"}, Backend: "wild:1"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string // as normalised by the caller
		want       string
		wantNoDflt string // "" means no route
	}{
		{"example.com", "exact:1", "exact:1"},
		{"www.example.com", "exact:1", "wild:1"},
		{"a.example.com", "wild:1", "wild:1"},
		{"special.example.com", "special:1", "wild:1"},
		{"a.b.example.com", "default:1", ""},
		{"x.other.example", "other:1", ""},
		{"other.example", "default:1", ""},
		{"com", "default:1", ""},
		{"example.com.evil", "default:1", ""},
		{"aexample.com", "default:1", ""},
		{"", "default:1", ""}, // no SNI
	}
	for _, tt := range tests {
		got := ""
		if r := rt.match(tt.name); r != nil {
			got = r.Backend
		}
		if got != tt.want {
			t.Errorf("match(%q) = %q, want %q", tt.name, got, tt.want)
		}
		got = ""
		if r := noDefault.match(tt.name); r != nil {
			got = r.Backend
		}
		if got != tt.wantNoDflt {
			t.Errorf("without default: match(%q) = %q, want %q", tt.name, got, tt.wantNoDflt)
		}
	}
}

// TestRoutingEndToEnd sends ClientHellos through the proxy and checks which
// backend each reaches, including names the client wrote in upper case or
// with a trailing dot (which Go's TLS client would not send, so the hellos
// are built by hand).
func TestRoutingEndToEnd(t *testing.T) {
	exact := startBackend(t, idHandler("exact"))
	wild := startBackend(t, idHandler("wild"))
	dflt := startBackend(t, idHandler("default"))
	withDefault := startProxy(t, Config{Routes: []Route{
		{Names: []string{"example.com"}, Backend: exact.addr},
		{Names: []string{"*.example.com"}, Backend: wild.addr},
		{Names: []string{"*"}, Backend: dflt.addr},
	}}, nil, nil)
	noDefault := startProxy(t, Config{Routes: []Route{
		{Names: []string{"Example.COM."}, Backend: exact.addr},
		{Names: []string{"*.EXAMPLE.com"}, Backend: wild.addr},
	}}, nil, nil)
	tests := []struct {
		sni              string
		want, wantNoDflt string // "" means closed
	}{
		{"example.com", "exact", "exact"},
		{"EXAMPLE.COM", "exact", "exact"},
		{"example.com.", "exact", "exact"},
		{"Example.Com.", "exact", "exact"},
		{"a.example.com", "wild", "wild"},
		{"A.EXAMPLE.COM.", "wild", "wild"},
		{"a.b.example.com", "default", ""},
		{"other.test", "default", ""},
		{"", "default", ""},
		{"not a name", "default", ""},
	}
	for _, tt := range tests {
		for _, p := range []struct {
			srv  *testProxy
			want string
		}{{withDefault, tt.want}, {noDefault, tt.wantNoDflt}} {
			got, err := whichBackend(p.srv.addr, tt.sni)
			if got != p.want {
				t.Errorf("SNI %q: reached %q (%v), want %q", tt.sni, got, err, p.want)
			}
		}
	}
	if n := exact.accepted.Load() + wild.accepted.Load(); n != 12 {
		t.Errorf("exact and wildcard backends accepted %d connections, want 12", n)
	}
}

// TestCheckRoutes: every problem is reported, each a *RouteError naming
// the route, the field and (for names) which one, so that a configuration
// file can point at its line.
func TestCheckRoutes(t *testing.T) {
	routes := []Route{
		{Names: []string{"a.example", "b_c.example", "a.example"}, Backend: "127.0.0.1", Mode: "https", SendProxy: 3},
		{Names: []string{"*", "A.Example."}},
		{Backend: "127.0.0.1:1"},
		{Names: []string{"*", "*.*.x"}, Backend: "127.0.0.1:2"},
		// The same bad backend twice in a row (checked once, reported for
		// each), and a wildcard routed twice.
		{Names: []string{"e.example", "*.w.example"}, Backend: "127.0.0.1"},
		{Names: []string{"*.W.example"}, Backend: "127.0.0.1"},
	}
	type want struct {
		route int
		field RouteField
		name  int
		is    error  // errors.Is, or nil
		as    string // the type errors.As finds, or ""
	}
	wants := []want{
		{0, FieldNames, 1, nil, "hostname"},
		{0, FieldNames, 2, nil, "duplicate"},
		{0, FieldBackend, -1, nil, ""},
		{0, FieldMode, -1, nil, "mode"},
		{0, FieldSendProxy, -1, nil, ""},
		{1, FieldNames, 1, nil, "duplicate"},
		{1, FieldBackend, -1, ErrNoBackend, ""},
		{2, "", -1, ErrNoNames, ""},
		{3, FieldNames, 0, nil, "duplicate"},
		{3, FieldNames, 1, nil, ""},
		{4, FieldBackend, -1, nil, ""},
		{5, FieldNames, 0, nil, "duplicate"},
		{5, FieldBackend, -1, nil, ""},
	}
	errs := CheckRoutes(routes)
	if len(errs) != len(wants) {
		t.Fatalf("got %d errors, want %d: %v", len(errs), len(wants), errs)
	}
	for i, w := range wants {
		var re *RouteError
		if !errors.As(errs[i], &re) || re.Route != w.route || re.Field != w.field || re.Name != w.name {
			t.Errorf("error %d = %#v, want route %d field %q name %d", i, errs[i], w.route, w.field, w.name)
			continue
		}
		if w.is != nil && !errors.Is(re, w.is) {
			t.Errorf("error %d (%v) is not %v", i, re, w.is)
		}
		var (
			he *challenge.HostnameError
			de *DuplicateNameError
			me *UnknownModeError
		)
		switch w.as {
		case "hostname":
			if !errors.As(re, &he) {
				t.Errorf("error %d (%v) is not a *challenge.HostnameError", i, re)
			}
		case "duplicate":
			if !errors.As(re, &de) {
				t.Errorf("error %d (%v) is not a *DuplicateNameError", i, re)
			}
		case "mode":
			if !errors.As(re, &me) || me.Mode != "https" {
				t.Errorf("error %d (%v) is not an *UnknownModeError for https", i, re)
			}
		}
	}
	if de := new(DuplicateNameError); !errors.As(errs[1], &de) || !de.SameRoute {
		t.Errorf("a name twice in one route: %v", errs[1])
	}
	if de := new(DuplicateNameError); !errors.As(errs[5], &de) || de.SameRoute || de.First != 0 || !strings.Contains(errs[5].Error(), "already routed by route 1") {
		t.Errorf("a name in a second route: %v", errs[5])
	}
	if !strings.Contains(errs[8].Error(), `a second default route "*" (the first is route 2)`) {
		t.Errorf("a second default route: %v", errs[8])
	}
}
