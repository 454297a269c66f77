package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/check"
	"github.com/tlsalpn/tlsalpn/deploy"
	"github.com/tlsalpn/tlsalpn/internal/backend"
	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// The "Keep your ACME client" tests run the lines of README.md's section
// of that name, with loopback ports, a Pebble CA and temporary paths put
// in for the ones a reader uses, so that the README shows what was tested.

// readmeLines returns the command lines of README.md's block marked
// <!-- keepclient:CLIENT -->, each split into words, with every word
// that is a key of subst replaced by its value.
func readmeLines(t *testing.T, client string, subst map[string]string) [][]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- keepclient:"+client+" -->\n```sh\n")
	if !ok {
		t.Fatalf("README.md has no block marked keepclient:%s", client)
	}
	block, _, _ := strings.Cut(rest, "```")
	var lines [][]string
	for _, l := range strings.Split(strings.TrimSpace(block), "\n") {
		words := strings.Fields(l)
		for i, w := range words {
			if v, ok := subst[w]; ok {
				words[i] = v
			}
		}
		lines = append(lines, words)
	}
	return lines
}

// needTool returns the path of an ACME client the test runs, skipping the
// test when it is missing (failing when $CI is set).
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	msg := name + " is not installed (scripts/ci-deps.sh installs it)"
	if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
		t.Fatalf("%s, and CI is set: CI must run this test", msg)
	}
	t.Skip(msg)
	return ""
}

// keepRig is a Pebble CA, nginx with a self-signed certificate, and the
// README's serve line in front of it, with a client loop through nginx and
// check's leak probes running against the front door all the while.
type keepRig struct {
	ca     *cliCA
	ngx    *backend.Nginx
	dir    string
	subst  map[string]string
	stderr *syncBuffer
	stop   func() int
	loop   *clientLoop
	probes *leakProbes
}

// startKeepRig starts the rig; subst gets the README's stand-ins for
// :443, the backend and the CA, and what the caller put in it already.
func startKeepRig(t *testing.T, client string, subst map[string]string) (*keepRig, [][]string) {
	t.Helper()
	r := &keepRig{ca: startCLICA(t, democa.Options{}), dir: t.TempDir(), subst: subst}
	certPEM, keyPEM := backend.SelfSigned(t, "example.com")
	out := filepath.Join(r.dir, "nginx")
	if _, err := deploy.Write(out, deploy.Files{Cert: certPEM, FullChain: certPEM, Key: keyPEM}); err != nil {
		t.Fatal(err)
	}
	r.ngx = backend.StartNginx(t, filepath.Join(out, "fullchain.pem"), filepath.Join(out, "key.pem"), backend.NginxOptions{})
	subst[":443"] = r.ca.listen
	subst["127.0.0.1:8443"] = r.ngx.Addr
	subst["https://acme-v02.api.letsencrypt.org/directory"] = r.ca.DirectoryURL()
	lines := readmeLines(t, client, subst)
	if got := lines[0]; len(got) < 2 || got[0] != "tlsalpn" || got[1] != "serve" {
		t.Fatalf("README's %s block does not start with tlsalpn serve: %q", client, got)
	}
	// The storage is the test's own: the README leaves the default.
	args := append(lines[0][2:], "--storage", filepath.Join(r.dir, "store"))
	_, r.stderr, r.stop = startServe(t, args...)
	waitForPort(t, r.ca.listen, 10*time.Second)
	waitFor(t, "serve to log its steering", 10*time.Second, func() bool { return strings.Contains(r.stderr.String(), "steering") })
	for i, a := range args {
		if a == "--ualpn-socket" && i+1 < len(args) {
			// Made after the front door listens.
			waitForListener(t, "unix", args[i+1], 10*time.Second)
		}
	}
	r.loop = startClientLoop(t, r.ca.listen, "example.com")
	r.probes = startLeakProbes(t, r.ca.listen, "example.com")
	return r, lines[1:]
}

// finish stops the loops and serve and checks that no client request
// failed and no probe saw a leak.
func (r *keepRig) finish(t *testing.T) {
	t.Helper()
	time.Sleep(100 * time.Millisecond)
	r.loop.halt()
	r.probes.halt()
	if f := r.loop.failed.Load(); f != 0 {
		t.Errorf("%d of %d client requests through nginx failed during validation; last: %v", f, f+r.loop.ok.Load(), r.loop.lastErr)
	}
	if r.loop.ok.Load() == 0 {
		t.Error("the client loop made no request")
	}
	if n := r.probes.runs.Load(); n == 0 {
		t.Error("the leak probes never ran")
	}
	if l := r.probes.leaks.Load(); l != 0 {
		t.Errorf("check's leak probes saw %d leaks: %v", l, r.probes.last.Load())
	}
	t.Logf("%d requests through nginx, %d failed; %d rounds of leak probes, %d leaks",
		r.loop.ok.Load(), r.loop.failed.Load(), r.probes.runs.Load(), r.probes.leaks.Load())
	if code := r.stop(); code != exitOK {
		t.Errorf("serve exited %d:\n%s", code, r.stderr.String())
	}
}

// run runs one of the README's client lines.
func (r *keepRig) run(t *testing.T, env []string, words ...string) string {
	t.Helper()
	out, err := r.try(env, words...)
	if err != nil {
		t.Fatalf("%s: %v\n%s\nserve's log:\n%s", strings.Join(words, " "), err, out, r.stderr.String())
	}
	return out
}

// try runs words once, bounded, and returns what it printed.
func (r *keepRig) try(env []string, words ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, words[0], words[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = r.dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// uacmeTokenless is what uacme 1.7.4 says when it gives up on an
// authorization because one of its challenges has no token.
const uacmeTokenless = "failed to parse challenge"

// runUacme runs one of uacme's README lines. uacme reads the challenges of
// an authorization in the order the CA lists them and gives up at one
// without a token; Pebble offers dns-persist-01, which has none, and
// shuffles the list, so about half of uacme's orders fail before uacme
// reaches tls-alpn-01 (Let's Encrypt offers no dns-persist-01 today). The
// line is run again, at most 12 times, only when uacme gave up for that
// reason; anything else fails the test at once.
func (r *keepRig) runUacme(t *testing.T, env []string, words ...string) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		out, err := r.try(env, words...)
		if err == nil {
			return out
		}
		if !strings.Contains(out, uacmeTokenless) || attempt == 12 {
			t.Fatalf("%s (attempt %d): %v\n%s\nserve's log:\n%s", strings.Join(words, " "), attempt, err, out, r.stderr.String())
		}
		t.Logf("uacme gave up at Pebble's tokenless dns-persist-01 (attempt %d); ordering again", attempt)
	}
}

// leakProbes runs check's probes against the front door in a loop: each
// round makes the handshakes of ordinary clients (h2, http/1.1, none) and
// counts a leak when one got a validation certificate.
type leakProbes struct {
	runs, leaks atomic.Int64
	last        atomic.Value // string
	stop, done  chan struct{}
}

func startLeakProbes(t *testing.T, addr, name string) *leakProbes {
	ap := netip.MustParseAddrPort(addr)
	id, err := challenge.ParseIdentifier(name)
	if err != nil {
		t.Fatal(err)
	}
	c := &check.Checker{Addresses: []netip.Addr{ap.Addr()}, Timeout: 5 * time.Second}
	p := &leakProbes{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			rep := c.Check(context.Background(), check.Target{ID: id, Port: int(ap.Port())})
			for _, a := range rep.Addresses {
				for _, res := range a.Results {
					if res.Rule != check.RuleNoLeak {
						continue
					}
					p.runs.Add(1)
					if !res.Pass {
						p.leaks.Add(1)
						p.last.Store(res.Detail)
					}
				}
			}
			select {
			case <-p.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(p.halt)
	return p
}

func (p *leakProbes) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// TestKeepClientLego: Debian's lego obtains a certificate with --tls on a
// port of its own, the front door relaying the CA's validation there.
func TestKeepClientLego(t *testing.T) {
	lego := needTool(t, "lego")
	fwd := "127.0.0.1:" + itoa(freePort(t))
	home := t.TempDir()
	r, lines := startKeepRig(t, "lego", map[string]string{"127.0.0.1:5001": fwd, "/etc/lego": home})
	if !strings.Contains(r.stderr.String(), "steering off") || !strings.Contains(r.stderr.String(), "acme_forward is set") {
		t.Errorf("serve does not say it relays every connection because of acme_forward:\n%s", r.stderr.String())
	}
	lines[0][0] = lego
	r.run(t, []string{"LEGO_CA_CERTIFICATES=" + r.ca.root}, lines[0]...)
	r.finish(t)
	verifyChain(t, r.ca, filepath.Join(home, "certificates", "example.com.crt"), "example.com")
	if !strings.Contains(r.stderr.String(), "forwarding tls-alpn-01 handshake") {
		t.Errorf("serve's log shows no forwarded validation:\n%s", r.stderr.String())
	}
}

// TestKeepClientDehydrated: Debian's dehydrated writes its challenge
// certificates to ALPNCERTDIR, which serve reads.
func TestKeepClientDehydrated(t *testing.T) {
	dehydrated := needTool(t, "dehydrated")
	base := t.TempDir()
	alpn, conf := filepath.Join(base, "alpn-certs"), filepath.Join(base, "config")
	r, lines := startKeepRig(t, "dehydrated", map[string]string{"/var/lib/dehydrated/alpn-certs": alpn, "/etc/dehydrated/config": conf})
	if !strings.Contains(r.stderr.String(), "acme_cert_dir is set") {
		t.Errorf("serve does not say it relays every connection because of acme_cert_dir:\n%s", r.stderr.String())
	}
	// The README's two settings, and what only the test needs: the CA,
	// trust in its HTTPS certificate, a scratch base directory.
	cfg := `CHALLENGETYPE="tls-alpn-01"
ALPNCERTDIR="` + alpn + `"
CA="` + r.ca.DirectoryURL() + `"
CURL_OPTS="--cacert ` + r.ca.root + `"
BASEDIR="` + base + `"
CONTACT_EMAIL="ops@example.com"
`
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		l[0] = dehydrated
		t.Log(r.run(t, nil, l...))
	}
	r.finish(t)
	verifyChain(t, r.ca, filepath.Join(base, "certs", "example.com", "fullchain.pem"), "example.com")
	if !strings.Contains(r.stderr.String(), "challenge directory: certificate ready") {
		t.Errorf("serve's log shows no certificate read from the challenge directory:\n%s", r.stderr.String())
	}
	if left, _ := filepath.Glob(filepath.Join(alpn, "*.pem")); len(left) != 0 {
		t.Errorf("dehydrated left %v", left)
	}
}

// alpnModeResponder behaves as acme.sh's --alpn mode: while a challenge is
// up, a listener on the forward port hands the challenge certificate to
// every client that connects, whatever it offers, as openssl s_server
// does. It records what each connection offered, so that the test can
// tell whether anything but exact acme-tls/1 offers were forwarded.
type alpnModeResponder struct {
	addr string
	mu   sync.Mutex
	ln   net.Listener
	seen [][]string
	wg   sync.WaitGroup
}

func (a *alpnModeResponder) Publish(ctx context.Context, serverName string, cert *tls.Certificate) (<-chan struct{}, error) {
	ln, err := net.Listen("tcp", a.addr)
	if err != nil {
		return nil, err
	}
	seen := make(chan struct{}, 1)
	a.mu.Lock()
	a.ln = ln
	a.mu.Unlock()
	cfg := &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{challenge.ALPNProto},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			a.mu.Lock()
			a.seen = append(a.seen, slices.Clone(h.SupportedProtos))
			a.mu.Unlock()
			return nil, nil
		}}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			tc := tls.Server(c, cfg)
			if tc.Handshake() == nil {
				select {
				case seen <- struct{}{}:
				default:
				}
			}
			tc.Close()
		}
	}()
	return seen, nil
}

func (a *alpnModeResponder) Unpublish(context.Context, string) error {
	a.mu.Lock()
	ln := a.ln
	a.ln = nil
	a.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	a.wg.Wait()
	return nil
}

// TestKeepClientAcmeShForward: acme.sh's case, through forwarding. acme.sh
// is not packaged here; an ACME client whose responder behaves as its
// --alpn mode (see alpnModeResponder) stands in for it.
func TestKeepClientAcmeShForward(t *testing.T) {
	port := itoa(freePort(t))
	fwd := "127.0.0.1:" + port
	r, lines := startKeepRig(t, "acme.sh", map[string]string{"127.0.0.1:5001": fwd, "5001": port})
	if got := lines[0]; !slices.Contains(got, "--alpn") || !slices.Contains(got, port) {
		t.Fatalf("README's acme.sh line %q is not --alpn on the forward port", got)
	}
	resp := &alpnModeResponder{addr: fwd}
	store, err := fs.New(filepath.Join(r.dir, "acme.sh"))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.New(issuer.Config{Directory: r.ca.DirectoryURL(), HTTPClient: r.ca.HTTPClient(), AgreeTOS: true, Storage: store, Publisher: resp})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := iss.Obtain(ctx, issuer.Request{Identifiers: []challenge.Identifier{{Type: challenge.DNS, Value: "example.com"}}, Profile: "default"})
	if err != nil {
		t.Fatalf("obtaining through the forward: %v\nserve's log:\n%s", err, r.stderr.String())
	}
	r.finish(t)
	if len(res.Chain) == 0 {
		t.Fatal("no certificate")
	}
	resp.mu.Lock()
	defer resp.mu.Unlock()
	if len(resp.seen) == 0 {
		t.Fatal("the forward port got no connection")
	}
	for _, p := range resp.seen {
		if !slices.Equal(p, []string{challenge.ALPNProto}) {
			t.Errorf("a ClientHello offering %q was forwarded; only exact acme-tls/1 may be", p)
		}
	}
	t.Logf("%d connections forwarded, each offering exactly acme-tls/1", len(resp.seen))
}

// TestKeepClientUacme: Debian's uacme with its own ualpn.sh hook, whose
// "echo 'auth …' | ualpn" reaches serve's ualpn socket. uacme (libcurl
// with GnuTLS) trusts only the system's CA bundle, so it runs in a mount
// namespace where Pebble's root is that bundle; where namespaces are not
// allowed the test is skipped.
func TestKeepClientUacme(t *testing.T) {
	uacme := needTool(t, "uacme")
	ualpn := needTool(t, "ualpn")
	unshare := needTool(t, "unshare")
	base := t.TempDir()
	sock, conf := filepath.Join(base, "ualpn.sock"), filepath.Join(base, "uacme")
	if out, err := exec.Command(unshare, "--mount", "--propagation", "private", "true").CombinedOutput(); err != nil {
		t.Skipf("no mount namespace here for uacme's CA trust: %v %s", err, out)
	}
	r, lines := startKeepRig(t, "uacme", map[string]string{"/run/ualpn.sock": sock, "/etc/ssl/uacme": conf})
	// The hook runs "ualpn" with no flags: one on PATH that adds --sock
	// points it at the test's socket, as /run/ualpn.sock would.
	bin := filepath.Join(base, "bin")
	os.Mkdir(bin, 0o755)
	if err := os.WriteFile(filepath.Join(bin, "ualpn"), []byte("#!/bin/sh\nexec "+ualpn+" --sock "+sock+" \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(base, "bundle.pem")
	if err := os.WriteFile(bundle, []byte(r.ca.RootsPEM()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		l[0] = uacme
		script := "mount --bind " + bundle + " /etc/ssl/certs/ca-certificates.crt && exec \"$@\""
		args := append([]string{unshare, "--mount", "--propagation", "private", "sh", "-c", script, "sh"}, l...)
		t.Log(r.runUacme(t, []string{"PATH=" + bin + ":" + os.Getenv("PATH")}, args...))
	}
	r.finish(t)
	verifyChain(t, r.ca, filepath.Join(conf, "example.com", "cert.pem"), "example.com")
	if !strings.Contains(r.stderr.String(), "ualpn socket: challenge published") {
		t.Errorf("serve's log shows no challenge published on its socket:\n%s", r.stderr.String())
	}
}

// TestChallengePublishCLI: tlsalpn challenge publish/withdraw against a
// running serve, and the clear error when none runs.
func TestChallengePublishCLI(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	ctx := context.Background()
	const ka = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.DEi0apzMOdMT2DAro57oIvn-wEzPiYcAYDh2Cvjra3I"
	code, _, stderr := runCLI(t, ctx, "challenge", "publish", "--name", "example.com", "--key-authorization", ka, "--socket", sock)
	if code != exitFailure || !strings.Contains(stderr, "no tlsalpn serve listens on "+sock) {
		t.Fatalf("publish with no serve: exit %d, %q; want 1 and a clear error", code, stderr)
	}
	backendAddr := echoTLSBackend(t, "example.com")
	front := "127.0.0.1:" + itoa(freePort(t))
	_, serveErr, stop := startServe(t, "--listen", front, "--backend", backendAddr, "--steer", "off", "--ualpn-socket", sock, "--storage", filepath.Join(dir, "store"))
	waitForPort(t, front, 10*time.Second)
	// The front door's socket is bound before the ualpn socket is made.
	waitForListener(t, "unix", sock, 10*time.Second)
	code, stdout, stderr := runCLI(t, ctx, "challenge", "publish", "--name", "example.com", "--key-authorization", ka, "--socket", sock)
	if code != exitOK {
		t.Fatalf("publish: exit %d: %s%s\nserve:\n%s", code, stdout, stderr, serveErr.String())
	}
	id, _ := challenge.ParseIdentifier("example.com")
	leaf := validationCert(t, front, "example.com")
	if leaf == nil {
		t.Fatal("no validation certificate after publish")
	}
	if err := challenge.Verify(leaf, id, ka); err != nil {
		t.Errorf("published certificate: %v", err)
	}
	if code, _, stderr := runCLI(t, ctx, "challenge", "withdraw", "--name", "example.com", "--socket", sock); code != exitOK {
		t.Fatalf("withdraw: exit %d: %s", code, stderr)
	}
	// The handshake goes to the backend now (which answers with a
	// certificate of its own): the published one is not served.
	if leaf := validationCert(t, front, "example.com"); leaf != nil && challenge.Verify(leaf, id, ka) == nil {
		t.Error("the published certificate is still served after withdraw")
	}
	for _, bad := range [][]string{
		{"challenge", "publish", "--name", "example.com", "--socket", sock},
		{"challenge", "publish", "--name", "example.com", "--key-authorization", "DEi0apzMOdMT2DAro57oIvn-wEzPiYcAYDh2Cvjra3I", "--socket", sock},
		{"challenge", "withdraw", "--socket", sock},
		{"challenge", "frob"},
	} {
		if code, _, _ := runCLI(t, ctx, bad...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", bad, code, exitUsage)
		}
	}
	if code := stop(); code != exitOK {
		t.Errorf("serve exited %d", code)
	}
}

// validationCert makes the CA's handshake (exactly acme-tls/1) and returns
// the certificate served, or nil when the handshake was refused.
func validationCert(t *testing.T, addr, name string) *x509.Certificate {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true, ServerName: name, NextProtos: []string{challenge.ALPNProto}})
	if err != nil {
		return nil
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// TestKeepClientBadValues: a forward address that is not HOST:PORT is a
// usage error before anything starts, from a flag or from the config.
func TestKeepClientBadValues(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "c.yaml")
	os.WriteFile(conf, []byte("storage: "+dir+"\nroutes:\n  - names: [\"*\"]\n    backend: 127.0.0.1:8443\n    acme_forward: nope\n"), 0o644)
	for _, args := range [][]string{
		{"serve", "--listen", "127.0.0.1:" + itoa(freePort(t)), "--backend", "127.0.0.1:8443", "--acme-forward", "5001", "--storage", dir},
		{"serve", "--check-config", conf},
		{"serve", "--config", conf},
	} {
		code, _, stderr := runCLI(t, context.Background(), args...)
		if code != exitUsage || !strings.Contains(stderr, "HOST:PORT") {
			t.Errorf("%q: exit %d, %q; want %d and a HOST:PORT error", args, code, stderr, exitUsage)
		}
	}
}

// TestKeepClientForwardReload: SIGHUP applies a new acme_forward at
// once: validations for the name go to the new address, nothing else
// does, and the flags given at start still hold.
func TestKeepClientForwardReload(t *testing.T) {
	dir := t.TempDir()
	backendAddr := echoTLSBackend(t, "example.com")
	// Two forward targets that count the connections they get.
	type target struct {
		addr string
		n    atomic.Int64
	}
	targets := make([]*target, 2)
	for i := range targets {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		tg := &target{addr: ln.Addr().String()}
		targets[i] = tg
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				tg.n.Add(1)
				c.Close()
			}
		}()
	}
	listen := "127.0.0.1:" + itoa(freePort(t))
	cfg := filepath.Join(dir, "serve.yaml")
	write := func(fwd string) {
		os.WriteFile(cfg, []byte("listen: \""+listen+"\"\nstorage: "+filepath.Join(dir, "store")+
			"\nroutes:\n  - names: [\"*\"]\n    backend: "+backendAddr+"\n    acme_forward: "+fwd+"\n"), 0o644)
	}
	write(targets[0].addr)
	sock := filepath.Join(dir, "u.sock")
	_, stderr, stop := startServe(t, "--config", cfg, "--ualpn-socket", sock)
	waitForPort(t, listen, 10*time.Second)
	hello := func(alpn []string) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", listen,
			&tls.Config{InsecureSkipVerify: true, ServerName: "example.com", NextProtos: alpn})
		if err == nil {
			c.Close()
		}
	}
	hello([]string{"acme-tls/1"})
	hello([]string{"h2", "http/1.1"})
	if a, b := targets[0].n.Load(), targets[1].n.Load(); a != 1 || b != 0 {
		t.Fatalf("before the reload: %d and %d connections forwarded; want 1 and 0", a, b)
	}
	write(targets[1].addr)
	before := strings.Count(stderr.String(), "configuration reloaded")
	if self, err := os.FindProcess(os.Getpid()); err == nil {
		self.Signal(syscall.SIGHUP)
	}
	waitFor(t, "the reload", 10*time.Second, func() bool { return strings.Count(stderr.String(), "configuration reloaded") > before })
	hello([]string{"acme-tls/1"})
	hello(nil)
	if a, b := targets[0].n.Load(), targets[1].n.Load(); a != 1 || b != 1 {
		t.Errorf("after the reload: %d and %d connections forwarded; want 1 and 1\n%s", a, b, stderr.String())
	}
	// The --ualpn-socket flag held through the reload.
	code, _, errOut := runCLI(t, context.Background(), "challenge", "withdraw", "--name", "example.com", "--socket", sock)
	if code != exitOK {
		t.Errorf("the ualpn socket did not survive the reload: %s", errOut)
	}
	if code := stop(); code != exitOK {
		t.Errorf("serve exited %d:\n%s", code, stderr.String())
	}
}
