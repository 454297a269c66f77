package democa

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"
	"github.com/miekg/dns"
)

// alpnResponder is a minimal tls-alpn-01 responder: it serves the challenge
// certificate for a pending name on handshakes offering acme-tls/1 only.
type alpnResponder struct {
	ln net.Listener

	mu    sync.Mutex
	certs map[string]*tls.Certificate
	wg    sync.WaitGroup
}

func newALPNResponder(t *testing.T) *alpnResponder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &alpnResponder{certs: make(map[string]*tls.Certificate)}
	conf := &tls.Config{
		NextProtos: []string{acmez.ACMETLS1Protocol},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if !slices.Equal(hello.SupportedProtos, []string{acmez.ACMETLS1Protocol}) {
				return nil, errors.New("not an acme-tls/1 handshake")
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if c, ok := r.certs[hello.ServerName]; ok {
				return c, nil
			}
			return nil, fmt.Errorf("no challenge for %q", hello.ServerName)
		},
	}
	r.ln = tls.NewListener(ln, conf)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := r.ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	t.Cleanup(func() {
		r.ln.Close()
		r.wg.Wait()
	})
	return r
}

func (r *alpnResponder) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *alpnResponder) put(name string, c *tls.Certificate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.certs[name] = c
}

func startCA(t *testing.T, opts Options) *CA {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	begin := time.Now()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("Start took %v", time.Since(begin))
	t.Cleanup(func() {
		begin := time.Now()
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		t.Logf("Close took %v", time.Since(begin))
	})
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDirectory(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	c := startCA(t, Options{TLSPort: 5001, NoSleep: true})

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.DirectoryURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("GET directory: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET directory: %s", resp.Status)
	}
	var dir struct {
		NewNonce    string `json:"newNonce"`
		NewAccount  string `json:"newAccount"`
		RenewalInfo string `json:"renewalInfo"`
		Meta        struct {
			Profiles map[string]string `json:"profiles"`
		} `json:"meta"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		t.Fatalf("decoding directory: %v", err)
	}
	if dir.NewNonce == "" || dir.NewAccount == "" || dir.RenewalInfo == "" {
		t.Errorf("directory lacks endpoints: %+v", dir)
	}
	for _, p := range []string{"default", "shortlived"} {
		if _, ok := dir.Meta.Profiles[p]; !ok {
			t.Errorf("directory profiles %v lack %q", dir.Meta.Profiles, p)
		}
	}

	// A client that does not trust RootsPEM must not connect.
	if _, err := http.Get(c.DirectoryURL()); err == nil {
		t.Error("GET directory with the system roots succeeded")
	}
}

func TestDNS(t *testing.T) {
	t.Parallel()
	v6 := netip.MustParseAddr("::1")
	c := startCA(t, Options{
		TLSPort: 5001,
		DNSIPv6: v6,
		DNS: map[string][]netip.Addr{
			"other.example":  {netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("fd00::2")},
			"Only4.Example.": {netip.MustParseAddr("127.0.0.3")},
			"gone.example":   nil,
		},
	})
	c.SetDNS("later.example", netip.MustParseAddr("127.0.0.4"))

	tests := []struct {
		name  string
		qtype uint16
		want  []string
		rcode int
	}{
		{"a.example.", dns.TypeA, []string{"127.0.0.1"}, dns.RcodeSuccess},
		{"A.EXAMPLE.", dns.TypeAAAA, []string{"::1"}, dns.RcodeSuccess},
		{"other.example.", dns.TypeA, []string{"127.0.0.2"}, dns.RcodeSuccess},
		{"OTHER.example.", dns.TypeAAAA, []string{"fd00::2"}, dns.RcodeSuccess},
		{"only4.example.", dns.TypeA, []string{"127.0.0.3"}, dns.RcodeSuccess},
		{"only4.example.", dns.TypeAAAA, nil, dns.RcodeSuccess},
		{"gone.example.", dns.TypeA, nil, dns.RcodeNameError},
		{"later.example.", dns.TypeA, []string{"127.0.0.4"}, dns.RcodeSuccess},
		{"a.example.", dns.TypeTXT, nil, dns.RcodeSuccess},
	}
	for _, proto := range []string{"udp", "tcp"} {
		client := &dns.Client{Net: proto, Timeout: 5 * time.Second}
		for _, tt := range tests {
			t.Run(proto+"/"+tt.name+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
				m := new(dns.Msg)
				m.SetQuestion(tt.name, tt.qtype)
				in, _, err := client.ExchangeContext(testContext(t), m, c.DNSAddr())
				if err != nil {
					t.Fatalf("query: %v", err)
				}
				if in.Rcode != tt.rcode {
					t.Errorf("rcode = %s, want %s", dns.RcodeToString[in.Rcode], dns.RcodeToString[tt.rcode])
				}
				var got []string
				for _, rr := range in.Answer {
					switch rr := rr.(type) {
					case *dns.A:
						got = append(got, rr.A.String())
					case *dns.AAAA:
						got = append(got, rr.AAAA.String())
					default:
						t.Errorf("unexpected record %v", rr)
					}
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("answers = %v, want %v", got, tt.want)
				}
			})
		}
	}

	// ResetDNS restores the default answer.
	c.ResetDNS("gone.example")
	m := new(dns.Msg)
	m.SetQuestion("gone.example.", dns.TypeA)
	in, err := dns.Exchange(m, c.DNSAddr())
	if err != nil || in.Rcode != dns.RcodeSuccess || len(in.Answer) != 1 {
		t.Errorf("after ResetDNS: %v, %v", in, err)
	}
}

func TestIssuerRootsPEM(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		alternateRoots int
	}{
		{"one root", 0},
		{"two alternates", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := startCA(t, Options{TLSPort: 5001, AlternateRoots: tt.alternateRoots})
			pemBytes, err := c.IssuerRootsPEM(testContext(t))
			if err != nil {
				t.Fatal(err)
			}
			roots := parseCerts(t, pemBytes)
			if len(roots) != 1+tt.alternateRoots {
				t.Fatalf("got %d roots, want %d", len(roots), 1+tt.alternateRoots)
			}
			for _, r := range roots {
				if !r.IsCA {
					t.Errorf("root %s is not a CA", r.Subject)
				}
			}
		})
	}
}

func parseCerts(t *testing.T, pemBytes []byte) []*x509.Certificate {
	t.Helper()
	certs, err := parsePEMCerts(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func parsePEMCerts(pemBytes []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := pemBytes; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no certificates in %q", pemBytes)
	}
	return certs, nil
}

func TestStartValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
	}{
		{"no TLS port", Options{}},
		{"port too big", Options{TLSPort: 70000}},
		{"negative chain", Options{TLSPort: 5001, ChainLength: -1}},
		{"nonce reject 100", Options{TLSPort: 5001, NonceRejectPercent: 100}},
		{"v6 as v4", Options{TLSPort: 5001, DNSIPv4: netip.MustParseAddr("::1")}},
		{"v4 as v6", Options{TLSPort: 5001, DNSIPv6: netip.MustParseAddr("127.0.0.1")}},
		{"bad EAB key", Options{TLSPort: 5001, EABKeys: map[string]string{"kid": "not base64!"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Start(testContext(t), tt.opts)
			if err == nil {
				c.Close()
				t.Fatal("Start succeeded")
			}
		})
	}
}

// TestEnvRestored checks that Start leaves the environment as it found it,
// and that Options, not the environment, decide Pebble's behaviour.
func TestEnvRestored(t *testing.T) {
	t.Setenv("PEBBLE_VA_NOSLEEP", "sentinel")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "100")
	t.Setenv("PEBBLE_AUTHZREUSE", "") // so that the cleanup restores it
	os.Unsetenv("PEBBLE_AUTHZREUSE")
	startCA(t, Options{TLSPort: 5001, NoSleep: true})
	if got := os.Getenv("PEBBLE_VA_NOSLEEP"); got != "sentinel" {
		t.Errorf("PEBBLE_VA_NOSLEEP = %q after Start", got)
	}
	if got := os.Getenv("PEBBLE_WFE_NONCEREJECT"); got != "100" {
		t.Errorf("PEBBLE_WFE_NONCEREJECT = %q after Start", got)
	}
	if v, ok := os.LookupEnv("PEBBLE_AUTHZREUSE"); ok {
		t.Errorf("PEBBLE_AUTHZREUSE = %q after Start, want unset", v)
	}
}

// issue obtains a certificate for name from c with acmez's low-level client,
// solving tls-alpn-01 with r, and returns the chain (leaf first).
func issue(ctx context.Context, c *CA, r *alpnResponder, name, profile string) ([]*x509.Certificate, *acme.Client, error) {
	client := &acme.Client{
		Directory:    c.DirectoryURL(),
		HTTPClient:   c.HTTPClient(),
		PollInterval: 50 * time.Millisecond,
		PollTimeout:  20 * time.Second,
	}
	acctKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	acct, err := client.NewAccount(ctx, acme.Account{PrivateKey: acctKey, TermsOfServiceAgreed: true})
	if err != nil {
		return nil, nil, fmt.Errorf("new account: %w", err)
	}
	order, err := client.NewOrder(ctx, acct, acme.Order{
		Identifiers: []acme.Identifier{{Type: "dns", Value: name}},
		Profile:     profile,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("new order: %w", err)
	}
	for _, authzURL := range order.Authorizations {
		authz, err := client.GetAuthorization(ctx, acct, authzURL)
		if err != nil {
			return nil, nil, fmt.Errorf("get authorization: %w", err)
		}
		i := slices.IndexFunc(authz.Challenges, func(ch acme.Challenge) bool { return ch.Type == acme.ChallengeTypeTLSALPN01 })
		if i < 0 {
			return nil, nil, fmt.Errorf("no tls-alpn-01 challenge in %+v", authz.Challenges)
		}
		chal := authz.Challenges[i]
		cert, err := acmez.TLSALPN01ChallengeCert(chal)
		if err != nil {
			return nil, nil, err
		}
		r.put(authz.IdentifierValue(), cert)
		if _, err := client.InitiateChallenge(ctx, acct, chal); err != nil {
			return nil, nil, fmt.Errorf("initiate challenge: %w", err)
		}
		if _, err := client.PollAuthorization(ctx, acct, authz); err != nil {
			return nil, nil, fmt.Errorf("poll authorization: %w", err)
		}
	}
	certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{name}}, certKey)
	if err != nil {
		return nil, nil, err
	}
	order, err = client.FinalizeOrder(ctx, acct, order, csr)
	if err != nil {
		return nil, nil, fmt.Errorf("finalize: %w", err)
	}
	chains, err := client.GetCertificateChain(ctx, acct, order.Certificate)
	if err != nil {
		return nil, nil, fmt.Errorf("get certificate: %w", err)
	}
	chain, err := parsePEMCerts(chains[0].ChainPEM)
	return chain, client, err
}

func verify(chain []*x509.Certificate, rootsPEM []byte, name string) error {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootsPEM)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter})
	return err
}

func TestIssueAndRenewalInfo(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	r := newALPNResponder(t)
	c := startCA(t, Options{TLSPort: r.port(), NoSleep: true, ChainLength: 2})

	const name = "www.example.test"
	begin := time.Now()
	chain, client, err := issue(ctx, c, r, name, "shortlived")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("issuance took %v", time.Since(begin))
	if len(chain) != 3 {
		t.Errorf("chain has %d certificates, want leaf + 2 intermediates", len(chain))
	}
	leaf := chain[0]
	if got, want := leaf.NotAfter.Sub(leaf.NotBefore).Round(time.Hour), 6*24*time.Hour; got != want {
		t.Errorf("lifetime = %v, want %v (shortlived profile)", got, want)
	}
	rootsPEM, err := c.IssuerRootsPEM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(chain, rootsPEM, name); err != nil {
		t.Errorf("verifying the issued chain: %v", err)
	}

	before, err := client.GetRenewalInfo(ctx, leaf)
	if err != nil {
		t.Fatalf("GetRenewalInfo: %v", err)
	}
	if !before.HasWindow() || !before.SuggestedWindow.End.Before(leaf.NotAfter.Add(time.Second)) {
		t.Errorf("initial window %v..%v is not within the certificate's lifetime (until %v)",
			before.SuggestedWindow.Start, before.SuggestedWindow.End, leaf.NotAfter)
	}

	start := time.Now().Add(-time.Hour).Truncate(time.Second).UTC()
	end := start.Add(2 * time.Hour)
	if err := c.SetRenewalInfo(ctx, leaf, start, end); err != nil {
		t.Fatalf("SetRenewalInfo: %v", err)
	}
	after, err := client.GetRenewalInfo(ctx, leaf)
	if err != nil {
		t.Fatalf("GetRenewalInfo after SetRenewalInfo: %v", err)
	}
	if !after.SuggestedWindow.Start.Equal(start) || !after.SuggestedWindow.End.Equal(end) {
		t.Errorf("window = %v..%v, want %v..%v", after.SuggestedWindow.Start, after.SuggestedWindow.End, start, end)
	}

	// A certificate the CA did not issue is refused.
	if err := c.SetRenewalInfo(ctx, parseCerts(t, c.RootsPEM())[0], start, end); err == nil {
		t.Error("SetRenewalInfo for an unknown serial succeeded")
	}
}

// TestConcurrentCAs starts two CAs at once, with different tls-alpn-01 ports,
// issues from both at once, and checks that each chain verifies against its
// own CA's roots only.
func TestConcurrentCAs(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	type result struct {
		chain []*x509.Certificate
		roots []byte
	}
	var results [2]result
	responders := [2]*alpnResponder{newALPNResponder(t), newALPNResponder(t)}
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			c, err := Start(ctx, Options{
				TLSPort:            responders[i].port(),
				NoSleep:            true,
				NonceRejectPercent: 10 * i, // exercises acmez's badNonce retry on one
			})
			if err != nil {
				t.Errorf("Start %d: %v", i, err)
				return
			}
			defer c.Close()
			name := fmt.Sprintf("ca%d.example.test", i)
			chain, _, err := issue(ctx, c, responders[i], name, "default")
			if err != nil {
				t.Errorf("issuing from CA %d: %v", i, err)
				return
			}
			roots, err := c.IssuerRootsPEM(ctx)
			if err != nil {
				t.Errorf("IssuerRootsPEM %d: %v", i, err)
				return
			}
			results[i] = result{chain, roots}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, res := range results {
		name := fmt.Sprintf("ca%d.example.test", i)
		if err := verify(res.chain, res.roots, name); err != nil {
			t.Errorf("CA %d chain against its own roots: %v", i, err)
		}
		if err := verify(res.chain, results[1-i].roots, name); err == nil {
			t.Errorf("CA %d chain verifies against the other CA's roots", i)
		}
	}
}

func TestHandlerMiddleware(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	var failures sync.Map // path -> remaining failures (int)
	failures.Store("/nonce-plz", 2)
	c := startCA(t, Options{
		TLSPort: 5001,
		Handler: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if v, ok := failures.Load(r.URL.Path); ok && v.(int) > 0 {
					failures.Store(r.URL.Path, v.(int)-1)
					http.Error(w, "injected", http.StatusInternalServerError)
					return
				}
				next.ServeHTTP(w, r)
			})
		},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, c.acmeURL+"/nonce-plz", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{500, 500, 200} {
		resp, err := c.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("request %d: status %d, want %d", i, resp.StatusCode, want)
		}
	}
}

func TestEAB(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	const kid, hmacKey = "kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	c := startCA(t, Options{TLSPort: 5001, EABRequired: true, EABKeys: map[string]string{kid: hmacKey}})
	client := &acme.Client{Directory: c.DirectoryURL(), HTTPClient: c.HTTPClient()}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewAccount(ctx, acme.Account{PrivateKey: key, TermsOfServiceAgreed: true}); err == nil {
		t.Error("new account without EAB succeeded")
	}
	acct := acme.Account{PrivateKey: key, TermsOfServiceAgreed: true}
	if err := acct.SetExternalAccountBinding(ctx, client, acme.EAB{KeyID: kid, MACKey: hmacKey}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewAccount(ctx, acct); err != nil {
		t.Errorf("new account with EAB: %v", err)
	}
}

// recordHandler collects the messages of the log records it handles.
type recordHandler struct {
	mu   sync.Mutex
	msgs []string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Level == slog.LevelDebug {
		h.msgs = append(h.msgs, r.Message)
	}
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestLoggerAndClose(t *testing.T) {
	t.Parallel()
	h := &recordHandler{}
	c, err := Start(testContext(t), Options{TLSPort: 5001, Logger: slog.New(h)})
	if err != nil {
		t.Fatal(err)
	}
	addrs := []string{strings.TrimPrefix(c.ManagementURL(), "https://"), c.DNSAddr()}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	h.mu.Lock()
	found := slices.ContainsFunc(h.msgs, func(m string) bool { return strings.Contains(m, "nonces") })
	h.mu.Unlock()
	if !found {
		t.Errorf("Pebble's log lines did not reach the logger at Debug level: %q", h.msgs)
	}
	for _, a := range addrs {
		if conn, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after Close", a)
		}
	}
}
