package responder

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// TestLookupKeepClient: the one acme-tls/1 decision with another client
// kept beside tlsalpn. Only an offer of exactly acme-tls/1 is ever
// forwarded or answered from the directory; tlsalpn's own pending
// challenge comes first, then the directory, then the forward.
func TestLookupKeepClient(t *testing.T) {
	dir := t.TempDir()
	_, dirCert := challengeCert(t, "dir.example")
	writePair(t, dir, "dir.example", dirCert)
	r := New()
	r.SetKeepClient(&KeepClient{CertDir: dir, Forward: func(name string) string {
		if name == "none.example" {
			return ""
		}
		return "127.0.0.1:5001"
	}})
	_, own := challengeCert(t, "own.example")
	if _, err := r.Publish(context.Background(), "own.example", own); err != nil {
		t.Fatal(err)
	}
	acme := []string{"acme-tls/1"}
	for _, tt := range []struct {
		name string
		alpn []string
		want string // "forward", "own", "dir", "backend" (nil, nil), "refuse" (nil, ErrNoChallenge)
	}{
		{"fwd.example", acme, "forward"},
		{"FWD.example.", acme, "forward"},
		{"fwd.example", []string{"h2"}, "backend"},
		{"fwd.example", []string{"http/1.1"}, "backend"},
		{"fwd.example", nil, "backend"},
		{"fwd.example", []string{"h2", "acme-tls/1"}, "backend"},
		{"fwd.example", []string{"acme-tls/1", "http/1.1"}, "backend"},
		{"fwd.example", []string{"acme-tls/1", "acme-tls/1"}, "backend"},
		{"own.example", acme, "own"},
		{"dir.example", acme, "dir"},
		{"dir.example", []string{"h2", "http/1.1"}, "backend"},
		{"none.example", acme, "refuse"},
		{"", acme, "refuse"},
	} {
		c, err := r.Lookup(tt.name, tt.alpn)
		got := "refuse"
		switch {
		case c == nil && err == nil:
			got = "backend"
		case c != nil && c.Forward() == "127.0.0.1:5001":
			got = "forward"
		case c != nil && c.cert == own:
			got = "own"
		case c != nil && c.cert != nil && bytes.Equal(c.cert.Certificate[0], dirCert.Certificate[0]):
			got = "dir"
		case c != nil:
			got = "something else"
		}
		if got != tt.want {
			t.Errorf("Lookup(%q, %q) = %s (%v); want %s", tt.name, tt.alpn, got, err, tt.want)
		}
	}
	// A forwarded name cannot be answered by a TLS server's hook.
	c, _ := r.Lookup("fwd.example", acme)
	if _, err := r.answer(&tls.ClientHelloInfo{ServerName: "fwd.example", SupportedProtos: acme}, c); err == nil {
		t.Error("GetConfigForClient answered a forwarded name")
	}
}

// TestCertDir: the challenge directory serves a certificate with the
// CA's shape from the moment it is written until its files go, and a bad
// one never, with the reason logged.
func TestCertDir(t *testing.T) {
	dir := t.TempDir()
	var logs syncLog
	r := New(WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	r.SetKeepClient(&KeepClient{CertDir: dir})
	acme := []string{"acme-tls/1"}
	served := func(name string) bool { c, _ := r.Lookup(name, acme); return c != nil }

	if served("a.example") {
		t.Fatal("served before any file was written")
	}
	_, good := challengeCert(t, "a.example")
	writePair(t, dir, "a.example", good)
	if !served("a.example") {
		t.Fatalf("a good certificate is not served; log:\n%s", logs.String())
	}
	os.Remove(filepath.Join(dir, "a.example.crt.pem"))
	if served("a.example") {
		t.Error("still served after its certificate file was removed")
	}
	os.Remove(filepath.Join(dir, "a.example.key.pem"))

	acmeExt := func(critical bool) pkix.Extension {
		v, _ := asn1.Marshal(make([]byte, 32))
		return pkix.Extension{Id: challenge.OIDACMEIdentifier(), Critical: critical, Value: v}
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tt := range []struct {
		name     string
		dns      []string
		exts     []pkix.Extension
		signer   *ecdsa.PrivateKey // nil: self-signed
		wrongKey bool
		reason   string
	}{
		{"two-sans.example", []string{"two-sans.example", "www.two-sans.example"}, []pkix.Extension{acmeExt(true)}, nil, false, "unexpected identifiers"},
		{"other.example", []string{"not-other.example"}, []pkix.Extension{acmeExt(true)}, nil, false, "unexpected identifiers"},
		{"noncritical.example", []string{"noncritical.example"}, []pkix.Extension{acmeExt(false)}, nil, false, "not Critical"},
		{"noext.example", []string{"noext.example"}, nil, nil, false, "Required extension OID 1.3.6.1.5.5.7.1.31"},
		{"issued.example", []string{"issued.example"}, []pkix.Extension{acmeExt(true)}, other, false, "not self-signed"},
		{"badkey.example", []string{"badkey.example"}, []pkix.Extension{acmeExt(true)}, nil, true, "private key does not match"},
	} {
		certPEM, keyPEM := makeCert(t, tt.dns, tt.exts, tt.signer)
		if tt.wrongKey {
			_, keyPEM = makeCert(t, tt.dns, tt.exts, nil)
		}
		os.WriteFile(filepath.Join(dir, tt.name+".key.pem"), keyPEM, 0o600)
		os.WriteFile(filepath.Join(dir, tt.name+".crt.pem"), certPEM, 0o644)
		r.Scan()
		if served(tt.name) {
			t.Errorf("%s: a bad certificate was served", tt.name)
		}
		if !strings.Contains(logs.String(), tt.reason) || !strings.Contains(logs.String(), tt.name) {
			t.Errorf("%s: the log does not give the reason %q:\n%s", tt.name, tt.reason, logs.String())
		}
	}
	// Each bad file is reported once, not on every handshake.
	before := strings.Count(logs.String(), "certificate refused")
	served("two-sans.example")
	r.Scan()
	if after := strings.Count(logs.String(), "certificate refused"); after != before {
		t.Errorf("a bad file unchanged was reported again (%d, then %d)", before, after)
	}
	// Names never reach outside the directory.
	if served("../a.example") || served(".hidden") {
		t.Error("a server name outside the directory was looked up")
	}
}

// TestOffer: Offer does not wait its turn, holds the pending hook, and
// its withdraw never removes another source's challenge.
func TestOffer(t *testing.T) {
	var mu sync.Mutex
	var calls []bool
	r := New(WithPendingHook(func(_ context.Context, p bool) error { mu.Lock(); calls = append(calls, p); mu.Unlock(); return nil }))
	ctx := context.Background()
	_, cert := challengeCert(t, "o.example")
	w, err := r.Offer(ctx, "o.example", cert)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Offer(ctx, "o.example", cert); err == nil {
		t.Error("a second Offer for a pending name succeeded")
	}
	w()
	w()
	if r.Pending() != 0 {
		t.Error("withdraw left the challenge pending")
	}
	if _, err := r.Publish(ctx, "o.example", cert); err != nil {
		t.Fatal(err)
	}
	w() // the Offer's withdraw, again: the Publish stays
	if r.Pending() != 1 {
		t.Error("an old withdraw removed another source's challenge")
	}
	r.Unpublish(ctx, "o.example")
	mu.Lock()
	defer mu.Unlock()
	if want := []bool{true, false, true, false}; len(calls) != len(want) {
		t.Errorf("pending hook calls %v; want %v", calls, want)
	}
}

// TestServeUALPNRealClient: ualpn's own client (uacme's ualpn.sh runs it
// as "echo 'auth NAME DIGEST' | ualpn") publishes and withdraws through
// the socket; the certificate served carries the digest it sent.
func TestServeUALPNRealClient(t *testing.T) {
	ualpn, err := exec.LookPath("ualpn")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ualpn is not installed (scripts/ci-deps.sh installs it), and CI is set")
		}
		t.Skip("ualpn is not installed (scripts/ci-deps.sh installs it)")
	}
	sock := filepath.Join(t.TempDir(), "ualpn.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	r := New()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.ServeUALPN(ctx, ln) }()
	defer func() { cancel(); <-done }()

	client := func(line string) string {
		cmd := exec.Command(ualpn, "--sock", sock)
		cmd.Stdin = strings.NewReader(line + "\n")
		// ualpn's client mode exits 1 whatever the answer (its
		// source ends client mode with EXIT_FAILURE); ualpn.sh looks
		// only at what it prints.
		out, _ := cmd.CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	const ka = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.DEi0apzMOdMT2DAro57oIvn-wEzPiYcAYDh2Cvjra3I"
	sum := sha256.Sum256([]byte(ka))
	digest := base64.RawURLEncoding.EncodeToString(sum[:])
	if got := client("auth u.example " + digest); got != "OK" {
		t.Fatalf("auth: %q; want OK", got)
	}
	addr := serveStandalone(t, r)
	res := handshake(t, addr, "u.example", []string{"acme-tls/1"}, nil)
	id, _ := challenge.ParseIdentifier("u.example")
	if len(res.peer) == 0 {
		t.Fatalf("no certificate after auth: %v", res.err)
	}
	if err := challenge.Verify(res.peer[0], id, ka); err != nil {
		t.Errorf("served certificate: %v", err)
	}
	for _, tt := range []struct{ line, want string }{
		{"auth u.example notadigest", "ERR"},
		{"auth not_a_name " + digest, "ERR"},
		{"frob", "ERR"},
		{"unauth u.example", "OK"},
		{"unauth never.example", "OK"},
	} {
		if got := client(tt.line); !strings.HasPrefix(got, tt.want) {
			t.Errorf("%q: %q; want %s", tt.line, got, tt.want)
		}
	}
	if r.Pending() != 0 {
		t.Error("unauth left the challenge pending")
	}
	// An auth never unauthed (the hook died) is withdrawn after a while,
	// so that it cannot keep steering off for good.
	r.ualpnTTL = 50 * time.Millisecond
	if got := client("auth u.example " + digest); got != "OK" {
		t.Fatalf("auth: %q; want OK", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.Pending() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if r.Pending() != 0 {
		t.Error("an auth never unauthed stayed pending past its time")
	}
}

type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *syncLog) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// writePair writes cert as dehydrated does: the key first, then the
// certificate.
func writePair(t *testing.T, dir, name string, cert *tls.Certificate) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".crt.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// makeCert makes a certificate for dns with exts, signed by signer or by
// its own key, as PEM.
func makeCert(t *testing.T, dns []string, exts []pkix.Extension, signer *ecdsa.PrivateKey) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: dns, ExtraExtensions: exts,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	parent, sk := tmpl, key
	if signer != nil {
		parent = &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "issuer"}}
		sk = signer
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, sk)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}
