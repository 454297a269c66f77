package issuer

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/syncbuf"
	"github.com/tlsalpn/tlsalpn/storage"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// faultKind is how faultProxy fails a request.
type faultKind int

const (
	fault500        faultKind = iota // 500 with a serverInternal problem, the CA never sees the request
	fault503                         // 503 with Retry-After: 1, the CA never sees the request
	faultReset                       // connection reset, the CA never sees the request
	faultResetAfter                  // the CA handles the request, then the connection is reset: the answer is lost
)

// faultProxy stands in front of Pebble's ACME API (democa.Options.Handler)
// and fails, while armed, every POST whose path starts with one of paths. It
// counts the finalisations Pebble accepted: each is a certificate issued.
type faultProxy struct {
	kind  faultKind
	paths []string
	// rate, when not 0, fails that fraction of every POST instead, with
	// a reset before or after the CA handled it, drawn from rng.
	rate float64
	rng  *rand.Rand

	mu         sync.Mutex
	processing int // order answers still to turn from valid to processing
	armed      bool
	failed     int // requests failed
	issued     int // finalize requests Pebble answered 200
	newOrder   int // new-order requests that reached Pebble
}

func (p *faultProxy) arm(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = on
}

// setProcessing makes the next n order answers that say "valid" say
// "processing" instead, and returns how many of the previous setting were
// left.
func (p *faultProxy) setProcessing(n int) (left int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	left, p.processing = p.processing, n
	return left
}

func (p *faultProxy) counts() (failed, issued, newOrder int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed, p.issued, p.newOrder
}

func (p *faultProxy) handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		hit := p.armed && r.Method == http.MethodPost && hasAnyPrefix(r.URL.Path, p.paths)
		kind := p.kind
		if p.rate > 0 {
			hit = p.armed && r.Method == http.MethodPost && p.rng.Float64() < p.rate
			kind = faultReset
			if p.rng.IntN(2) == 0 {
				kind = faultResetAfter
			}
		}
		if hit {
			p.failed++
		}
		if r.URL.Path == "/order-plz" && r.Method == http.MethodPost && !(hit && kind != faultResetAfter) {
			p.newOrder++
		}
		p.mu.Unlock()
		if hit {
			switch kind {
			case fault500:
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(http.StatusInternalServerError)
				w.Write([]byte(`{"type":"urn:ietf:params:acme:error:serverInternal","detail":"injected failure","status":500}`))
				return
			case fault503:
				w.Header().Set("Content-Type", "application/problem+json")
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(`{"type":"urn:ietf:params:acme:error:serverInternal","detail":"injected overload","status":503}`))
				return
			case faultReset:
				reset(w)
				return
			case faultResetAfter:
				rec := &recorder{header: http.Header{}}
				p.serve(next, rec, r)
				reset(w)
				return
			}
		}
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/my-order/") {
			p.mu.Lock()
			slow := p.processing > 0
			p.mu.Unlock()
			if slow {
				rec := &recorder{header: http.Header{}, code: http.StatusOK}
				p.serve(next, rec, r)
				body := rec.body.Bytes()
				if valid := []byte(`"status": "valid"`); bytes.Contains(body, valid) {
					body = bytes.Replace(body, valid, []byte(`"status": "processing"`), 1)
					p.mu.Lock()
					p.processing--
					p.mu.Unlock()
				}
				for k, v := range rec.header {
					w.Header()[k] = v
				}
				w.Header().Del("Content-Length")
				w.WriteHeader(rec.code)
				w.Write(body)
				return
			}
		}
		p.serve(next, w, r)
	})
}

// serve passes r to Pebble and counts the finalisations it accepted.
func (p *faultProxy) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	next.ServeHTTP(sw, r)
	if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/finalize-order/") && sw.code == http.StatusOK {
		p.mu.Lock()
		p.issued++
		p.mu.Unlock()
	}
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// reset closes the client's connection with a TCP RST and no response.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	if tc, ok := conn.(*tls.Conn); ok {
		if tcp, ok := tc.NetConn().(*net.TCPConn); ok {
			tcp.SetLinger(0)
		}
	}
	conn.Close()
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// recorder swallows a response that faultResetAfter drops.
type recorder struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(code int)        { r.code = code }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

// journalKeys lists what the order journal holds.
func journalKeys(t *testing.T, st storage.Storage) []string {
	t.Helper()
	keys, err := st.List(testContext(t), storage.OrdersPrefix, true)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestResumeAfterCAFailure makes the CA fail after it has issued a
// certificate, in each way a CA fails: the certificate download or the
// order polls after finalisation answer 500, 503 with Retry-After, or a
// reset; or the CA accepts the finalisation and the answer is lost. The
// first Obtain fails; the second must resume the order and return the
// certificate already issued, not order another one.
func TestResumeAfterCAFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		kind  faultKind
		paths []string
		// processing is how many order answers on the rerun say
		// "processing" where Pebble said "valid": a CA slow to issue.
		processing int
		// readyFirst: the first Obtain fails before the CA issued, with
		// the order ready; the rerun finalises it.
		readyFirst bool
	}{
		{"download 500", fault500, []string{"/certZ/"}, 0, false},
		{"download 503 Retry-After", fault503, []string{"/certZ/"}, 0, false},
		{"download reset", faultReset, []string{"/certZ/"}, 0, false},
		{"order poll after finalize 500", fault500, []string{"/my-order/"}, 0, false},
		{"order poll after finalize reset", faultReset, []string{"/my-order/"}, 0, false},
		{"finalize accepted, answer lost", faultResetAfter, []string{"/finalize-order/", "/my-order/"}, 0, false},
		{"resumed order still processing", fault500, []string{"/certZ/"}, 2, false},
		{"finalize 500, order ready", fault500, []string{"/finalize-order/"}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			proxy := &faultProxy{kind: tt.kind, paths: tt.paths}
			wantFirst := 1
			if tt.readyFirst {
				wantFirst = 0
			}
			e := newTestEnv(t, democa.Options{Handler: proxy.handler})
			ctx := testContext(t)
			req := Request{Identifiers: ids(t, "resume.example.test"), Profile: "shortlived"}
			iss := e.issuer(t, func(c *Config) { c.PollTimeout = 5 * time.Second })

			if _, err := iss.Account(ctx); err != nil {
				t.Fatal(err)
			}
			proxy.arm(true)
			_, err := iss.Obtain(ctx, req)
			failed, issued, _ := proxy.counts()
			t.Logf("first Obtain, %d requests failed, %d certificates issued: %v", failed, issued, err)
			if err == nil {
				t.Fatal("Obtain succeeded through the injected failures")
			}
			if failed == 0 || issued != wantFirst {
				t.Fatalf("%d requests failed and %d certificates issued; the test wants a failure with %d issued", failed, issued, wantFirst)
			}
			var re *RetryError
			if tt.kind == fault503 && !errors.As(err, &re) {
				t.Errorf("error %v after 503 with Retry-After is not a *RetryError", err)
			}
			if len(journalKeys(t, e.store)) != 2 {
				t.Errorf("journal after the failure = %q, want order.json and key.pem", journalKeys(t, e.store))
			}

			// The CA recovers; a new Issuer, as a new process would have.
			proxy.arm(false)
			proxy.setProcessing(tt.processing)
			res, err := e.issuer(t, nil).Obtain(ctx, req)
			if err != nil {
				t.Fatalf("second Obtain: %v", err)
			}
			_, issued, newOrders := proxy.counts()
			if issued != 1 || newOrders != 1 {
				t.Errorf("after the rerun the CA issued %d certificates for %d orders; want the first one resumed (1, 1)", issued, newOrders)
			}
			if !res.Resumed {
				t.Error("Result.Resumed is not set")
			}
			if left := proxy.setProcessing(0); left != 0 {
				t.Errorf("%d of %d answers saying processing were never asked for: the order was not polled", left, tt.processing)
			}
			checkResult(t, e, res, []string{"resume.example.test"})
			if err := res.Done(ctx); err != nil {
				t.Fatal(err)
			}
			if keys := journalKeys(t, e.store); len(keys) != 0 {
				t.Errorf("journal after Done = %q, want empty", keys)
			}
		})
	}
}

// TestRandomResets renews one certificate again and again through a CA
// that resets 30% of the requests, half of them after handling them (the
// answer is lost), as a flaky network or load balancer does. Every
// certificate the CA issues must end up with the caller: an Obtain that
// failed after issuance is resumed by the next one.
func TestRandomResets(t *testing.T) {
	t.Parallel()
	proxy := &faultProxy{rate: 0.3, rng: rand.New(rand.NewPCG(8737, 1))}
	e := newTestEnv(t, democa.Options{Handler: proxy.handler})
	ctx := testContext(t)
	req := Request{Identifiers: ids(t, "flaky.example.test"), Profile: "shortlived"}
	if _, err := e.issuer(t, nil).Account(ctx); err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	failures := 0
	renew := func() {
		res, err := e.issuer(t, func(c *Config) { c.PollTimeout = 5 * time.Second }).Obtain(ctx, req)
		if err != nil {
			failures++
			return
		}
		stored[res.Leaf.SerialNumber.String()] = true
		if err := res.Done(ctx); err != nil {
			t.Fatal(err)
		}
		req.Replaces = res.Leaf
	}
	proxy.arm(true)
	for range 8 {
		renew()
	}
	proxy.arm(false)
	renew() // the CA is well again
	failed, issued, orders := proxy.counts()
	t.Logf("%d requests reset, %d Obtains failed: the CA issued %d certificates for %d orders, %d reached the caller",
		failed, failures, issued, orders, len(stored))
	if issued != len(stored) {
		t.Errorf("the CA issued %d certificates, the caller got %d: issued certificates were thrown away", issued, len(stored))
	}
}

// TestResumeUntilStored: until the caller says the certificate is stored
// (a save that failed on a full disk, a crash before it), Obtain for the
// same request returns the same certificate without a new order. Once it
// is stored, or when the request renews that very certificate, a new
// order is made.
func TestResumeUntilStored(t *testing.T) {
	t.Parallel()
	proxy := &faultProxy{}
	e := newTestEnv(t, democa.Options{Handler: proxy.handler})
	ctx := testContext(t)
	req := Request{Identifiers: ids(t, "unsaved.example.test", "unsaved2.example.test"), Profile: "shortlived", KeyType: EC384}

	first, err := e.issuer(t, nil).Obtain(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// Not stored: the caller failed, and runs again.
	again, err := e.issuer(t, nil).Obtain(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, issued, _ := proxy.counts(); issued != 1 || !again.Leaf.Equal(first.Leaf) || !again.Resumed {
		t.Errorf("rerun before Done: %d issued, same certificate %v, resumed %v; want 1, true, true", issued, again.Leaf.Equal(first.Leaf), again.Resumed)
	}
	if !bytes.Equal(again.KeyPEM, first.KeyPEM) {
		t.Error("the resumed certificate came with another key")
	}
	// Another request (other key type) does not take this order.
	other := req
	other.KeyType = EC256
	if res, err := e.issuer(t, nil).Obtain(ctx, other); err != nil || res.Resumed || res.Leaf.Equal(first.Leaf) {
		t.Errorf("a request with another key type: resumed %v, err %v; want a new order", res != nil && res.Resumed, err)
	}
	// Renewing the certificate the lingering entry holds orders afresh.
	renew := req
	renew.Replaces = first.Leaf
	res, err := e.issuer(t, nil).Obtain(ctx, renew)
	if err != nil {
		t.Fatal(err)
	}
	if res.Leaf.Equal(first.Leaf) || res.Resumed {
		t.Error("renewing the certificate held by the journal returned that same certificate")
	}
	if err := res.Done(ctx); err != nil {
		t.Fatal(err)
	}
	res, err = e.issuer(t, nil).Obtain(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed {
		t.Error("Obtain after Done resumed an order")
	}
	if _, issued, _ := proxy.counts(); issued != 4 {
		t.Errorf("%d certificates issued, want 4", issued)
	}
}

// TestResumeDropsDeadOrders: a journaled order the CA no longer accepts,
// or a damaged entry, is dropped for a new order rather than failing every
// later Obtain.
func TestResumeDropsDeadOrders(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{})
	ctx := testContext(t)
	iss := e.issuer(t, nil)
	req := Request{Identifiers: ids(t, "dead.example.test"), Profile: "shortlived"}
	if _, err := iss.Account(ctx); err != nil {
		t.Fatal(err)
	}
	j := iss.journalFor(req, "shortlived")
	key, err := EC256.Generate()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		write func()
	}{
		{"unknown order", func() {
			acct, _ := iss.Account(ctx)
			u := strings.Replace(acct.Location, "/my-account/", "/my-order/", 1) + "nothing"
			if err := j.save(ctx, journalEntry{Order: u, Account: acct.Location}, key); err != nil {
				t.Fatal(err)
			}
		}},
		{"damaged order.json", func() {
			if err := e.store.Put(ctx, path.Join(j.prefix, "order.json"), []byte("{not json"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"other account", func() {
			if err := j.save(ctx, journalEntry{Order: "https://127.0.0.1:1/my-order/x", Account: "https://127.0.0.1:1/my-account/x"}, key); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.write()
			res, err := iss.Obtain(ctx, req)
			if err != nil {
				t.Fatalf("Obtain with a dead journal entry: %v", err)
			}
			if res.Resumed {
				t.Error("resumed a dead order")
			}
			if err := res.Done(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestResumeUnusableCertificate: a resumed certificate that does not match
// the journaled key (the key file was replaced) fails that run, and the
// entry is dropped so that the next run orders afresh instead of failing
// the same way for ever.
func TestResumeUnusableCertificate(t *testing.T) {
	t.Parallel()
	proxy := &faultProxy{kind: fault500, paths: []string{"/certZ/"}}
	e := newTestEnv(t, democa.Options{Handler: proxy.handler})
	ctx := testContext(t)
	req := Request{Identifiers: ids(t, "swapped.example.test"), Profile: "shortlived"}
	iss := e.issuer(t, nil)
	proxy.arm(true)
	if _, err := iss.Obtain(ctx, req); err == nil {
		t.Fatal("Obtain succeeded through the injected failures")
	}
	proxy.arm(false)
	other, err := EC256.Generate()
	if err != nil {
		t.Fatal(err)
	}
	otherPEM, _ := EncodeKeyPEM(other)
	j := iss.journalFor(req, "shortlived")
	if err := e.store.Put(ctx, path.Join(j.prefix, "key.pem"), otherPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = iss.Obtain(ctx, req)
	if err == nil || !strings.Contains(err.Error(), "does not match our private key") {
		t.Fatalf("resuming with a swapped key: %v; want a mismatch error", err)
	}
	res, err := iss.Obtain(ctx, req)
	if err != nil {
		t.Fatalf("the run after the mismatch: %v", err)
	}
	if res.Resumed {
		t.Error("the run after the mismatch resumed the same order")
	}
	if _, issued, _ := proxy.counts(); issued != 2 {
		t.Errorf("%d certificates issued, want 2", issued)
	}
}

// TestJournalPrune: when another order is made, a writability probe a
// killed process left is removed, and so is an entry no Obtain came back
// for in 30 days (its names or key type changed), private key and all;
// recent ones stay.
func TestJournalPrune(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{})
	ctx := testContext(t)
	iss := e.issuer(t, nil)
	acct, err := iss.Account(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key, err := EC256.Generate()
	if err != nil {
		t.Fatal(err)
	}
	entries := []struct {
		name string
		age  time.Duration
		kept bool
	}{
		{"abandoned.example.test", 31 * 24 * time.Hour, false},
		{"recent.example.test", 6 * 24 * time.Hour, true},
	}
	for _, en := range entries {
		j := iss.journalFor(Request{Identifiers: ids(t, en.name)}, "shortlived")
		if err := j.save(ctx, journalEntry{Order: "https://127.0.0.1:1/my-order/x", Account: acct.Location}, key); err != nil {
			t.Fatal(err)
		}
		when := time.Now().Add(-en.age)
		for _, f := range []string{"order.json", "key.pem"} {
			if err := os.Chtimes(e.store.Path(path.Join(j.prefix, f)), when, when); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Probes a killed process left: an old one goes, a fresh one (another
	// process probing now) stays.
	probes := []struct {
		key  string
		age  time.Duration
		kept bool
	}{
		{storage.ProbeKey(e.ca.DirectoryURL(), "old"), time.Hour, false},
		{storage.ProbeKey(e.ca.DirectoryURL(), "now"), 0, true},
	}
	for _, p := range probes {
		if err := e.store.Put(ctx, p.key, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		when := time.Now().Add(-p.age)
		if err := os.Chtimes(e.store.Path(p.key), when, when); err != nil {
			t.Fatal(err)
		}
	}
	res, err := iss.Obtain(ctx, Request{Identifiers: ids(t, "other.example.test"), Profile: "shortlived"})
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Done(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range probes {
		_, err := e.store.Stat(ctx, p.key)
		if kept := err == nil; kept != p.kept {
			t.Errorf("probe %s, %v old: kept = %v, want %v", p.key, p.age, kept, p.kept)
		}
	}
	for _, en := range entries {
		j := iss.journalFor(Request{Identifiers: ids(t, en.name)}, "shortlived")
		_, err := e.store.Stat(ctx, path.Join(j.prefix, "key.pem"))
		if kept := err == nil; kept != en.kept {
			t.Errorf("entry for %s, %v old: kept = %v, want %v", en.name, en.age, kept, en.kept)
		}
	}
}

// TestObtainRefusesUnwritableStorage: a storage that cannot take a write
// (a full disk; a read-only directory when not root) fails Obtain before
// the CA is asked for an order, naming the storage.
func TestObtainRefusesUnwritableStorage(t *testing.T) {
	t.Parallel()
	proxy := &faultProxy{}
	e := newTestEnv(t, democa.Options{Handler: proxy.handler})
	ctx := testContext(t)
	root := filepath.Join(t.TempDir(), "store")
	if err := os.Mkdir(root, 0o700); err != nil {
		t.Fatal(err)
	}
	var fill func()
	if os.Geteuid() == 0 {
		// Root writes anywhere: a real full file system it is.
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", root).CombinedOutput(); err != nil {
			t.Skipf("cannot mount a small tmpfs to fill up: %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", root).Run() })
		fill = func() {
			f, err := os.Create(filepath.Join(root, "filler"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for {
				if _, err := f.Write(make([]byte, 4096)); err != nil {
					return // ENOSPC
				}
			}
		}
	} else {
		fill = func() {
			if err := os.Chmod(root, 0o500); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(root, 0o700) })
		}
	}
	st, err := fs.New(root)
	if err != nil {
		t.Fatal(err)
	}
	iss := e.issuer(t, func(c *Config) { c.Storage = st })
	if _, err := iss.Account(ctx); err != nil {
		t.Fatal(err)
	}
	fill()
	_, err = iss.Obtain(ctx, Request{Identifiers: ids(t, "full.example.test"), Profile: "shortlived"})
	t.Logf("Obtain into unwritable storage: %v", err)
	if err == nil {
		t.Fatal("Obtain succeeded with storage that takes no writes")
	}
	for _, want := range []string{"not ordering a certificate for full.example.test", root, "does not accept writes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, _, n := proxy.counts(); n != 0 {
		t.Errorf("%d orders created at the CA with unwritable storage, want 0", n)
	}
}

// TestAccountLost: when the CA answers accountDoesNotExist for the stored
// account, as a CA that lost its accounts does, the account is registered
// again with the same key, stored, a warning is logged, and the order
// goes through.
func TestAccountLost(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{})
	ctx := testContext(t)
	acct, err := e.issuer(t, nil).Account(ctx)
	if err != nil {
		t.Fatal(err)
	}
	accountKey := storage.AccountDir(e.ca.DirectoryURL(), "")
	tests := []struct {
		name    string
		newKey  bool // the CA knows neither the URL nor the key, as after a reset
		wantURL func(string) bool
	}{
		{"URL unknown, key known", false, func(u string) bool { return u == acct.Location }},
		{"URL and key unknown", true, func(u string) bool { return u != acct.Location && strings.Contains(u, "/my-account/") }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.newKey {
				k, err := EC256.Generate()
				if err != nil {
					t.Fatal(err)
				}
				pemKey, _ := EncodeKeyPEM(k)
				if err := e.store.Put(ctx, path.Join(accountKey, "key.pem"), pemKey, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			keyBefore, _ := e.store.Get(ctx, path.Join(accountKey, "key.pem"))
			lost := acct.Location + "lost"
			rec, _ := json.Marshal(accountRecord{Directory: e.ca.DirectoryURL(), Location: lost, Status: "valid"})
			if err := e.store.Put(ctx, path.Join(accountKey, "account.json"), rec, 0o600); err != nil {
				t.Fatal(err)
			}
			var logs lockedBuffer
			iss := e.issuer(t, func(c *Config) {
				c.AgreeTOS = false // as in "tlsalpn renew", run from cron
				c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			})
			res, err := iss.Obtain(ctx, Request{Identifiers: ids(t, "lost"+string(rune('a'+i))+".example.test"), Profile: "shortlived"})
			if err != nil {
				t.Fatalf("Obtain with an account the CA lost: %v", err)
			}
			stored, err := iss.loadAccount(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if stored.Location == lost || !tt.wantURL(stored.Location) || res.Account != stored.Location {
				t.Errorf("account after re-registration = %s (result: %s); lost one was %s", stored.Location, res.Account, lost)
			}
			if keyAfter, _ := e.store.Get(ctx, path.Join(accountKey, "key.pem")); !bytes.Equal(keyAfter, keyBefore) {
				t.Error("re-registration changed the account key")
			}
			if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), lost) {
				t.Errorf("no warning naming the lost account %s in the log:\n%s", lost, logs.String())
			}
			// Lost again: revocation registers again too.
			if err := e.store.Put(ctx, path.Join(accountKey, "account.json"), rec, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := e.issuer(t, nil).Revoke(ctx, res.Leaf, 4); err != nil {
				t.Errorf("Revoke with an account the CA lost: %v", err)
			}
		})
	}
}

// lockedBuffer is a log or stderr written beside the test that reads it.
type lockedBuffer = syncbuf.Buffer
