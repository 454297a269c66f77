package manager

import (
	"context"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/issuer"
)

// heldRevoker is a real issuer whose revocations, once the CA has
// revoked, are held back until release is closed: a slow CA while another
// process renews.
type heldRevoker struct {
	Issuer
	revoked chan struct{} // closed when the CA has revoked
	release chan struct{}
}

func (h heldRevoker) Revoke(ctx context.Context, leaf *x509.Certificate, reason int) error {
	err := h.Issuer.Revoke(ctx, leaf, reason)
	close(h.revoked)
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	return err
}

// TestRevokeDuringRenewal checks that Revoke marks the record under the
// certificate's lock, waiting for it no longer than ctx, and leaves a
// record renewed meanwhile as it is.
func TestRevokeDuringRenewal(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{}, nil)
	ctx := testContext(t)
	iss, err := e.m.issuerFor(ctx, e.spec("shortlived", "x.test"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, host string
		// renew: another process renews while the CA revokes. Otherwise
		// the certificate's lock is held while the CA revokes, then
		// released, or ctx ends (cancel).
		renew, cancel bool
	}{
		{name: "renewed while the CA revoked", host: "renewed.revoke.example.test", renew: true},
		{name: "lock held, then released", host: "locked.revoke.example.test"},
		{name: "ctx ends while waiting for the lock", host: "cancelled.revoke.example.test", cancel: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := tt.host
			spec := e.spec("shortlived", name)
			if _, err := e.m.Obtain(ctx, spec, nil); err != nil {
				t.Fatal(err)
			}
			s, err := e.m.Load(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			held := heldRevoker{Issuer: iss, revoked: make(chan struct{}), release: make(chan struct{})}
			if !tt.renew {
				close(held.release)
			}
			unlock := func() error { return nil }
			if !tt.renew {
				if unlock, err = e.store.Lock(ctx, certLockName(name)); err != nil {
					t.Fatal(err)
				}
			}
			defer unlock()
			rm := New(e.store, func(context.Context, Spec) (Issuer, error) { return held, nil }, nil)
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- rm.Revoke(rctx, s, 4) }()
			select {
			case <-held.revoked:
			case <-ctx.Done():
				t.Fatal("the CA was not asked to revoke")
			}

			var renewed *Record
			if tt.renew {
				// Another process (the keeper) renews meanwhile.
				renewed, err = e.m.Obtain(ctx, spec, s.Chain[0])
				close(held.release)
				if err != nil {
					t.Fatal(err)
				}
				if renewed.Serial == s.Serial {
					t.Fatalf("renewal kept serial %s", s.Serial)
				}
			} else {
				// Time for Revoke to reach the lock; it must not get
				// past it. Meanwhile the lock's holder stores
				// renewal information, which the mark must keep.
				time.Sleep(200 * time.Millisecond)
				select {
				case err := <-done:
					t.Fatalf("Revoke returned %v while the certificate's lock was held", err)
				default:
				}
				cur, err := e.m.loadRecord(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				if !cur.Revoked.IsZero() {
					t.Fatal("marked revoked while the certificate's lock was held")
				}
				cur.ARI = &ARIState{CertSerial: cur.Serial, CheckedAt: time.Now().UTC(), Unavailable: true}
				if err := e.m.saveRecord(ctx, cur); err != nil {
					t.Fatal(err)
				}
				if tt.cancel {
					cancel()
				} else if err := unlock(); err != nil {
					t.Fatal(err)
				}
			}
			var rerr error
			select {
			case rerr = <-done:
			case <-ctx.Done():
				t.Fatal("Revoke did not return")
			}

			got, err := e.m.Load(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.cancel:
				if rerr == nil || !strings.Contains(rerr.Error(), "revoked but not marked") || !strings.Contains(rerr.Error(), name) {
					t.Errorf("Revoke = %v; want an error saying %s was revoked but not marked", rerr, name)
				}
				if !got.Revoked.IsZero() {
					t.Errorf("marked revoked after ctx ended")
				}
			case rerr != nil:
				t.Fatalf("Revoke: %v", rerr)
			case tt.renew:
				if got.Serial != renewed.Serial || serialHex(got.Chain[0]) != renewed.Serial || got.Replaced != renewed.Replaced ||
					!got.NotAfter.Equal(renewed.NotAfter) || !got.Revoked.IsZero() {
					t.Errorf("stored after Revoke: serial %s (chain %s), replaced %q, revoked %v; want the renewed record, serial %s, replaced %q, not revoked",
						got.Serial, serialHex(got.Chain[0]), got.Replaced, got.Revoked, renewed.Serial, renewed.Replaced)
				}
			default:
				if got.Serial != s.Serial || got.Revoked.IsZero() {
					t.Errorf("stored after Revoke: serial %s, revoked %v; want serial %s marked revoked", got.Serial, got.Revoked, s.Serial)
				}
				if got.ARI == nil || !got.ARI.Unavailable {
					t.Errorf("renewal info stored while Revoke waited was lost: %+v", got.ARI)
				}
			}
			if s.Revoked.IsZero() {
				t.Error("the revoked certificate's Stored is not marked revoked")
			}
		})
	}
}

// heldFirstARI is a real issuer whose first renewal information for the
// certificate with serial, once the CA has answered, is held back until
// release is closed; others are not held.
type heldFirstARI struct {
	Issuer
	serial   string
	once     *sync.Once
	answered chan struct{} // closed when the CA has answered the first time
	release  chan struct{}
}

func (h heldFirstARI) RenewalInfo(ctx context.Context, leaf *x509.Certificate) (acme.RenewalInfo, error) {
	ri, err := h.Issuer.RenewalInfo(ctx, leaf)
	first := false
	if serialHex(leaf) == h.serial {
		h.once.Do(func() { first = true })
	}
	if first {
		close(h.answered)
		select {
		case <-h.release:
		case <-ctx.Done():
		}
	}
	return ri, err
}

// TestRenewAfterRenewal checks that a renewal decided from a certificate
// another process renewed meanwhile orders nothing, gives the renewed
// certificate, and deploys it where the other process did not.
func TestRenewAfterRenewal(t *testing.T) {
	t.Parallel()
	var orders atomic.Int32
	count := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
				orders.Add(1)
			}
			next.ServeHTTP(w, r)
		})
	}
	e := newTestEnv(t, democa.Options{Handler: count}, nil)
	ctx := testContext(t)
	iss, err := e.m.issuerFor(ctx, e.spec("shortlived", "x.test"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, host string
		caller     string // "obtain", "renew" or "keep": who renews late
		// elsewhere: the other process deploys to another directory, so
		// the late caller must deploy the renewed certificate itself.
		elsewhere bool
	}{
		{"Obtain", "obtain.renew.example.test", "obtain", false},
		{"Obtain, other deployed elsewhere", "obtain2.renew.example.test", "obtain", true},
		{"Renew", "renew.renew.example.test", "renew", false},
		{"Renew, other deployed elsewhere", "renew2.renew.example.test", "renew", true},
		{"keeper", "keep.renew.example.test", "keep", false},
		{"keeper, other deployed elsewhere", "keep2.renew.example.test", "keep", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := tt.host
			dir := t.TempDir()
			marker := filepath.Join(dir, "hook-runs")
			spec := e.spec("shortlived", name)
			spec.Out, spec.DeployHook = filepath.Join(dir, "out"), `printf x >> '`+marker+`'`
			if _, err := e.m.Obtain(ctx, spec, nil); err != nil {
				t.Fatal(err)
			}
			// The late caller's view, taken before the other renewal;
			// the CA wants the certificate replaced.
			s, err := e.m.Load(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.ca.SetRenewalInfo(ctx, s.Chain[0], time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
			held := heldFirstARI{Issuer: iss, serial: s.Serial, once: new(sync.Once), answered: make(chan struct{}), release: make(chan struct{})}
			late := New(e.store, func(context.Context, Spec) (Issuer, error) { return held, nil }, nil)
			otherSpec := spec
			if tt.elsewhere {
				otherSpec.Out = filepath.Join(dir, "other")
			}
			before := orders.Load()

			lctx, cancel := context.WithCancel(ctx)
			defer cancel()
			type result struct {
				rec *Record
				err error
			}
			done := make(chan result, 1)
			cache := NewCache()
			keeping := make(chan struct{})
			switch tt.caller {
			case "obtain":
				close(held.release)
				close(keeping)
			case "renew":
				close(keeping)
				go func() {
					// Earlier cases' certificates are stored
					// too, and not due.
					results, err := late.Renew(lctx, false)
					var r RenewResult
					for _, res := range results {
						if res.Name == name {
							r = res
						} else if res.Decision.Due || res.Renewed != nil || res.Err != nil {
							t.Errorf("Renew also gave %+v", res)
						}
					}
					switch {
					case err != nil:
					case r.Name == "":
						t.Errorf("Renew = %+v; want a result for %s", results, name)
					case !r.Decision.Due:
						t.Errorf("Renew decided %+v; want due", r.Decision)
					case !r.ByOther:
						t.Errorf("Renew = %+v; want ByOther: the other process renewed it", r)
						err = r.Err
					default:
						err = r.Err
					}
					done <- result{r.Renewed, err}
				}()
			case "keep":
				var once sync.Once
				go func() {
					defer close(keeping)
					late.Keep(lctx, []Spec{spec}, KeepOptions{
						Cache: cache,
						OnRenewed: func(rec *Record, err error) {
							once.Do(func() { done <- result{rec, err} })
						},
					})
				}()
			}
			if tt.caller != "obtain" {
				select {
				case <-held.answered:
				case <-ctx.Done():
					t.Fatal("the CA was not asked for renewal information")
				}
			}

			// Another process (a cron "tlsalpn renew") renews meanwhile.
			renewed, err := e.m.Obtain(ctx, otherSpec, s.Chain[0])
			if err != nil {
				t.Fatal(err)
			}
			if renewed.Serial == s.Serial {
				t.Fatalf("renewal kept serial %s", s.Serial)
			}

			var got result
			if tt.caller == "obtain" {
				got.rec, got.err = late.Obtain(ctx, spec, s.Chain[0])
			} else {
				close(held.release)
				select {
				case got = <-done:
				case <-ctx.Done():
					t.Fatal("the late renewal did not finish")
				}
			}
			if tt.caller == "keep" {
				// The keeper serves what it was given: it loads it
				// into the cache just after telling OnRenewed.
				for range 100 {
					if c := cache.Get(name); c != nil && serialHex(c.Leaf) == renewed.Serial {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if c := cache.Get(name); c == nil || serialHex(c.Leaf) != renewed.Serial {
					t.Errorf("keeper's cache does not serve the renewed certificate, serial %s", renewed.Serial)
				}
			}
			cancel()
			<-keeping

			if got.err != nil {
				t.Fatalf("late renewal: %v", got.err)
			}
			if got.rec == nil || got.rec.Serial != renewed.Serial {
				t.Errorf("late renewal gave %+v; want the other process's serial %s", got.rec, renewed.Serial)
			}
			if n := orders.Load() - before; n != 1 {
				t.Errorf("%d orders; want 1", n)
			}
			stored, err := e.m.Load(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if stored.Serial != renewed.Serial || serialHex(stored.Chain[0]) != renewed.Serial {
				t.Errorf("stored serial %s (chain %s); want %s", stored.Serial, serialHex(stored.Chain[0]), renewed.Serial)
			}
			for _, out := range []string{spec.Out, otherSpec.Out} {
				deployed, err := issuer.ParseChainPEM(readFile(t, filepath.Join(out, "cert.pem")))
				if err != nil || serialHex(deployed[0]) != renewed.Serial {
					t.Errorf("%s does not hold the renewed certificate (%v)", out, err)
				}
			}
			// The first issue and the other renewal ran the hook; the
			// late caller runs it only when it deployed elsewhere.
			want := "xx"
			if tt.elsewhere {
				want = "xxx"
			}
			if runs, err := os.ReadFile(marker); err != nil || string(runs) != want {
				t.Errorf("hook ran %q times (%v); want %q", runs, err, want)
			}
		})
	}
}
