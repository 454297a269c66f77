package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/manager"
)

// seen is what the HTTP backend reports about a request it received.
type seen struct {
	Backend                         string
	Host, Proto, Path               string
	XFF, XFProto, XFHost, Forwarded string
	TLS                             bool
}

func httpBackend(t testing.TB, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(seen{
			Backend: name,
			Host:    r.Host, Proto: r.Proto, Path: r.URL.Path,
			XFF: r.Header.Get("X-Forwarded-For"), XFProto: r.Header.Get("X-Forwarded-Proto"),
			XFHost: r.Header.Get("X-Forwarded-Host"), Forwarded: r.Header.Get("Forwarded"),
			TLS: r.TLS != nil,
		})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// httpsClient talks to the proxy at addr for any URL, trusting roots; h2
// chooses HTTP/2. prefix, if any, is written first on each connection (a
// PROXY header).
func httpsClient(addr string, roots *x509.CertPool, h2 bool, prefix []byte) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: h2,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err == nil && prefix != nil {
				_, err = c.Write(prefix)
			}
			return c, err
		},
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: prompt}
}

func getSeen(t *testing.T, c *http.Client, url string) (seen, *http.Response) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var s seen
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatalf("GET %s: %s: %v", url, resp.Status, err)
	}
	return s, resp
}

func poolOf(certs ...*tls.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c.Leaf)
	}
	return p
}

// TestTerminateHTTP checks the HTTP reverse proxy: HTTP/1.1 and HTTP/2
// clients, the X-Forwarded headers, and the original Host.
func TestTerminateHTTP(t *testing.T) {
	cert := selfSigned(t, "app.example", "*.apps.example")
	cache := manager.NewCache()
	cache.Put([]string{"app.example", "*.apps.example"}, cert)
	be := httpBackend(t, "backend")
	backendAddr := be.Listener.Addr().String()
	routes := []Route{{Names: []string{"app.example", "*.apps.example"}, Backend: backendAddr, Mode: TerminateHTTP}}
	p := startProxy(t, Config{Routes: routes}, nil, cache)
	pp := startProxy(t, Config{Routes: routes, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, nil, cache)
	v2 := v2Header(t, 2, "203.0.113.9:5555", "198.51.100.1:443")

	tests := []struct {
		name      string
		proxy     *testProxy
		prefix    []byte
		h2        bool
		url       string
		wantProto string
		wantXFF   string
		wantHost  string
	}{
		{"HTTP/1.1", p, nil, false, "https://app.example/one", "HTTP/1.1", "127.0.0.1", "app.example"},
		{"HTTP/2", p, nil, true, "https://app.example/two", "HTTP/2.0", "127.0.0.1", "app.example"},
		{"wildcard name, HTTP/2", p, nil, true, "https://x.apps.example/three", "HTTP/2.0", "127.0.0.1", "x.apps.example"},
		{"host with port", p, nil, false, "https://app.example:443/four", "HTTP/1.1", "127.0.0.1", "app.example:443"},
		{"PROXY in, HTTP/1.1", pp, v2, false, "https://app.example/five", "HTTP/1.1", "203.0.113.9", "app.example"},
		{"PROXY in, HTTP/2", pp, v2, true, "https://app.example/six", "HTTP/2.0", "203.0.113.9", "app.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := httpsClient(tt.proxy.addr, poolOf(cert), tt.h2, tt.prefix)
			defer c.CloseIdleConnections()
			for i := range 3 { // and again on a kept-alive connection
				s, resp := getSeen(t, c, tt.url)
				if resp.Proto != tt.wantProto {
					t.Errorf("client spoke %s, want %s", resp.Proto, tt.wantProto)
				}
				if s.XFF != tt.wantXFF || s.XFProto != "https" || s.XFHost != tt.wantHost || s.Host != tt.wantHost {
					t.Errorf("request %d: backend saw %+v; want X-Forwarded-For %s, -Proto https, -Host and Host %s", i, s, tt.wantXFF, tt.wantHost)
				}
				if s.TLS || s.Proto != "HTTP/1.1" {
					t.Errorf("backend got %s, TLS %v; want plain HTTP/1.1", s.Proto, s.TLS)
				}
			}
		})
	}

	// A name the cache has no certificate for fails the handshake.
	unknown := startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: backendAddr, Mode: TerminateHTTP}}}, nil, cache)
	c := httpsClient(unknown.addr, poolOf(cert), false, nil)
	if _, err := c.Get("https://other.example/"); err == nil {
		t.Error("handshake for a name without a certificate succeeded")
	}
	// An unreachable backend is a 502, not a hang.
	down := startProxy(t, Config{Routes: []Route{{Names: []string{"app.example"}, Backend: closedPort(t), Mode: TerminateHTTP}}}, nil, cache)
	resp, err := httpsClient(down.addr, poolOf(cert), false, nil).Get("https://app.example/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("unreachable backend: %s, want 502", resp.Status)
	}
}

// TestTerminateTCP checks that plaintext goes both ways, with half-close,
// and that SendProxy works after termination too.
func TestTerminateTCP(t *testing.T) {
	cert := selfSigned(t, "tcp.example")
	cache := manager.NewCache()
	cache.Put([]string{"tcp.example"}, cert)
	got := make(chan []byte, 1)
	be := startBackend(t, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		got <- b
		io.WriteString(c, "reply: ")
		c.Write(b)
	})
	ppGot := make(chan proxyResult, 1)
	ppBE := startBackend(t, proxyHandler(ppGot))
	p := startProxy(t, Config{Routes: []Route{
		{Names: []string{"tcp.example"}, Backend: be.addr, Mode: TerminateTCP},
		{Names: []string{"*"}, Backend: ppBE.addr, Mode: TerminateTCP, SendProxy: 1},
	}}, nil, cache)

	tc, err := tls.Dial("tcp", p.addr, &tls.Config{RootCAs: poolOf(cert), ServerName: "tcp.example"})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(prompt))
	io.WriteString(tc, "plain text")
	if err := tc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if string(b) != "plain text" {
			t.Fatalf("backend got %q", b)
		}
	case <-time.After(prompt):
		t.Fatal("backend got nothing")
	}
	b, err := io.ReadAll(tc)
	if string(b) != "reply: plain text" {
		t.Fatalf("client got %q, %v", b, err)
	}

	// SendProxy after termination; the cache has a certificate for the
	// name, the route is the default.
	cache.Put([]string{"other.example"}, cert)
	tc, err = tls.Dial("tcp", p.addr, &tls.Config{InsecureSkipVerify: true, ServerName: "other.example"})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	io.WriteString(tc, "behind a header")
	tc.CloseWrite()
	select {
	case r := <-ppGot:
		if r.err != nil || r.hdr.SourceAddr.String() != tc.LocalAddr().String() || string(r.rest) != "behind a header" {
			t.Fatalf("backend got %v %v %q", r.hdr, r.err, r.rest)
		}
	case <-time.After(prompt):
		t.Fatal("backend got nothing")
	}
}

// TestCertificateSwap checks that Cache.Put takes effect on the next
// handshake, in both terminating modes, without restarting anything.
func TestCertificateSwap(t *testing.T) {
	first := selfSigned(t, "app.example")
	second := selfSigned(t, "app.example")
	cache := manager.NewCache()
	cache.Put([]string{"app.example"}, first)
	be := httpBackend(t, "backend")
	tcpBE := startBackend(t, echoHandler)
	p := startProxy(t, Config{Routes: []Route{
		{Names: []string{"app.example"}, Backend: be.Listener.Addr().String(), Mode: TerminateHTTP},
		{Names: []string{"*"}, Backend: tcpBE.addr, Mode: TerminateTCP},
	}}, nil, cache)
	serial := func(sni string) string {
		c, err := tls.Dial("tcp", p.addr, &tls.Config{InsecureSkipVerify: true, ServerName: sni, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	if got := serial("app.example"); got != first.Leaf.SerialNumber.String() {
		t.Fatal("not the first certificate")
	}
	// A kept-alive HTTP connection from before the swap.
	client := httpsClient(p.addr, poolOf(first), false, nil)
	getSeen(t, client, "https://app.example/")

	cache.Put([]string{"app.example"}, second)
	if got := serial("app.example"); got != second.Leaf.SerialNumber.String() {
		t.Fatal("the next handshake did not get the new certificate")
	}
	getSeen(t, client, "https://app.example/") // the old connection keeps working
	cache.Put([]string{"tcp.example"}, first)
	if got := serial("tcp.example"); got != first.Leaf.SerialNumber.String() {
		t.Fatal("tcp route: not the certificate put for it")
	}
	cache.Put([]string{"tcp.example"}, second)
	if got := serial("tcp.example"); got != second.Leaf.SerialNumber.String() {
		t.Fatal("tcp route: the next handshake did not get the new certificate")
	}
}

// TestTerminateReload checks that HTTP connections survive a reload and
// that one accepted just before the reload is served by the new
// generation rather than dropped.
func TestTerminateReload(t *testing.T) {
	cert := selfSigned(t, "app.example")
	cache := manager.NewCache()
	cache.Put([]string{"app.example"}, cert)
	oldBE, newBE := httpBackend(t, "old"), httpBackend(t, "new")
	cfg := func(be *httptest.Server) Config {
		return Config{Routes: []Route{{Names: []string{"app.example"}, Backend: be.Listener.Addr().String(), Mode: TerminateHTTP}}}
	}
	p := startProxy(t, cfg(oldBE), nil, cache)
	client := httpsClient(p.addr, poolOf(cert), true, nil)
	if s, _ := getSeen(t, client, "https://app.example/"); s.Backend != "old" {
		t.Fatalf("before the reload: %s backend", s.Backend)
	}

	early := dial(t, p.addr) // accepted, hello not yet sent
	p.waitActive(t, 2)
	if err := p.Reload(cfg(newBE)); err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(early, &tls.Config{RootCAs: poolOf(cert), ServerName: "app.example", NextProtos: []string{"http/1.1"}})
	tc.SetDeadline(time.Now().Add(prompt))
	io.WriteString(tc, "GET /early HTTP/1.1\r\nHost: app.example\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatalf("connection accepted just before a reload: %v", err)
	}
	var s seen
	json.NewDecoder(resp.Body).Decode(&s)
	resp.Body.Close()
	if resp.StatusCode != 200 || s.Backend != "new" {
		t.Fatalf("connection accepted just before a reload: %s from the %q backend", resp.Status, s.Backend)
	}
	// The client's HTTP/2 connection from before keeps working (or
	// reconnects transparently); new connections get the new backend.
	getSeen(t, client, "https://app.example/")
	fresh := httpsClient(p.addr, poolOf(cert), false, nil)
	if s, _ := getSeen(t, fresh, "https://app.example/"); s.Backend != "new" {
		t.Fatalf("new connection after the reload: %s backend", s.Backend)
	}
}

// TestTerminateShutdown checks that Shutdown does not wait for idle
// kept-alive HTTP connections: they are closed at once, as net/http's own
// Shutdown does, while a request in flight completes.
func TestTerminateShutdown(t *testing.T) {
	cert := selfSigned(t, "app.example")
	cache := manager.NewCache()
	cache.Put([]string{"app.example"}, cert)
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "done")
	}))
	t.Cleanup(slow.Close)
	p := startProxy(t, Config{Routes: []Route{{Names: []string{"app.example"}, Backend: slow.Listener.Addr().String(), Mode: TerminateHTTP}}}, nil, cache)
	for _, h2 := range []bool{false, true} {
		c := httpsClient(p.addr, poolOf(cert), h2, nil)
		resp, err := c.Get("https://app.example/")
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close() // the connection stays open, idle
	}
	inFlight := make(chan string, 1)
	go func() {
		resp, err := httpsClient(p.addr, poolOf(cert), false, nil).Get("https://app.example/slow")
		if err != nil {
			inFlight <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		inFlight <- string(b)
	}()
	p.waitActive(t, 3)
	time.Sleep(50 * time.Millisecond) // the slow request reaches the backend
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- p.Shutdown(ctx)
	}()
	time.Sleep(100 * time.Millisecond)
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(prompt):
		t.Fatalf("Shutdown still waiting with %d idle HTTP connections", p.Active())
	}
	if got := <-inFlight; got != "done" {
		t.Errorf("request in flight during Shutdown: %q", got)
	}
}

// TestTerminateResumption: clients resume TLS sessions with the front
// door, in both modes, as they would with any web server, across reloads.
func TestTerminateResumption(t *testing.T) {
	cert := selfSigned(t, "app.example")
	cache := manager.NewCache()
	cache.Put([]string{"app.example"}, cert)
	be := startBackend(t, echoHandler)
	for _, mode := range []Mode{TerminateTCP, TerminateHTTP} {
		t.Run(string(mode), func(t *testing.T) {
			p := startProxy(t, Config{Routes: []Route{{Names: []string{"app.example"}, Backend: be.addr, Mode: mode}}}, nil, cache)
			cfg := &tls.Config{RootCAs: poolOf(cert), ServerName: "app.example", ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			for i, want := range []bool{false, true, true} {
				if i == 2 {
					// A reload (SIGHUP) does not end resumption.
					if err := p.Reload(Config{Routes: []Route{{Names: []string{"app.example"}, Backend: be.addr, Mode: mode}}, IdleTimeout: time.Minute}); err != nil {
						t.Fatal(err)
					}
				}
				c, err := tls.Dial("tcp", p.addr, cfg)
				if err != nil {
					t.Fatal(err)
				}
				// TLS 1.3 tickets arrive after the handshake: read once.
				c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				c.Read(make([]byte, 1))
				if got := c.ConnectionState().DidResume; got != want {
					t.Errorf("connection %d: DidResume = %v, want %v", i+1, got, want)
				}
				c.Close()
			}
		})
	}
}
