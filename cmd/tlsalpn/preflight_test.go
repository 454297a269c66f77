package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

type fakeResolver map[string][]netip.Addr // "ip4 name" -> addrs

func (f fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	if a, ok := f[network+" "+host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// serveResponder serves r on a new listener at addr until the test ends
// and returns the address it listens on.
func serveResponder(t *testing.T, r *responder.Responder, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); ln.Close(); <-done })
	return ln.Addr().String()
}

// TestPreflightLocalListener: a name that does not resolve from here is
// checked on the local listener, which passes for a correct challenge and
// stops a wrong one with the CA's own words, and the words say that only
// the local listener was checked.
func TestPreflightLocalListener(t *testing.T) {
	ctx := context.Background()
	r := responder.New()
	listen := serveResponder(t, r, "127.0.0.1:0")

	id, _ := challenge.ParseIdentifier("preflight.example")
	good := "token.thumbprint"
	cert, _ := challenge.Build(id, good)
	r.Publish(ctx, challenge.ServerName(id), cert)
	p := newPreflight(listen, 443, nil)
	p.Resolver = fakeResolver{}
	checked, err := p.Preflight(ctx, id, good)
	if err != nil {
		t.Fatalf("correct challenge: %v", err)
	}
	if want := "checked only the local listener on " + listen + "; could not check from outside (preflight.example does not resolve from here"; !strings.HasPrefix(checked, want) {
		t.Errorf("words %q, want them to start %q", checked, want)
	}
	_, err = p.Preflight(ctx, id, "token.other-thumbprint")
	if err == nil || !strings.Contains(err.Error(), "acmeValidationV1 extension value") || !strings.Contains(err.Error(), "checked only the local listener") {
		t.Fatalf("wrong key authorization: %v", err)
	}
	r.Unpublish(ctx, challenge.ServerName(id))
	if _, err := p.Preflight(ctx, id, good); err == nil {
		t.Fatal("nothing published, yet the preflight passed")
	}
}

// TestPreflightCAPortAndNAT (issue 8, finding 6): the preflight dials the
// name's addresses on the port the CA connects to, not --listen's; it says
// exactly what it checked; and where the address is not on this host (a
// NAT'd public address) and cannot be reached from here, it says that it
// checked only the local listener instead of claiming outside validation.
// Pebble validates each run on caPort at the address its DNS stub gives.
func TestPreflightCAPortAndNAT(t *testing.T) {
	natAddr := netip.MustParseAddr("127.0.0.7") // on lo's /8, but no interface's address: "not on this host"
	tests := []struct {
		name string
		addr netip.Addr // the name's A record
		// forward: the responder also answers on addr:caPort (a port
		// forward that loops back); otherwise nothing listens there.
		forward bool
		// preflightFails: the issuer stops before asking the CA.
		preflightFails bool
		obtained       bool
		words          []string // in the preflight's step, or its error
		warn           bool     // a warning that only the local listener was checked
	}{
		{
			name: "CA's port closed on this host, --listen's open", addr: netip.MustParseAddr("127.0.0.1"),
			preflightFails: true,
			words:          []string{"checked here.example at 127.0.0.1:{caPort}, an address of this host, on the CA's port {caPort}", "Connection refused", "nothing listens on port {caPort}", "tlsalpn answers on --listen {listen}, not on the CA's port {caPort}"},
		},
		{
			name: "CA's port open on this host", addr: netip.MustParseAddr("127.0.0.1"), forward: true,
			obtained: true,
			words:    []string{"preflight passed: checked here.example at 127.0.0.1:{caPort}, an address of this host, on the CA's port {caPort}"},
		},
		{
			name: "NAT, port not reachable", addr: natAddr,
			words: []string{"preflight passed: checked only the local listener on {listen}; could not check from outside (address 127.0.0.7 is not on this host, and from here 127.0.0.7:{caPort} gave: 127.0.0.7: Connection refused"},
			warn:  true,
		},
		{
			name: "NAT, port forwarded and looped back", addr: natAddr, forward: true,
			obtained: true,
			words:    []string{"preflight passed: checked here.example at 127.0.0.7:{caPort} on the CA's port {caPort} from this host (127.0.0.7 is not on this host"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			caPort := freePort(t)
			ca, err := democa.Start(ctx, democa.Options{TLSPort: caPort, NoSleep: true, Strict: true,
				DNS: map[string][]netip.Addr{"here.example": {tt.addr}}})
			if err != nil {
				t.Fatal(err)
			}
			defer ca.Close()
			r := responder.New()
			listen := serveResponder(t, r, "127.0.0.1:0") // --listen: never the CA's port here
			if tt.forward {
				serveResponder(t, r, netip.AddrPortFrom(tt.addr, uint16(caPort)).String())
			}
			logs := &syncBuffer{}
			p := newPreflight(listen, caPort, slog.New(slog.NewTextHandler(logs, nil)))
			p.Resolver = stubResolver(ca.DNSAddr())
			store, err := fs.New(filepath.Join(t.TempDir(), "store"))
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var steps []string
			iss, err := issuer.New(issuer.Config{
				Directory: ca.DirectoryURL(), HTTPClient: ca.HTTPClient(), AgreeTOS: true, Storage: store, Publisher: r,
				Preflight: p, PollTimeout: 20 * time.Second,
				OnStep: func(s issuer.Step) { mu.Lock(); steps = append(steps, s.Detail); mu.Unlock() },
			})
			if err != nil {
				t.Fatal(err)
			}
			id, _ := challenge.ParseIdentifier("here.example")
			_, err = iss.Obtain(ctx, issuer.Request{Identifiers: []challenge.Identifier{id}, KeyType: issuer.EC256, Profile: "default"})

			mu.Lock()
			said := strings.Join(steps, "\n")
			mu.Unlock()
			if err != nil {
				said += "\n" + oneLine(err)
			}
			t.Logf("said:\n%s\nlogged:\n%s", said, logs.String())
			var pe *issuer.PreflightError
			switch {
			case tt.preflightFails && !errors.As(err, &pe):
				t.Errorf("the preflight let the CA be asked; error: %v", err)
			case !tt.preflightFails && errors.As(err, &pe):
				t.Errorf("the preflight stopped the order: %v", err)
			case tt.obtained && err != nil:
				t.Errorf("not obtained: %v", err)
			case !tt.obtained && err == nil:
				t.Error("obtained, but the CA cannot connect")
			}
			for _, w := range tt.words {
				w = strings.ReplaceAll(strings.ReplaceAll(w, "{caPort}", strconv.Itoa(caPort)), "{listen}", listen)
				if !strings.Contains(said, w) {
					t.Errorf("the preflight's words lack %q; said:\n%s", w, said)
				}
			}
			if strings.Contains(said, "validates from outside") {
				t.Errorf("the preflight claims an outside validation:\n%s", said)
			}
			if warned := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "checked only the local listener"); warned != tt.warn {
				t.Errorf("warning logged: %v, want %v; log:\n%s", warned, tt.warn, logs.String())
			}
		})
	}
}

// stubResolver resolves through a test CA's DNS stub.
func stubResolver(dnsAddr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, dnsAddr)
	}}
}

// TestIssueValidationPortUsage: a port that cannot be the CA's is refused
// before anything is written or any CA contacted.
func TestIssueValidationPortUsage(t *testing.T) {
	for _, port := range []string{"0", "65536", "-1", "https"} {
		t.Run(port, func(t *testing.T) {
			storage := filepath.Join(t.TempDir(), "store")
			code, _, stderr := runCLI(t, context.Background(), "issue", "--storage", storage, "-d", "example.com",
				"--ca", "https://127.0.0.1:1/dir", "--validation-port", port)
			if code != exitUsage || len(lines(stderr)) != 1 || !strings.Contains(stderr, "validation-port") {
				t.Errorf("exit %d, stderr %q; want 2 and one line about --validation-port", code, stderr)
			}
			if files := treeFiles(t, storage); files != nil {
				t.Errorf("storage written on a usage error: %v", files)
			}
		})
	}
}

// TestPreflightSaysFallback: when the CA would pass only by falling back
// from the AAAA address to the A address, the words say so.
func TestPreflightSaysFallback(t *testing.T) {
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		ln.Close()
	}
	ctx := context.Background()
	r := responder.New()
	caPort := freePort(t)
	serveResponder(t, r, "127.0.0.1:"+strconv.Itoa(caPort)) // nothing on [::1]:caPort
	id, _ := challenge.ParseIdentifier("both.example")
	keyAuth := "token.thumbprint"
	cert, _ := challenge.Build(id, keyAuth)
	r.Publish(ctx, challenge.ServerName(id), cert)
	p := newPreflight("127.0.0.1:"+strconv.Itoa(caPort), caPort, nil)
	p.Resolver = fakeResolver{"ip6 both.example": {netip.IPv6Loopback()}, "ip4 both.example": {netip.MustParseAddr("127.0.0.1")}}
	checked, err := p.Preflight(ctx, id, keyAuth)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"checked both.example at 127.0.0.1:" + strconv.Itoa(caPort) + ", an address of this host", "only by falling back", "[::1]:" + strconv.Itoa(caPort)} {
		if !strings.Contains(checked, want) {
			t.Errorf("words %q lack %q", checked, want)
		}
	}
}
