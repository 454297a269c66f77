package manager

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/storage"
)

// TestKeepWake: a wake-up makes the keeper look at once when the stored
// certificate changed (revoked from the command line: replaced in
// seconds, not at the next planned look hours later), and changes nothing
// when it did not (a failed deployment keeps its backoff, however often
// storage reports the keeper's own writes).
func TestKeepWake(t *testing.T) {
	tests := []struct {
		name string
		// hookFails makes every deployment fail.
		hookFails bool
		// revoke revokes the certificate once the keeper settled;
		// remove deletes its record.
		revoke, remove bool
		// wantNew: a new certificate must be stored after the wake-ups.
		wantNew bool
		// wantHookRuns is how often the hook ran in the end.
		wantHookRuns int
	}{
		{name: "revoked", revoke: true, wantNew: true, wantHookRuns: 2},
		{name: "deleted", remove: true, wantNew: true, wantHookRuns: 2},
		{name: "unchanged, deployment failing", hookFails: true, wantHookRuns: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, democa.Options{}, nil)
			ctx := testContext(t)
			dir := t.TempDir()
			marker := filepath.Join(dir, "hook-ran")
			spec := e.spec("default", "wake.example.test")
			spec.Out = filepath.Join(dir, "out")
			spec.DeployHook = "echo x >> '" + marker + "'"
			if tc.hookFails {
				spec.DeployHook += "; exit 1"
			}
			hookRuns := func() int { b, _ := os.ReadFile(marker); return strings.Count(string(b), "x") }

			wake := make(chan struct{}, 1)
			kctx, cancel := context.WithCancel(ctx)
			kept := make(chan struct{})
			go func() {
				defer close(kept)
				// Planned looks and backoffs are far off: only a
				// wake-up can make the keeper act within the test.
				e.m.Keep(kctx, []Spec{spec}, KeepOptions{CheckEvery: time.Hour, MinBackoff: time.Hour,
					Wake: func(Spec) <-chan struct{} { return wake }})
			}()
			defer func() {
				cancel()
				<-kept
			}()
			// Settled: the certificate obtained and deployed (the hook
			// ran) with its renewal information stored, or its
			// deployment failed. The renewal information now comes with
			// the certificate, before its deployment: settling on it
			// alone let a deletion race the first deployment.
			var first *Record
			for range 500 {
				rec, err := e.m.loadRecord(ctx, spec.ID())
				if err == nil && hookRuns() >= 1 && (rec.ARI != nil || (rec.Deployed != nil && rec.Deployed.Error != "")) {
					first = rec
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if first == nil {
				t.Fatal("the keeper did not obtain a certificate")
			}
			if tc.revoke {
				s, err := e.m.Load(ctx, spec.ID())
				if err != nil {
					t.Fatal(err)
				}
				if err := e.m.Revoke(ctx, s, 0); err != nil {
					t.Fatal(err)
				}
			}
			if tc.remove {
				keys, err := e.store.List(ctx, storage.LineagesPrefix, true)
				if err != nil || len(keys) == 0 {
					t.Fatalf("listing the record's keys: %v %v", keys, err)
				}
				for _, k := range keys {
					if err := e.store.Delete(ctx, k); err != nil {
						t.Fatal(err)
					}
				}
			}
			// Storage reports every write, the keeper's own too: wake it
			// over and over.
			var rec *Record
			for range 100 {
				select {
				case wake <- struct{}{}:
				default:
				}
				time.Sleep(20 * time.Millisecond)
				var err error
				if rec, err = e.m.loadRecord(ctx, spec.ID()); err != nil {
					if tc.remove {
						continue // not obtained again yet
					}
					t.Fatal(err)
				}
				if tc.wantNew && rec.Serial != first.Serial && hookRuns() >= tc.wantHookRuns {
					break
				}
			}
			if rec == nil {
				t.Fatal("no certificate stored after the wake-ups")
			}
			if got := rec.Serial != first.Serial; got != tc.wantNew {
				t.Errorf("a new certificate stored: %v (serial %s, first %s); want %v", got, rec.Serial, first.Serial, tc.wantNew)
			}
			if tc.wantNew && !rec.Revoked.IsZero() {
				t.Errorf("the stored certificate is the revoked one")
			}
			if got := hookRuns(); got != tc.wantHookRuns {
				t.Errorf("the deploy hook ran %d times; want %d", got, tc.wantHookRuns)
			}
		})
	}
}
