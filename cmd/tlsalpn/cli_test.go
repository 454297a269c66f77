package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/issuer"
)

// TestUsageErrors: every bad input is refused with one line that says what
// to do, exit 2, before anything is written or any CA contacted.
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // substring of the one-line error
	}{
		{"no command", []string{}, ""},
		{"unknown command", []string{"isue"}, `unknown command "isue"`},
		{"malformed flag", []string{"issue", "-d", "example.com", "--bogus"}, "flag provided but not defined: -bogus"},
		{"flag missing value", []string{"issue", "-d"}, "flag needs an argument: -d"},
		{"no names", []string{"issue", "--agree-tos"}, "no names: give at least one -d NAME"},
		{"unknown CA name", []string{"issue", "-d", "example.com", "--ca", "letsencrpyt"}, `unknown CA "letsencrpyt"`},
		{"http CA", []string{"issue", "-d", "example.com", "--ca", "http://ca.example/dir"}, "must be https"},
		{"invalid hostname", []string{"issue", "-d", "exa mple.com"}, `-d "exa mple.com"`},
		{"label too long", []string{"issue", "-d", strings.Repeat("a", 64) + ".com"}, strings.Repeat("a", 64)},
		{"wildcard", []string{"issue", "-d", "*.example.com"}, "DNS-01"},
		{"bad key type", []string{"issue", "-d", "example.com", "--key-type", "ec521"}, "unknown key type"},
		{"half EAB", []string{"issue", "-d", "example.com", "--ca", "https://127.0.0.1:1/dir", "--eab-kid", "x"}, "go together"},
		{"missing ca root", []string{"issue", "-d", "example.com", "--ca", "https://127.0.0.1:1/dir", "--ca-root", "/nonexistent/root.pem"}, "--ca-root"},
		{"stray argument", []string{"issue", "-d", "example.com", "extra"}, `unexpected argument "extra"`},
		{"revoke without name", []string{"revoke"}, "give the NAME"},
		{"revoke bad reason", []string{"revoke", "example.com", "--reason", "7"}, "--reason 7"},
		{"serve half haproxy", []string{"serve", "--backend", "127.0.0.1:8443", "-d", "example.com", "--haproxy-socket", "/run/haproxy/admin.sock"}, "--haproxy-socket and --haproxy-cert go together"},
		{"serve haproxy without -d", []string{"serve", "--backend", "127.0.0.1:8443", "--haproxy-socket", "/s", "--haproxy-cert", "/c.pem"}, "name it with -d"},
		{"serve out without -d", []string{"serve", "--backend", "127.0.0.1:8443", "--out", "/tmp/x"}, "name it with -d"},
		{"serve bad steer", []string{"serve", "--backend", "127.0.0.1:8443", "--steer", "on"}, `--steer "on": want auto`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			storage := filepath.Join(t.TempDir(), "store")
			args := tt.args
			if len(args) > 0 && args[0] != "isue" {
				args = append([]string{args[0], "--storage", storage}, args[1:]...)
			}
			code, _, stderr := runCLI(t, context.Background(), args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr: %s", code, exitUsage, stderr)
			}
			if tt.want != "" {
				if got := lines(stderr); len(got) != 1 {
					t.Errorf("stderr has %d lines, want 1: %q", len(got), stderr)
				}
				if !strings.Contains(stderr, tt.want) {
					t.Errorf("stderr %q does not contain %q", stderr, tt.want)
				}
			}
			if files := treeFiles(t, storage); files != nil {
				t.Errorf("storage written on a usage error: %v", files)
			}
		})
	}
}

func TestHelpTeaches(t *testing.T) {
	for _, cmd := range []string{"issue", "renew", "revoke", "list", "demo"} {
		t.Run(cmd, func(t *testing.T) {
			code, out, _ := runCLI(t, context.Background(), cmd, "--help")
			if code != exitOK {
				t.Fatalf("exit %d", code)
			}
			for _, want := range []string{"Usage: tlsalpn " + cmd, "Flags:", "--storage"} {
				if cmd == "demo" && want == "--storage" {
					want = "--dir"
				}
				if !strings.Contains(out, want) {
					t.Errorf("help lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

// TestUnreachableCA: a clear one-line error, exit 1, nothing written.
func TestUnreachableCA(t *testing.T) {
	dir := t.TempDir()
	storage, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	code, _, stderr := runCLI(t, context.Background(), "issue", "-d", "example.com", "--agree-tos",
		"--ca", "https://127.0.0.1:"+itoa(freePort(t))+"/dir", "--listen", "127.0.0.1:"+itoa(freePort(t)), "--storage", storage, "--out", out)
	if code != exitFailure {
		t.Fatalf("exit %d, want 1: %s", code, stderr)
	}
	if len(lines(stderr)) != 1 || !strings.Contains(stderr, "cannot reach the CA") {
		t.Errorf("stderr = %q", stderr)
	}
	if files := treeFiles(t, dir); len(files) != 0 {
		t.Errorf("files written: %v", files)
	}
}

// cliCA starts the embedded Pebble for command-line tests; fail500 makes
// its ACME API answer 500 to every POST while set.
type cliCA struct {
	*democa.CA
	// finalized counts finalize requests let through: orders that reached
	// their end.
	finalized atomic.Int32

	root    string // PEM file of the CA's HTTPS root
	listen  string // where tlsalpn must answer the CA
	fail500 atomic.Bool
	orders  atomic.Int64 // new orders placed at the CA
	// onChallenge, if set, runs when a client tells the CA a challenge
	// is ready, before the CA sees it: the client has published it.
	onChallenge atomic.Pointer[func()]
}

func startCLICA(t *testing.T, opts democa.Options) *cliCA {
	t.Helper()
	c := &cliCA{}
	port := freePort(t)
	c.listen = "127.0.0.1:" + itoa(port)
	opts.TLSPort, opts.NoSleep, opts.Strict = port, true, true
	opts.Handler = func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
				c.orders.Add(1)
			}
			if c.fail500.Load() && r.Method == http.MethodPost {
				// A problem document, as a CA sends it (RFC 8555 §6.7).
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(http.StatusInternalServerError)
				w.Write([]byte(`{"type":"urn:ietf:params:acme:error:serverInternal","detail":"injected failure","status":500}`))
				return
			}
			if f := c.onChallenge.Load(); f != nil && r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/chalZ/") {
				(*f)()
			}
			if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/finalize-order/") {
				c.finalized.Add(1)
			}
			next.ServeHTTP(w, r)
		})
	}
	ca, err := democa.Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close() })
	c.CA = ca
	c.root = filepath.Join(t.TempDir(), "ca-root.pem")
	if err := os.WriteFile(c.root, ca.RootsPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cliCA) issueArgs(storage, out string, names ...string) []string {
	return c.issueArgsProfile("default", storage, out, names...)
}

func (c *cliCA) issueArgsProfile(profile, storage, out string, names ...string) []string {
	args := []string{"issue", "--ca", c.DirectoryURL(), "--ca-root", c.root, "--agree-tos", "--email", "ops@example.com",
		"--listen", c.listen, "--validation-port", c.listen[strings.LastIndex(c.listen, ":")+1:], "--storage", storage, "--profile", profile}
	if out != "" {
		args = append(args, "--out", out)
	}
	for _, n := range names {
		args = append(args, "-d", n)
	}
	return args
}

func readChain(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := issuer.ParseChainPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

func verifyChain(t *testing.T, ca *cliCA, path string, names ...string) *x509.Certificate {
	t.Helper()
	chain := readChain(t, path)
	rootsPEM, err := ca.IssuerRootsPEM(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AppendCertsFromPEM(rootsPEM)
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, n := range names {
		if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: n, Roots: roots, Intermediates: inter}); err != nil {
			t.Errorf("chain for %s does not verify: %v", n, err)
		}
	}
	return chain[0]
}

func TestIssueRenewListRevoke(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	marker := filepath.Join(dir, "hook-ran")
	ctx := context.Background()

	args := append(ca.issueArgs(storage, out, "example.com", "WWW.Example.com."), "--deploy-hook", "echo \"$TLSALPN_DOMAINS $TLSALPN_KEY\" >> "+marker)
	code, stdout, stderr := runCLI(t, ctx, args...)
	if code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "issued example.com, www.example.com") {
		t.Errorf("stdout = %q", stdout)
	}
	leaf := verifyChain(t, ca, filepath.Join(out, "fullchain.pem"), "example.com", "www.example.com")
	fi, err := os.Stat(filepath.Join(out, "key.pem"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key.pem: %v, mode %v", err, fi.Mode().Perm())
	}
	hook, _ := os.ReadFile(marker)
	if want := "example.com www.example.com " + filepath.Join(out, "key.pem") + "\n"; string(hook) != want {
		t.Errorf("hook output %q, want %q", hook, want)
	}

	// The CA moves the ARI window into the past: renew must renew, with
	// replaces, the same way, and deploy with the same hook.
	if err := ca.SetRenewalInfo(ctx, leaf, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, ctx, "renew", "--storage", storage)
	if code != exitOK || !strings.Contains(stdout, "renewed (inside the CA's renewal window") {
		t.Fatalf("renew: exit %d: %s %s", code, stdout, stderr)
	}
	renewed := verifyChain(t, ca, filepath.Join(out, "fullchain.pem"), "example.com", "www.example.com")
	if renewed.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Fatal("renew did not deploy a new certificate")
	}
	// The new certificate is not due: the CA's window for it is ahead.
	code, stdout, stderr = runCLI(t, ctx, "renew", "--storage", storage)
	if code != exitOK || !strings.Contains(stdout, "not due") {
		t.Fatalf("renew (nothing due): exit %d: %s %s", code, stdout, stderr)
	}
	if hook, _ := os.ReadFile(marker); strings.Count(string(hook), "\n") != 2 {
		t.Errorf("hook ran %d times, want 2", strings.Count(string(hook), "\n"))
	}
	meta, err := os.ReadFile(filepath.Join(storage, "lineages", "example.com", "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Replaced string `json:"replaced"`
		Profile  string `json:"profile"`
	}
	json.Unmarshal(meta, &rec)
	if rec.Replaced == "" || rec.Profile != "default" {
		t.Errorf("renewed record: replaced=%q profile=%q", rec.Replaced, rec.Profile)
	}

	code, stdout, _ = runCLI(t, ctx, "list", "--json", "--storage", storage)
	var entries []listEntry
	if code != exitOK || json.Unmarshal([]byte(stdout), &entries) != nil || len(entries) != 1 {
		t.Fatalf("list --json: exit %d: %s", code, stdout)
	}
	if e := entries[0]; e.Serial != renewed.SerialNumber.Text(16) || e.DaysLeft < 89 || e.Profile != "default" {
		t.Errorf("list entry %+v", e)
	}
	code, stdout, _ = runCLI(t, ctx, "list", "--storage", storage)
	if code != exitOK || !strings.Contains(stdout, "example.com,www.example.com") {
		t.Errorf("list: %s", stdout)
	}

	code, stdout, stderr = runCLI(t, ctx, "revoke", "www.example.com", "--storage", storage, "--reason", "4")
	if code != exitOK || !strings.Contains(stdout, "revoked") {
		t.Fatalf("revoke: exit %d: %s %s", code, stdout, stderr)
	}
	code, _, stderr = runCLI(t, ctx, "revoke", "www.example.com", "--storage", storage)
	if code != exitFailure || !strings.Contains(stderr, "already revoked") {
		t.Errorf("second revoke: exit %d: %s", code, stderr)
	}
	code, _, stderr = runCLI(t, ctx, "revoke", "other.example.com", "--storage", storage)
	if code != exitUsage || !strings.Contains(stderr, "no stored certificate") {
		t.Errorf("revoke unknown: exit %d: %s", code, stderr)
	}
}

func TestIssueIPAndSeparate(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage := filepath.Join(dir, "store")
	ctx := context.Background()

	args := ca.issueArgsProfile("shortlived", storage, filepath.Join(dir, "ip"), "127.0.0.1")
	code, _, stderr := runCLI(t, ctx, args...)
	if code != exitOK {
		t.Fatalf("IP issue: exit %d: %s", code, stderr)
	}
	leaf := readChain(t, filepath.Join(dir, "ip", "fullchain.pem"))[0]
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal([]byte{127, 0, 0, 1}) || len(leaf.DNSNames) != 0 {
		t.Errorf("IP certificate SANs: %v %v", leaf.IPAddresses, leaf.DNSNames)
	}

	code, stdout, stderr := runCLI(t, ctx, append(ca.issueArgs(storage, filepath.Join(dir, "sep"), "a.example", "b.example", "c.example"), "--separate")...)
	if code != exitOK {
		t.Fatalf("--separate: exit %d: %s", code, stderr)
	}
	for _, n := range []string{"a.example", "b.example", "c.example"} {
		leaf := verifyChain(t, ca, filepath.Join(dir, "sep", n, "fullchain.pem"), n)
		if len(leaf.DNSNames) != 1 {
			t.Errorf("%s: SANs %v, want one name", n, leaf.DNSNames)
		}
	}
	if c := strings.Count(stdout, "issued "); c != 3 {
		t.Errorf("%d certificates reported, want 3:\n%s", c, stdout)
	}
}

// TestCAFailureKeepsOldCertificate: a CA answering 500 gives a clear error
// and leaves the deployed certificate byte for byte.
func TestCAFailureKeepsOldCertificate(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	ctx := context.Background()
	if code, _, stderr := runCLI(t, ctx, ca.issueArgs(storage, out, "example.com")...); code != exitOK {
		t.Fatalf("issue: %s", stderr)
	}
	before := snapshot(t, out, storage)

	ca.fail500.Store(true)
	start := time.Now()
	code, _, stderr := runCLI(t, ctx, append(ca.issueArgs(storage, out, "example.com"), "--force")...)
	if code != exitFailure {
		t.Fatalf("exit %d, want 1: %s", code, stderr)
	}
	if len(lines(stderr)) != 1 || !strings.Contains(stderr, "injected failure") {
		t.Errorf("stderr = %q", stderr)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("took %s to give up", d)
	}
	code, _, stderr = runCLI(t, ctx, "renew", "--force", "--storage", storage)
	if code != exitFailure || !strings.Contains(stderr, "1 of 1 renewals failed") {
		t.Errorf("renew against failing CA: exit %d: %s", code, stderr)
	}
	if after := snapshot(t, out, storage); !equalMaps(before, after) {
		t.Errorf("files changed after failed issuance")
	}
}

// TestOutNotWritable: the CA is not asked for anything when --out cannot
// be written.
func TestOutNotWritable(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	os.WriteFile(blocker, []byte("x"), 0o644)
	code, _, stderr := runCLI(t, context.Background(), ca.issueArgs(filepath.Join(dir, "store"), filepath.Join(blocker, "out"), "example.com")...)
	if code != exitFailure || !strings.Contains(stderr, "not a directory") || !strings.Contains(stderr, "not ordering") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if files := treeFiles(t, filepath.Join(dir, "store", "lineages")); len(files) != 0 {
		t.Errorf("certificate stored: %v", files)
	}
}

func TestEABRequired(t *testing.T) {
	ca := startCLICA(t, democa.Options{EABRequired: true, EABKeys: map[string]string{"kid-1": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"}})
	dir := t.TempDir()
	storage := filepath.Join(dir, "store")
	code, _, stderr := runCLI(t, context.Background(), ca.issueArgs(storage, filepath.Join(dir, "out"), "example.com")...)
	if code != exitUsage || !strings.Contains(stderr, "--eab-kid") {
		t.Fatalf("without EAB: exit %d: %s", code, stderr)
	}
	if files := treeFiles(t, dir); len(files) != 0 {
		t.Errorf("files written: %v", files)
	}
	args := append(ca.issueArgs(storage, filepath.Join(dir, "out"), "example.com"), "--eab-kid", "kid-1",
		"--eab-hmac-key", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W")
	if code, _, stderr := runCLI(t, context.Background(), args...); code != exitOK {
		t.Fatalf("with EAB: exit %d: %s", code, stderr)
	}
}

func TestNonceRejection(t *testing.T) {
	ca := startCLICA(t, democa.Options{NonceRejectPercent: 30})
	dir := t.TempDir()
	code, _, stderr := runCLI(t, context.Background(), append(ca.issueArgs(filepath.Join(dir, "store"), filepath.Join(dir, "out"), "a.example", "b.example", "c.example", "d.example"), "--separate")...)
	if code != exitOK {
		t.Fatalf("with 30%% of nonces rejected: exit %d: %s", code, stderr)
	}
}

func TestDemo(t *testing.T) {
	dir := t.TempDir()
	code, stdout, stderr := runCLI(t, context.Background(), "demo", "--dir", dir)
	if code != exitOK {
		t.Fatalf("demo: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"demo ACME CA", "responder listening", "account registered", "order:", "acmeIdentifier = SHA-256",
		"validation connection from the CA", `ALPN ["acme-tls/1"]`, "authorization valid", "finalize:", "certificate written", "chain verified", dir} {
		if !strings.Contains(stdout, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	for _, f := range []string{"live/fullchain.pem", "live/key.pem", "issuer-root.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}

func snapshot(t *testing.T, dirs ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, d := range dirs {
		filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
			// Locks and metadata may change (renewal info is refreshed);
			// certificates, keys and deployed files must not.
			if err != nil || fi.IsDir() || strings.Contains(p, "/locks/") || filepath.Base(p) == "meta.json" {
				return nil
			}
			b, _ := os.ReadFile(p)
			m[p] = string(b)
			return nil
		})
	}
	return m
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func verifyAgainst(t *testing.T, rootsPEM []byte, path string, names ...string) {
	t.Helper()
	chain := readChain(t, path)
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootsPEM) {
		t.Fatalf("no root in %q", rootsPEM)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, n := range names {
		if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: n, Roots: roots, Intermediates: inter}); err != nil {
			t.Errorf("chain for %s does not verify against the CA's root: %v", n, err)
		}
	}
}
