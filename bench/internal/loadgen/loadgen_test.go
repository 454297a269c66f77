//go:build linux

package loadgen

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/clienthello"
)

// TestClientHello: the captured record is one whole ClientHello that the
// front door's parser reads with the name and protocols asked for.
func TestClientHello(t *testing.T) {
	for _, tc := range []struct {
		sni  string
		alpn []string
	}{
		{"burst.example", []string{"h2", "http/1.1"}},
		{"idle0.example", nil},
	} {
		h, err := ClientHello(tc.sni, tc.alpn...)
		if err != nil {
			t.Fatal(err)
		}
		info, err := clienthello.Parse(h)
		if err != nil {
			t.Fatalf("%s: %v", tc.sni, err)
		}
		if info.ServerName != tc.sni || !slices.Equal(info.ALPN, tc.alpn) {
			t.Errorf("hello for %s %v: parsed as %s %v", tc.sni, tc.alpn, info.ServerName, info.ALPN)
		}
		if len(info.Raw) != len(h) {
			t.Errorf("%s: the hello takes %d of the %d bytes captured: want one record, nothing more", tc.sni, len(info.Raw), len(h))
		}
	}
}

// TestDialerSource: connections leave from the source address asked for
// (the socket option set before the bind is accepted by the kernel).
func TestDialerSource(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srcs, err := Sources(3)
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range srcs {
		c, err := Dialer(src, 3*time.Second).Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("from %s: %v", src, err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		got := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
		c.Close()
		s.Close()
		if got != src {
			t.Errorf("dialled from %s: the server saw %s", src, got)
		}
	}
}

func TestSources(t *testing.T) {
	for _, tc := range []struct {
		k       int
		ok      bool
		first   netip.Addr
		lastStr string
	}{
		{1, true, netip.MustParseAddr("127.0.0.2"), "127.0.0.2"},
		{250, true, netip.MustParseAddr("127.0.0.2"), "127.0.0.251"},
		{0, false, netip.Addr{}, ""},
		{251, false, netip.Addr{}, ""},
	} {
		got, err := Sources(tc.k)
		if (err == nil) != tc.ok {
			t.Errorf("Sources(%d): %v, want ok=%v", tc.k, err, tc.ok)
			continue
		}
		if tc.ok && (got[0] != tc.first || got[len(got)-1].String() != tc.lastStr) {
			t.Errorf("Sources(%d) = %s … %s, want %s … %s", tc.k, got[0], got[len(got)-1], tc.first, tc.lastStr)
		}
	}
}
