package frontdoor

import (
	"strings"
	"testing"

	"github.com/tlsalpn/tlsalpn/config"
)

// TestKeepClientForward: a route's acme_forward wins for its names, as
// the proxy matches them (exact, then one-label wildcard, then "*"), and
// the top-level one covers the rest.
func TestKeepClientForward(t *testing.T) {
	cfg := &config.Config{
		ACMEForward: "127.0.0.1:1",
		Routes: []config.Route{
			{Names: []string{"a.example", "*.w.example"}, Backend: "127.0.0.1:8443", ACMEForward: "127.0.0.1:2"},
			{Names: []string{"b.example"}, Backend: "127.0.0.1:8444"},
			{Names: []string{"x.w.example"}, Backend: "127.0.0.1:8445", ACMEForward: "127.0.0.1:3"},
		},
	}
	k, err := keepClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"a.example":     "127.0.0.1:2",
		"y.w.example":   "127.0.0.1:2",
		"x.w.example":   "127.0.0.1:3",
		"w.example":     "127.0.0.1:1",
		"a.b.w.example": "127.0.0.1:1",
		"b.example":     "127.0.0.1:1",
	} {
		if got := k.Forward(name); got != want {
			t.Errorf("Forward(%q) = %q; want %q", name, got, want)
		}
	}
	cfg.ACMEForward = ""
	if k, _ = keepClient(cfg); k.Forward("b.example") != "" {
		t.Error("a name with no forward configured is forwarded")
	}
	if k, _ := keepClient(&config.Config{}); k != nil {
		t.Error("a configuration without keep-client settings made one")
	}
	for _, bad := range []*config.Config{
		{ACMEForward: "5001"},
		{ACMEForward: ":5001"},
		{Routes: []config.Route{{Names: []string{"*"}, Backend: "h:1", ACMEForward: "nope"}}},
	} {
		if _, err := keepClient(bad); err == nil || !strings.Contains(err.Error(), "HOST:PORT") {
			t.Errorf("%+v: err %v; want a HOST:PORT error", bad, err)
		}
	}
}

// TestKeepClientSteering: forwarding or a challenge directory keeps the
// front door relaying; the ualpn socket alone does not.
func TestKeepClientSteering(t *testing.T) {
	base := config.Config{Routes: []config.Route{{Names: []string{"*"}, Backend: "127.0.0.1:8443"}}}
	for _, tt := range []struct {
		mod   func(*config.Config)
		steer bool
	}{
		{func(*config.Config) {}, true},
		{func(c *config.Config) { c.UALPNSocket = "/run/ualpn.sock" }, true},
		{func(c *config.Config) { c.ACMEForward = "127.0.0.1:5001" }, false},
		{func(c *config.Config) { c.Routes[0].ACMEForward = "127.0.0.1:5001" }, false},
		{func(c *config.Config) { c.ACMECertDir = "/var/lib/dehydrated/alpn-certs" }, false},
	} {
		cfg := base
		cfg.Routes = append([]config.Route(nil), base.Routes...)
		tt.mod(&cfg)
		_, why := steerBackend(&cfg)
		if (why == "") != tt.steer {
			t.Errorf("%+v: steering why %q; want steering %v", cfg, why, tt.steer)
		}
	}
}
