package manager

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/storage"
)

// faultyStore is the real file storage with one fault switched on: Put of
// keys whose last segment is failName fails, as a full disk, an immutable
// file or a dying process between two writes would make it.
type faultyStore struct {
	storage.Storage
	failName atomic.Value // string
}

func (f *faultyStore) Put(ctx context.Context, key string, value []byte, mode os.FileMode) error {
	if n, _ := f.failName.Load().(string); n != "" && path.Base(key) == n {
		return errors.New("injected write failure")
	}
	return f.Storage.Put(ctx, key, value, mode)
}

// TestTornRecordNeverDeployed: a renewal whose second write fails leaves
// the record and the pair it names as they were, and what is deployed
// after is a matching pair (before, a new key beside the old certificate
// was deployed with exit 0).
func TestTornRecordNeverDeployed(t *testing.T) {
	for _, failing := range []string{"cert.pem", "key.pem", "meta.json"} {
		t.Run(failing, func(t *testing.T) {
			e := newTestEnv(t, democa.Options{}, nil)
			ctx := testContext(t)
			fst := &faultyStore{Storage: e.store}
			e.m.store = fst
			name := "torn.example.test"
			out := filepath.Join(t.TempDir(), "out")
			spec := e.spec("shortlived", name)
			spec.Out = out
			first, err := e.m.Obtain(ctx, spec, nil)
			if err != nil {
				t.Fatal(err)
			}
			s, err := e.m.Load(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			fst.failName.Store(failing)
			if _, err := e.m.Obtain(ctx, spec, s.Chain[0]); err == nil || !strings.Contains(err.Error(), "injected") {
				t.Fatalf("renewal with %s unwritable: %v; want the injected failure", failing, err)
			}
			fst.failName.Store("")
			after, err := e.m.Load(ctx, name)
			if err != nil {
				t.Fatalf("the record is not loadable after a failed renewal: %v", err)
			}
			if after.Serial != first.Serial {
				t.Errorf("record switched to serial %s although the renewal failed; want %s", after.Serial, first.Serial)
			}
			// Deploy again whatever is stored: the files must match.
			if err := e.m.Deploy(ctx, &after.Record); err != nil {
				t.Fatal(err)
			}
			if _, err := tls.LoadX509KeyPair(filepath.Join(out, "fullchain.pem"), filepath.Join(out, "key.pem")); err != nil {
				t.Errorf("deployed pair does not match: %v", err)
			}
		})
	}
}

// TestMismatchedPairIsDamaged: a record whose key no longer belongs to its
// certificate (swapped by hand, a bad restore) is damaged: Load says so,
// List reports it, Renew fails on it naming it, and nothing is deployed.
func TestMismatchedPairIsDamaged(t *testing.T) {
	e := newTestEnv(t, democa.Options{}, nil)
	ctx := testContext(t)
	out := filepath.Join(t.TempDir(), "out")
	a, b := e.spec("shortlived", "a.example.test"), e.spec("shortlived", "b.example.test")
	a.Out = out
	if _, err := e.m.Obtain(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Obtain(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	deployed, _ := os.ReadFile(filepath.Join(out, "fullchain.pem"))
	_, _, keyA := e.storedKeys(t, "a.example.test")
	_, _, keyB := e.storedKeys(t, "b.example.test")
	other, err := e.store.Get(ctx, keyB)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.Put(ctx, keyA, other, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		damage func(t *testing.T)
	}{
		{"key of another certificate", func(t *testing.T) {}},
		{"truncated record", func(t *testing.T) {
			e.store.Put(ctx, storage.LineageMetaKey("a.example.test"), []byte(`{"names": [`), 0o644)
		}},
		{"record without its version", func(t *testing.T) {
			rec, _ := e.m.loadRecord(ctx, "b.example.test")
			rec.Names, rec.CertName = []string{"a.example.test"}, ""
			rec.Version = "nonexistent"
			data, _ := json.Marshal(rec)
			e.store.Put(ctx, storage.LineageMetaKey("a.example.test"), data, 0o644)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.damage(t)
			var de *DamagedError
			if _, err := e.m.Load(ctx, "a.example.test"); !errors.As(err, &de) {
				t.Errorf("Load: %v; want a DamagedError", err)
			}
			all, bad, err := e.m.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 1 || len(bad) != 1 || bad[0].Name != "a.example.test" {
				t.Errorf("List: %d good, damaged %v; want b good and a damaged", len(all), bad)
			}
			results, err := e.m.Renew(ctx, false)
			if err != nil {
				t.Fatal(err)
			}
			var failed int
			for _, r := range results {
				if r.Err != nil {
					failed++
					if r.Name != "a.example.test" || !errors.As(r.Err, &de) {
						t.Errorf("renew failed on %s: %v", r.Name, r.Err)
					}
				}
			}
			if failed != 1 {
				t.Errorf("renew: %d failures, want 1 (the damaged certificate)", failed)
			}
			if now, _ := os.ReadFile(filepath.Join(out, "fullchain.pem")); !bytes.Equal(now, deployed) {
				t.Error("a damaged certificate was deployed")
			}
		})
	}
}

// TestMigrateLegacyLayout: records of the layout before certificate names
// move to lineages on first use, nothing lost; two CAs' records for one
// name feeding one output become two certificate names, the older retired.
func TestMigrateLegacyLayout(t *testing.T) {
	e := newTestEnv(t, democa.Options{}, nil)
	ctx := testContext(t)
	out := filepath.Join(t.TempDir(), "out")
	spec := e.spec("shortlived", "old.example.test", "www.old.example.test")
	spec.Out = out
	if _, err := e.m.Obtain(ctx, spec, nil); err != nil {
		t.Fatal(err)
	}
	newer, err := e.m.Load(ctx, "old.example.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Obtain(ctx, spec, newer.Chain[0]); err != nil {
		t.Fatal(err)
	}
	newest, err := e.m.Load(ctx, "old.example.test")
	if err != nil {
		t.Fatal(err)
	}
	// Write both as an older version did: certificates/<ca>/<name>/, the
	// first under a second CA's directory, obtained earlier.
	legacyPut := func(ca string, s *Stored) {
		rec := s.Record
		rec.Version, rec.CA = "", ca
		data, _ := json.Marshal(rec)
		dir := path.Join(storage.CertificatesPrefix, strings.ReplaceAll(strings.TrimPrefix(ca, "https://"), "/", "-"), rec.Names[0])
		for k, v := range map[string][]byte{"meta.json": data, "cert.pem": s.ChainPEM, "key.pem": s.KeyPEM} {
			if err := e.store.Put(ctx, path.Join(dir, k), v, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	newer.ObtainedAt = newest.ObtainedAt.Add(-1)
	legacyPut("https://staging.example/dir", newer)
	legacyPut(e.ca.DirectoryURL(), newest)
	keys, _ := e.store.List(ctx, storage.LineagesPrefix, true)
	for _, k := range keys {
		e.store.Delete(ctx, k)
	}

	m := New(e.store, nil, nil)
	all, bad, err := m.List(ctx)
	if err != nil || len(bad) != 0 {
		t.Fatalf("List after migration: %v, damaged %v", err, bad)
	}
	if len(all) != 2 {
		t.Fatalf("migrated %d certificates, want 2", len(all))
	}
	got := map[string]*Stored{}
	for _, s := range all {
		got[s.Name()] = s
	}
	if s := got["old.example.test"]; s == nil || s.Serial != newest.Serial || s.Retired != nil || s.Out != out {
		t.Errorf("the newest did not keep the name and the output: %+v", s)
	}
	if s := got["old.example.test-0001"]; s == nil || s.Serial != newer.Serial || s.Retired == nil || s.Retired.By != "old.example.test" {
		t.Errorf("the older one is not kept and retired: %+v", s)
	}
	if left, _ := e.store.List(ctx, storage.CertificatesPrefix, true); len(left) != 0 {
		t.Errorf("the old layout is still there: %v", left)
	}
	// A second Manager finds nothing more to do.
	if all2, _, err := New(e.store, nil, nil).List(ctx); err != nil || len(all2) != 2 {
		t.Errorf("second List: %d, %v", len(all2), err)
	}
}
