package frontdoor

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/config"
	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage"
	"github.com/tlsalpn/tlsalpn/storage/etcd"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// TestCertificateEverywhere: two nodes share one storage and have the same
// configuration, as the nodes of a cluster do: the same output directory
// and deploy hook (here on one machine, so the hook's runs of both nodes
// add up in one file). Node a, which the CA validates, orders the
// certificate; node b, a serve that terminates TLS, starts afterwards and
// serves it from its first connection and deploys it (runs its hook);
// when node a renews it, node b serves the renewed certificate (by
// handshake) and has deployed it within the storage's poll interval,
// without ordering anything itself. The record saying node a deployed it
// to the same paths does not stop node b: those are node a's files.
//
// On file storage, changes are seen by polling (every 100 ms here); on etcd
// (a real three-member cluster), by etcd's watch, and the bound is the
// issue's: a second.
func TestCertificateEverywhere(t *testing.T) {
	tests := []struct {
		backend string
		// bound is how long after node a stored the renewed certificate
		// node b may take to serve and deploy it.
		bound time.Duration
	}{
		{backend: "fs", bound: fsPoll + 900*time.Millisecond},
		{backend: "etcd", bound: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.backend, func(t *testing.T) {
			var storeA, storeB storage.Storage
			switch tt.backend {
			case "fs":
				root := t.TempDir()
				a, err := fs.New(root)
				if err != nil {
					t.Fatal(err)
				}
				b, err := fs.New(root, fs.WithPollInterval(fsPoll))
				if err != nil {
					t.Fatal(err)
				}
				storeA, storeB = a, b
			case "etcd":
				c := etcdtest.Start(t, 3)
				storeA, storeB = openEtcd(t, c.Endpoints()), openEtcd(t, c.Endpoints())
			}
			testCertificateEverywhere(t, storeA, storeB, tt.bound)
		})
	}
}

// fsPoll is how often node b's file storage is polled for changes.
const fsPoll = 100 * time.Millisecond

// openEtcd opens storage on the etcd cluster at endpoints, as one node
// (one process) does; it is closed when the test ends.
func openEtcd(t *testing.T, endpoints []string) *etcd.Store {
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

// testCertificateEverywhere is TestCertificateEverywhere with node a on
// storeA and node b on storeB, two views of one storage.
func testCertificateEverywhere(t *testing.T, storeA, storeB storage.Storage, bound time.Duration) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const name = "everywhere.spread.example.test"

	// Node a: a responder on the port the CA's VA dials, and a manager.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := responder.New()
	rctx, stopResponder := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- r.Serve(rctx, ln) }()
	defer func() { stopResponder(); <-served }()
	var orders atomic.Int32
	ca, err := democa.Start(ctx, democa.Options{TLSPort: ln.Addr().(*net.TCPAddr).Port, NoSleep: true, Strict: true,
		Handler: func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
					orders.Add(1)
				}
				next.ServeHTTP(w, r)
			})
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ca.HTTPClient().CloseIdleConnections(); ca.Close() }()
	iss, err := issuer.New(issuer.Config{Directory: ca.DirectoryURL(), HTTPClient: ca.HTTPClient(), AgreeTOS: true, Storage: storeA, Publisher: r})
	if err != nil {
		t.Fatal(err)
	}
	a := manager.New(storeA, func(context.Context, manager.Spec) (manager.Issuer, error) { return iss, nil }, nil, manager.WithNode("a"))
	dir := t.TempDir()
	out, hookRuns := filepath.Join(dir, "out"), filepath.Join(dir, "hook-runs")
	hook := "printf x >> '" + hookRuns + "'"
	specA := manager.Spec{Names: []string{name}, CA: ca.DirectoryURL(), KeyType: issuer.EC256, Profile: "shortlived",
		Out: out, DeployHook: hook}
	first, err := a.Obtain(ctx, specA, nil)
	if err != nil {
		t.Fatal(err)
	}

	// Node b: a serve in terminate mode, on the same storage.
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	cfg := &config.Config{
		Listen: "127.0.0.1:0",
		ACME:   config.ACME{CA: ca.DirectoryURL(), AgreeTOS: true},
		Proxy:  config.Proxy{Steer: config.SteerOff},
		Routes: []config.Route{{Names: []string{name}, Backend: backend.Addr().String(), Mode: config.ModeTCP}},
		Certificates: []config.Certificate{{Names: []string{name}, Profile: "shortlived", KeyType: "ec256",
			Out: out, DeployHook: hook}},
	}
	d, err := New(Config{Config: cfg, Storage: storeB, NodeID: "b", Logger: slog.New(slog.DiscardHandler),
		NewPool: func() *manager.Pool {
			p := &manager.Pool{}
			p.SetHTTPClient("", ca.HTTPClient())
			return p
		}})
	if err != nil {
		t.Fatal(err)
	}
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stopServe := context.WithCancel(ctx)
	serveDone := make(chan error, 1)
	go func() { serveDone <- d.Serve(sctx, front) }()
	defer func() { stopServe(); <-serveDone }()

	serial := func() (string, error) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", front.Addr().String(),
			&tls.Config{ServerName: name, InsecureSkipVerify: true})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16), nil
	}
	// deployed: the files hold serial and the hook ran runs times, on
	// both nodes together.
	deployed := func(serial string, runs int) bool {
		b, _ := os.ReadFile(filepath.Join(out, "cert.pem"))
		chain, err := issuer.ParseChainPEM(b)
		hook, _ := os.ReadFile(hookRuns)
		return err == nil && chain[0].SerialNumber.Text(16) == serial && len(hook) == runs
	}

	// Caught up from storage before its first connection.
	if got, err := serial(); err != nil || got != first.Serial {
		t.Fatalf("node b's first handshake: serial %q (%v); want %s, stored before it started", got, err, first.Serial)
	}
	if !waitUntil(ctx, func() bool { return deployed(first.Serial, 2) }) {
		runs, _ := os.ReadFile(hookRuns)
		t.Fatalf("node b did not deploy serial %s: the hook ran %d times; want 2, once on each node", first.Serial, len(runs))
	}

	// Node a renews.
	s, err := a.Load(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := a.Obtain(ctx, specA, s.Chain[0])
	if err != nil {
		t.Fatal(err)
	}
	// Stamped just before it was stored (node a's own deployment,
	// which Obtain waits for, takes a while after).
	stored := renewed.ObtainedAt
	var servedAt, deployedAt time.Time
	waitUntil(ctx, func() bool {
		now := time.Now()
		if got, err := serial(); servedAt.IsZero() && err == nil && got == renewed.Serial {
			servedAt = now
		}
		if deployedAt.IsZero() && deployed(renewed.Serial, 4) {
			deployedAt = now
		}
		return !servedAt.IsZero() && !deployedAt.IsZero()
	})
	if servedAt.IsZero() || deployedAt.IsZero() {
		t.Fatalf("node b: serves the renewed serial %s: %v; deployed it and ran its hook: %v", renewed.Serial, !servedAt.IsZero(), !deployedAt.IsZero())
	}
	t.Logf("node b served the renewed certificate %v and had deployed it %v after node a stored it",
		servedAt.Sub(stored).Round(time.Millisecond), deployedAt.Sub(stored).Round(time.Millisecond))
	for what, at := range map[string]time.Time{"served": servedAt, "deployed": deployedAt} {
		if took := at.Sub(stored); took > bound {
			t.Errorf("node b %s the renewed certificate %v after it was stored; want within %v", what, took, bound)
		}
	}
	if n := orders.Load(); n != 2 {
		t.Errorf("%d orders at the CA; want 2, both node a's", n)
	}
	// Settled: neither node deploys again.
	time.Sleep(3 * fsPoll)
	if runs, _ := os.ReadFile(hookRuns); len(runs) != 4 {
		t.Errorf("the hook ran %d times; want 4: each certificate once on each node", len(runs))
	}
}

// waitUntil polls cond every 10 ms until it holds or ctx ends.
func waitUntil(ctx context.Context, cond func() bool) bool {
	for !cond() {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
	return true
}
