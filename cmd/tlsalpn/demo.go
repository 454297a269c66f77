package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/check"
	"github.com/tlsalpn/tlsalpn/deploy"
	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

const demoUsage = `
Usage: tlsalpn demo [--dir DIR] [-d NAME…]

Runs the whole TLS-ALPN-01 flow on this machine with nothing set up, and
prints every step as it happens: an embedded ACME CA (Pebble, the CA Let's
Encrypt publishes for testing) and a DNS stub that points every name at
127.0.0.1 start in-process; the responder listens on a loopback port; the CA
connects to it with ALPN acme-tls/1 exactly as Let's Encrypt would on port
443; the certificate is issued, written to DIR and verified against the demo
CA's root. No root privileges, no port below 1024, no network.

The demo CA is thrown away when the demo ends; its certificates are trusted
by nothing. Use "tlsalpn issue" for real ones.

Examples:
  tlsalpn demo
  tlsalpn demo --dir ./demo-out -d app.example -d 127.0.0.1    (your names, files kept)
  tlsalpn demo -v                                             (with the CA's logs)
`

func runDemo(ctx context.Context, e *env, args []string) error {
	dir, ids, verbose, err := demoFlags(e, args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	start := time.Now()
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(e.stdout, "%6.3fs  %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	cf := caFlags{verbose: verbose}
	logger := cf.logger(e)

	// 1. The responder's port first: the CA must know where to connect.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("opening a loopback port for the responder: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port

	caOpts := democa.Options{TLSPort: port, NoSleep: true, Strict: true}
	if verbose {
		caOpts.Logger = logger
	}
	ca, err := democa.Start(ctx, caOpts)
	if err != nil {
		ln.Close()
		return fmt.Errorf("starting the demo CA: %w", err)
	}
	defer ca.Close()
	say("demo ACME CA (Pebble, strict mode) ready: directory %s", ca.DirectoryURL())
	say("DNS stub on %s answers every name with 127.0.0.1; the CA validates on port %d (Let's Encrypt: 443)", ca.DNSAddr(), port)

	r, stopResponder := startDemoResponder(ctx, ln, logger, say)
	defer stopResponder()

	store, err := fs.New(filepath.Join(dir, "storage"))
	if err != nil {
		return err
	}
	iss, err := issuer.New(issuer.Config{
		Directory: ca.DirectoryURL(), HTTPClient: ca.HTTPClient(), Email: "demo@example.com", AgreeTOS: true,
		Storage: store, Publisher: r, Logger: logger, Preflight: demoPreflight(ln.Addr().String(), ca.DNSAddr(), logger),
		OnStep: func(s issuer.Step) {
			if s.Identifier != "" {
				say("%s: %s: %s", s.Kind, s.Identifier, s.Detail)
			} else {
				say("%s: %s", s.Kind, s.Detail)
			}
		},
	})
	if err != nil {
		return err
	}
	m := manager.New(store, func(context.Context, manager.Spec) (manager.Issuer, error) { return iss, nil }, logger)
	spec := manager.Spec{
		Names: identifierValues(ids), CA: ca.DirectoryURL(), Email: "demo@example.com", KeyType: issuer.EC256,
		Profile: "default", Out: filepath.Join(dir, "live"), Listen: ln.Addr().String(),
	}
	rec, err := m.Obtain(ctx, spec, nil)
	if err != nil {
		return fmt.Errorf("demo issuance failed: %w", err)
	}
	paths := deploy.PathsIn(rec.Out)
	say("certificate written: %s (key %s, mode 0600)", paths.FullChain, paths.Key)

	issuerRootFile, err := verifyDemoChain(ctx, ca, dir, paths.FullChain, spec.Names)
	if err != nil {
		return err
	}
	say("chain verified for %s against the demo CA's root (%s)", strings.Join(spec.Names, ", "), issuerRootFile)
	printDemoDone(e, time.Since(start), dir, paths.Cert)
	return nil
}

// demoFlags parses demo's flags: the directory (a new temporary one by
// default) and the names to certify.
func demoFlags(e *env, args []string) (dir string, ids []challenge.Identifier, verbose bool, err error) {
	var names listFlag
	f := newFlagSet(e, "demo", demoUsage)
	f.StringVar(&dir, "dir", "", "`DIR` to write the certificate, key and demo CA root to (default: a new temporary directory)")
	f.Var(&names, "d", "`NAME` to certify (repeatable; default demo.example.com and www.demo.example.com)")
	f.BoolVar(&verbose, "v", false, "also show the CA's and tlsalpn's logs")
	if err := f.parse(args, 0); err != nil {
		return "", nil, false, err
	}
	if len(names) == 0 {
		names = listFlag{"demo.example.com", "www.demo.example.com"}
	}
	if ids, err = parseNames(names); err != nil {
		return "", nil, false, err
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "tlsalpn-demo-"); err != nil {
			return "", nil, false, fmt.Errorf("creating the demo directory: %w", err)
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", nil, false, usagef("--dir: %v", err)
	}
	return dir, ids, verbose, nil
}

// startDemoResponder serves a responder on ln that says each validation
// connection, until the returned stop is called.
func startDemoResponder(ctx context.Context, ln net.Listener, logger *slog.Logger, say func(string, ...any)) (*responder.Responder, func()) {
	r := responder.New(responder.WithLogger(logger), responder.WithObserver(func(ev responder.Event) {
		verdict := "served the validation certificate"
		if !ev.Served {
			verdict = "refused: " + ev.Err.Error()
		}
		say("validation connection from the CA: %v, ALPN %q, SNI %q: %s", ev.RemoteAddr, ev.ALPN, ev.ServerName, verdict)
	}))
	srvCtx, stopSrv := context.WithCancel(ctx)
	served := make(chan struct{})
	go func() {
		defer close(served)
		r.Serve(srvCtx, ln)
	}()
	say("responder listening on %s: answers only ClientHellos offering exactly ALPN %q for a pending name", ln.Addr(), challenge.ALPNProto)
	return r, func() { stopSrv(); <-served }
}

// verifyDemoChain verifies the chain in fullChain for names the way a
// client that trusts the demo CA would, and returns the file the CA's
// issuing root was written to, in dir.
func verifyDemoChain(ctx context.Context, ca *democa.CA, dir, fullChain string, names []string) (string, error) {
	issuerRoots, err := ca.IssuerRootsPEM(ctx)
	if err != nil {
		return "", fmt.Errorf("fetching the demo CA's issuing root: %w", err)
	}
	issuerRootFile := filepath.Join(dir, "issuer-root.pem")
	if err := deploy.WriteFileAtomic(issuerRootFile, issuerRoots, 0o644); err != nil {
		return "", err
	}
	chainPEM, err := os.ReadFile(fullChain)
	if err != nil {
		return "", err
	}
	chain, err := issuer.ParseChainPEM(chainPEM)
	if err != nil {
		return "", err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(issuerRoots)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, n := range names {
		if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: n, Roots: roots, Intermediates: inter}); err != nil {
			return "", fmt.Errorf("verifying the issued chain for %s: %w", n, err)
		}
	}
	return issuerRootFile, nil
}

// printDemoDone says where the demo's files are and how to look at them.
func printDemoDone(e *env, took time.Duration, dir, cert string) {
	fmt.Fprintf(e.stdout, "\ndone in %.2fs. Files are in %s:\n", took.Seconds(), dir)
	fmt.Fprintf(e.stdout, "  live/fullchain.pem, live/key.pem   the certificate and its key\n")
	fmt.Fprintf(e.stdout, "  issuer-root.pem                    the demo CA's issuing root\n")
	fmt.Fprintf(e.stdout, "  storage/                           tlsalpn's account, key and metadata\n")
	fmt.Fprintf(e.stdout, "Inspect: openssl x509 -in %s -noout -text\n", cert)
	fmt.Fprintln(e.stdout, dir)
}

func identifierValues(ids []challenge.Identifier) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.Value
	}
	return out
}

// demoPreflight resolves through the demo's DNS stub and dials the port
// the demo CA validates on, as the demo CA does.
func demoPreflight(listen, dnsAddr string, logger *slog.Logger) *check.Preflight {
	ap, _ := netip.ParseAddrPort(listen)
	p := newPreflight(listen, int(ap.Port()), logger)
	p.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, dnsAddr)
	}}
	return p
}
