package responder

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

const testKeyAuth = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"

// acmeOnly is what a CA offers.
var acmeOnly = []string{challenge.ALPNProto}

// challengeCert parses s and builds its validation certificate.
func challengeCert(t testing.TB, s string) (challenge.Identifier, *tls.Certificate) {
	t.Helper()
	id, err := challenge.ParseIdentifier(s)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := challenge.Build(id, testKeyAuth)
	if err != nil {
		t.Fatal(err)
	}
	return id, cert
}

// realCertificate is an ordinary self-signed server certificate, the kind a
// server owning the port serves to its normal clients.
func realCertificate(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func hasACMEIdentifier(c *x509.Certificate) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(challenge.OIDACMEIdentifier()) {
			return true
		}
	}
	return false
}

// result is what a client saw of one connection.
type result struct {
	err     error               // handshake error
	peer    []*x509.Certificate // every certificate the server presented, even if the handshake then failed
	state   tls.ConnectionState
	n       int // bytes of application data read after the handshake
	data    []byte
	readErr error // the error that ended reading: io.EOF after a clean close
}

// acmeCertSeen reports whether the client was ever shown a validation certificate.
func (r result) acmeCertSeen() bool { return slices.ContainsFunc(r.peer, hasACMEIdentifier) }

// handshake connects to addr as a TLS client offering alpn with SNI sni, and
// reads until the server closes.
func handshake(t testing.TB, addr, sni string, alpn []string, mod func(*tls.Config)) result {
	t.Helper()
	var res result
	var mu sync.Mutex
	cfg := &tls.Config{
		ServerName:         sni,
		NextProtos:         alpn,
		InsecureSkipVerify: true, // the validation certificate is self-signed, as the CA expects
		VerifyConnection: func(cs tls.ConnectionState) error {
			mu.Lock()
			res.peer = append(res.peer, cs.PeerCertificates...)
			mu.Unlock()
			return nil
		},
	}
	if mod != nil {
		mod(cfg)
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Errorf("dial %s: %v", addr, err)
		res.err = err
		return res
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(conn, cfg)
	err = tc.Handshake()
	mu.Lock()
	defer mu.Unlock()
	if err != nil {
		res.err = err
		return res
	}
	res.state = tc.ConnectionState()
	res.data, res.readErr = readAll(tc)
	res.n = len(res.data)
	return res
}

// readAll reads until an error and returns it (io.EOF included, unlike io.ReadAll).
func readAll(r io.Reader) ([]byte, error) {
	var buf bytes.Buffer
	b := make([]byte, 512)
	for {
		n, err := r.Read(b)
		buf.Write(b[:n])
		if err != nil {
			return buf.Bytes(), err
		}
	}
}

func listenLoopback(t testing.TB, network string) net.Listener {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "tcp6" {
		addr = "[::1]:0"
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serveStandalone runs r.Serve on a fresh loopback listener until the test ends.
func serveStandalone(t testing.TB, r *Responder) string {
	t.Helper()
	return serveStandaloneOn(t, r, listenLoopback(t, "tcp"))
}

func serveStandaloneOn(t testing.TB, r *Responder, ln net.Listener) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after its context was cancelled")
		}
	})
	return ln.Addr().String()
}

// serveHook runs an ordinary TLS server with the real certificate real and
// r.TLSConfig installed. Normal clients get "real <proto>" and a close; a
// connection that negotiated acme-tls/1 is closed at once.
func serveHook(t testing.TB, r *Responder, base *tls.Config) string {
	t.Helper()
	tcp := listenLoopback(t, "tcp")
	ln := tls.NewListener(tcp, r.TLSConfig(base))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				tc := conn.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					return
				}
				proto := tc.ConnectionState().NegotiatedProtocol
				if proto == challenge.ALPNProto {
					return // RFC 8737 §4: no application data
				}
				io.WriteString(tc, "real "+proto)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return tcp.Addr().String()
}

// hookBase is the configuration of a server that owns the port: its own
// certificate, HTTP protocols, and (deliberately) old TLS versions allowed,
// to show that validation handshakes still require TLS 1.2.
func hookBase(t testing.TB) (*tls.Config, tls.Certificate) {
	real := realCertificate(t, "example.com", "other.example")
	return &tls.Config{
		Certificates: []tls.Certificate{real},
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS10,
	}, real
}

type outcome int

const (
	served  outcome = iota // the validation certificate, acme-tls/1, then EOF
	refused                // handshake failed, no validation certificate
	normal                 // the server's real certificate (hook mode only)
)

func (o outcome) String() string { return [...]string{"served", "refused", "normal"}[o] }

func checkOutcome(t *testing.T, res result, want outcome, id challenge.Identifier, real *tls.Certificate) {
	t.Helper()
	switch want {
	case served:
		if res.err != nil {
			t.Fatalf("handshake: %v", res.err)
		}
		if got := res.state.NegotiatedProtocol; got != challenge.ALPNProto {
			t.Errorf("negotiated %q, want %q", got, challenge.ALPNProto)
		}
		if len(res.state.PeerCertificates) != 1 {
			t.Fatalf("got %d certificates, want the validation certificate only", len(res.state.PeerCertificates))
		}
		if err := challenge.Verify(res.state.PeerCertificates[0], id, testKeyAuth); err != nil {
			t.Errorf("the CA would refuse the certificate: %v", err)
		}
		if res.n != 0 || !errors.Is(res.readErr, io.EOF) {
			t.Errorf("after the handshake read %d bytes (%q) and error %v, want 0 and EOF", res.n, res.data, res.readErr)
		}
		if res.state.Version < tls.VersionTLS12 {
			t.Errorf("version %x below TLS 1.2", res.state.Version)
		}
	case refused:
		if res.err == nil {
			t.Errorf("handshake succeeded (ALPN %q, %d certs), want it refused", res.state.NegotiatedProtocol, len(res.state.PeerCertificates))
		}
	case normal:
		if res.err != nil {
			t.Fatalf("handshake: %v", res.err)
		}
		if len(res.state.PeerCertificates) == 0 || !bytes.Equal(res.state.PeerCertificates[0].Raw, real.Certificate[0]) {
			t.Errorf("did not get the server's real certificate")
		}
		if want := "real " + res.state.NegotiatedProtocol; string(res.data) != want {
			t.Errorf("read %q, want %q", res.data, want)
		}
	}
	if want != served && res.acmeCertSeen() {
		t.Errorf("client was shown a validation certificate (acmeIdentifier extension); ALPN offered must decide")
	}
}

// handshakeCases are run against both the standalone listener and the hook
// inside a normal server, with "example.com" published.
var handshakeCases = []struct {
	name       string
	sni        string
	alpn       []string
	mod        func(*tls.Config)
	standalone outcome
	hook       outcome
}{
	{name: "validation", sni: "example.com", alpn: acmeOnly, standalone: served, hook: served},
	{name: "validation TLS 1.2", sni: "example.com", alpn: acmeOnly, mod: maxVersion(tls.VersionTLS12), standalone: served, hook: served},
	{name: "validation TLS 1.3", sni: "example.com", alpn: acmeOnly, mod: minVersion(tls.VersionTLS13), standalone: served, hook: served},
	{name: "SNI upper case with trailing dot", sni: "EXAMPLE.COM.", alpn: acmeOnly, standalone: served, hook: served},
	{name: "SNI mixed case", sni: "Example.Com", alpn: acmeOnly, standalone: served, hook: served},
	{name: "ALPN h2", sni: "example.com", alpn: []string{"h2"}, standalone: refused, hook: normal},
	{name: "ALPN http/1.1", sni: "example.com", alpn: []string{"http/1.1"}, standalone: refused, hook: normal},
	{name: "no ALPN", sni: "example.com", standalone: refused, hook: normal},
	{name: "ALPN h2 then acme-tls/1", sni: "example.com", alpn: []string{"h2", challenge.ALPNProto}, standalone: refused, hook: normal},
	{name: "ALPN acme-tls/1 then h2", sni: "example.com", alpn: []string{challenge.ALPNProto, "h2"}, standalone: refused, hook: normal},
	{name: "ALPN acme-tls/1 then http/1.1", sni: "example.com", alpn: []string{challenge.ALPNProto, "http/1.1"}, standalone: refused, hook: normal},
	{name: "ALPN acme-tls/1 twice", sni: "example.com", alpn: []string{challenge.ALPNProto, challenge.ALPNProto}, standalone: refused, hook: refused}, // no common protocol
	{name: "ALPN acme-tls/2", sni: "example.com", alpn: []string{"acme-tls/2"}, standalone: refused, hook: refused},                                   // no common protocol
	{name: "ALPN ACME-TLS/1", sni: "example.com", alpn: []string{"ACME-TLS/1"}, standalone: refused, hook: refused},
	{name: "unknown SNI", sni: "other.example", alpn: acmeOnly, standalone: refused, hook: refused},
	{name: "subdomain SNI", sni: "www.example.com", alpn: acmeOnly, standalone: refused, hook: refused},
	{name: "no SNI", alpn: acmeOnly, standalone: refused, hook: refused},
	{name: "no SNI h2", alpn: []string{"h2"}, standalone: refused, hook: normal},
	{name: "validation TLS 1.1", sni: "example.com", alpn: acmeOnly, mod: versions(tls.VersionTLS10, tls.VersionTLS11), standalone: refused, hook: refused},
	{name: "validation TLS 1.0", sni: "example.com", alpn: acmeOnly, mod: versions(tls.VersionTLS10, tls.VersionTLS10), standalone: refused, hook: refused},
	{name: "h2 TLS 1.1", sni: "example.com", alpn: []string{"h2"}, mod: versions(tls.VersionTLS10, tls.VersionTLS11), standalone: refused, hook: normal},
}

func maxVersion(v uint16) func(*tls.Config) { return func(c *tls.Config) { c.MaxVersion = v } }
func minVersion(v uint16) func(*tls.Config) { return func(c *tls.Config) { c.MinVersion = v } }
func versions(lo, hi uint16) func(*tls.Config) {
	return func(c *tls.Config) { c.MinVersion, c.MaxVersion = lo, hi }
}

func TestHandshakes(t *testing.T) {
	id, cert := challengeCert(t, "example.com")
	for _, mode := range []string{"standalone", "hook"} {
		t.Run(mode, func(t *testing.T) {
			r := New()
			if _, err := r.Publish(context.Background(), challenge.ServerName(id), cert); err != nil {
				t.Fatal(err)
			}
			var addr string
			var real tls.Certificate
			if mode == "standalone" {
				addr = serveStandalone(t, r)
			} else {
				var base *tls.Config
				base, real = hookBase(t)
				addr = serveHook(t, r, base)
			}
			for _, tc := range handshakeCases {
				t.Run(tc.name, func(t *testing.T) {
					want := tc.standalone
					if mode == "hook" {
						want = tc.hook
					}
					res := handshake(t, addr, tc.sni, tc.alpn, tc.mod)
					checkOutcome(t, res, want, id, &real)
				})
			}
		})
	}
}

func TestStandaloneRefusalReasons(t *testing.T) {
	_, cert := challengeCert(t, "example.com")
	r := New()
	r.Publish(context.Background(), "example.com", cert)
	cfg := r.standaloneConfig()
	for _, tc := range []struct {
		sni  string
		alpn []string
		want error
	}{
		{"example.com", []string{"h2"}, ErrNotACME},
		{"example.com", nil, ErrNotACME},
		{"example.com", []string{"h2", challenge.ALPNProto}, ErrNotACME},
		{"other.example", acmeOnly, ErrNoChallenge},
		{"", acmeOnly, ErrNoChallenge},
	} {
		c, err := cfg.GetConfigForClient(&tls.ClientHelloInfo{ServerName: tc.sni, SupportedProtos: tc.alpn})
		if c != nil || !errors.Is(err, tc.want) {
			t.Errorf("SNI %q ALPN %q: got (%v, %v), want error %v", tc.sni, tc.alpn, c, err, tc.want)
		}
	}
}

func TestIPIdentifiers(t *testing.T) {
	for _, tc := range []struct {
		ip      string
		network string
		wantSNI string
	}{
		{"127.0.0.1", "tcp4", "1.0.0.127.in-addr.arpa"},
		{"::1", "tcp6", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa"},
	} {
		t.Run(tc.ip, func(t *testing.T) {
			id, cert := challengeCert(t, tc.ip)
			sni := challenge.ServerName(id)
			if sni != tc.wantSNI {
				t.Fatalf("ServerName = %q, want %q", sni, tc.wantSNI)
			}
			r := New()
			if _, err := r.Publish(context.Background(), sni, cert); err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen(tc.network, net.JoinHostPort(tc.ip, "0"))
			if err != nil {
				t.Skipf("no %s loopback: %v", tc.network, err)
			}
			addr := serveStandaloneOn(t, r, ln)
			checkOutcome(t, handshake(t, addr, sni, acmeOnly, nil), served, id, nil)
			// The CA sends the reverse name, never the address itself (Go
			// clients do not put an IP literal in SNI at all).
			checkOutcome(t, handshake(t, addr, tc.ip, acmeOnly, nil), refused, id, nil)
			checkOutcome(t, handshake(t, addr, sni, []string{"h2"}, nil), refused, id, nil)
		})
	}
}

func TestUnpublish(t *testing.T) {
	id, cert := challengeCert(t, "example.com")
	for _, mode := range []string{"standalone", "hook"} {
		t.Run(mode, func(t *testing.T) {
			r := New()
			var addr string
			if mode == "standalone" {
				addr = serveStandalone(t, r)
			} else {
				base, _ := hookBase(t)
				addr = serveHook(t, r, base)
			}
			ctx := context.Background()
			checkOutcome(t, handshake(t, addr, "example.com", acmeOnly, nil), refused, id, nil)
			if _, err := r.Publish(ctx, "example.com", cert); err != nil {
				t.Fatal(err)
			}
			if r.Pending() != 1 {
				t.Errorf("Pending = %d, want 1", r.Pending())
			}
			checkOutcome(t, handshake(t, addr, "example.com", acmeOnly, nil), served, id, nil)
			// Unpublish normalises its argument as Publish does.
			if err := r.Unpublish(ctx, "Example.COM."); err != nil {
				t.Fatal(err)
			}
			if r.Pending() != 0 {
				t.Errorf("Pending = %d after Unpublish, want 0", r.Pending())
			}
			checkOutcome(t, handshake(t, addr, "example.com", acmeOnly, nil), refused, id, nil)
			if err := r.Unpublish(ctx, "example.com"); err != nil {
				t.Errorf("second Unpublish: %v", err)
			}
		})
	}
}

func TestPublishErrors(t *testing.T) {
	_, cert := challengeCert(t, "example.com")
	r := New()
	for _, tc := range []struct {
		name string
		sni  string
		cert *tls.Certificate
	}{
		{"empty name", "", cert},
		{"dot", ".", cert},
		{"bad label", "exa mple.com", cert},
		{"nil certificate", "example.com", nil},
		{"empty certificate", "example.com", &tls.Certificate{}},
	} {
		seen, err := r.Publish(context.Background(), tc.sni, tc.cert)
		if err == nil || seen != nil {
			t.Errorf("%s: Publish(%q) = (%v, %v), want an error", tc.name, tc.sni, seen, err)
		}
	}
	if r.Pending() != 0 {
		t.Errorf("Pending = %d after failed publishes", r.Pending())
	}
}

func TestSeen(t *testing.T) {
	id, cert := challengeCert(t, "example.com")
	for _, mode := range []string{"standalone", "hook"} {
		t.Run(mode, func(t *testing.T) {
			r := New()
			seen, err := r.Publish(context.Background(), "example.com", cert)
			if err != nil {
				t.Fatal(err)
			}
			var addr string
			if mode == "standalone" {
				addr = serveStandalone(t, r)
			} else {
				base, _ := hookBase(t)
				addr = serveHook(t, r, base)
			}
			notSeen := func(after string) {
				t.Helper()
				select {
				case <-seen:
					t.Errorf("seen received after %s", after)
				default:
				}
			}
			notSeen("Publish")
			handshake(t, addr, "example.com", []string{"h2"}, nil)
			handshake(t, addr, "other.example", acmeOnly, nil)
			handshake(t, addr, "example.com", []string{"h2", challenge.ALPNProto}, nil)
			notSeen("handshakes that were not served")
			for i := range 3 {
				checkOutcome(t, handshake(t, addr, "example.com", acmeOnly, nil), served, id, nil)
				select {
				case <-seen:
				case <-time.After(5 * time.Second):
					t.Fatalf("seen did not receive after validation handshake %d", i)
				}
			}
			// Two unobserved validations leave one value buffered and
			// never block the responder.
			handshake(t, addr, "example.com", acmeOnly, nil)
			handshake(t, addr, "example.com", acmeOnly, nil)
			select {
			case <-seen:
			case <-time.After(5 * time.Second):
				t.Fatal("seen did not receive")
			}
			notSeen("draining the buffered value")
		})
	}
}

func TestObserver(t *testing.T) {
	_, cert := challengeCert(t, "example.com")
	var mu sync.Mutex
	var events []Event
	r := New(WithObserver(func(ev Event) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}))
	r.Publish(context.Background(), "example.com", cert)
	addr := serveStandalone(t, r)
	handshake(t, addr, "EXAMPLE.com.", acmeOnly, nil)
	handshake(t, addr, "example.com", []string{"h2"}, nil) // not a validation: no event
	handshake(t, addr, "other.example", acmeOnly, nil)
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 {
		t.Fatalf("got %d events, want 2: %+v", len(events), events)
	}
	if ev := events[0]; !ev.Served || ev.Err != nil || ev.ServerName != "example.com" || !slices.Equal(ev.ALPN, acmeOnly) || ev.RemoteAddr == nil {
		t.Errorf("served event = %+v", ev)
	}
	if ev := events[1]; ev.Served || !errors.Is(ev.Err, ErrNoChallenge) || ev.ServerName != "other.example" {
		t.Errorf("refused event = %+v", ev)
	}
}

func TestTLSConfig(t *testing.T) {
	id, cert := challengeCert(t, "example.com")
	r := New()
	r.Publish(context.Background(), "example.com", cert)

	t.Run("nil base", func(t *testing.T) {
		addr := serveHook(t, r, nil)
		checkOutcome(t, handshake(t, addr, "example.com", acmeOnly, nil), served, id, nil)
	})

	t.Run("base GetConfigForClient still applies", func(t *testing.T) {
		base, real := hookBase(t)
		other := realCertificate(t, "other.example")
		calls := 0
		var mu sync.Mutex
		base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			mu.Lock()
			calls++
			mu.Unlock()
			if hello.ServerName == "other.example" {
				return &tls.Config{Certificates: []tls.Certificate{other}, NextProtos: []string{"h2"}}, nil
			}
			return nil, nil
		}
		before := base.GetConfigForClient
		addr := serveHook(t, r, base)
		if fmt.Sprintf("%p", base.GetConfigForClient) != fmt.Sprintf("%p", before) {
			t.Error("TLSConfig modified its base")
		}
		checkOutcome(t, handshake(t, addr, "example.com", []string{"h2"}, nil), normal, id, &real)
		checkOutcome(t, handshake(t, addr, "other.example", []string{"h2"}, nil), normal, id, &other)
		mu.Lock()
		n := calls
		mu.Unlock()
		checkOutcome(t, handshake(t, addr, "example.com", acmeOnly, nil), served, id, nil)
		mu.Lock()
		if calls != n {
			t.Error("base GetConfigForClient was consulted for a validation handshake")
		}
		mu.Unlock()
	})
}

// TestNoValidationCertThroughResumption: a client that did a validation
// handshake and then connects as a normal client must not resume that
// session, which would show it the validation certificate again; nor may a
// validation handshake resume a normal session, which would show the CA the
// real certificate.
func TestNoValidationCertThroughResumption(t *testing.T) {
	id, cert := challengeCert(t, "example.com")
	r := New()
	r.Publish(context.Background(), "example.com", cert)
	base, real := hookBase(t)
	addr := serveHook(t, r, base)
	for _, order := range [][2][]string{
		{acmeOnly, {"h2"}},
		{{"h2"}, acmeOnly},
	} {
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			t.Run(fmt.Sprintf("%q then %q TLS %x", order[0], order[1], v), func(t *testing.T) {
				cache := tls.NewLRUClientSessionCache(4)
				mod := func(c *tls.Config) { c.ClientSessionCache, c.MaxVersion = cache, v }
				first := handshake(t, addr, "example.com", order[0], mod)
				if first.err != nil {
					t.Fatal(first.err)
				}
				second := handshake(t, addr, "example.com", order[1], mod)
				if second.state.DidResume {
					t.Errorf("second handshake resumed the first one's session")
				}
				want := normal
				if order[1][0] == challenge.ALPNProto {
					want = served
				}
				checkOutcome(t, second, want, id, &real)
			})
		}
	}
}

func TestIsPending(t *testing.T) {
	_, cert := challengeCert(t, "example.com")
	r := New()
	ctx := context.Background()
	r.Publish(ctx, "example.com", cert)
	for _, tc := range []struct {
		sni  string
		want bool
	}{
		{"example.com", true},
		{"EXAMPLE.COM.", true},
		{"www.example.com", false},
		{"", false},
		{"exa mple.com", false},
	} {
		if got := r.IsPending(tc.sni); got != tc.want {
			t.Errorf("IsPending(%q) = %v, want %v", tc.sni, got, tc.want)
		}
	}
	r.Unpublish(ctx, "example.com")
	if r.IsPending("example.com") {
		t.Error("IsPending after Unpublish")
	}
}

func TestServeConn(t *testing.T) {
	id, cert := challengeCert(t, "example.com")
	r := New()
	r.Publish(context.Background(), "example.com", cert)
	ln := listenLoopback(t, "tcp")
	var wg sync.WaitGroup
	defer wg.Wait() // after ln.Close: no Accept, so no Add, races with Wait
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.ServeConn(c, nil)
			}()
		}
	}()
	addr := ln.Addr().String()
	for _, tc := range []struct {
		sni  string
		alpn []string
		want outcome
	}{
		{"example.com", acmeOnly, served},
		{"example.com", []string{"h2"}, refused},
		{"example.com", []string{"h2", challenge.ALPNProto}, refused},
		{"other.example", acmeOnly, refused},
	} {
		t.Run(fmt.Sprintf("%s %q", tc.sni, tc.alpn), func(t *testing.T) {
			checkOutcome(t, handshake(t, addr, tc.sni, tc.alpn, nil), tc.want, id, nil)
		})
	}
}

// TestConfigureHTTPServer: a net/http server keeps HTTP/2 and its own
// certificate for browsers, and answers the CA on the same port.
func TestConfigureHTTPServer(t *testing.T) {
	r := New()
	id, _ := challenge.ParseIdentifier("example.com")
	chal, _ := challenge.Build(id, "tok.thumb")
	r.Publish(context.Background(), "example.com", chal)
	realID, _ := challenge.ParseIdentifier("real.example")
	real, _ := challenge.Build(realID, "real")
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { io.WriteString(w, req.Proto) }),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{*real}},
	}
	r.ConfigureHTTPServer(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()

	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, ServerName: "example.com", NextProtos: []string{"acme-tls/1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := challenge.Verify(c.ConnectionState().PeerCertificates[0], id, "tok.thumb"); err != nil {
		t.Errorf("validation handshake: %v", err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("the validation connection carried data: %d, %v", n, err)
	}
	c.Close()

	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "example.com"}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "HTTP/2.0" {
		t.Errorf("a browser got %q, want HTTP/2.0", body)
	}
	if got := resp.TLS.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != "real.example" {
		t.Errorf("a browser got certificate %v, want the server's own", got)
	}
}
