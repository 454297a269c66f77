package manager

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage"
)

func TestFallbackRenewAt(t *testing.T) {
	t.Parallel()
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	tests := []struct {
		name     string
		lifetime time.Duration
		want     time.Duration // after notBefore
	}{
		{"90 days: a third left", 90 * day, 60 * day},
		{"45 days: a third left", 45 * day, 30 * day},
		{"10 days: a third left", 10 * day, 10 * day * 2 / 3},
		{"just under 10 days: half left", 10*day - time.Hour, (10*day - time.Hour) / 2},
		{"6 days: half left", 6 * day, 3 * day},
		{"160 hours: half left", 160 * time.Hour, 80 * time.Hour},
	}
	for _, tt := range tests {
		got := FallbackRenewAt(nb, nb.Add(tt.lifetime))
		if want := nb.Add(tt.want); !got.Equal(want) {
			t.Errorf("%s: FallbackRenewAt = %v, want %v", tt.name, got, want)
		}
	}
}

func TestPickInWindow(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	h := time.Hour
	tests := []struct {
		name       string
		start, end time.Time
		lo, hi     time.Time // the result must be in [lo, hi)
	}{
		{"window in the past", now.Add(-3 * h), now.Add(-2 * h), now, now.Add(1)},
		{"window ending now", now.Add(-3 * h), now, now, now.Add(1)},
		{"window around now", now.Add(-h), now.Add(h), now, now.Add(h)},
		{"window in the future", now.Add(24 * h), now.Add(48 * h), now.Add(24 * h), now.Add(48 * h)},
		{"empty future window", now.Add(h), now.Add(h), now.Add(h), now.Add(h + 1)},
	}
	for _, tt := range tests {
		var first time.Time
		varied := false
		for i := range 200 {
			got := pickInWindow(tt.start, tt.end, now)
			if got.Before(tt.lo) || !got.Before(tt.hi) {
				t.Fatalf("%s: pickInWindow = %v, want in [%v, %v)", tt.name, got, tt.lo, tt.hi)
			}
			if i == 0 {
				first = got
			} else if !got.Equal(first) {
				varied = true
			}
		}
		if wide := tt.hi.Sub(tt.lo) > time.Second; wide && !varied {
			t.Errorf("%s: 200 picks all gave %v; want a random time", tt.name, first)
		}
	}
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hookTo returns a deploy hook that writes $TLSALPN_DOMAIN to marker.
func hookTo(marker string) string {
	return `printf '%s' "$TLSALPN_DOMAIN" > '` + marker + `'`
}

func TestObtainStoreDeployList(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{}, nil)
	ctx := testContext(t)
	dir := t.TempDir()
	out, marker := filepath.Join(dir, "out", "www"), filepath.Join(dir, "marker")

	spec := e.spec("default", "WWW.Example.TEST.", "example.test")
	spec.Out, spec.DeployHook = out, hookTo(marker)
	rec, err := e.m.Obtain(ctx, spec, nil)
	if err != nil {
		t.Fatalf("Obtain: %v", err)
	}
	const name = "www.example.test"
	if rec.Name() != name || rec.Names[1] != "example.test" {
		t.Errorf("record names = %q, want canonical [%s example.test]", rec.Names, name)
	}
	if rec.Serial == "" || rec.Issuer == "" || rec.URL == "" || rec.Account == "" || rec.Replaced != "" {
		t.Errorf("record = %+v", rec)
	}
	if rec.Profile != "default" || rec.KeyType != issuer.EC256 || rec.Out != out {
		t.Errorf("record spec = %+v", rec.Spec)
	}
	if life := rec.Lifetime().Round(time.Hour); life != 90*24*time.Hour {
		t.Errorf("lifetime %v, want 90 days", life)
	}

	// Stored: key 0600, the rest 0644.
	metaK, certK, keyK := e.storedKeys(t, name)
	for file, mode := range map[string]os.FileMode{keyK: 0o600, certK: 0o644, metaK: 0o644} {
		fi, err := os.Stat(e.store.Path(file))
		if err != nil {
			t.Errorf("stored %s: %v", file, err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("stored %s has mode %v, want %v", file, fi.Mode().Perm(), mode)
		}
	}

	// Deployed, and the hook ran with the primary name.
	s, err := e.m.Load(ctx, name)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if s.Serial != rec.Serial || !s.NotAfter.Equal(rec.NotAfter) || len(s.Chain) < 2 || serialHex(s.Chain[0]) != rec.Serial {
		t.Errorf("Load = %+v, want the record just obtained", s.Record)
	}
	if got := readFile(t, filepath.Join(out, "key.pem")); !bytes.Equal(got, s.KeyPEM) {
		t.Error("deployed key.pem differs from the stored key")
	}
	if fi, err := os.Stat(filepath.Join(out, "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("deployed key.pem: %v, %v; want mode 0600", fi.Mode().Perm(), err)
	}
	full, err := issuer.ParseChainPEM(readFile(t, filepath.Join(out, "fullchain.pem")))
	if err != nil || len(full) != len(s.Chain) || !full[0].Equal(s.Chain[0]) {
		t.Errorf("deployed fullchain.pem is not the stored chain (%v)", err)
	}
	leaf, err := issuer.ParseChainPEM(readFile(t, filepath.Join(out, "cert.pem")))
	if err != nil || len(leaf) != 1 || !leaf[0].Equal(s.Chain[0]) {
		t.Errorf("deployed cert.pem is not the leaf alone (%v)", err)
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(out, "fullchain.pem"), filepath.Join(out, "key.pem")); err != nil {
		t.Errorf("deployed pair does not load: %v", err)
	}
	if got := string(readFile(t, marker)); got != name {
		t.Errorf("hook saw TLSALPN_DOMAIN=%q, want %q", got, name)
	}

	// A second certificate, not deployed, and a damaged record.
	if _, err := e.m.Obtain(ctx, e.spec("shortlived", "api.example.test", "127.0.0.1"), nil); err != nil {
		t.Fatalf("Obtain without Out: %v", err)
	}
	broken := storage.LineageMetaKey("broken.example.test")
	if err := e.store.Put(ctx, broken, []byte(`{"names": [`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Load(ctx, "broken.example.test"); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("Load of a damaged record: %v; want an error saying so", err)
	}
	all, bad, err := e.m.List(ctx)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var got []string
	for _, s := range all {
		got = append(got, s.Name())
	}
	if strings.Join(got, " ") != "api.example.test www.example.test" {
		t.Errorf("List = %q, want [api.example.test www.example.test] (sorted, damaged one apart)", got)
	}
	if len(bad) != 1 || bad[0].Name != "broken.example.test" {
		t.Errorf("List's damaged = %v, want broken.example.test", bad)
	}

	tests := []struct {
		query string
		want  string // primary name found, "" for none
	}{
		{"www.example.test", name},
		{"Example.Test.", name},
		{"api.example.test", "api.example.test"},
		{"127.0.0.1", "api.example.test"},
		{"broken.example.test", ""},
		{"other.example.test", ""},
	}
	for _, tt := range tests {
		found, err := e.m.Find(ctx, tt.query)
		if err != nil {
			t.Fatalf("Find(%q): %v", tt.query, err)
		}
		switch {
		case tt.want == "" && len(found) != 0:
			t.Errorf("Find(%q) found %s", tt.query, found[0].Name())
		case tt.want != "" && (len(found) != 1 || found[0].Name() != tt.want):
			t.Errorf("Find(%q) = %d records, want %s", tt.query, len(found), tt.want)
		}
	}
	if e.resp.Pending() != 0 {
		t.Errorf("%d challenges still published", e.resp.Pending())
	}
}

// stripARIRetryAfter removes the Retry-After header from the CA's
// renewal information, as some CAs send none.
func stripARIRetryAfter(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/renewalInfo/") {
			w = noRetryAfter{w}
		}
		next.ServeHTTP(w, r)
	})
}

type noRetryAfter struct{ http.ResponseWriter }

func (w noRetryAfter) WriteHeader(code int) {
	w.Header().Del("Retry-After")
	w.ResponseWriter.WriteHeader(code)
}

func (w noRetryAfter) Write(b []byte) (int, error) {
	w.Header().Del("Retry-After")
	return w.ResponseWriter.Write(b)
}

func TestDueAndRenew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		retryAfter bool // whether the CA sends Retry-After with renewal information
	}{
		{"CA sends Retry-After", true},
		{"CA sends no Retry-After", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var opts democa.Options
			if !tt.retryAfter {
				opts.Handler = stripARIRetryAfter
			}
			testDueAndRenew(t, newTestEnv(t, opts, nil), tt.retryAfter)
		})
	}
}

func testDueAndRenew(t *testing.T, e *testEnv, retryAfter bool) {
	ctx := testContext(t)
	dir := t.TempDir()
	out, marker := filepath.Join(dir, "out"), filepath.Join(dir, "marker")
	spec := e.spec("default", "due.example.test")
	spec.Out, spec.DeployHook = out, hookTo(marker)
	spec.KeyType = issuer.EC384
	first, err := e.m.Obtain(ctx, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	load := func() *Stored {
		t.Helper()
		s, err := e.m.Load(ctx, "due.example.test")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	iss, err := e.m.issuerFor(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}

	// Fresh: Pebble's window is around two thirds of the lifetime.
	s := load()
	d := e.m.Due(ctx, iss, s)
	if d.Due || !strings.Contains(d.Reason, "renewal window starts") || !d.At.After(s.NotBefore.Add(50*24*time.Hour)) {
		t.Errorf("fresh certificate: %+v; want not due, at the CA's window", d)
	}
	if a := load().ARI; a == nil || a.CertSerial != first.Serial || a.Selected.IsZero() || a.RetryAfter.IsZero() != !retryAfter {
		t.Errorf("stored renewal info = %+v; want the CA's window for serial %s", a, first.Serial)
	}

	// The CA moves the window into the past. Until its Retry-After (or,
	// without one, a few hours) has passed the stored answer stands; then
	// the new window makes it due.
	if err := e.ca.SetRenewalInfo(ctx, s.Chain[0], time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if d := e.m.Due(ctx, iss, load()); d.Due {
		t.Errorf("due before the CA's Retry-After: %+v", d)
	}
	e.m.now = func() time.Time { return time.Now().Add(time.Hour) }
	if d := e.m.Due(ctx, iss, load()); d.Due {
		t.Errorf("due an hour later: %+v", d)
	}
	e.m.now = func() time.Time { return time.Now().Add(7 * time.Hour) }
	d = e.m.Due(ctx, iss, load())
	if !d.Due || !strings.Contains(d.Reason, "inside the CA's renewal window") {
		t.Fatalf("after the window moved: %+v; want due, citing the window", d)
	}

	os.Remove(marker)
	results, err := e.m.Renew(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 || results[0].Err != nil || results[0].Renewed == nil || results[0].ByOther {
		t.Fatalf("Renew = %+v; want one renewal, ordered here", results)
	}
	r := results[0].Renewed
	certID, _ := acme.ARIUniqueIdentifier(s.Chain[0])
	if r.Replaced != certID || r.Serial == first.Serial {
		t.Errorf("renewed: replaced %q serial %s; want replaced %q and a new serial", r.Replaced, r.Serial, certID)
	}
	if r.Profile != "default" || r.KeyType != issuer.EC384 || r.Out != out || r.DeployHook != spec.DeployHook {
		t.Errorf("renewed spec = %+v; want the original's", r.Spec)
	}
	s = load()
	if s.Serial != r.Serial || issuer.KeyTypeOf(s.Chain[0].PublicKey) != issuer.EC384 {
		t.Errorf("stored after renewal: serial %s, key %s", s.Serial, issuer.KeyTypeOf(s.Chain[0].PublicKey))
	}
	deployed, err := issuer.ParseChainPEM(readFile(t, filepath.Join(out, "cert.pem")))
	if err != nil || serialHex(deployed[0]) != r.Serial {
		t.Errorf("deployed certificate is not the renewed one (%v)", err)
	}
	if got := string(readFile(t, marker)); got != "due.example.test" {
		t.Errorf("hook after renewal wrote %q", got)
	}

	// The new certificate is not due, so nothing more happens.
	results, err = e.m.Renew(ctx, false)
	if err != nil || len(results) != 1 || results[0].Renewed != nil || results[0].Decision.Due {
		t.Errorf("second Renew = %+v, %v; want nothing renewed", results, err)
	}
}

// breakablePublisher publishes a challenge certificate with a wrong key
// authorization while broken is set, so that validation fails, and counts
// what it published.
type breakablePublisher struct {
	issuer.Publisher
	broken    *atomic.Bool
	published *atomic.Int32
}

func (p breakablePublisher) Publish(ctx context.Context, serverName string, cert *tls.Certificate) (<-chan struct{}, error) {
	p.published.Add(1)
	if p.broken.Load() {
		id, err := challenge.ParseIdentifier(serverName)
		if err != nil {
			return nil, err
		}
		if cert, err = challenge.Build(id, "wrong-token.wrong-thumbprint"); err != nil {
			return nil, err
		}
	}
	return p.Publisher.Publish(ctx, serverName, cert)
}

func TestRenewFailureKeepsCertificate(t *testing.T) {
	t.Parallel()
	var badValidation, orders500 atomic.Bool
	fail := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if orders500.Load() && r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
				http.Error(w, "injected failure", http.StatusInternalServerError)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	var published atomic.Int32
	e := newTestEnv(t, democa.Options{Handler: fail}, func(p issuer.Publisher) issuer.Publisher {
		return breakablePublisher{p, &badValidation, &published}
	})
	ctx := testContext(t)
	dir := t.TempDir()
	out, marker := filepath.Join(dir, "out"), filepath.Join(dir, "marker")
	spec := e.spec("shortlived", "keep.example.test")
	spec.Out, spec.DeployHook = out, hookTo(marker)
	if _, err := e.m.Obtain(ctx, spec, nil); err != nil {
		t.Fatal(err)
	}
	_, certK, keyK := e.storedKeys(t, "keep.example.test")
	files := []string{
		e.store.Path(certK), e.store.Path(keyK),
		filepath.Join(out, "cert.pem"), filepath.Join(out, "chain.pem"),
		filepath.Join(out, "fullchain.pem"), filepath.Join(out, "key.pem"),
	}
	before := make([][]byte, len(files))
	for i, f := range files {
		before[i] = readFile(t, f)
	}
	os.Remove(marker)

	// The validation failure comes last: Pebble reuses the authorization
	// of the first order for 1% of later ones even with AuthzReuse 0 (it
	// compares rand.Intn(100) > 0), and then nothing is validated at all.
	tests := []struct {
		name  string
		flag  *atomic.Bool
		check func(error) bool
	}{
		{"CA answers 500", &orders500, func(err error) bool {
			return strings.Contains(err.Error(), "creating order for keep.example.test") && strings.Contains(err.Error(), "500")
		}},
		{"validation fails", &badValidation, func(err error) bool {
			var ve *issuer.ValidationError
			return errors.As(err, &ve) && strings.Contains(err.Error(), "Invalid acmeValidation extension value")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.flag.Store(true)
			defer tt.flag.Store(false)
			published.Store(0)
			results, err := e.m.Renew(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			if len(results) == 1 && results[0].Err == nil && tt.flag == &badValidation && published.Load() == 0 {
				t.Skip("Pebble reused the earlier authorization, so no validation took place")
			}
			if len(results) != 1 || results[0].Renewed != nil || results[0].Err == nil {
				t.Fatalf("Renew = %+v; want one failed renewal", results)
			}
			if !tt.check(results[0].Err) {
				t.Errorf("unexpected error: %v", results[0].Err)
			}
			for i, f := range files {
				if !bytes.Equal(readFile(t, f), before[i]) {
					t.Errorf("%s changed after a failed renewal", f)
				}
			}
			if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the deploy hook ran after a failed renewal (%v)", err)
			}
		})
	}
	if e.resp.Pending() != 0 {
		t.Errorf("%d challenges still published", e.resp.Pending())
	}
}

func TestRevoke(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{}, nil)
	ctx := testContext(t)
	out := filepath.Join(t.TempDir(), "out")
	spec := e.spec("shortlived", "revoke.example.test")
	spec.Out = out
	if _, err := e.m.Obtain(ctx, spec, nil); err != nil {
		t.Fatal(err)
	}
	s, err := e.m.Load(ctx, "revoke.example.test")
	if err != nil {
		t.Fatal(err)
	}
	deployed := readFile(t, filepath.Join(out, "fullchain.pem"))
	if err := e.m.Revoke(ctx, s, 4); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	s, err = e.m.Load(ctx, "revoke.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if s.Revoked.IsZero() {
		t.Fatal("record not marked revoked")
	}
	iss, _ := e.m.issuerFor(ctx, s.Spec)
	if d := e.m.Due(ctx, iss, s); d.Due || !d.Revoked || !strings.Contains(d.Reason, "revoked") {
		t.Errorf("Due = %+v; want not due because revoked", d)
	}
	for _, force := range []bool{false, true} {
		results, err := e.m.Renew(ctx, force)
		if err != nil || len(results) != 1 {
			t.Fatalf("Renew(%v) = %+v, %v", force, results, err)
		}
		if r := results[0]; r.Renewed != nil || r.Err != nil || r.Decision.Due {
			t.Errorf("Renew(%v) = %+v; want the revoked certificate skipped", force, r)
		}
	}
	if !bytes.Equal(readFile(t, filepath.Join(out, "fullchain.pem")), deployed) {
		t.Error("deployment changed")
	}
	// Revoking it again is the CA's call, and it refuses.
	if err := e.m.Revoke(ctx, s, 4); err == nil || !strings.Contains(err.Error(), "revoke.example.test") {
		t.Errorf("second Revoke: %v; want an error naming the certificate", err)
	}
}
