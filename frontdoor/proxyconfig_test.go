package frontdoor

import (
	"testing"

	"github.com/tlsalpn/tlsalpn/config"
)

// TestProxyConfigLimits checks that the front door's limits in the config
// file reach the proxy: a limit read and then dropped would leave the
// default in force without a word.
func TestProxyConfigLimits(t *testing.T) {
	cfg, err := config.Parse([]byte("proxy:\n  max_connections: 900\n  max_hello_waits_per_source: 7\nroutes:\n  - names: ['*']\n    backend: 127.0.0.1:8443\n"), "serve.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pc := ProxyConfig(cfg)
	if pc.MaxConns != 900 || pc.MaxHelloWaitsPerSource != 7 {
		t.Errorf("proxy.Config has MaxConns %d, MaxHelloWaitsPerSource %d; want 900 and 7 from the file", pc.MaxConns, pc.MaxHelloWaitsPerSource)
	}
}
