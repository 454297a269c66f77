package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// proxyBackend reads a PROXY header and then everything until EOF.
type proxyResult struct {
	hdr  *proxyproto.Header
	err  error
	rest []byte
}

func proxyHandler(got chan<- proxyResult) func(net.Conn) {
	return func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		hdr, err := proxyproto.Read(br)
		if err != nil {
			got <- proxyResult{err: err}
			return
		}
		rest, _ := io.ReadAll(br)
		got <- proxyResult{hdr: hdr, rest: rest}
	}
}

func v2Header(t testing.TB, version byte, src, dst string) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSendProxy checks the PROXY header the backend receives: the
// client's real address (or the one a trusted balancer gave), then the
// client's bytes untouched.
func TestSendProxy(t *testing.T) {
	h := hello("pp.example", "h2")
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	tests := []struct {
		name    string
		version int
		trusted []netip.Prefix
		prefix  []byte // sent before the hello
		split   bool   // header and hello in separate writes
		wantSrc string // "" = the client's own address
		wantDst string // "" = the proxy's address
	}{
		{"v1", 1, nil, nil, false, "", ""},
		{"v2", 2, nil, nil, false, "", ""},
		{"v2 in, v2 out", 2, trusted, v2Header(t, 2, "203.0.113.9:5555", "198.51.100.1:443"), false, "203.0.113.9:5555", ""},
		{"v2 in, v1 out", 1, trusted, v2Header(t, 2, "203.0.113.9:5555", "198.51.100.1:443"), false, "203.0.113.9:5555", ""},
		{"v1 in, v2 out", 2, trusted, v2Header(t, 1, "203.0.113.9:5555", "198.51.100.1:443"), false, "203.0.113.9:5555", ""},
		{"v2 in, separate writes", 2, trusted, v2Header(t, 2, "203.0.113.9:5555", "198.51.100.1:443"), true, "203.0.113.9:5555", ""},
		{"v2 in IPv6", 2, trusted, v2Header(t, 2, "[2001:db8::9]:5555", "[2001:db8::1]:443"), false, "[2001:db8::9]:5555", ""},
		{"v1 in IPv6, v1 out", 1, trusted, v2Header(t, 1, "[2001:db8::9]:5555", "[2001:db8::1]:443"), false, "[2001:db8::9]:5555", ""},
		{"v2 in with 4000 bytes of TLVs", 2, trusted, v2WithTLVs(t, 4000), false, "203.0.113.9:5555", ""},
		{"v2 LOCAL in (health check)", 2, trusted, func() []byte {
			b, _ := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL}).Format()
			return b
		}(), false, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan proxyResult, 1)
			be := startBackend(t, proxyHandler(got))
			p := startProxy(t, Config{TrustedProxies: tt.trusted, Routes: []Route{{Names: []string{"*"}, Backend: be.addr, SendProxy: tt.version}}}, nil, nil)
			c := dial(t, p.addr)
			after := append(append([]byte(nil), h...), "after the hello"...)
			if tt.split {
				c.Write(tt.prefix)
				time.Sleep(10 * time.Millisecond)
				c.Write(after)
			} else {
				c.Write(cat(tt.prefix, after))
			}
			c.CloseWrite()
			var r proxyResult
			select {
			case r = <-got:
			case <-time.After(prompt):
				t.Fatal("backend got nothing")
			}
			if r.err != nil {
				t.Fatalf("backend reading PROXY header: %v", r.err)
			}
			if int(r.hdr.Version) != tt.version || r.hdr.Command != proxyproto.PROXY {
				t.Errorf("header version %d command %v", r.hdr.Version, r.hdr.Command)
			}
			wantSrc := tt.wantSrc
			if wantSrc == "" {
				wantSrc = c.LocalAddr().String()
			}
			wantDst := tt.wantDst
			if wantDst == "" {
				wantDst = p.addr
			}
			if got := r.hdr.SourceAddr.String(); got != wantSrc {
				t.Errorf("source %s, want %s", got, wantSrc)
			}
			if got := r.hdr.DestinationAddr.String(); got != wantDst && !(tt.wantSrc != "" && mappedEqual(got, wantDst)) {
				t.Errorf("destination %s, want %s", got, wantDst)
			}
			if !bytes.Equal(r.rest, after) {
				t.Errorf("after the header the backend got %q, want the client's bytes", r.rest)
			}
		})
	}
}

// mappedEqual compares addresses allowing an IPv4-mapped IPv6 form: a v6
// client address forces a v6 header, whose destination is then the
// proxy's v4 address in mapped form.
func mappedEqual(a, b string) bool {
	x, err1 := netip.ParseAddrPort(a)
	y, err2 := netip.ParseAddrPort(b)
	return err1 == nil && err2 == nil && x.Addr().Unmap() == y.Addr().Unmap() && x.Port() == y.Port()
}

// TestProxyProtocolRefused checks who may and who must send a PROXY
// header: a trusted source without one, and an untrusted source with one,
// are closed before any backend is dialled.
func TestProxyProtocolRefused(t *testing.T) {
	h := hello("pp.example", "h2")
	v1 := []byte("PROXY TCP4 203.0.113.9 198.51.100.1 5555 443\r\n")
	v2 := v2Header(t, 2, "203.0.113.9:5555", "198.51.100.1:443")
	local := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	elsewhere := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		send    []byte
		ok      bool
	}{
		{"trusted without header", local, h, false},
		{"trusted, garbage header", local, cat([]byte("PROXY NONSENSE\r\n"), h), false},
		{"trusted, truncated v2 header", local, v2[:20], false},
		{"trusted, v2 header over 4 KiB (go-proxyproto's bound)", local, cat(v2WithTLVs(t, 6000), h), false},
		{"untrusted with v2 header", elsewhere, cat(v2, h), false},
		{"untrusted with v1 header", elsewhere, cat(v1, h), false},
		{"untrusted, no header", elsewhere, h, true},
		{"no trusted proxies, v2 header", nil, cat(v2, h), false},
		{"trusted with v1 header", local, cat(v1, h), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := startBackend(t, idHandler("backend"))
			p := startProxy(t, Config{TrustedProxies: tt.trusted, ClientHelloTimeout: 500 * time.Millisecond,
				Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)
			c := dial(t, p.addr)
			c.Write(tt.send)
			if tt.ok {
				c.SetReadDeadline(time.Now().Add(prompt))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || line != "backend\n" {
					t.Fatalf("got %q, %v; want to reach the backend", line, err)
				}
				return
			}
			expectClosed(t, c, prompt)
			p.waitActive(t, 0) // handle has returned: any dial would be done
			if n := be.accepted.Load(); n != 0 {
				t.Fatalf("backend dialled %d times", n)
			}
		})
	}
}

// TestProxyProtocolIPv6Trust uses both loopback families at once: one
// listener, PROXY headers trusted from ::1 only.
func TestProxyProtocolIPv6Trust(t *testing.T) {
	ln6, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	ln6.Close()
	got := make(chan proxyResult, 2)
	be := startBackend(t, proxyHandler(got))
	p := startProxyOn(t, "[::]:0", Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("::1/128")},
		Routes: []Route{{Names: []string{"*"}, Backend: be.addr, SendProxy: 2}}}, nil, nil)
	_, port, _ := net.SplitHostPort(p.addr)
	h := hello("pp.example")
	v2 := v2Header(t, 2, "203.0.113.9:5555", "198.51.100.1:443")

	// Trusted (::1) with a header: its address is passed on.
	c := dial(t, net.JoinHostPort("::1", port))
	c.Write(cat(v2, h))
	c.CloseWrite()
	select {
	case r := <-got:
		if r.err != nil || r.hdr.SourceAddr.String() != "203.0.113.9:5555" {
			t.Fatalf("trusted: %v %v", r.hdr, r.err)
		}
	case <-time.After(prompt):
		t.Fatal("trusted: backend got nothing")
	}
	// Untrusted (127.0.0.1) with a header: refused.
	c = dial(t, net.JoinHostPort("127.0.0.1", port))
	c.Write(cat(v2, h))
	expectClosed(t, c, prompt)
	p.waitActive(t, 0)
	if n := be.accepted.Load(); n != 1 {
		t.Fatalf("backend accepted %d connections, want 1", n)
	}
}

// v2WithTLVs is a v2 header from 203.0.113.9:5555 carrying n bytes of
// NOOP TLV.
func v2WithTLVs(t testing.TB, n int) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort("203.0.113.9:5555")), net.TCPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.1:443")))
	if err := h.SetTLVs([]proxyproto.TLV{{Type: proxyproto.PP2_TYPE_NOOP, Value: make([]byte, n)}}); err != nil {
		t.Fatal(err)
	}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
