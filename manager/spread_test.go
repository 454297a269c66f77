package manager

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// watchWake feeds a keeper's Wake from a real watch of the storage's
// records, as serve does: the keeper of a certificate is woken when its
// record changes.
func watchWake(t *testing.T, ctx context.Context, st storage.Storage) func(Spec) <-chan struct{} {
	t.Helper()
	events, err := st.Watch(ctx, storage.LineagesPrefix)
	if err != nil {
		t.Fatal(err)
	}
	wake := make(chan struct{}, 1)
	go func() {
		for range events {
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}()
	return func(Spec) <-chan struct{} { return wake }
}

// waitFor polls cond every 20 ms until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) bool {
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true
}

// TestKeepOwnership: two keepers (two nodes) on one storage keep the same
// certificate; an ownership function says which one orders it. Only the
// owner obtains it, the other serves what the owner stored and deploys it
// to its own outputs (its files, its hook); when ownership moves (the
// owner's node left), the new owner renews a due certificate at once, not
// at its next planned look, and the former owner serves and deploys the
// renewed one without ordering. Each node deploys each certificate once:
// the nodes' deployments, recorded per node, do not set each other off.
//
// It runs on file storage (each node its own view of one directory,
// polled) and on etcd (each node its own client and session, watched).
func TestKeepOwnership(t *testing.T) {
	t.Parallel()
	var orders atomic.Int32
	e := newTestEnv(t, democa.Options{Handler: countOrders(&orders)}, nil)
	for _, backend := range []string{"fs", "etcd"} {
		t.Run(backend, func(t *testing.T) {
			var stores [2]storage.Storage
			for i := range stores {
				switch backend {
				case "fs":
					st, err := fs.New(e.store.Root(), fs.WithPollInterval(20*time.Millisecond))
					if err != nil {
						t.Fatal(err)
					}
					stores[i] = st
				case "etcd":
					if i == 0 {
						c := etcdtest.Start(t, 1)
						stores[0], stores[1] = openEtcdAt(t, c.Endpoints()), openEtcdAt(t, c.Endpoints())
					}
				}
			}
			testKeepOwnership(t, e, &orders, stores, backend+".owned.spread.example.test")
		})
	}
}

// testKeepOwnership is TestKeepOwnership with node a on stores[0] and node
// b on stores[1], for the certificate name.
func testKeepOwnership(t *testing.T, e *testEnv, orders *atomic.Int32, stores [2]storage.Storage, name string) {
	ctx := testContext(t)
	spec := e.spec("shortlived", name)
	before := orders.Load()

	var owner atomic.Value
	owner.Store("a")
	type node struct {
		name    string
		spec    Spec // with the node's own outputs
		m       *Manager
		cache   *Cache
		changed chan struct{}
		logs    *syncBuffer
		offset  atomic.Int64 // the node's clock runs this far ahead
	}
	var nodes []*node
	kctx, cancel := context.WithCancel(ctx)
	kept := make(chan struct{}, 2)
	defer func() {
		cancel()
		<-kept
		<-kept
	}()
	for i, name := range []string{"a", "b"} {
		st := stores[i]
		n := &node{name: name, spec: spec, cache: NewCache(), changed: make(chan struct{}, 1), logs: &syncBuffer{}}
		dir := t.TempDir()
		n.spec.Out, n.spec.DeployHook = filepath.Join(dir, "out"), `printf x >> '`+filepath.Join(dir, "hook-runs")+`'`
		iss, err := issuer.New(issuer.Config{Directory: e.ca.DirectoryURL(), HTTPClient: e.ca.HTTPClient(), AgreeTOS: true,
			Storage: st, Publisher: e.resp})
		if err != nil {
			t.Fatal(err)
		}
		n.m = New(st, func(context.Context, Spec) (Issuer, error) { return iss, nil },
			slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug})), WithNode(name))
		n.m.now = func() time.Time { return time.Now().Add(time.Duration(n.offset.Load())) }
		nodes = append(nodes, n)
		go func() {
			defer func() { kept <- struct{}{} }()
			// Planned looks and backoffs are far off: only storage
			// changes and ownership changes make a keeper act within
			// the test.
			n.m.Keep(kctx, []Spec{n.spec}, KeepOptions{
				Cache: n.cache, CheckEvery: time.Hour, MinBackoff: time.Hour,
				Wake:          watchWake(t, kctx, st),
				Owns:          func(string) bool { return owner.Load() == n.name },
				OwnersChanged: n.changed,
			})
		}()
	}
	b := nodes[1]
	store := b.m
	serving := func(n *node, serial string) func() bool {
		return func() bool {
			c := n.cache.Get(spec.Names[0])
			return c != nil && serialHex(c.Leaf) == serial
		}
	}
	// deployed: the node's files hold serial and its hook ran runs
	// times.
	deployed := func(n *node, serial string, runs int) func() bool {
		return func() bool {
			b, _ := os.ReadFile(filepath.Join(n.spec.Out, "cert.pem"))
			chain, err := issuer.ParseChainPEM(b)
			hook, _ := os.ReadFile(filepath.Join(filepath.Dir(n.spec.Out), "hook-runs"))
			return err == nil && serialHex(chain[0]) == serial && len(hook) == runs
		}
	}
	checkDeployed := func(serial string, runs int) {
		t.Helper()
		for _, n := range nodes {
			if !waitFor(ctx, deployed(n, serial, runs)) {
				hook, _ := os.ReadFile(filepath.Join(filepath.Dir(n.spec.Out), "hook-runs"))
				t.Fatalf("node %s: serial %s not deployed to its own outputs, or its hook ran %d times, not %d", n.name, serial, len(hook), runs)
			}
		}
		// Settled: another node's deployment, which writes the record,
		// does not make a node deploy again.
		time.Sleep(300 * time.Millisecond)
		for _, n := range nodes {
			if !deployed(n, serial, runs)() {
				hook, _ := os.ReadFile(filepath.Join(filepath.Dir(n.spec.Out), "hook-runs"))
				t.Errorf("node %s deployed again: its hook ran %d times; want %d", n.name, len(hook), runs)
			}
		}
	}

	// The owner obtains the certificate; the other leaves it to the
	// owner, and serves it once it is stored.
	var first *Record
	if !waitFor(ctx, func() bool {
		rec, err := store.loadRecord(ctx, spec.ID())
		first = rec
		return err == nil && rec.ARI != nil // obtained, and looked at again
	}) {
		t.Fatal("the owner did not obtain the certificate")
	}
	if !waitFor(ctx, serving(b, first.Serial)) {
		t.Fatalf("node b does not serve serial %s, which its owner stored", first.Serial)
	}
	if !strings.Contains(b.logs.String(), "left to the node that owns it") {
		t.Errorf("node b did not say it left the missing certificate to its owner; its log:\n%s", b.logs)
	}
	if n := orders.Load() - before; n != 1 {
		t.Fatalf("%d orders for a certificate only its owner may order; want 1", n)
	}
	checkDeployed(first.Serial, 1)

	// Node b's clock moves to where the certificate is due (30 h of its
	// 6 days left, not yet an emergency); then a leaves and b owns it.
	s, err := store.Load(ctx, spec.ID())
	if err != nil {
		t.Fatal(err)
	}
	// The renewal time is a random point in the CA's window, chosen once
	// and stored: b's clock goes past it too, or b waits for it.
	due := s.NotAfter.Add(-30 * time.Hour)
	if s.ARI != nil && s.ARI.Selected.After(due) {
		due = s.ARI.Selected.Add(time.Minute)
	}
	b.offset.Store(int64(time.Until(due)))
	owner.Store("b")
	for _, n := range nodes {
		n.changed <- struct{}{}
	}
	var renewed *Record
	if !waitFor(ctx, func() bool {
		rec, err := store.loadRecord(ctx, spec.ID())
		renewed = rec
		return err == nil && rec.Serial != first.Serial
	}) {
		t.Fatalf("node b did not renew the due certificate it came to own; its log:\n%s", b.logs)
	}
	if !strings.Contains(b.logs.String(), "this node now renews the certificate") {
		t.Errorf("node b did not say it took the certificate over; its log:\n%s", b.logs)
	}
	for _, n := range nodes {
		if !waitFor(ctx, serving(n, renewed.Serial)) {
			t.Errorf("node %s does not serve the renewed serial %s", n.name, renewed.Serial)
		}
	}
	if n := orders.Load() - before; n != 2 {
		t.Errorf("%d orders; want 2: the owner's first, and the new owner's renewal", n)
	}
	checkDeployed(renewed.Serial, 2)
	// The command line, which deploys as no node, finds the renewed
	// certificate deployed (by the nodes) and does not deploy it again.
	rec, err := store.loadRecord(ctx, spec.ID())
	if err != nil {
		t.Fatal(err)
	}
	if d := rec.Deployed; d == nil || d.Serial != renewed.Serial {
		t.Errorf("the record's last deployment anywhere is %+v; want serial %s", d, renewed.Serial)
	}
	for _, n := range nodes {
		if d := rec.DeployedOn[n.name]; d == nil || d.Serial != renewed.Serial || d.Out != n.spec.Out {
			t.Errorf("the record says node %s deployed %+v; want serial %s to %s", n.name, d, renewed.Serial, n.spec.Out)
		}
	}
}

// TestKeepOwnerGrace: a keeper that does not own a certificate leaves it
// to its owner, whether due or missing, until it has been in emergency
// (or missing) for OwnerGrace; then it orders it.
func TestKeepOwnerGrace(t *testing.T) {
	t.Parallel()
	var orders atomic.Int32
	e := newTestEnv(t, democa.Options{Handler: countOrders(&orders)}, nil)
	ctx := testContext(t)
	const grace = 30 * time.Minute
	tests := []struct {
		name string
		// left is how much of the 6-day lifetime is left on the
		// node's clock (0: the certificate is not stored at all).
		left time.Duration
		// grace overrides OwnerGrace.
		grace     time.Duration
		wantOrder bool
		wantLog   string
	}{
		{name: "due, no emergency", left: 30 * time.Hour, grace: grace, wantLog: "certificate due; left to the node that owns it"},
		{name: "emergency, within the grace", left: 24*time.Hour - 10*time.Minute, grace: grace, wantLog: "certificate due; left to the node that owns it"},
		{name: "emergency, past the grace", left: 24*time.Hour - time.Hour, grace: grace, wantOrder: true, wantLog: "its owner has not renewed it in time"},
		{name: "missing, within the grace", grace: grace, wantLog: "certificate missing or revoked; left to the node that owns it"},
		{name: "missing, past the grace", grace: time.Nanosecond, wantOrder: true, wantLog: "it has been missing or revoked for longer than the grace"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := e.spec("shortlived", []string{"a", "b", "c", "d", "e"}[i]+".grace.spread.example.test")
			var offset time.Duration
			if tt.left > 0 {
				rec, err := e.m.Obtain(ctx, spec, nil)
				if err != nil {
					t.Fatal(err)
				}
				offset = time.Until(rec.NotAfter.Add(-tt.left))
			}
			before := orders.Load()
			var logs syncBuffer
			m := New(e.store, e.m.issuerFor, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
			m.now = func() time.Time { return time.Now().Add(offset) }
			kctx, cancel := context.WithCancel(ctx)
			kept := make(chan struct{})
			go func() {
				defer close(kept)
				m.Keep(kctx, []Spec{spec}, KeepOptions{CheckEvery: time.Hour, MinBackoff: time.Hour,
					Owns: func(string) bool { return false }, OwnerGrace: tt.grace})
			}()
			// The keeper's first look decides, and says so.
			ok := waitFor(ctx, func() bool {
				return strings.Contains(logs.String(), tt.wantLog) && (!tt.wantOrder || orders.Load() > before)
			})
			if tt.wantOrder {
				// The order, once placed, is seen through.
				waitFor(ctx, func() bool { _, err := e.m.loadRecord(ctx, spec.ID()); return err == nil && orders.Load() > before })
			}
			cancel()
			<-kept
			if !ok {
				t.Fatalf("the keeper did not log %q (orders %d, before %d); its log:\n%s", tt.wantLog, orders.Load(), before, logs.String())
			}
			if got := orders.Load() > before; got != tt.wantOrder {
				t.Errorf("ordered: %v; want %v; the keeper's log:\n%s", got, tt.wantOrder, logs.String())
			}
		})
	}
}
