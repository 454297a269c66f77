package issuer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/storage"
)

func ids(t *testing.T, names ...string) []challenge.Identifier {
	t.Helper()
	out := make([]challenge.Identifier, len(names))
	for i, n := range names {
		id, err := challenge.ParseIdentifier(n)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = id
	}
	return out
}

func certNames(c *x509.Certificate) []string {
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	slices.Sort(names)
	return names
}

// checkResult checks what every successful Obtain must give: a leaf for
// the names, matching the key, in a chain that verifies against the CA's
// roots, and the same chain in ChainPEM.
func checkResult(t *testing.T, e *testEnv, res *Result, names []string) {
	t.Helper()
	want := slices.Sorted(slices.Values(names))
	if got := certNames(res.Leaf); !slices.Equal(got, want) {
		t.Errorf("leaf names = %q, want %q", got, want)
	}
	if !publicKeysEqual(res.Leaf.PublicKey, res.Key.Public()) {
		t.Error("leaf does not match Result.Key")
	}
	key, err := ParseKeyPEM(res.KeyPEM)
	if err != nil || !publicKeysEqual(key.Public(), res.Key.Public()) {
		t.Errorf("KeyPEM does not hold Result.Key (%v)", err)
	}
	chain, err := ParseChainPEM(res.ChainPEM)
	if err != nil {
		t.Fatalf("ChainPEM: %v", err)
	}
	if len(chain) != len(res.Chain) || len(chain) < 2 || !chain[0].Equal(res.Leaf) {
		t.Errorf("ChainPEM has %d certificates, Chain %d; want leaf + intermediate, leaf first", len(chain), len(res.Chain))
	}
	rootsPEM, err := e.ca.IssuerRootsPEM(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AppendCertsFromPEM(rootsPEM)
	for _, c := range res.Chain[1:] {
		inter.AddCert(c)
	}
	if _, err := res.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
		t.Errorf("chain does not verify against the CA's roots: %v", err)
	}
	if res.URL == "" || res.Account == "" {
		t.Errorf("Result.URL = %q, Account = %q; want both", res.URL, res.Account)
	}
}

func TestObtain(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{})
	var steps sync.Map // StepKind -> true
	iss := e.issuer(t, func(c *Config) { c.OnStep = func(s Step) { steps.Store(s.Kind, true) } })
	// Each case has names of its own: the orders run at once through one
	// responder, which holds one challenge per name.
	tests := []struct {
		name     string
		names    []string
		keyType  KeyType
		profile  string
		lifetime time.Duration
	}{
		{"one name", []string{"one.example.test"}, EC256, "default", 90 * 24 * time.Hour},
		{"several names", []string{"a.example.test", "b.example.test", "c.example.test"}, EC256, "default", 90 * 24 * time.Hour},
		{"IP address", []string{"127.0.0.1"}, EC256, "shortlived", 6 * 24 * time.Hour},
		{"ec384", []string{"ec384.example.test"}, EC384, "shortlived", 6 * 24 * time.Hour},
		{"rsa2048", []string{"rsa2048.example.test"}, RSA2048, "shortlived", 6 * 24 * time.Hour},
	}
	t.Run("group", func(t *testing.T) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				res, err := iss.Obtain(testContext(t), Request{Identifiers: ids(t, tt.names...), KeyType: tt.keyType, Profile: tt.profile})
				if err != nil {
					t.Fatalf("Obtain: %v", err)
				}
				checkResult(t, e, res, tt.names)
				if got := KeyTypeOf(res.Leaf.PublicKey); got != tt.keyType {
					t.Errorf("leaf key type = %q, want %q", got, tt.keyType)
				}
				if res.Profile != tt.profile {
					t.Errorf("Result.Profile = %q, want %q", res.Profile, tt.profile)
				}
				if got := res.Leaf.NotAfter.Sub(res.Leaf.NotBefore).Round(time.Hour); got != tt.lifetime {
					t.Errorf("lifetime = %v, want %v (profile %s)", got, tt.lifetime, tt.profile)
				}
			})
		}
	})
	if n := e.resp.Pending(); n != 0 {
		t.Errorf("%d challenges still published after the orders", n)
	}
	for _, k := range []StepKind{StepAccount, StepOrder, StepChallenge, StepReady, StepValid, StepFinalize, StepCertificate} {
		if _, ok := steps.Load(k); !ok {
			t.Errorf("OnStep never told of step %q", k)
		}
	}
	// One account served every order.
	keys, err := e.store.List(testContext(t), storage.AccountsPrefix, true)
	if err != nil || len(keys) != 2 {
		t.Errorf("account keys in storage = %q (%v), want account.json and key.pem", keys, err)
	}
}

// authzRecorder is an HTTP transport that notes, for every pending
// authorization the CA returns, the challenge types in the order offered.
type authzRecorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen [][]acme.Challenge
}

func (r *authzRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil || !strings.Contains(req.URL.Path, "authZ") {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var authz acme.Authorization
	if json.Unmarshal(body, &authz) == nil && authz.Status == acme.StatusPending {
		r.mu.Lock()
		r.seen = append(r.seen, authz.Challenges)
		r.mu.Unlock()
	}
	return resp, nil
}

// TestChallengeChoice runs several orders against a CA that offers five
// challenge types per authorization (dns-persist-01 without a token among
// them) and shuffles them every time: only tls-alpn-01 may be picked,
// wherever it is.
func TestChallengeChoice(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{})
	rec := &authzRecorder{next: e.ca.HTTPClient().Transport}
	iss := e.issuer(t, func(c *Config) { c.HTTPClient = &http.Client{Transport: rec} })
	const orders = 5
	errs := make([]error, orders)
	var wg sync.WaitGroup
	for i := range orders {
		wg.Go(func() {
			// Two names, so ten shuffles in all: tls-alpn-01 comes
			// first in every one with probability 5⁻¹⁰.
			label := "order" + string(rune('a'+i))
			_, errs[i] = iss.Obtain(testContext(t), Request{
				Identifiers: ids(t, label+".example.test", label+"-www.example.test"),
				Profile:     "shortlived",
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("order %d: %v", i, err)
		}
	}
	var notFirst, tokenless int
	for _, chals := range rec.seen {
		if len(chals) < 2 {
			t.Errorf("the CA offered only %d challenge(s); the test needs several", len(chals))
		}
		if i := slices.IndexFunc(chals, func(c acme.Challenge) bool { return c.Type == acme.ChallengeTypeTLSALPN01 }); i > 0 {
			notFirst++
		}
		for _, c := range chals {
			if c.Token == "" {
				tokenless++
			}
		}
	}
	t.Logf("%d pending authorizations seen; tls-alpn-01 not first in %d; %d challenges without a token", len(rec.seen), notFirst, tokenless)
	if len(rec.seen) < 2*orders || notFirst == 0 {
		t.Errorf("saw %d pending authorizations, tls-alpn-01 not first in %d: the shuffling was not exercised", len(rec.seen), notFirst)
	}
	if e.resp.Pending() != 0 {
		t.Errorf("%d challenges still published", e.resp.Pending())
	}
}

func TestEAB(t *testing.T) {
	t.Parallel()
	macKey := make([]byte, 32)
	rand.Read(macKey)
	const kid = "kid-1"
	mac := base64.RawURLEncoding.EncodeToString(macKey)
	e := newTestEnv(t, democa.Options{EABRequired: true, EABKeys: map[string]string{kid: mac}})
	req := Request{Identifiers: ids(t, "eab.example.test"), Profile: "shortlived"}

	_, err := e.issuer(t, nil).Obtain(testContext(t), req)
	if !errors.Is(err, ErrEABRequired) {
		t.Fatalf("Obtain without EAB: %v; want ErrEABRequired", err)
	}
	if keys, _ := e.store.List(testContext(t), "", true); len(keys) != 0 {
		t.Errorf("storage after the refused registration = %q, want nothing", keys)
	}

	iss := e.issuer(t, func(c *Config) { c.EAB = &acme.EAB{KeyID: kid, MACKey: mac} })
	res, err := iss.Obtain(testContext(t), req)
	if err != nil {
		t.Fatalf("Obtain with EAB: %v", err)
	}
	checkResult(t, e, res, []string{"eab.example.test"})
}

func TestBadNonces(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{NonceRejectPercent: 30})
	iss := e.issuer(t, nil)
	for i := range 3 {
		name := "nonce" + string(rune('a'+i)) + ".example.test"
		res, err := iss.Obtain(testContext(t), Request{Identifiers: ids(t, name), Profile: "shortlived"})
		if err != nil {
			t.Fatalf("issuance %d: %v", i, err)
		}
		checkResult(t, e, res, []string{name})
	}
}

func TestUnknownProfile(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{})
	_, err := e.issuer(t, nil).Obtain(testContext(t), Request{Identifiers: ids(t, "p.example.test"), Profile: "longlived"})
	if err == nil {
		t.Fatal("Obtain with an unknown profile succeeded")
	}
	for _, want := range []string{`"longlived"`, "default, shortlived"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestChooseProfile(t *testing.T) {
	t.Parallel()
	le := map[string]string{"classic": "", "tlsserver": "", "shortlived": ""}
	pebble := map[string]string{"default": "", "shortlived": ""}
	tests := []struct {
		name    string
		offered map[string]string
		want    string
		got     string
		errText string // substring of the error; "" means no error
	}{
		{"no profiles, none wanted", nil, "", "", ""},
		{"no profiles, one wanted", nil, "shortlived", "", "the CA offers no profiles"},
		{"classic preferred", le, "", "classic", ""},
		{"default preferred", pebble, "", "default", ""},
		{"first sorted otherwise", map[string]string{"zeta": "", "alpha": ""}, "", "alpha", ""},
		{"wanted and offered", le, "shortlived", "shortlived", ""},
		{"wanted, not offered", pebble, "tlsserver", "", "use one of default, shortlived"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChooseProfile(tt.offered, tt.want)
			if tt.errText != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Errorf("ChooseProfile = %q, %v; want an error containing %q", got, err, tt.errText)
				}
				return
			}
			if err != nil || got != tt.got {
				t.Errorf("ChooseProfile = %q, %v; want %q", got, err, tt.got)
			}
		})
	}
}

func TestPreferredChain(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{AlternateRoots: 1})
	iss := e.issuer(t, nil)
	rootsPEM, err := e.ca.IssuerRootsPEM(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := ParseChainPEM(rootsPEM)
	if err != nil || len(roots) != 2 {
		t.Fatalf("issuer roots: %d, %v; want 2", len(roots), err)
	}
	primary, alternate := roots[0].Subject.CommonName, roots[1].Subject.CommonName
	tests := []struct {
		name, preferred, wantTop string
	}{
		{"no preference", "", primary},
		{"alternate root", alternate, alternate},
		{"primary root", primary, primary},
		{"unknown name falls back", "No Such Root", primary},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A name per case: the orders share one responder.
			name := fmt.Sprintf("chain%d.example.test", i)
			res, err := iss.Obtain(testContext(t), Request{
				Identifiers: ids(t, name), Profile: "shortlived", PreferredChain: tt.preferred,
			})
			if err != nil {
				t.Fatal(err)
			}
			top := res.Chain[len(res.Chain)-1]
			if top.Issuer.CommonName != tt.wantTop {
				t.Errorf("top of chain issued by %q, want %q", top.Issuer.CommonName, tt.wantTop)
			}
			fromPEM, _ := ParseChainPEM(res.ChainPEM)
			if !fromPEM[len(fromPEM)-1].Equal(top) {
				t.Error("ChainPEM is not the chosen chain")
			}
		})
	}
}

// lineWatcher is a slog.Handler that signals on ch each record whose
// message contains substr.
type lineWatcher struct {
	substr string
	ch     chan<- struct{}
}

func (h lineWatcher) Enabled(context.Context, slog.Level) bool { return true }
func (h lineWatcher) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h lineWatcher) WithGroup(string) slog.Handler            { return h }
func (h lineWatcher) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.substr) {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return nil
}

func TestReplaces(t *testing.T) {
	t.Parallel()
	// Pebble marks a certificate replaced just after it has issued its
	// replacement, and logs it; the test waits for that line. Pebble reads
	// the mark without a lock, so the wait is also what orders that read
	// after the write for the race detector (through the log's mutex,
	// which every Pebble request takes first).
	replaced := make(chan struct{}, 1)
	e := newTestEnv(t, democa.Options{Logger: slog.New(lineWatcher{"has been marked as replaced", replaced})})
	var (
		mu      sync.Mutex
		details []string
	)
	iss := e.issuer(t, func(c *Config) {
		c.OnStep = func(s Step) {
			if s.Kind == StepOrder {
				mu.Lock()
				details = append(details, s.Detail)
				mu.Unlock()
			}
		}
	})
	lastOrder := func() string {
		mu.Lock()
		defer mu.Unlock()
		return details[len(details)-1]
	}
	req := Request{Identifiers: ids(t, "renew.example.test"), Profile: "shortlived"}
	first, err := iss.Obtain(testContext(t), req)
	if err != nil {
		t.Fatal(err)
	}
	certID, err := acme.ARIUniqueIdentifier(first.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	req.Replaces = first.Leaf
	second, err := iss.Obtain(testContext(t), req)
	if err != nil {
		t.Fatalf("renewal with replaces: %v", err)
	}
	if !strings.Contains(lastOrder(), "replacing "+certID) {
		t.Errorf("renewal order %q was not sent with replaces %s", lastOrder(), certID)
	}
	if second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Error("renewal returned the same certificate")
	}
	select {
	case <-replaced:
	case <-testContext(t).Done():
		t.Fatal("the CA never marked the first certificate replaced")
	}
	// A renewal naming it again must still get a certificate, by ordering
	// without "replaces".
	third, err := iss.Obtain(testContext(t), req)
	if err != nil {
		t.Fatalf("order replacing an already replaced certificate: %v", err)
	}
	if strings.Contains(lastOrder(), "replacing") {
		t.Errorf("order naming a replaced certificate kept replaces (%q); want a retry without it", lastOrder())
	}
	checkResult(t, e, third, []string{"renew.example.test"})
}

// TestRetryAfter runs an order against a CA that asks for Retry-After on
// pending authorizations and on processing orders. Pebble sends either
// delay-seconds or an HTTP-date truncated to the second, so a 2 s hint
// waits at least 1 s whichever form it takes.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{RetryAfterAuthz: 1, RetryAfterOrder: 2})
	iss := e.issuer(t, nil)
	if _, err := iss.Account(testContext(t)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := iss.Obtain(testContext(t), Request{Identifiers: ids(t, "slow.example.test"), Profile: "shortlived"}); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	t.Logf("issuance with Retry-After took %v", elapsed)
	if elapsed < 900*time.Millisecond {
		t.Errorf("issuance took %v: the CA's Retry-After on finalisation was not honoured", elapsed)
	}
	// Hints are kept only while an authorization is polled.
	iss.hints.mu.Lock()
	defer iss.hints.mu.Unlock()
	if len(iss.hints.after) != 0 || len(iss.hints.watched) != 0 {
		t.Errorf("Retry-After hints left after the order: %v, watched %v", iss.hints.after, iss.hints.watched)
	}
}

// slowListener delays the first read of every connection, as a far-away
// or busy responder would, so that the CA's validation stays in progress
// a while.
type slowListener struct {
	net.Listener
	delay time.Duration
}

func (l slowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &slowConn{Conn: c, delay: l.delay}, nil
}

type slowConn struct {
	net.Conn
	delay time.Duration
	once  sync.Once
}

func (c *slowConn) Read(b []byte) (int, error) {
	c.once.Do(func() { time.Sleep(c.delay) })
	return c.Conn.Read(b)
}

// TestRetryAfterZero makes the CA answer "Retry-After: 0" on an
// authorization whose validation takes a while: the issuer must still
// space its polls out rather than hammer the CA.
func TestRetryAfterZero(t *testing.T) {
	t.Parallel()
	var polls atomic.Int32
	zero := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.URL.Path, "/authZ/") {
				next.ServeHTTP(w, r)
				return
			}
			polls.Add(1)
			next.ServeHTTP(zeroRetryAfter{w}, r)
		})
	}
	e := newTestEnvListener(t, democa.Options{RetryAfterAuthz: 1, Handler: zero},
		func(ln net.Listener) net.Listener { return slowListener{ln, 500 * time.Millisecond} })
	iss := e.issuer(t, nil)
	start := time.Now()
	if _, err := iss.Obtain(testContext(t), Request{Identifiers: ids(t, "zero.example.test"), Profile: "shortlived"}); err != nil {
		t.Fatal(err)
	}
	// Polls minBackoff apart allow one per 50 ms; a busy loop makes
	// several per millisecond.
	elapsed := time.Since(start)
	n, limit := polls.Load(), int32(elapsed/minBackoff)+5
	t.Logf("%d authorization requests in %v", n, elapsed)
	if n > limit {
		t.Errorf("%d authorization requests in %v, want at most %d", n, elapsed, limit)
	}
}

// zeroRetryAfter rewrites any Retry-After header to "0".
type zeroRetryAfter struct{ http.ResponseWriter }

func (w zeroRetryAfter) WriteHeader(code int) {
	if w.Header().Get("Retry-After") != "" {
		w.Header().Set("Retry-After", "0")
	}
	w.ResponseWriter.WriteHeader(code)
}

func TestLeafLabel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		leaf *x509.Certificate
		want string
	}{
		{&x509.Certificate{DNSNames: []string{"a.example", "b.example"}}, "a.example, b.example"},
		{&x509.Certificate{DNSNames: []string{"a.example"}, IPAddresses: []net.IP{net.ParseIP("192.0.2.1"), net.ParseIP("2001:db8::1")}},
			"a.example, 192.0.2.1, 2001:db8::1"},
		{&x509.Certificate{SerialNumber: big.NewInt(0xabc)}, "serial abc"},
	}
	for _, tt := range tests {
		if got := leafLabel(tt.leaf); got != tt.want {
			t.Errorf("leafLabel = %q, want %q", got, tt.want)
		}
	}
}

// failingCA returns a Handler middleware that answers 500 to every POST to
// path while fail is true, counting them.
func failingCA(path string, fail *atomic.Bool, count *atomic.Int32) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == path && fail.Load() {
				count.Add(1)
				http.Error(w, "injected failure", http.StatusInternalServerError)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func TestCAFailures(t *testing.T) {
	t.Parallel()
	var fail atomic.Bool
	var count atomic.Int32
	fail.Store(true)
	e := newTestEnv(t, democa.Options{Handler: failingCA("/order-plz", &fail, &count)})

	// A directory URL on a port where nothing listens.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "https://" + ln.Addr().String() + "/dir"
	ln.Close()

	tests := []struct {
		name  string
		dir   string
		wants []string
	}{
		{"new-order answers 500", e.ca.DirectoryURL(), []string{"creating order for down.example.test at " + e.ca.DirectoryURL(), "500"}},
		{"CA down", down, []string{"the CA at " + down, "connection refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			iss := e.issuer(t, func(c *Config) { c.Directory = tt.dir })
			start := time.Now()
			_, err := iss.Obtain(testContext(t), Request{Identifiers: ids(t, "down.example.test"), Profile: "shortlived"})
			t.Logf("failed after %v: %v", time.Since(start), err)
			if err == nil {
				t.Fatal("Obtain succeeded")
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("gave up after %v", d)
			}
		})
	}
	if count.Load() == 0 {
		t.Error("the failing new-order endpoint was never reached")
	}
	keys, err := e.store.List(testContext(t), "", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, storage.AccountsPrefix+"/") {
			t.Errorf("failed orders left %s in storage", k)
		}
	}
	if e.resp.Pending() != 0 {
		t.Errorf("%d challenges still published", e.resp.Pending())
	}

	// Once the CA recovers, the same storage (and account) works.
	fail.Store(false)
	if _, err := e.issuer(t, nil).Obtain(testContext(t), Request{Identifiers: ids(t, "up.example.test"), Profile: "shortlived"}); err != nil {
		t.Errorf("after the CA recovered: %v", err)
	}
}

// wrongKeyPublisher publishes, instead of the issuer's certificate, one
// built for the same identifier with a wrong key authorization, as a
// responder with a stale or foreign account key would.
type wrongKeyPublisher struct {
	Publisher
}

func (p wrongKeyPublisher) Publish(ctx context.Context, serverName string, _ *tls.Certificate) (<-chan struct{}, error) {
	id, err := challenge.ParseIdentifier(serverName)
	if err != nil {
		return nil, err
	}
	bad, err := challenge.Build(id, "not-the-token.not-the-thumbprint")
	if err != nil {
		return nil, err
	}
	return p.Publisher.Publish(ctx, serverName, bad)
}

func TestValidationFails(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{})
	iss := e.issuer(t, func(c *Config) { c.Publisher = wrongKeyPublisher{e.resp} })
	start := time.Now()
	_, err := iss.Obtain(testContext(t), Request{Identifiers: ids(t, "wrong.example.test", "wrong2.example.test"), Profile: "shortlived"})
	t.Logf("failed after %v: %v", time.Since(start), err)
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Obtain: %v; want a *ValidationError", err)
	}
	if !strings.HasPrefix(ve.Identifier, "wrong") {
		t.Errorf("ValidationError.Identifier = %q", ve.Identifier)
	}
	for _, want := range []string{"could not validate wrong", "tls-alpn-01", "Invalid acmeValidation extension value"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if !strings.Contains(string(ve.Problem.Type), "unauthorized") {
		t.Errorf("problem type %q, want unauthorized", ve.Problem.Type)
	}
	if e.resp.Pending() != 0 {
		t.Errorf("%d challenges still published after the failure", e.resp.Pending())
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	date := func(d time.Duration) string { return now.Add(d).Format(http.TimeFormat) }
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"5", 5 * time.Second, true},
		{" 7 ", 7 * time.Second, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"86400", time.Hour, true}, // capped
		{date(30 * time.Second), 30 * time.Second, true},
		{date(-time.Minute), 0, true},
		{date(48 * time.Hour), time.Hour, true},
		{now.Add(time.Minute).Format(time.RFC850), time.Minute, true}, // obsolete form, still HTTP-date
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestRenewalInfo(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{})
	iss := e.issuer(t, nil)
	ctx := testContext(t)
	res, err := iss.Obtain(ctx, Request{Identifiers: ids(t, "ari.example.test"), Profile: "default"})
	if err != nil {
		t.Fatal(err)
	}
	ri, err := iss.RenewalInfo(ctx, res.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	life := res.Leaf.NotAfter.Sub(res.Leaf.NotBefore)
	if w := ri.SuggestedWindow; !w.Start.After(res.Leaf.NotBefore.Add(life/2)) || w.End.After(res.Leaf.NotAfter) {
		t.Errorf("default window %v – %v is not in the second half of %v – %v", w.Start, w.End, res.Leaf.NotBefore, res.Leaf.NotAfter)
	}
	if ri.RetryAfter == nil || ri.RetryAfter.Before(time.Now()) {
		t.Errorf("RetryAfter = %v, want a time in the future", ri.RetryAfter)
	}

	start := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	end := start.Add(time.Hour)
	if err := e.ca.SetRenewalInfo(ctx, res.Leaf, start, end); err != nil {
		t.Fatal(err)
	}
	ri, err = iss.RenewalInfo(ctx, res.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	if !ri.SuggestedWindow.Start.Equal(start) || !ri.SuggestedWindow.End.Equal(end) {
		t.Errorf("window = %v – %v, want %v – %v", ri.SuggestedWindow.Start, ri.SuggestedWindow.End, start, end)
	}
}
