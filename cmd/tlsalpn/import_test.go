package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
)

// acmeTraffic records, at the CA, the accounts registered and the account
// (JWS kid) of every new order: what proves that renewals use the account
// a certificate was imported with.
type acmeTraffic struct {
	mu         sync.Mutex
	registered int      // POST /sign-me-up (newAccount)
	orderKIDs  []string // kid of each POST /order-plz (newOrder)
}

func (a *acmeTraffic) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && (r.URL.Path == "/sign-me-up" || r.URL.Path == "/order-plz") {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var jws struct {
				Protected string `json:"protected"`
			}
			var hdr struct {
				KID string `json:"kid"`
			}
			json.Unmarshal(body, &jws)
			if raw, err := base64.RawURLEncoding.DecodeString(jws.Protected); err == nil {
				json.Unmarshal(raw, &hdr)
			}
			a.mu.Lock()
			if r.URL.Path == "/sign-me-up" {
				a.registered++
			} else {
				a.orderKIDs = append(a.orderKIDs, hdr.KID)
			}
			a.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

func (a *acmeTraffic) take() (registered int, kids []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	registered, kids = a.registered, a.orderKIDs
	a.registered, a.orderKIDs = 0, nil
	return registered, kids
}

// startImportCA is the embedded Pebble, as startCLICA starts it, with an
// http-01 port (certbot's standalone authenticator answers there; tlsalpn
// never does) and its traffic recorded. Not strict: certbot 2.1 and lego
// 4.9 are clients of their day.
func startImportCA(t *testing.T) (*cliCA, *acmeTraffic, int) {
	t.Helper()
	traffic := &acmeTraffic{}
	c := &cliCA{}
	port, httpPort := freePort(t), freePort(t)
	c.listen = "127.0.0.1:" + itoa(port)
	ca, err := democa.Start(context.Background(), democa.Options{TLSPort: port, HTTPPort: httpPort, NoSleep: true, Handler: traffic.wrap})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close() })
	c.CA = ca
	c.root = filepath.Join(t.TempDir(), "ca-root.pem")
	if err := os.WriteFile(c.root, ca.RootsPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return c, traffic, httpPort
}

// importArgs are the flags every import in these tests takes: the CA's
// HTTPS root and where Pebble's VA dials for tls-alpn-01, kept for renewals.
func (c *cliCA) importArgs(storage string) []string {
	return []string{"--storage", storage, "--ca-root", c.root, "--listen", c.listen, "--validation-port", c.listen[strings.LastIndex(c.listen, ":")+1:]}
}

// runTool runs another ACME client, bounded, trusting the CA's root.
func runTool(t *testing.T, env []string, name string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// TestImportCertbotAndLegoThenRenew (issue 12.5): directories made by
// Debian's certbot (standalone http-01) and lego (tls-alpn-01) against
// Pebble are imported; tlsalpn renew --force then renews both with the
// imported accounts: no account is registered, each order is placed by the
// account the other tool registered, and certbot's live/ paths and deploy
// hook keep working.
func TestImportCertbotAndLegoThenRenew(t *testing.T) {
	for _, tool := range []string{"certbot", "lego"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (scripts/ci-deps.sh installs it): %v", tool, err)
		}
	}
	ca, traffic, httpPort := startImportCA(t)
	dir := t.TempDir()
	le, work, logs := filepath.Join(dir, "letsencrypt"), filepath.Join(dir, "work"), filepath.Join(dir, "logs")
	marker := filepath.Join(dir, "certbot-hook-ran")
	runTool(t, []string{"REQUESTS_CA_BUNDLE=" + ca.root}, "certbot", "certonly", "--standalone", "--non-interactive",
		"--agree-tos", "-m", "certbot@example.com", "--no-eff-email", "--server", ca.DirectoryURL(),
		"--config-dir", le, "--work-dir", work, "--logs-dir", logs,
		"--http-01-address", "127.0.0.1", "--http-01-port", itoa(httpPort),
		"--key-type", "ecdsa", "--cert-name", "site", "-d", "certbot.example.com", "-d", "www.certbot.example.com",
		"--deploy-hook", "echo \"$RENEWED_LINEAGE\" >> "+marker)
	legoDir := filepath.Join(dir, "lego")
	runTool(t, []string{"LEGO_CA_CERTIFICATES=" + ca.root}, "lego", "--accept-tos", "--email", "lego@example.com",
		"--server", ca.DirectoryURL(), "--path", legoDir, "--domains", "lego.example.com",
		"--tls", "--tls.port", ca.listen, "run")
	registered, kids := traffic.take()
	if registered != 2 || len(kids) != 2 {
		t.Fatalf("certbot and lego registered %d accounts and placed %d orders; want 2 and 2", registered, len(kids))
	}
	certbotAcct, legoAcct := kids[0], kids[1]
	if os.Remove(marker) != nil {
		t.Log("certbot ran no deploy hook at issue (it runs them on renewal only)")
	}
	if os.Getenv("IMPORT_TEST_KEEP") != "" {
		exec.Command("cp", "-a", le, legoDir, os.Getenv("IMPORT_TEST_KEEP")).Run()
	}
	certbotLeaf := readChain(t, filepath.Join(le, "live", "site", "fullchain.pem"))[0]
	legoLeaf := readChain(t, filepath.Join(legoDir, "certificates", "lego.example.com.crt"))[0]

	storage := filepath.Join(dir, "store")
	ctx := context.Background()
	code, stdout, stderr := runCLI(t, ctx, append([]string{"import", "certbot", le}, ca.importArgs(storage)...)...)
	if code != exitOK {
		t.Fatalf("import certbot: exit %d\n%s%s", code, stdout, stderr)
	}
	t.Logf("import certbot:\n%s", stdout)
	code, stdout, stderr = runCLI(t, ctx, append([]string{"import", "lego", legoDir, "--ca", ca.DirectoryURL()}, ca.importArgs(storage)...)...)
	if code != exitOK {
		t.Fatalf("import lego: exit %d\n%s%s", code, stdout, stderr)
	}
	t.Logf("import lego:\n%s", stdout)
	list := listJSON(t, storage)
	for name, want := range map[string]string{"site": certbotLeaf.SerialNumber.Text(16), "lego.example.com": legoLeaf.SerialNumber.Text(16)} {
		if got := list[name].Serial; got != want {
			t.Errorf("imported %s has serial %q, want the other tool's %s", name, got, want)
		}
	}
	if e := list["site"]; !slices.Equal(e.Names, []string{"certbot.example.com", "www.certbot.example.com"}) || e.KeyType != "ec256" || e.Out != filepath.Join(le, "live", "site") {
		t.Errorf("imported certbot certificate: %+v", e)
	}

	code, stdout, stderr = runCLI(t, ctx, "renew", "--force", "--storage", storage)
	if code != exitOK {
		t.Fatalf("renew --force: exit %d\n%s%s", code, stdout, stderr)
	}
	registered, kids = traffic.take()
	if registered != 0 {
		t.Errorf("renewing the imported certificates registered %d accounts; want none", registered)
	}
	slices.Sort(kids)
	want := []string{certbotAcct, legoAcct}
	slices.Sort(want)
	if !slices.Equal(kids, want) {
		t.Errorf("renewal orders were placed by %q; want the imported accounts %q", kids, want)
	}
	after := listJSON(t, storage)
	for name, old := range map[string]string{"site": certbotLeaf.SerialNumber.Text(16), "lego.example.com": legoLeaf.SerialNumber.Text(16)} {
		if after[name].Serial == "" || after[name].Serial == old {
			t.Errorf("%s not renewed: serial %q", name, after[name].Serial)
		}
	}
	// certbot's paths, as servers are configured with them, hold the new
	// pair; its deploy hook ran with certbot's variable.
	live := filepath.Join(le, "live", "site")
	leaf := verifyChain(t, ca, filepath.Join(live, "fullchain.pem"), "certbot.example.com", "www.certbot.example.com")
	if leaf.SerialNumber.Text(16) != after["site"].Serial {
		t.Errorf("live/site/fullchain.pem has serial %s, want %s", leaf.SerialNumber.Text(16), after["site"].Serial)
	}
	if _, err := tlsPair(filepath.Join(live, "fullchain.pem"), filepath.Join(live, "privkey.pem")); err != nil {
		t.Errorf("live/site/privkey.pem does not go with fullchain.pem after renewal: %v", err)
	}
	if ran, _ := os.ReadFile(marker); strings.TrimSpace(string(ran)) != live {
		t.Errorf("certbot's deploy hook ran with RENEWED_LINEAGE %q; want %s once", ran, live)
	}
	verifyChain(t, ca, filepath.Join(storage, "live", "lego.example.com", "fullchain.pem"), "lego.example.com")
}

func tlsPair(certFile, keyFile string) (tls.Certificate, error) {
	return tls.LoadX509KeyPair(certFile, keyFile)
}
