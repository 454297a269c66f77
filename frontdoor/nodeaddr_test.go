package frontdoor_test

import (
	"net"
	"net/netip"
	"testing"

	"github.com/tlsalpn/tlsalpn/frontdoor"
)

// TestNodeAddress: a listener on a specific address is reached there; one on every address
// ("0.0.0.0", "::") is reached at an address of this host, never at the unspecified one.
func TestNodeAddress(t *testing.T) {
	tests := []struct {
		listen string
		same   bool // the listener's own address is the answer
	}{
		{"127.0.0.1:443", true},
		{"192.0.2.7:8443", true},
		{"[2001:db8::1]:443", true},
		{"0.0.0.0:443", false},
		{"[::]:443", false},
	}
	for _, tt := range tests {
		t.Run(tt.listen, func(t *testing.T) {
			ln, _ := net.ResolveTCPAddr("tcp", tt.listen)
			got, err := frontdoor.NodeAddress(ln)
			if err != nil {
				t.Fatal(err)
			}
			ap, err := netip.ParseAddrPort(got)
			if err != nil {
				t.Fatalf("NodeAddress = %q: %v", got, err)
			}
			if tt.same && got != netip.MustParseAddrPort(tt.listen).String() {
				t.Fatalf("NodeAddress = %q, want the listener's %s", got, tt.listen)
			}
			if ap.Addr().IsUnspecified() || int(ap.Port()) != ln.Port {
				t.Fatalf("NodeAddress = %q for %s: want an address of this host and port %d", got, tt.listen, ln.Port)
			}
		})
	}
}
