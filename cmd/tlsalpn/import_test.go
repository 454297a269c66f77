package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/issuer"
	fsstorage "github.com/tlsalpn/tlsalpn/storage/fs"
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

// readmeImportCommands returns the commands the README shows under
// "Moving from certbot, lego, acme.sh or Traefik", as arguments to tlsalpn.
// Tests run them with the source's path replaced by the directory the test
// made, the embedded Pebble's flags (--ca-root, --listen,
// --validation-port; --ca for lego and Traefik, which keep only the CA's
// host) and --storage appended. Every one must be of a form some test runs.
func readmeImportCommands(t *testing.T) [][]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	const heading = "### Moving from certbot, lego, acme.sh or Traefik\n"
	_, sec, ok := strings.Cut(string(data), heading)
	if !ok {
		t.Fatalf("README.md has no %q", heading)
	}
	if i := strings.Index(sec, "\n#"); i >= 0 {
		sec = sec[:i]
	}
	var cmds [][]string
	for _, block := range strings.Split(sec, "```sh\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		for _, l := range strings.Split(strings.TrimSpace(block), "\n") {
			args := tlsalpnArgs(t, shellWords(t, l))
			switch {
			case len(args) >= 3 && args[0] == "import" && slices.Contains([]string{"certbot", "lego", "acme.sh", "traefik"}, args[1]):
			case len(args) == 1 && args[0] == "list", len(args) == 2 && args[0] == "renew" && args[1] == "--force":
			default:
				t.Fatalf("README command %q is of no form the import tests run", l)
			}
			cmds = append(cmds, args)
		}
	}
	if len(cmds) == 0 {
		t.Fatal("README shows no import commands")
	}
	return cmds
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
	certbotLeaf := readChain(t, filepath.Join(le, "live", "site", "fullchain.pem"))[0]
	legoLeaf := readChain(t, filepath.Join(legoDir, "certificates", "lego.example.com.crt"))[0]

	// A script in certbot's renewal-hooks/deploy, which certbot runs
	// before the lineage's own deploy hook.
	if err := os.WriteFile(filepath.Join(le, "renewal-hooks", "deploy", "10-reload"),
		[]byte("#!/bin/sh\necho \"dir $RENEWED_LINEAGE\" >> '"+marker+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	storage := filepath.Join(dir, "store")
	ctx := context.Background()
	// The README's commands, in its order: the certbot and lego imports,
	// list, then renew --force (acme.sh's and Traefik's are run by
	// TestImportACMEShAndTraefikThenRenew).
	for _, args := range readmeImportCommands(t) {
		switch {
		case args[0] == "import" && args[1] == "certbot":
			args = append(append(append([]string{}, args[:2]...), le), args[3:]...)
		case args[0] == "import" && args[1] == "lego":
			args = append(append(append([]string{}, args[:2]...), legoDir), args[3:]...)
			args = append(args, "--ca", ca.DirectoryURL())
		case args[0] == "list":
			list := listJSON(t, storage)
			for name, want := range map[string]string{"site": certbotLeaf.SerialNumber.Text(16), "lego.example.com": legoLeaf.SerialNumber.Text(16)} {
				if got := list[name].Serial; got != want {
					t.Errorf("imported %s has serial %q, want the other tool's %s", name, got, want)
				}
			}
			if e := list["site"]; !slices.Equal(e.Names, []string{"certbot.example.com", "www.certbot.example.com"}) || e.KeyType != "ec256" || e.Out != filepath.Join(le, "live", "site") {
				t.Errorf("imported certbot certificate: %+v", e)
			}
		case args[0] == "renew":
			// Before it, a plain renew: nothing is due, and each
			// imported certificate is deployed once to its output, the
			// same certificate, certbot's paths still a matching pair.
			code, stdout, stderr := runCLI(t, ctx, "renew", "--storage", storage)
			if code != exitOK || strings.Count(stdout, "deployed (no earlier deployment recorded); not due") != 2 {
				t.Fatalf("renew after the imports: exit %d\n%s%s", code, stdout, stderr)
			}
			live := filepath.Join(le, "live", "site")
			if pair, err := tlsPair(filepath.Join(live, "fullchain.pem"), filepath.Join(live, "privkey.pem")); err != nil || pair.Leaf.SerialNumber.Cmp(certbotLeaf.SerialNumber) != 0 {
				t.Errorf("live/site after the first renew: %v; want certbot's certificate, with its key", err)
			}
		default:
			continue
		}
		if args[0] == "import" {
			args = append(args, ca.importArgs(storage)...)
		} else {
			args = append(args, "--storage", storage)
		}
		code, stdout, stderr := runCLI(t, ctx, args...)
		if code != exitOK {
			t.Fatalf("tlsalpn %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
		}
		t.Logf("tlsalpn %s:\n%s", strings.Join(args, " "), stdout)
		if slices.Contains(args, "--dry-run") {
			if files := treeFiles(t, storage); len(files) != 0 || !strings.Contains(stdout, "would import certificate site") {
				t.Errorf("import --dry-run wrote %v, or did not list the certificate:\n%s", files, stdout)
			}
		}
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
	if ran, once := readFile(t, marker), "dir "+live+"\n"+live+"\n"; ran != once+once {
		t.Errorf("certbot's deploy hooks ran as %q; want renewal-hooks/deploy's, then the lineage's, with RENEWED_LINEAGE=%s, once at the first renew and once at the renewal", ran, live)
	}
	verifyChain(t, ca, filepath.Join(storage, "live", "lego.example.com", "fullchain.pem"), "lego.example.com")
}

func tlsPair(certFile, keyFile string) (tls.Certificate, error) {
	return tls.LoadX509KeyPair(certFile, keyFile)
}

// fixtureAccount registers an account with key at the CA, as acme.sh or
// Traefik would have, and returns its URL.
func fixtureAccount(t *testing.T, ca *cliCA, key crypto.Signer, email string) string {
	t.Helper()
	client := &acme.Client{Directory: ca.DirectoryURL(), HTTPClient: ca.HTTPClient()}
	acct, err := client.NewAccount(context.Background(), acme.Account{PrivateKey: key, TermsOfServiceAgreed: true, Contact: []string{"mailto:" + email}})
	if err != nil {
		t.Fatal(err)
	}
	return acct.Location
}

// pebbleCertificate has the CA issue a certificate for names to the
// account at location with key, as the other tool would have (a renewal
// names the certificate it replaces, which the CA accepts only from the
// account that ordered it): tlsalpn issues it in a scratch storage holding
// that account. It returns the chain, leaf first, and the key.
func pebbleCertificate(t *testing.T, ca *cliCA, key crypto.Signer, location, email, keyType string, names ...string) (chainPEM, keyPEM []byte) {
	t.Helper()
	dir := t.TempDir()
	st, err := fsstorage.New(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	if err := issuer.ImportAccount(context.Background(), st, ca.DirectoryURL(), email, key, location, nil, false); err != nil {
		t.Fatal(err)
	}
	args := append(ca.issueArgs(filepath.Join(dir, "store"), filepath.Join(dir, "out"), names...), "--key-type", keyType, "--email", email)
	if code, stdout, stderr := runCLI(t, context.Background(), args...); code != exitOK {
		t.Fatalf("issuing the fixture's certificate: exit %d\n%s%s", code, stdout, stderr)
	}
	if chainPEM, err = os.ReadFile(filepath.Join(dir, "out", "fullchain.pem")); err != nil {
		t.Fatal(err)
	}
	if keyPEM, err = os.ReadFile(filepath.Join(dir, "out", "key.pem")); err != nil {
		t.Fatal(err)
	}
	return chainPEM, keyPEM
}

func writeFiles(t *testing.T, files map[string]string) {
	t.Helper()
	for p, data := range files {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// acmeShHome builds ~/.acme.sh as acme.sh 3.x leaves it after
// "acme.sh --issue --alpn -d NAME -d www.NAME --keylength ec-256" and
// "acme.sh --install-cert -d NAME --ecc --cert-file … --key-file …
// --fullchain-file … --reloadcmd …": the account under
// ca/<host>/<path>/ (account.key, account.json, ca.conf with ACCOUNT_URL),
// account.conf, and NAME_ecc/ with NAME.conf (Le_* settings, the reload
// command base64-encoded as acme.sh's _setopt stores it), NAME.cer,
// NAME.key, ca.cer and fullchain.cer.
//
// With otherAccount, the certificate was ordered by another account than
// the one acme.sh keeps (an account key changed since, as with acme.sh
// --create-account-key).
func acmeShHome(t *testing.T, ca *cliCA, home, name, installDir, renewHook, reloadCmd string, otherAccount bool) (location string) {
	t.Helper()
	key := mustEC(t)
	location = fixtureAccount(t, ca, key, "acmesh@example.com")
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certKey, certAcct := crypto.Signer(key), location
	if otherAccount {
		certKey = mustEC(t)
		certAcct = fixtureAccount(t, ca, certKey, "acmesh@example.com")
	}
	chainPEM, keyPEM := pebbleCertificate(t, ca, certKey, certAcct, "acmesh@example.com", "ec256", name, "www."+name)
	chain, err := issuer.ParseChainPEM(chainPEM)
	if err != nil {
		t.Fatal(err)
	}
	var caCer []byte
	for _, c := range chain[1:] {
		caCer = append(caCer, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	u, _ := url.Parse(ca.DirectoryURL())
	cadir := filepath.Join(home, "ca", u.Host, strings.Trim(u.Path, "/"))
	cdir := filepath.Join(home, name+"_ecc")
	writeFiles(t, map[string]string{
		filepath.Join(home, "account.conf"): "LOG_FILE='" + filepath.Join(home, "acme.sh.log") + "'\n#LOG_LEVEL=1\nAUTO_UPGRADE='1'\n" +
			"ACCOUNT_EMAIL='acmesh@example.com'\nUPGRADE_HASH='0123456789abcdef'\n",
		filepath.Join(cadir, "account.key"):  string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})),
		filepath.Join(cadir, "account.json"): `{"status":"valid","contact":["mailto:acmesh@example.com"],"orders":"` + location + `/orders"}`,
		filepath.Join(cadir, "ca.conf"):      "ACCOUNT_URL='" + location + "'\nCA_KEY_HASH='Zm9v'\n",
		filepath.Join(cdir, name+".conf"): "Le_Domain='" + name + "'\nLe_Alt='www." + name + "'\nLe_Webroot='alpn'\nLe_PreHook=''\nLe_PostHook=''\n" +
			"Le_RenewHook='" + strings.ReplaceAll(renewHook, "'", `'\''`) + "'\nLe_API='" + ca.DirectoryURL() + "'\nLe_Keylength='ec-256'\nLe_OrderFinalize='" + location + "/finalize'\n" +
			"Le_LinkOrder='" + location + "/order'\nLe_LinkCert='" + location + "/cert'\nLe_CertCreateTime='1764770000'\n" +
			"Le_CertCreateTimeStr='2025-12-03T14:00:00Z'\nLe_NextRenewTimeStr='2026-01-31T14:00:00Z'\nLe_NextRenewTime='1769868000'\n" +
			"Le_RealCertPath='" + filepath.Join(installDir, "cert.pem") + "'\n" +
			"Le_RealCACertPath='" + filepath.Join(installDir, "ca.pem") + "'\n" +
			"Le_RealKeyPath='" + filepath.Join(installDir, "key.pem") + "'\n" +
			"Le_ReloadCmd='__ACME_BASE64__START_" + base64.StdEncoding.EncodeToString([]byte(reloadCmd)) + "__ACME_BASE64__END_'\n" +
			"Le_RealFullChainPath='" + filepath.Join(installDir, "fullchain.pem") + "'\n",
		filepath.Join(cdir, name+".cer"):      string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[0].Raw})),
		filepath.Join(cdir, name+".key"):      string(keyPEM),
		filepath.Join(cdir, "ca.cer"):         string(caCer),
		filepath.Join(cdir, "fullchain.cer"):  string(chainPEM),
		filepath.Join(cdir, name+".csr"):      "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n",
		filepath.Join(cdir, name+".csr.conf"): "[ req_distinguished_name ]\n",
		// What --install-cert copied.
		filepath.Join(installDir, "cert.pem"):      string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: chain[0].Raw})),
		filepath.Join(installDir, "ca.pem"):        string(caCer),
		filepath.Join(installDir, "fullchain.pem"): string(chainPEM),
		filepath.Join(installDir, "key.pem"):       string(keyPEM),
	})
	return location
}

// traefikStore writes acme.json as Traefik v2/v3 keeps it for one
// resolver: the account's key as base64 PKCS #1 DER (Traefik's account
// keys are RSA), its registration, and each certificate and key as base64
// PEM under domain.main and domain.sans.
func traefikStore(t *testing.T, ca *cliCA, file string, names ...string) (location string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	location = fixtureAccount(t, ca, key, "traefik@example.com")
	chainPEM, keyPEM := pebbleCertificate(t, ca, key, location, "traefik@example.com", "rsa2048", names...)
	type domain struct {
		Main string   `json:"main"`
		SANs []string `json:"sans,omitempty"`
	}
	store := map[string]any{"le": map[string]any{
		"Account": map[string]any{
			"Email": "traefik@example.com",
			"Registration": map[string]any{
				"body": map[string]any{"status": "valid", "contact": []string{"mailto:traefik@example.com"}},
				"uri":  location,
			},
			"PrivateKey": x509.MarshalPKCS1PrivateKey(key),
			"KeyType":    "4096",
		},
		"Certificates": []map[string]any{{
			"domain":      domain{Main: names[0], SANs: names[1:]},
			"certificate": chainPEM,
			"key":         keyPEM,
			"Store":       "default",
		}},
	}}
	data, err := json.MarshalIndent(store, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, map[string]string{file: string(data)})
	return location
}

// TestImportACMEShAndTraefikThenRenew (issue 12.5): acme.sh's home and
// Traefik's acme.json, built from their documented layouts with accounts
// registered at Pebble and certificates it issued, are imported; renew
// --force renews both with those accounts, and puts acme.sh's certificate
// where its --install-cert put it, then runs its reload command.
func TestImportACMEShAndTraefikThenRenew(t *testing.T) {
	ca, traffic, _ := startImportCA(t)
	dir := t.TempDir()
	home, installed := filepath.Join(dir, "acme.sh"), filepath.Join(dir, "installed")
	marker := filepath.Join(dir, "reloaded")
	acmeShAcct := acmeShHome(t, ca, home, "acmesh.example.com", installed,
		"echo \"renew $Le_Domain $CERT_FULLCHAIN_PATH\" >> '"+marker+"'", "echo reload >> '"+marker+"'", false)
	acmeJSON := filepath.Join(dir, "traefik", "acme.json")
	traefikAcct := traefikStore(t, ca, acmeJSON, "traefik.example.com", "www.traefik.example.com")
	traffic.take()

	storage := filepath.Join(dir, "store")
	ctx := context.Background()
	ran := 0
	for _, args := range readmeImportCommands(t) {
		if args[0] != "import" {
			continue
		}
		switch args[1] {
		case "acme.sh":
			args = append(append(append([]string{}, args[:2]...), home), args[3:]...)
		case "traefik":
			args = append(append(append([]string{}, args[:2]...), acmeJSON), args[3:]...)
			args = append(args, "--ca", ca.DirectoryURL())
		default:
			continue
		}
		ran++
		code, stdout, stderr := runCLI(t, ctx, append(args, ca.importArgs(storage)...)...)
		if code != exitOK {
			t.Fatalf("%s: exit %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	if ran != 2 {
		t.Fatalf("README shows %d acme.sh and Traefik imports; want one of each", ran)
	}
	list := listJSON(t, storage)
	if e := list["acmesh.example.com"]; !slices.Equal(e.Names, []string{"acmesh.example.com", "www.acmesh.example.com"}) || e.KeyType != "ec256" {
		t.Errorf("imported acme.sh certificate: %+v", e)
	}
	if e := list["traefik.example.com"]; !slices.Equal(e.Names, []string{"traefik.example.com", "www.traefik.example.com"}) || e.KeyType != "rsa2048" {
		t.Errorf("imported Traefik certificate: %+v", e)
	}

	code, stdout, stderr := runCLI(t, ctx, "renew", "--force", "--storage", storage)
	if code != exitOK {
		t.Fatalf("renew --force: exit %d\n%s%s", code, stdout, stderr)
	}
	registered, kids := traffic.take()
	slices.Sort(kids)
	want := []string{acmeShAcct, traefikAcct}
	slices.Sort(want)
	if registered != 0 || !slices.Equal(kids, want) {
		t.Errorf("renewals registered %d accounts and ordered as %q; want none and the imported accounts %q", registered, kids, want)
	}
	after := listJSON(t, storage)
	for name, before := range list {
		if after[name].Serial == before.Serial {
			t.Errorf("%s not renewed", name)
		}
	}
	// acme.sh's install paths hold the renewed pair, the key private, and
	// its reload command ran once.
	leaf := verifyChain(t, ca, filepath.Join(installed, "fullchain.pem"), "acmesh.example.com")
	if got := leaf.SerialNumber.Text(16); got != after["acmesh.example.com"].Serial {
		t.Errorf("installed fullchain has serial %s, want %s", got, after["acmesh.example.com"].Serial)
	}
	if _, err := tlsPair(filepath.Join(installed, "cert.pem"), filepath.Join(installed, "key.pem")); err != nil {
		t.Errorf("installed cert.pem and key.pem: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(installed, "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("installed key.pem: %v, mode %v; want 0600", err, fi.Mode())
	}
	if ran, want := readFile(t, marker), "renew acmesh.example.com "+filepath.Join(storage, "live", "acmesh.example.com", "fullchain.pem")+"\nreload\n"; ran != want {
		t.Errorf("acme.sh's renew hook and reload command ran as %q; want %q (each once, in that order)", ran, want)
	}
	verifyChain(t, ca, filepath.Join(storage, "live", "traefik.example.com", "fullchain.pem"), "traefik.example.com", "www.traefik.example.com")
}

// selfSignedPEM is a certificate and key for names that no CA issued, for
// sources refused before any CA is involved.
func selfSignedPEM(t *testing.T, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

// TestImportRefusals: --dry-run writes nothing; a source that cannot be
// read in full, has a wildcard, or names a CA that cannot be told is
// refused with the reason and nothing of it is written (all or nothing);
// what is stored already stays unless --force; bad usage exits 2.
func TestImportRefusals(t *testing.T) {
	ca, _, _ := startImportCA(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "acme.sh")
	acmeShHome(t, ca, good, "acmesh.example.com", filepath.Join(dir, "installed"), "", "true", false)
	copyHome := func(t *testing.T) string {
		home := filepath.Join(t.TempDir(), "acme.sh")
		if out, err := exec.Command("cp", "-a", good, home).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return home
	}
	wildCert, wildKey := selfSignedPEM(t, "*.wild.example.com")
	tests := []struct {
		name   string
		source func(t *testing.T) (tool, path string)
		extra  []string
		stored bool // the storage holds the acme.sh import already
		// accountAt, when set, is an account stored already for the
		// acme.sh account's CA and email, at another URL.
		accountAt string
		code      int
		want      string // in stdout+stderr
		written   bool   // lineages or accounts are (still) stored after
	}{
		{name: "dry run", source: func(t *testing.T) (string, string) { return "acme.sh", copyHome(t) },
			extra: []string{"--dry-run"}, code: exitOK, want: "would import certificate acmesh.example.com"},
		{name: "a certificate of the source unreadable", source: func(t *testing.T) (string, string) {
			home := copyHome(t)
			// A second certificate, sorted after the good one, whose key is gone.
			d := filepath.Join(home, "zzz.example.com")
			writeFiles(t, map[string]string{filepath.Join(d, "zzz.example.com.conf"): "Le_Domain='zzz.example.com'\nLe_API='" + ca.DirectoryURL() + "'\n",
				filepath.Join(d, "fullchain.cer"): "x"})
			return "acme.sh", home
		}, code: exitFailure, want: "zzz.example.com.key: no such file"},
		{name: "wildcard", source: func(t *testing.T) (string, string) {
			data, _ := json.Marshal(map[string]any{"le": map[string]any{
				"Account":      map[string]any{"Email": "a@example.com", "Registration": map[string]any{"uri": "https://acme-v02.api.letsencrypt.org/acme/acct/1"}, "PrivateKey": mustRSA(t)},
				"Certificates": []map[string]any{{"domain": map[string]any{"main": "*.wild.example.com"}, "certificate": wildCert, "key": wildKey}},
			}})
			f := filepath.Join(t.TempDir(), "acme.json")
			writeFiles(t, map[string]string{f: string(data)})
			return "traefik", f
		}, code: exitFailure, want: "cannot validate wildcard names"},
		{name: "lego at a CA it cannot tell", source: func(t *testing.T) (string, string) {
			d := filepath.Join(t.TempDir(), ".lego")
			key, _ := issuer.EncodeKeyPEM(mustEC(t))
			writeFiles(t, map[string]string{
				filepath.Join(d, "accounts", "ca.example.net_14000", "a@example.com", "account.json"):              `{"email":"a@example.com","registration":{"body":{"status":"valid"},"uri":"https://ca.example.net:14000/acct/1"}}`,
				filepath.Join(d, "accounts", "ca.example.net_14000", "a@example.com", "keys", "a@example.com.key"): string(key),
			})
			return "lego", d
		}, code: exitFailure, want: "give it with --ca https://ca.example.net:14000/"},
		{name: "stored already", source: func(t *testing.T) (string, string) { return "acme.sh", copyHome(t) },
			stored: true, code: exitFailure, want: "certificate acmesh.example.com is stored already", written: true},
		{name: "another account stored for the CA and email", source: func(t *testing.T) (string, string) { return "acme.sh", copyHome(t) },
			accountAt: "https://127.0.0.1:1/my-account/other", code: exitFailure, want: "an account for acmesh@example.com at " + ca.DirectoryURL() + " is stored already (https://127.0.0.1:1/my-account/other): --force replaces it", written: true},
		{name: "stored already, --force", source: func(t *testing.T) (string, string) { return "acme.sh", copyHome(t) },
			extra: []string{"--force"}, stored: true, code: exitOK, want: "imported 1 certificate and 1 account", written: true},
		{name: "unknown tool", source: func(t *testing.T) (string, string) { return "caddy", good }, code: exitUsage, want: `unknown tool "caddy"`},
		{name: "no such path", source: func(t *testing.T) (string, string) { return "certbot", filepath.Join(dir, "nope") }, code: exitUsage, want: "no such file"},
		{name: "--ca where the source records it", source: func(t *testing.T) (string, string) { return "acme.sh", good },
			extra: []string{"--ca", "letsencrypt"}, code: exitUsage, want: "--ca is for lego and traefik"},
		{name: "--email where the source records it", source: func(t *testing.T) (string, string) { return "certbot", good },
			extra: []string{"--email", "a@example.com"}, code: exitUsage, want: "--email chooses among a lego directory's accounts"},
		{name: "no path", source: func(t *testing.T) (string, string) { return "certbot", "" }, code: exitUsage, want: "give the tool and its directory or file"},
		{name: "--listen without a colon", source: func(t *testing.T) (string, string) { return "acme.sh", good },
			extra: []string{"--listen", "16443"}, code: exitUsage, want: "did you mean --listen :16443?"},
		{name: "--validation-port out of range", source: func(t *testing.T) (string, string) { return "acme.sh", good },
			extra: []string{"--validation-port", "0"}, code: exitUsage, want: "--validation-port 0"},
		{name: "not certbot's directory", source: func(t *testing.T) (string, string) { return "certbot", good }, code: exitFailure, want: "no renewal directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			storage := filepath.Join(t.TempDir(), "store")
			if tt.stored {
				if code, stdout, stderr := runCLI(t, context.Background(), append([]string{"import", "acme.sh", good}, ca.importArgs(storage)...)...); code != exitOK {
					t.Fatalf("first import: exit %d\n%s%s", code, stdout, stderr)
				}
			}
			if tt.accountAt != "" {
				st, err := fsstorage.New(storage)
				if err != nil {
					t.Fatal(err)
				}
				if err := issuer.ImportAccount(context.Background(), st, ca.DirectoryURL(), "acmesh@example.com", mustEC(t), tt.accountAt, nil, false); err != nil {
					t.Fatal(err)
				}
			}
			before := treeSnapshot(t, storage)
			tool, path := tt.source(t)
			args := []string{"import", tool, path}
			if path == "" {
				args = args[:2]
			}
			code, stdout, stderr := runCLI(t, context.Background(), append(append(args, ca.importArgs(storage)...), tt.extra...)...)
			if code != tt.code || !strings.Contains(stdout+stderr, tt.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s%s", code, tt.code, tt.want, stdout, stderr)
			}
			after := treeSnapshot(t, storage)
			if files := treeFiles(t, storage); !tt.written && len(files) != 0 {
				t.Errorf("a refused or dry-run import wrote %v", files)
			}
			// The storage's own directory changes when it is opened (its
			// lock directory); what it holds must not.
			delete(before, storage)
			delete(after, storage)
			if tt.written && code != exitOK && len(diffSnapshots(before, after)) != 0 {
				t.Errorf("a refused import changed the storage: %v", diffSnapshots(before, after))
			}
		})
	}
}

func mustEC(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustRSA(t *testing.T) []byte {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return x509.MarshalPKCS1PrivateKey(k)
}

// TestImportRenewsCertificateOfAnotherAccount: a certificate imported with
// an account other than the one that ordered it (acme.sh's account key was
// replaced since) renews all the same: the CA refuses that account's
// "replaces" (unauthorized), and the order is placed again without it, by
// the imported account, rather than failing for ever.
func TestImportRenewsCertificateOfAnotherAccount(t *testing.T) {
	ca, traffic, _ := startImportCA(t)
	dir := t.TempDir()
	home := filepath.Join(dir, "acme.sh")
	acct := acmeShHome(t, ca, home, "acmesh.example.com", filepath.Join(dir, "installed"), "", "true", true)
	storage := filepath.Join(dir, "store")
	ctx := context.Background()
	if code, stdout, stderr := runCLI(t, ctx, append([]string{"import", "acme.sh", home}, ca.importArgs(storage)...)...); code != exitOK {
		t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
	}
	traffic.take()
	code, stdout, stderr := runCLI(t, ctx, "renew", "--force", "--storage", storage)
	if code != exitOK || !strings.Contains(stdout, "renewed (forced)") {
		t.Fatalf("renew --force: exit %d\n%s%s", code, stdout, stderr)
	}
	if registered, kids := traffic.take(); registered != 0 || len(kids) != 2 || kids[0] != acct || kids[1] != acct {
		t.Errorf("renewal registered %d accounts and ordered as %q; want none, and the imported account %s twice (with replaces, refused; without)", registered, kids, acct)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	data, _ := os.ReadFile(p)
	return string(data)
}
