package issuer

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// testEnv is a real Pebble CA, a responder on the port its VA dials, and
// file storage: everything an Issuer talks to, in process, on loopback.
type testEnv struct {
	ca    *democa.CA
	resp  *responder.Responder
	store *fs.FS
}

// newTestEnv starts a responder and a CA for opts (TLSPort, NoSleep and
// Strict are set here). Both stop when t ends.
func newTestEnv(t *testing.T, opts democa.Options) *testEnv {
	t.Helper()
	return newTestEnvListener(t, opts, nil)
}

// newTestEnvListener is newTestEnv with the responder's listener passed
// through wrap, when not nil.
func newTestEnvListener(t *testing.T, opts democa.Options, wrap func(net.Listener) net.Listener) *testEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.TLSPort = ln.Addr().(*net.TCPAddr).Port
	if wrap != nil {
		ln = wrap(ln)
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
	opts.NoSleep, opts.Strict = true, true
	ca, err := democa.Start(testContext(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// An order cut short can leave a connection dialled for a
		// cancelled request idle in the shared transport; the server
		// counts it as new, not idle, and Close would wait 5 s for it.
		ca.HTTPClient().CloseIdleConnections()
		ca.Close()
	})
	st, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{ca: ca, resp: r, store: st}
}

// issuer returns an Issuer for the environment's CA; edit, when not nil,
// adjusts its Config first.
func (e *testEnv) issuer(t *testing.T, edit func(*Config)) *Issuer {
	t.Helper()
	cfg := Config{
		Directory:  e.ca.DirectoryURL(),
		HTTPClient: e.ca.HTTPClient(),
		AgreeTOS:   true,
		Storage:    e.store,
		Publisher:  e.resp,
	}
	if edit != nil {
		edit(&cfg)
	}
	iss, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
