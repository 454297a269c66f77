package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
)

// TestBadValuesExit2BeforeAnything: one table of bad invocations, each
// refused with exit 2 and a one-line message before anything is written
// (the storage directory is not even created) or any CA contacted. The
// context is already cancelled, so that an invocation the validation
// missed fails at once instead of reaching for a CA; and every issue row
// names an unreachable loopback CA and a free loopback --listen, so that a
// row only fails for the value it is about.
func TestBadValuesExit2BeforeAnything(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-file")
	keyFile := filepath.Join(dir, "eab.key")
	if err := os.WriteFile(keyFile, []byte("c2VjcmV0LWhtYWMta2V5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var many []string
	for i := range 100 { // and example.com
		many = append(many, "-d", fmt.Sprintf("n%d.example.com", i))
	}
	issue := func(args ...string) []string {
		return append([]string{"issue", "--ca", "https://127.0.0.1:1/dir", "--listen", "127.0.0.1:" + itoa(freePort(t)),
			"--agree-tos", "-d", "example.com"}, args...)
	}
	serve := func(args ...string) []string {
		return append([]string{"serve", "--listen", "127.0.0.1:" + itoa(freePort(t)), "--backend", "127.0.0.1:1"}, args...)
	}
	tests := []struct {
		name    string
		args    []string
		want    string
		notWant string // e.g. a configuration key where a flag was typed
	}{
		// --listen is parsed, resolved and bind-tested before any order.
		{"listen empty", issue("--listen", ""), "--listen is empty", ""},
		{"listen bare port", issue("--listen", "16443"), "did you mean --listen :16443?", ""},
		{"listen port out of range", issue("--listen", ":99999"), "port 99999 is out of range", ""},
		{"listen port zero", issue("--listen", "127.0.0.1:0"), "port 0 is out of range", ""},
		{"listen no port", issue("--listen", "foo"), `--listen "foo" is not HOST:PORT`, ""},
		{"listen IP without port", issue("--listen", "127.0.0.1"), "did you mean --listen 127.0.0.1:443?", ""},
		{"listen host name", issue("--listen", "foo.example:443"), "is not an IP address", ""},
		{"listen not this host", issue("--listen", "192.0.2.77:5001"), "192.0.2.77 is not an address of this host", ""},
		// Names and identifiers.
		{"101 names", issue(many...), "101 names: a certificate holds at most 100", ""},
		{"unspecified v4", issue("-d", "0.0.0.0"), "unspecified address", "challenge:"},
		{"unspecified v6", issue("-d", "::"), "unspecified address", ""},
		{"broadcast", issue("-d", "255.255.255.255"), "broadcast", ""},
		// Account flags.
		{"ca empty", issue("--ca", ""), "--ca is empty", ""},
		{"ca blank", issue("--ca", " "), "--ca is empty", ""},
		{"timeout zero", issue("--timeout", "0"), "--timeout 0s", ""},
		{"timeout negative", issue("--timeout", "-1s"), "--timeout -1s", ""},
		{"email no domain", issue("--email", "ops@"), `--email "ops@" is not an email address`, ""},
		{"email words", issue("--email", "ops at example.com"), "is not an email address", ""},
		{"email with name", issue("--email", "Ops <ops@example.com>"), "give just the address", ""},
		{"email mailto", issue("--email", "mailto:ops@example.com"), "is not an email address", ""},
		{"out is a file", issue("--out", keyFile), "--out " + keyFile + " is a file", ""},
		{"eab key file missing", issue("--eab-kid", "kid", "--eab-hmac-key-file", missing), "--eab-hmac-key-file", ""},
		{"eab key twice", issue("--eab-kid", "kid", "--eab-hmac-key-file", keyFile, "--eab-hmac-key", "a2V5"), "not both", ""},
		{"eab key without kid", issue("--eab-hmac-key-file", keyFile), "without its key ID", ""},
		{"eab key not base64", issue("--eab-kid", "kid", "--eab-hmac-key", "not base64!"), "not base64url", ""},
		{"renew timeout zero", []string{"renew", "--timeout", "0"}, "--timeout 0s", ""},
		// Did you mean.
		{"typo agree-tos", issue("--agree-tso"), "did you mean --agree-tos?", ""},
		{"typo email", issue("--emial", "ops@example.com"), "did you mean --email?", ""},
		{"certbot's --domain", issue("--domain", "example.com"), "did you mean -d?", ""},
		{"lego's --server", issue("--server", "https://127.0.0.1:1/dir"), "did you mean --ca?", ""},
		{"renew typo", []string{"renew", "--forse"}, "did you mean --force?", ""},
		{"revoke typo", []string{"revoke", "example.com", "--reasn", "1"}, "did you mean --reason?", ""},
		{"revoke unknown reason", []string{"revoke", "example.com", "--reason", "keyCompromized"}, "--reason keyCompromized: use one of unspecified (0), keyCompromise (1)", ""},
		{"revoke unused reason 2", []string{"revoke", "example.com", "--reason", "2"}, "--reason 2", ""},
		// serve without --config speaks of flags, not configuration keys.
		{"serve listen bare port", serve("--listen", "16443"), "did you mean --listen :16443?", "listen:"},
		{"serve listen out of range", serve("--listen", ":99999"), "out of range", "listen:"},
		{"serve listen empty", serve("--listen", ""), "--listen is empty", "listen:"},
		{"serve backend bare port", serve("--backend", "8443"), "did you mean --backend 127.0.0.1:8443?", "routes["},
		{"serve backend no host", serve("--backend", ":8443"), "did you mean --backend 127.0.0.1:8443?", "routes["},
		{"serve no agree-tos", serve("-d", "example.com"), "--agree-tos", "acme.agree_tos"},
		{"serve bad email", serve("--email", "ops@"), "--email", "acme.email"},
		{"serve ca empty", serve("--ca", ""), "--ca is empty", "acme.ca"},
		{"serve send-proxy 3", serve("--send-proxy", "3"), "--send-proxy 3", "routes["},
		{"serve bad key type", serve("--key-type", "ec521"), "--key-type", "key_type"},
		{"serve 0.0.0.0", serve("-d", "0.0.0.0", "--agree-tos"), "unspecified address", "certificates["},
		{"serve typo", serve("--agre-tos"), "did you mean --agree-tos?", ""},
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			storage := filepath.Join(t.TempDir(), "store")
			args := append([]string{tt.args[0], "--storage", storage}, tt.args[1:]...)
			code, stdout, stderr := runCLI(t, ctx, args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stdout %q; stderr %q", code, exitUsage, stdout, stderr)
			}
			if got := lines(stderr); len(got) != 1 {
				t.Errorf("stderr has %d lines, want 1: %q", len(got), stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q does not contain %q", stderr, tt.want)
			}
			if tt.notWant != "" && strings.Contains(stderr, tt.notWant) {
				t.Errorf("stderr %q contains %q", stderr, tt.notWant)
			}
			if _, err := os.Stat(storage); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("storage created on a usage error: %v %v", err, treeFiles(t, storage))
			}
		})
	}
}

// TestCheckListenAccepts: the forms the help shows are accepted as they
// are (checked without binding, so :443 is safe to name here).
func TestCheckListenAccepts(t *testing.T) {
	for _, addr := range []string{":443", "127.0.0.1:5001", "[::1]:443", "localhost:443", "127.0.0.2:443", ":https", "0.0.0.0:443", "[::]:443"} {
		if err := checkListen(addr); err != nil {
			t.Errorf("checkListen(%q) = %v", addr, err)
		}
	}
}

// TestIssueListenBusy: a --listen that is taken fails before the CA is
// contacted or anything is written, with exit 1 (the value is good; the
// port is not free now) and what to do about it.
func TestIssueListenBusy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var contacted bool
	ca, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	go func() {
		if c, err := ca.Accept(); err == nil {
			contacted = true
			c.Close()
		}
	}()
	dir := t.TempDir()
	storage := filepath.Join(dir, "store")
	code, _, stderr := runCLI(t, context.Background(), "issue", "-d", "example.com", "--agree-tos", "--storage", storage,
		"--ca", "https://"+ca.Addr().String()+"/dir", "--listen", ln.Addr().String(), "--out", filepath.Join(dir, "out"))
	if code != exitFailure || !strings.Contains(stderr, "cannot be bound") || !strings.Contains(stderr, "address already in use") ||
		!strings.Contains(stderr, "tlsalpn serve") || strings.Count(stderr, ln.Addr().String()) != 1 {
		t.Errorf("exit %d: %q", code, stderr)
	}
	time.Sleep(50 * time.Millisecond)
	if contacted {
		t.Error("the CA was contacted although --listen could not be bound")
	}
	if files := treeFiles(t, dir); len(files) != 0 {
		t.Errorf("files written: %v", files)
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"agree-tos", "agree-tos", 0},
		{"agree-tso", "agree-tos", 1},
		{"emial", "email", 1},
		{"agre-tos", "agree-tos", 1},
		{"force", "forse", 1},
		{"", "abc", 3},
		{"listen", "lsiten", 1},
		{"kitten", "sitting", 3},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestDidYouMeanOnlyWhenClose: an unknown flag far from every known one
// gets no guess.
func TestDidYouMeanOnlyWhenClose(t *testing.T) {
	for _, args := range [][]string{{"list", "--jsonify-everything"}, {"list", "-x"}, {"renew", "--zz"}} {
		code, _, stderr := runCLI(t, context.Background(), args...)
		if code != exitUsage || strings.Contains(stderr, "did you mean") || !strings.Contains(stderr, "flag provided but not defined") {
			t.Errorf("%v: exit %d: %q", args, code, stderr)
		}
	}
}

// TestEABSources: the HMAC key comes from the flag, a file or the
// environment, the key ID from the flag or the environment.
func TestEABSources(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "eab.key")
	os.WriteFile(keyFile, []byte("  ZmlsZS1rZXk \n"), 0o600)
	tests := []struct {
		name       string
		cf         caFlags
		env        map[string]string
		kid, key   string
		nilEAB     bool
		wantErrSub string
	}{
		{name: "none", nilEAB: true},
		{name: "flags", cf: caFlags{eabKID: "k", eabHMAC: "ZmxhZw"}, kid: "k", key: "ZmxhZw"},
		{name: "file", cf: caFlags{eabKID: "k", eabHMACFile: keyFile}, kid: "k", key: "ZmlsZS1rZXk"},
		{name: "env", env: map[string]string{envEABKID: "ek", envEABHMAC: "ZW52"}, kid: "ek", key: "ZW52"},
		{name: "flag over env", cf: caFlags{eabKID: "k", eabHMAC: "ZmxhZw"}, env: map[string]string{envEABKID: "ek", envEABHMAC: "ZW52"}, kid: "k", key: "ZmxhZw"},
		{name: "kid flag, key env", cf: caFlags{eabKID: "k"}, env: map[string]string{envEABHMAC: "ZW52"}, kid: "k", key: "ZW52"},
		{name: "key env without kid", env: map[string]string{envEABHMAC: "ZW52"}, wantErrSub: "without its key ID"},
		{name: "kid without key", cf: caFlags{eabKID: "k"}, wantErrSub: "go together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &env{getenv: func(k string) string { return tt.env[k] }}
			got, err := tt.cf.eab(e)
			if tt.wantErrSub != "" {
				var ue *usageError
				if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErrSub) {
					t.Fatalf("eab() = %v, %v; want a usage error containing %q", got, err, tt.wantErrSub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.nilEAB {
				if got != nil {
					t.Fatalf("eab() = %+v, want nil", got)
				}
				return
			}
			if got == nil || got.KeyID != tt.kid || got.MACKey != tt.key {
				t.Fatalf("eab() = %+v, want %s/%s", got, tt.kid, tt.key)
			}
		})
	}
}

// TestIssueEABKeyFile: an account is created at a CA that requires
// External Account Binding with the HMAC key read from a file.
func TestIssueEABKeyFile(t *testing.T) {
	const kid, key = "kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	ca := startCLICA(t, democa.Options{EABRequired: true, EABKeys: map[string]string{kid: key}})
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "eab.key")
	os.WriteFile(keyFile, []byte(key+"\n"), 0o600)
	storage := filepath.Join(dir, "store")
	args := append(ca.issueArgs(storage, filepath.Join(dir, "out"), "example.com"), "--eab-kid", kid, "--eab-hmac-key-file", keyFile)
	code, stdout, stderr := runCLI(t, context.Background(), args...)
	if code != exitOK {
		t.Fatalf("issue with --eab-hmac-key-file: exit %d: %s %s", code, stdout, stderr)
	}
}

// TestIssueWithoutAgreeTOS: with no account yet at a CA that has terms of
// service, a missing --agree-tos is a usage error before anything is
// written; with the account stored, it is not needed.
func TestIssueWithoutAgreeTOS(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage := filepath.Join(dir, "store")
	without := func(args []string) []string {
		var out []string
		for _, a := range args {
			if a != "--agree-tos" {
				out = append(out, a)
			}
		}
		return out
	}
	code, _, stderr := runCLI(t, context.Background(), without(ca.issueArgs(storage, filepath.Join(dir, "a"), "a.example"))...)
	if code != exitUsage || !strings.Contains(stderr, "add --agree-tos") || len(lines(stderr)) != 1 {
		t.Fatalf("exit %d: %q", code, stderr)
	}
	if files := treeFiles(t, dir); len(files) != 0 {
		t.Fatalf("written without --agree-tos: %v", files)
	}
	if code, _, stderr := runCLI(t, context.Background(), ca.issueArgs(storage, filepath.Join(dir, "a"), "a.example")...); code != exitOK {
		t.Fatalf("issue with --agree-tos: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, context.Background(), without(ca.issueArgs(storage, filepath.Join(dir, "b"), "b.example"))...); code != exitOK {
		t.Fatalf("issue with the account stored, without --agree-tos: exit %d: %s", code, stderr)
	}
}

// TestRevokeReasonKeyCompromiseAndRoughEdges issues with -v (which shows
// each challenge's key authorization, not only its hash), revokes with
// --reason keyCompromise (the CA records reason 1), and renews: the line
// for the revoked certificate names all of its names and no zero date.
func TestRevokeReasonKeyCompromiseAndRoughEdges(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage := filepath.Join(dir, "store")
	ctx := context.Background()
	code, stdout, stderr := runCLI(t, ctx, append(ca.issueArgs(storage, filepath.Join(dir, "out"), "example.com", "www.example.com"), "-v")...)
	if code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, stderr)
	}
	if !regexp.MustCompile(`key authorization [A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{43}; acmeIdentifier`).MatchString(stdout) {
		t.Errorf("-v does not show the key authorization:\n%s", stdout)
	}
	serial := readChain(t, filepath.Join(dir, "out", "cert.pem"))[0].SerialNumber.Text(16)

	code, stdout, stderr = runCLI(t, ctx, "revoke", "example.com", "--reason", "KEYCOMPROMISE", "--storage", storage)
	if code != exitOK || !strings.Contains(stdout, "revoked example.com, www.example.com") {
		t.Fatalf("revoke --reason keyCompromise: exit %d: %s %s", code, stdout, stderr)
	}
	resp, err := ca.HTTPClient().Get(ca.ManagementURL() + "/cert-status-by-serial/" + serial)
	if err != nil {
		t.Fatal(err)
	}
	var status struct {
		Status string
		Reason *int
	}
	err = json.NewDecoder(resp.Body).Decode(&status)
	resp.Body.Close()
	if err != nil || status.Status != "Revoked" || status.Reason == nil || *status.Reason != 1 {
		t.Errorf("the CA has %+v (reason %v), %v; want Revoked with reason 1", status, status.Reason, err)
	}

	code, stdout, stderr = runCLI(t, ctx, "renew", "--storage", storage)
	if code != exitOK {
		t.Fatalf("renew: exit %d: %s %s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "example.com, www.example.com") || !strings.Contains(stdout, "not renewed: revoked") || strings.Contains(stdout, "0001-01-01") {
		t.Errorf("renew of a revoked certificate: %q", stdout)
	}
}

// TestInterrupted: Ctrl-C while waiting on the CA says "interrupted" and
// exits 130, not "context canceled" and 1.
func TestInterrupted(t *testing.T) {
	// A CA that accepts connections and never answers.
	ca, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		for {
			c, err := ca.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		select {
		case <-accepted:
		case <-time.After(10 * time.Second):
		}
		cancel(&interruptedError{sig: syscall.SIGINT})
	}()
	dir := t.TempDir()
	code, _, stderr := runCLI(t, ctx, "issue", "-d", "example.com", "--agree-tos", "--storage", filepath.Join(dir, "store"),
		"--ca", "https://"+ca.Addr().String()+"/dir", "--listen", "127.0.0.1:"+itoa(freePort(t)))
	if code != 130 || !strings.Contains(stderr, "tlsalpn issue: interrupted (SIGINT, Ctrl-C) before finishing") || strings.Contains(stderr, "context canceled") {
		t.Errorf("exit %d: %q", code, stderr)
	}
}

// TestMessagesForPeople: errors shown to people carry no package prefixes.
func TestMessagesForPeople(t *testing.T) {
	tests := []struct{ in, want string }{
		{"opening storage: storage/fs: create root /x: mkdir /x: not a directory", "opening storage: create root /x: mkdir /x: not a directory"},
		{"cannot reach the CA at https://x (check --ca): provisioning client: performing request: EOF", "cannot reach the CA at https://x (check --ca): performing request: EOF"},
		{"challenge: invalid identifier \"a_b\"", "invalid identifier \"a_b\""},
		{"a: storage: not found\nb: issuer: x", "a: not found; b: x"},
		{"the challenge: is kept", "the challenge: is kept"},
	}
	for _, tt := range tests {
		if got := oneLine(errors.New(tt.in)); got != tt.want {
			t.Errorf("oneLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o600)
	code, _, stderr := runCLI(t, context.Background(), "list", "--storage", notDir)
	if code != exitFailure || strings.Contains(stderr, "storage/fs:") || !strings.Contains(stderr, "opening storage") {
		t.Errorf("list on a file: exit %d: %q", code, stderr)
	}
}

// TestHelpHasExamplesAndVersion: every command's help has examples, and
// the main help names "version".
func TestHelpHasExamplesAndVersion(t *testing.T) {
	for _, cmd := range []string{"issue", "revoke", "list", "demo", "serve", "renew", "import"} {
		code, out, _ := runCLI(t, context.Background(), cmd, "--help")
		if code != exitOK || !strings.Contains(out, "tlsalpn "+cmd+" ") || !(strings.Contains(out, "Examples:") || strings.Contains(out, "Simplest use") || strings.Contains(out, "Run it from cron")) {
			t.Errorf("%s --help: exit %d, no examples:\n%s", cmd, code, out)
		}
	}
	for _, cmd := range []string{"list", "revoke", "demo"} {
		if _, out, _ := runCLI(t, context.Background(), cmd, "--help"); !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help has no Examples: section", cmd)
		}
	}
	_, out, _ := runCLI(t, context.Background(), "--help")
	if !regexp.MustCompile(`(?m)^  version\s+\S`).MatchString(out) {
		t.Errorf("main help does not list version:\n%s", out)
	}
}

// TestServeBannerAndLogs: the banner names the listening address once,
// and a certificate obtained and deployed is logged without
// deploy_error=<nil>.
func TestServeBannerAndLogs(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	stdout, stderr, stop := startServe(t, "--listen", ca.listen, "--backend", echoTLSBackend(t, "backend.example"), "-d", "example.com",
		"--ca", ca.DirectoryURL(), "--ca-root", ca.root, "--email", "ops@example.com", "--agree-tos",
		"--storage", filepath.Join(dir, "store"), "--out", out, "--profile", "default")
	waitFor(t, "the certificate to be obtained", 20*time.Second, func() bool { return strings.Contains(stderr.String(), "certificate obtained") })
	if code := stop(); code != exitOK {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
	banner := lines(stdout.String())[0]
	if strings.Count(banner, "listening on") != 1 || strings.Count(banner, ca.listen) != 1 {
		t.Errorf("banner %q", banner)
	}
	if strings.Contains(stderr.String(), "=<nil>") {
		t.Errorf("a nil error is logged:\n%s", stderr.String())
	}
}

// TestREADMELinksStayInRepository: every relative link in the README names
// a file of this repository, and nothing points outside it (as the design
// file once did, at ../shared/DESIGN.md).
func TestREADMELinksStayInRepository(t *testing.T) {
	root := filepath.Join("..", "..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(readme), "../") {
		t.Errorf("README refers outside the repository: %q", regexp.MustCompile(`\S*\.\./\S*`).FindAllString(string(readme), -1))
	}
	links := regexp.MustCompile(`\]\(([^)#\s]+)`).FindAllStringSubmatch(string(readme), -1)
	for _, m := range links {
		target := m[1]
		if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, target)); err != nil {
			t.Errorf("README links %s: %v", target, err)
		}
	}
	if !strings.Contains(string(readme), "(docs/DESIGN.md)") {
		t.Error("README does not link docs/DESIGN.md")
	}
}

// TestServeFlagsRelativeStorage: --storage relative to where the command
// runs is taken as such in flag mode, as --out is, and not refused in a
// config file's terms.
func TestServeFlagsRelativeStorage(t *testing.T) {
	f := serveFlags{caFlags: caFlags{ca: "letsencrypt", storageFlags: storageFlags{storage: "rel/store"}}, listen: "127.0.0.1:1", backend: "127.0.0.1:2", keyType: "ec256", steer: "auto"}
	cfg, err := serveConfig(&env{getenv: func(string) string { return "" }}, &f)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := filepath.Abs("rel/store"); cfg.Storage.Location != want {
		t.Errorf("storage %q, want %q", cfg.Storage.Location, want)
	}
}
