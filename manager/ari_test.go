package manager

import (
	"context"
	"crypto/x509"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/internal/democa"
)

// heldIssuer is a real issuer whose renewal information, once the CA has
// answered, is held back until release is closed: a slow CA, or a
// Retry-After being honoured, while another process renews.
type heldIssuer struct {
	Issuer
	answered chan struct{} // closed when the CA has answered
	release  chan struct{}
}

func (h heldIssuer) RenewalInfo(ctx context.Context, leaf *x509.Certificate) (acme.RenewalInfo, error) {
	ri, err := h.Issuer.RenewalInfo(ctx, leaf)
	close(h.answered)
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	return ri, err
}

// TestARIRefreshDuringRenewal checks that renewal information fetched for
// a certificate that was renewed before it could be stored does not put
// the old record back over the renewed one.
func TestARIRefreshDuringRenewal(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{}, nil)
	ctx := testContext(t)
	spec := e.spec("shortlived", "race.example.test")
	first, err := e.m.Obtain(ctx, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The keeper's view, taken before the renewal.
	s, err := e.m.Load(ctx, "race.example.test")
	if err != nil {
		t.Fatal(err)
	}
	iss, err := e.m.issuerFor(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	held := heldIssuer{Issuer: iss, answered: make(chan struct{}), release: make(chan struct{})}
	done := make(chan Decision, 1)
	go func() { done <- e.m.Due(ctx, held, s) }()
	select {
	case <-held.answered:
	case <-ctx.Done():
		t.Fatal("the CA was not asked for renewal information")
	}

	// Another process (a cron "tlsalpn renew") renews meanwhile.
	renewed, err := e.m.Obtain(ctx, spec, s.Chain[0])
	if err != nil {
		close(held.release)
		t.Fatal(err)
	}
	if renewed.Serial == first.Serial {
		t.Fatalf("renewal kept serial %s", first.Serial)
	}
	close(held.release)
	<-done

	got, err := e.m.Load(ctx, "race.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if got.Serial != renewed.Serial || serialHex(got.Chain[0]) != renewed.Serial || got.Replaced != renewed.Replaced {
		t.Fatalf("stored after the refresh: serial %s (chain %s), replaced %q; want the renewed certificate's serial %s, replaced %q",
			got.Serial, serialHex(got.Chain[0]), got.Replaced, renewed.Serial, renewed.Replaced)
	}
	if got.ARI != nil {
		t.Errorf("stored renewal info %+v; want none: it was for serial %s, no longer stored", got.ARI, first.Serial)
	}
	if s.ARI == nil || s.ARI.CertSerial != first.Serial || s.ARI.Selected.IsZero() {
		t.Errorf("renewal info given to the caller = %+v; want the CA's answer for serial %s", s.ARI, first.Serial)
	}

	// The next refresh asks about the renewed certificate and stores it.
	e.m.Due(ctx, iss, got)
	if a := got.ARI; a == nil || a.CertSerial != renewed.Serial {
		t.Fatalf("renewal info after the next refresh = %+v; want serial %s", a, renewed.Serial)
	}
	again, err := e.m.Load(ctx, "race.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if a := again.ARI; again.Serial != renewed.Serial || a == nil || a.CertSerial != renewed.Serial || !a.Selected.Equal(got.ARI.Selected) {
		t.Errorf("stored after the next refresh: serial %s, renewal info %+v; want %+v for serial %s", again.Serial, a, got.ARI, renewed.Serial)
	}
}

// TestARIRefreshWaitsForLock checks that renewal information is stored
// only under the certificate's lock, and that waiting for the lock ends
// with ctx.
func TestARIRefreshWaitsForLock(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{}, nil)
	ctx := testContext(t)
	spec := e.spec("shortlived", "locked.example.test")
	first, err := e.m.Obtain(ctx, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := e.m.issuerFor(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		cancel bool // end the refresh's ctx instead of releasing the lock
	}{
		{"ctx ends while waiting", true},
		{"lock released", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := e.m.Load(ctx, "locked.example.test")
			if err != nil {
				t.Fatal(err)
			}
			if s.ARI != nil {
				t.Fatalf("renewal info already stored: %+v", s.ARI)
			}
			unlock, err := e.store.Lock(ctx, certLockName("locked.example.test"))
			if err != nil {
				t.Fatal(err)
			}
			defer unlock()
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			asked := heldIssuer{Issuer: iss, answered: make(chan struct{}), release: make(chan struct{})}
			close(asked.release)
			done := make(chan struct{})
			go func() {
				e.m.Due(rctx, asked, s)
				close(done)
			}()
			select {
			case <-asked.answered:
			case <-ctx.Done():
				t.Fatal("the CA was not asked for renewal information")
			}
			// Time for the refresh to reach the lock; it must not get
			// past it.
			time.Sleep(200 * time.Millisecond)
			select {
			case <-done:
				t.Fatal("the refresh finished while the certificate's lock was held")
			default:
			}
			if cur, err := e.m.loadRecord(ctx, "locked.example.test"); err != nil || cur.ARI != nil {
				t.Fatalf("stored while the lock was held: %+v (%v)", cur, err)
			}
			if tt.cancel {
				cancel()
			} else if err := unlock(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatal("the refresh did not finish")
			}
			if s.ARI == nil || s.ARI.CertSerial != first.Serial || s.ARI.Selected.IsZero() {
				t.Errorf("renewal info given to the caller = %+v; want the CA's answer for serial %s", s.ARI, first.Serial)
			}
			cur, err := e.m.loadRecord(ctx, "locked.example.test")
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.cancel && cur.ARI != nil:
				t.Errorf("stored after ctx ended: %+v", cur.ARI)
			case !tt.cancel && (cur.ARI == nil || cur.ARI.CertSerial != s.ARI.CertSerial ||
				!cur.ARI.Selected.Equal(s.ARI.Selected) || !cur.ARI.Start.Equal(s.ARI.Start) || !cur.ARI.End.Equal(s.ARI.End)):
				t.Errorf("stored renewal info = %+v; want %+v", cur.ARI, s.ARI)
			case cur.Serial != first.Serial:
				t.Errorf("stored serial %s; want %s", cur.Serial, first.Serial)
			}
		})
	}
}

func TestKeepSelected(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	start, end := now.Add(24*time.Hour), now.Add(48*time.Hour)
	chosen := start.Add(time.Hour)
	window := func(serial string, s, e time.Time) *ARIState {
		return &ARIState{CertSerial: serial, Start: s, End: e, Selected: chosen}
	}
	tests := []struct {
		name string
		prev *ARIState
		next *ARIState
		keep bool // Selected stays chosen; else a new time in [start, end), or zero when unavailable
	}{
		{"no earlier answer", nil, window("01", start, end), false},
		{"same window", window("01", start, end), window("01", start, end), true},
		{"window moved", window("01", start, end), window("01", start, end.Add(time.Hour)), false},
		{"other certificate", window("02", start, end), window("01", start, end), false},
		{"earlier answer unavailable", &ARIState{CertSerial: "01", Unavailable: true, Selected: chosen}, window("01", time.Time{}, time.Time{}), false},
		{"unavailable now", window("01", start, end), &ARIState{CertSerial: "01", Unavailable: true}, false},
	}
	for _, tt := range tests {
		next := *tt.next
		next.Selected = time.Time{}
		keepSelected(&next, tt.prev, now)
		switch {
		case tt.keep && !next.Selected.Equal(chosen):
			t.Errorf("%s: Selected = %v; want %v kept", tt.name, next.Selected, chosen)
		case !tt.keep && next.Unavailable && !next.Selected.IsZero():
			t.Errorf("%s: Selected = %v; want none", tt.name, next.Selected)
		case !tt.keep && !next.Unavailable && next.End.After(now) && (next.Selected.Before(next.Start) || !next.Selected.Before(next.End)):
			t.Errorf("%s: Selected = %v; want in [%v, %v)", tt.name, next.Selected, next.Start, next.End)
		case !tt.keep && !next.Unavailable && !next.End.After(now) && !next.Selected.Equal(now):
			t.Errorf("%s: Selected = %v; want now for a past window", tt.name, next.Selected)
		}
	}
}

// countingIssuer is a real issuer that counts the times the CA is asked
// for renewal information.
type countingIssuer struct {
	Issuer
	asked atomic.Int32
}

func (c *countingIssuer) RenewalInfo(ctx context.Context, leaf *x509.Certificate) (acme.RenewalInfo, error) {
	c.asked.Add(1)
	return c.Issuer.RenewalInfo(ctx, leaf)
}

// failRenewalInfo makes the CA's renewal information fail (404, which
// acmez does not retry), as at a CA whose ARI endpoint is broken.
func failRenewalInfo(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/renewalInfo/") {
			http.NotFound(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// TestObtainKeepsRenewalInfo: the CA's renewal window that came with a
// certificate the keeper obtained (acmez fetches it with the chain) is
// stored with it, so the keeper's next look, a second later, does not ask
// the CA again: it asked for every certificate twice (bench/many.sh: 2,000
// renewalInfo requests for 1,000 certificates). Without a window from the
// CA, the next look asks, as before.
func TestObtainKeepsRenewalInfo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		handler   func(http.Handler) http.Handler
		wantKept  bool  // a window stored with the certificate
		wantAsked int32 // renewal information requests by the next look
	}{
		{"the CA answers", nil, true, 0},
		{"the CA's renewal info fails", failRenewalInfo, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, democa.Options{Handler: tt.handler}, nil)
			ctx := testContext(t)
			spec := e.spec("default", "kept-ari.example.test")
			rec, err := e.m.obtainMissing(ctx, spec) // as serve's keeper does
			if err != nil {
				t.Fatal(err)
			}
			s, err := e.m.Load(ctx, spec.ID())
			if err != nil {
				t.Fatal(err)
			}
			a := s.ARI
			kept := a != nil && a.CertSerial == rec.Serial && !a.Start.IsZero() && !a.Selected.IsZero() && !a.Unavailable
			if kept != tt.wantKept {
				t.Fatalf("renewal info stored with the certificate = %+v; want a window: %v", a, tt.wantKept)
			}
			if kept && (a.Selected.Before(a.Start) || !a.Selected.Before(a.End)) {
				t.Errorf("selected time %v outside the window %v – %v", a.Selected, a.Start, a.End)
			}
			iss, err := e.m.issuerFor(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			c := &countingIssuer{Issuer: iss}
			d := e.m.Due(ctx, c, s)
			if got := c.asked.Load(); got != tt.wantAsked {
				t.Errorf("the next look asked the CA %d times; want %d", got, tt.wantAsked)
			}
			if tt.wantKept && (d.Due || !strings.Contains(d.Reason, "renewal window starts") || !d.At.Equal(a.Selected)) {
				t.Errorf("decision %+v; want not due, at the stored window's selected time %v", d, a.Selected)
			}
		})
	}
}
