package manager

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage"
	"github.com/tlsalpn/tlsalpn/storage/etcd"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// lostLock is storage as seen by a cluster node whose lock lapsed right
// after it was granted (its lease expired while it was cut off from etcd):
// Lock waits for the lock as usual, then lets it go at once, so that
// another holder can take it while this one still believes it holds it.
// Everything else, compare-and-swap included, is the real backend.
type lostLock struct {
	storage.Storage
	storage.Versioned
}

func (l lostLock) Lock(ctx context.Context, name string) (func() error, error) {
	unlock, err := l.Storage.Lock(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := unlock(); err != nil {
		return nil, err
	}
	return func() error { return nil }, nil
}

// stalledIssuer is a real issuer that, once the CA has issued, holds the
// certificate back until release is closed: a node that stalls between
// ordering and storing.
type stalledIssuer struct {
	Issuer
	obtained chan struct{} // closed when the CA has issued
	release  chan struct{}
}

func (s stalledIssuer) Obtain(ctx context.Context, req issuer.Request) (*issuer.Result, error) {
	res, err := s.Issuer.Obtain(ctx, req)
	close(s.obtained)
	select {
	case <-s.release:
	case <-ctx.Done():
	}
	return res, err
}

// TestStaleNodeNeverOverwrites: a node that lost its lock while it ordered
// (it stalls after the CA issued) comes back after another node renewed
// the certificate. Its certificate, older, is not stored and not deployed:
// the record stays on the newer one, whose files and hook stay in place.
// When the other node only touched the record (its renewal information)
// and left the old certificate, the stale node's new one is stored.
func TestStaleNodeNeverOverwrites(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{}, nil)
	for _, backend := range []string{"fs", "etcd"} {
		t.Run(backend, func(t *testing.T) {
			st := storage.Storage(e.store)
			if backend == "etcd" {
				st = openEtcd(t)
			}
			testStaleNode(t, e, st)
		})
	}
}

// openEtcd opens storage on a real one-member etcd cluster, closed when
// the test ends.
func openEtcd(t *testing.T) *etcd.Store {
	t.Helper()
	return openEtcdAt(t, etcdtest.Start(t, 1).Endpoints())
}

// testStaleNode is TestStaleNodeNeverOverwrites on st, with e's CA.
func testStaleNode(t *testing.T, e *testEnv, st storage.Storage) {
	ctx := testContext(t)
	iss, err := issuer.New(issuer.Config{Directory: e.ca.DirectoryURL(), HTTPClient: e.ca.HTTPClient(), AgreeTOS: true,
		Storage: st, Publisher: e.resp})
	if err != nil {
		t.Fatal(err)
	}
	// The other node, which keeps its lock.
	other := New(st, func(context.Context, Spec) (Issuer, error) { return iss, nil }, nil)
	tests := []struct {
		name string
		// renew: the other node renews while the stale one stalls;
		// otherwise it only stores renewal information in the record.
		renew bool
	}{
		{name: "renewed meanwhile by another node", renew: true},
		{name: "record touched meanwhile, certificate not renewed", renew: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := map[bool]string{true: "renewed.stale.example.test", false: "touched.stale.example.test"}[tt.renew]
			dir := t.TempDir()
			marker := filepath.Join(dir, "hook-runs")
			spec := e.spec("shortlived", name)
			spec.Out, spec.DeployHook = filepath.Join(dir, "out"), `printf x >> '`+marker+`'`
			if _, err := other.Obtain(ctx, spec, nil); err != nil {
				t.Fatal(err)
			}
			s, err := other.Load(ctx, name)
			if err != nil {
				t.Fatal(err)
			}

			held := stalledIssuer{Issuer: iss, obtained: make(chan struct{}), release: make(chan struct{})}
			stale := New(lostLock{st, st.(storage.Versioned)}, func(context.Context, Spec) (Issuer, error) { return held, nil }, nil)
			type result struct {
				rec *Record
				err error
			}
			done := make(chan result, 1)
			// Another key type, so that the other node does not
			// resume the stale one's journaled order (which would store
			// the very same certificate) but orders another.
			staleSpec := spec
			staleSpec.KeyType = issuer.EC384
			go func() {
				rec, err := stale.Obtain(ctx, staleSpec, s.Chain[0])
				done <- result{rec, err}
			}()
			select {
			case <-held.obtained:
			case <-ctx.Done():
				t.Fatal("the stale node's order did not complete")
			}

			// Meanwhile the other node, which holds the lock now.
			want := s.Serial
			if tt.renew {
				// Without "replaces": Pebble races with itself
				// (a data race in its memory store) when two orders
				// replace one certificate at once.
				renewed, err := other.Obtain(ctx, spec, nil)
				if err != nil {
					t.Fatal(err)
				}
				if renewed.Serial == s.Serial {
					t.Fatalf("renewal kept serial %s", s.Serial)
				}
				want = renewed.Serial
			} else {
				unlock, err := st.Lock(ctx, certLockName(name))
				if err != nil {
					t.Fatal(err)
				}
				cur, err := other.loadRecord(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				cur.ARI = &ARIState{CertSerial: cur.Serial, CheckedAt: cur.ObtainedAt, Unavailable: true}
				if err := other.saveRecord(ctx, cur); err != nil {
					t.Fatal(err)
				}
				unlock()
			}

			close(held.release)
			var got result
			select {
			case got = <-done:
			case <-ctx.Done():
				t.Fatal("the stale node's Obtain did not return")
			}
			if got.err != nil {
				t.Fatalf("stale node's Obtain: %v", got.err)
			}
			stored, err := other.Load(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			deployed, err := issuer.ParseChainPEM(readFile(t, filepath.Join(spec.Out, "cert.pem")))
			if err != nil {
				t.Fatal(err)
			}
			runs, _ := os.ReadFile(filepath.Join(marker))
			if !tt.renew {
				// The stale node's certificate is the newer one: stored
				// over the touched record, keeping what it said.
				if stored.Serial == s.Serial || got.rec.Serial != stored.Serial {
					t.Errorf("stored serial %s, stale node gave %s; want its new certificate over %s", stored.Serial, got.rec.Serial, s.Serial)
				}
				if serialHex(deployed[0]) != stored.Serial || string(runs) != "xx" {
					t.Errorf("deployed %s, hook ran %q; want %s deployed and the hook run twice", serialHex(deployed[0]), runs, stored.Serial)
				}
				return
			}
			if stored.Serial != want {
				t.Errorf("stored serial %s; want %s, the newer certificate (the stale node switched back)", stored.Serial, want)
			}
			if got.rec == nil || got.rec.Serial != want {
				t.Errorf("stale node's Obtain gave %+v; want the stored, newer serial %s", got.rec, want)
			}
			if serialHex(deployed[0]) != want {
				t.Errorf("%s holds serial %s; want %s (the stale node deployed its older certificate)", spec.Out, serialHex(deployed[0]), want)
			}
			if string(runs) != "xx" {
				t.Errorf("hook ran %q times; want %q: the first issue and the renewal", runs, "xx")
			}
			// The dropped certificate's files are gone; only the first
			// and the renewed versions remain.
			keys, err := st.List(ctx, storage.LineageDir(name), false)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				if v := filepath.Base(k); v != storage.MetaFile && v != s.Serial && v != want {
					t.Errorf("version %s is stored: the dropped certificate's files were left", v)
				}
			}
		})
	}
}

// TestOneOrderAtATime: three nodes, each with storage of its own (on etcd,
// a session of its own), renew one certificate at the same moment. The
// certificate's lock, held from before the order until the record is
// stored, lets exactly one of them order; the others find it renewed
// meanwhile and order nothing.
func TestOneOrderAtATime(t *testing.T) {
	t.Parallel()
	var orders atomic.Int32
	e := newTestEnv(t, democa.Options{Handler: countOrders(&orders)}, nil)
	for _, backend := range []string{"fs", "etcd"} {
		t.Run(backend, func(t *testing.T) {
			ctx := testContext(t)
			var stores []storage.Storage
			switch backend {
			case "fs":
				for range 3 {
					st, err := fs.New(e.store.Root())
					if err != nil {
						t.Fatal(err)
					}
					stores = append(stores, st)
				}
			case "etcd":
				c := etcdtest.Start(t, 1)
				for range 3 {
					stores = append(stores, openEtcdAt(t, c.Endpoints()))
				}
			}
			var nodes []*Manager
			for _, st := range stores {
				iss, err := issuer.New(issuer.Config{Directory: e.ca.DirectoryURL(), HTTPClient: e.ca.HTTPClient(), AgreeTOS: true,
					Storage: st, Publisher: e.resp})
				if err != nil {
					t.Fatal(err)
				}
				nodes = append(nodes, New(st, func(context.Context, Spec) (Issuer, error) { return iss, nil }, nil))
			}
			spec := e.spec("shortlived", backend+".once.example.test")
			if _, err := nodes[0].Obtain(ctx, spec, nil); err != nil {
				t.Fatal(err)
			}
			s, err := nodes[0].Load(ctx, spec.ID())
			if err != nil {
				t.Fatal(err)
			}
			before := orders.Load()
			got := make(chan *Record, len(nodes))
			start := make(chan struct{})
			for _, n := range nodes {
				go func() {
					<-start
					rec, err := n.Obtain(ctx, spec, s.Chain[0])
					if err != nil {
						t.Error(err)
					}
					got <- rec
				}()
			}
			close(start)
			var serials []string
			for range nodes {
				if rec := <-got; rec != nil {
					serials = append(serials, rec.Serial)
				}
			}
			if n := orders.Load() - before; n != 1 {
				t.Errorf("%d orders for one renewal by three nodes; want 1", n)
			}
			stored, err := nodes[0].Load(ctx, spec.ID())
			if err != nil {
				t.Fatal(err)
			}
			for _, serial := range serials {
				if serial != stored.Serial || serial == s.Serial {
					t.Errorf("the nodes got serials %v; want each the stored, renewed %s", serials, stored.Serial)
					break
				}
			}
		})
	}
}

// openEtcdAt opens storage on the etcd cluster at endpoints, as one node
// (one process) does; it is closed when the test ends.
func openEtcdAt(t *testing.T, endpoints []string) *etcd.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := etcd.Open(ctx, etcd.Config{Endpoints: endpoints, Prefix: "tlsalpn",
		EncryptionKey: []byte("0123456789abcdef0123456789abcdef"), SessionTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
