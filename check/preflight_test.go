package check

import (
	"net/netip"
	"testing"
)

func TestPreflightOnThisHost(t *testing.T) {
	here := netip.MustParseAddr("192.0.2.10")
	p := &Preflight{LocalAddrs: func() ([]netip.Addr, error) { return []netip.Addr{here, netip.MustParseAddr("127.0.0.1")}, nil }}
	for a, want := range map[string]bool{"192.0.2.10": true, "::ffff:192.0.2.10": true, "198.51.100.7": false, "127.0.0.1": true, "127.0.0.7": false} {
		if got := p.onThisHost(netip.MustParseAddr(a)); got != want {
			t.Errorf("%s: onThisHost = %v, want %v", a, got, want)
		}
	}
	if p.onThisHost(netip.Addr{}) {
		t.Error("no address is on this host")
	}
}

func TestPreflightLocalTarget(t *testing.T) {
	for listen, want := range map[string]string{
		":443": "127.0.0.1:443", "0.0.0.0:8443": "127.0.0.1:8443", "[::]:443": "[::1]:443", "127.0.0.5:5001": "127.0.0.5:5001",
	} {
		p := NewPreflight(listen, 443, nil, nil)
		a, port, err := p.localTarget()
		if err != nil || netip.AddrPortFrom(a, uint16(port)).String() != want {
			t.Errorf("%s: %v:%d %v, want %s", listen, a, port, err, want)
		}
	}
	if _, _, err := NewPreflight("nonsense", 443, nil, nil).localTarget(); err == nil {
		t.Error("a listen address without a port was accepted")
	}
}
