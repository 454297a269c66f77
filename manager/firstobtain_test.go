package manager

import (
	"context"
	"log/slog"
	"net"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage"
)

// TestKeepersFirstObtainOnce: two keepers (two nodes of a cluster, each with its own
// connection to etcd) start at once on a certificate not stored yet, and both own it (as
// every node does before the nodes have registered what they keep). The certificate's lock
// lets one order; the other, taking the lock after, finds it stored and orders nothing: one
// order at the CA. Before, the second ordered again as soon as it had the lock, and a second
// certificate replaced the first.
func TestKeepersFirstObtainOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var orders atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := democa.Start(ctx, democa.Options{TLSPort: ln.Addr().(*net.TCPAddr).Port, NoSleep: true, Strict: true, Handler: countOrders(&orders)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ca.HTTPClient().CloseIdleConnections(); ca.Close() }()
	// One responder answers for both nodes: each publishes its own challenges on it.
	r := responder.New()
	go r.Serve(ctx, ln)
	c := etcdtest.Start(t, 1)
	spec := Spec{Names: []string{"once.example.test"}, CA: ca.DirectoryURL(), KeyType: issuer.EC256}
	var logs syncBuffer
	var managers []*Manager
	for range 2 {
		st := openEtcdAt(t, c.Endpoints())
		iss, err := issuer.New(issuer.Config{Directory: ca.DirectoryURL(), HTTPClient: ca.HTTPClient(), AgreeTOS: true, Storage: st, Publisher: r})
		if err != nil {
			t.Fatal(err)
		}
		managers = append(managers, New(st, func(context.Context, Spec) (Issuer, error) { return iss, nil }, slog.New(slog.NewTextHandler(&logs, nil))))
	}
	kctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for _, m := range managers {
		wg.Go(func() { m.Keep(kctx, []Spec{spec}, KeepOptions{CheckEvery: time.Second}) })
	}
	defer func() { stop(); wg.Wait() }()
	waitUntil(t, 30*time.Second, "the certificate stored", func() bool {
		_, err := managers[0].Load(ctx, spec.ID())
		return err == nil
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("keepers log:\n%s", logs.String())
		}
	})
	// The second keeper either finds the certificate stored (and says so) or orders again.
	waitUntil(t, 20*time.Second, "the second keeper's first look", func() bool {
		return strings.Contains(logs.String(), "not ordering: another process obtained the certificate meanwhile") || orders.Load() >= 2
	})
	if got := orders.Load(); got != 1 {
		t.Errorf("%d orders for one certificate kept by two nodes; want 1\n%s", got, logs.String())
	}
}

// TestKeepRepairsDamaged: a keeper whose stored certificate is damaged (its chain unreadable)
// orders a new one: the check that spares a second order (TestKeepersFirstObtainOnce) takes
// only an intact stored certificate for one obtained meanwhile.
func TestKeepRepairsDamaged(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var orders atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := democa.Start(ctx, democa.Options{TLSPort: ln.Addr().(*net.TCPAddr).Port, NoSleep: true, Strict: true, Handler: countOrders(&orders)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ca.HTTPClient().CloseIdleConnections(); ca.Close() }()
	r := responder.New()
	go r.Serve(ctx, ln)
	st := openEtcdAt(t, etcdtest.Start(t, 1).Endpoints())
	iss, err := issuer.New(issuer.Config{Directory: ca.DirectoryURL(), HTTPClient: ca.HTTPClient(), AgreeTOS: true, Storage: st, Publisher: r})
	if err != nil {
		t.Fatal(err)
	}
	m := New(st, func(context.Context, Spec) (Issuer, error) { return iss, nil }, nil)
	spec := Spec{Names: []string{"damaged.example.test"}, CA: ca.DirectoryURL(), KeyType: issuer.EC256}
	first, err := m.Obtain(ctx, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, path.Join(storage.LineageVersionDir(spec.ID(), first.Version), storage.CertFile), []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	kctx, stop := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); m.Keep(kctx, []Spec{spec}, KeepOptions{CheckEvery: time.Second}) }()
	defer func() { stop(); <-done }()
	waitUntil(t, 30*time.Second, "a new certificate in place of the damaged one", func() bool {
		s, err := m.Load(ctx, spec.ID())
		return err == nil && s.Serial != first.Serial
	})
	if got := orders.Load(); got != 2 {
		t.Errorf("%d orders; want 2 (the first, and one to replace the damaged certificate)", got)
	}
}
