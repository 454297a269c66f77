package manager

import (
	"context"
	"fmt"
	"net"
	"path"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// testEnv is a real Pebble CA, a responder on the port its VA dials, file
// storage, one issuer for the CA and a Manager using them.
type testEnv struct {
	ca    *democa.CA
	resp  *responder.Responder
	store *fs.FS
	m     *Manager
}

// newTestEnv starts a responder and a CA for opts (TLSPort, NoSleep and
// Strict are set here); both stop when t ends. wrap, when not nil, wraps
// the responder as the issuer's publisher.
func newTestEnv(t testing.TB, opts democa.Options, wrap func(issuer.Publisher) issuer.Publisher) *testEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := responder.New()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("responder: %v", err)
		}
	})
	opts.TLSPort = ln.Addr().(*net.TCPAddr).Port
	opts.NoSleep, opts.Strict = true, true
	ca, err := democa.Start(testContext(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// A connection dialled for a request that another connection
		// served sits idle in the shared transport; the server counts it
		// as new, not idle, and Close would wait 5 s for it.
		ca.HTTPClient().CloseIdleConnections()
		ca.Close()
	})
	st, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var pub issuer.Publisher = r
	if wrap != nil {
		pub = wrap(r)
	}
	iss, err := issuer.New(issuer.Config{
		Directory:  ca.DirectoryURL(),
		HTTPClient: ca.HTTPClient(),
		AgreeTOS:   true,
		Storage:    st,
		Publisher:  pub,
	})
	if err != nil {
		t.Fatal(err)
	}
	issuerFor := func(_ context.Context, spec Spec) (Issuer, error) {
		if spec.CA != ca.DirectoryURL() {
			return nil, fmt.Errorf("no issuer for CA %q", spec.CA)
		}
		return iss, nil
	}
	return &testEnv{ca: ca, resp: r, store: st, m: New(st, issuerFor, nil)}
}

// spec is a certificate for names from the environment's CA, with the
// profile pinned (Pebble picks one at random otherwise).
func (e *testEnv) spec(profile string, names ...string) Spec {
	return Spec{Names: names, CA: e.ca.DirectoryURL(), KeyType: issuer.EC256, Profile: profile}
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// storedKeys returns the storage keys of name's record, and of the
// certificate and key of its current version.
func (e *testEnv) storedKeys(t *testing.T, name string) (meta, cert, key string) {
	t.Helper()
	rec, err := e.m.loadRecord(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	v := storage.LineageVersionDir(name, rec.Version)
	return storage.LineageMetaKey(name), path.Join(v, "cert.pem"), path.Join(v, "key.pem")
}
