package manager

import (
	"crypto/tls"
	"testing"
)

// TestCacheNames: a certificate is found under the server name a
// handshake sends however its names were spelled when it was put: case,
// trailing dot, U-label or A-label, wildcard.
func TestCacheNames(t *testing.T) {
	cert := &tls.Certificate{}
	c := NewCache()
	c.Put([]string{"App.Example.", "*.Apps.Example", "bücher.example", "192.0.2.1"}, cert)
	for _, tc := range []struct {
		sni  string
		want bool
	}{
		{"app.example", true},
		{"APP.EXAMPLE.", true},
		{"x.apps.example", true},
		{"apps.example", false},
		{"xn--bcher-kva.example", true},
		{"bücher.example", true},
		{"other.example", false},
		{"", false},
	} {
		got, err := c.GetCertificate(&tls.ClientHelloInfo{ServerName: tc.sni})
		if (got == cert) != tc.want {
			t.Errorf("GetCertificate(%q) = %v, %v; want found %v", tc.sni, got, err, tc.want)
		}
	}
	for _, name := range []string{"app.example", "App.Example.", "*.apps.example", "xn--bcher-kva.example", "192.0.2.1"} {
		if c.Get(name) != cert {
			t.Errorf("Get(%q) = nil", name)
		}
	}
}
