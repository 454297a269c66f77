package frontdoor

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tlsalpn/tlsalpn/config"
)

func TestSteerBackend(t *testing.T) {
	route := func(mut func(*config.Route)) []config.Route {
		r := config.Route{Names: []string{"*"}, Backend: "127.0.0.1:8443"}
		if mut != nil {
			mut(&r)
		}
		return []config.Route{r}
	}
	tests := []struct {
		name    string
		cfg     config.Config
		backend string
		why     string
	}{
		{"one default route", config.Config{Routes: route(nil)}, "127.0.0.1:8443", ""},
		{"explicit passthrough", config.Config{Routes: route(func(r *config.Route) { r.Mode = config.ModePassthrough })}, "127.0.0.1:8443", ""},
		{"names and default", config.Config{Routes: route(func(r *config.Route) { r.Names = []string{"a.example", "*"} })}, "127.0.0.1:8443", ""},
		{"off", config.Config{Routes: route(nil), Proxy: config.Proxy{Steer: config.SteerOff}}, "", "proxy.steer is off"},
		{"no routes", config.Config{}, "", "0 routes"},
		{"two routes", config.Config{Routes: append(route(nil), config.Route{Names: []string{"a.example"}, Backend: "h:1"})}, "", "2 routes"},
		{"terminate", config.Config{Routes: route(func(r *config.Route) { r.Mode = config.ModeHTTP })}, "", "terminates TLS here"},
		{"no default", config.Config{Routes: route(func(r *config.Route) { r.Names = []string{"a.example"} })}, "", "not the default route"},
		{"send_proxy", config.Config{Routes: route(func(r *config.Route) { r.SendProxy = 2 })}, "", "PROXY protocol header"},
		{"trusted proxies", config.Config{Routes: route(nil), Proxy: config.Proxy{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}, "", "trusted_proxies"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			backend, why := steerBackend(&tc.cfg)
			if backend != tc.backend || !strings.Contains(why, tc.why) || (tc.why == "") != (why == "") {
				t.Errorf("steerBackend = %q, %q; want %q, %q", backend, why, tc.backend, tc.why)
			}
		})
	}
}
