package manager

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage/etcd"
)

// TestKeepEtcdOutage: a keeper on etcd whose certificate falls due while every etcd member is
// stopped orders nothing and says why ("storage unreachable: renewal paused"), keeps the
// certificate in service in its cache, and renews within seconds of etcd's return, on its own.
// Before, the unreadable record was taken for a damaged one ("stored certificate is damaged;
// obtaining a new one"), the order failed on the lock, and the retry backed off as after a
// failed order (MinBackoff, doubling), long past etcd's return.
//
// The renewal falls due by the manager's clock, moved five days on while etcd is down: the
// six-day certificate then has a day left.
func TestKeepEtcdOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
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
	roots := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(roots, ca.RootsPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	r := responder.New()
	go r.Serve(ctx, ln)
	c := etcdtest.Start(t, 3)
	st, err := etcd.Open(ctx, etcd.Config{Endpoints: c.Endpoints(), Prefix: "tlsalpn",
		EncryptionKey: []byte("0123456789abcdef0123456789abcdef"), SessionTTL: 2 * time.Second, RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	iss, err := issuer.New(issuer.Config{Directory: ca.DirectoryURL(), HTTPClient: ca.HTTPClient(), AgreeTOS: true, Storage: st, Publisher: r})
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	m := New(st, func(context.Context, Spec) (Issuer, error) { return iss, nil }, slog.New(slog.NewTextHandler(&logs, nil)))
	var offset atomic.Int64
	m.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	const name = "outage.example.test"
	spec := Spec{Names: []string{name}, CA: ca.DirectoryURL(), KeyType: issuer.EC256, Profile: "shortlived"}
	first, err := m.Obtain(ctx, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	cache := NewCache()
	// Without a deadline, as serve's keeper: each storage call is then bounded by the
	// store's RequestTimeout (a deadline of the caller's would take its place).
	kctx, stopKeep := context.WithCancel(t.Context())
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		m.Keep(kctx, []Spec{spec}, KeepOptions{Cache: cache, CheckEvery: 200 * time.Millisecond, MinBackoff: time.Minute, StorageRetry: 500 * time.Millisecond})
	}()
	defer func() { stopKeep(); <-kept }()
	waitUntil(t, 10*time.Second, "the keeper to cache the certificate", func() bool { return cache.Get(name) != nil })
	before := orders.Load()

	c.StopAll()
	offset.Store(int64(5 * 24 * time.Hour)) // due now
	outage := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("keeper log:\n%s", logs.String())
		}
	})
	waitUntil(t, 15*time.Second, "the keeper to log that the renewal is paused", func() bool {
		return strings.Contains(logs.String(), "storage unreachable: renewal paused")
	})
	time.Sleep(2 * time.Second) // a few looks more, still during the outage
	if got := orders.Load(); got != before {
		t.Errorf("%d orders placed while etcd was down; want none", got-before)
	}
	if s := logs.String(); strings.Contains(s, "damaged") {
		t.Errorf("etcd's absence was taken for damage:\n%s", s)
	}
	if cert := cache.Get(name); cert == nil {
		t.Error("the certificate in service left the cache during the outage")
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "renewal paused") {
			t.Logf("logged during the outage: %s", l)
			break
		}
	}

	c.StartAll()
	back := time.Now()
	waitUntil(t, 20*time.Second, "the renewal to resume and store a new certificate", func() bool {
		s, err := m.Load(ctx, name)
		return err == nil && s.Serial != first.Serial
	})
	offset.Store(0) // the new certificate is not due
	t.Logf("outage %s; renewed %s after etcd's return", back.Sub(outage).Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
	if got := orders.Load() - before; got < 1 {
		t.Errorf("%d orders after etcd's return", got)
	}
	if !strings.Contains(logs.String(), "renewal resumed") {
		t.Errorf("no log line says the renewal resumed:\n%s", logs.String())
	}
}

// waitUntil polls cond every 50 ms until it holds, for up to d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
	}
}
