package deploy

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/backend"
)

func haproxyBundle(t *testing.T, names ...string) ([]byte, *x509.Certificate) {
	certPEM, keyPEM := backend.SelfSigned(t, names...)
	return append(certPEM, keyPEM...), backend.ParseCert(t, certPEM)
}

// checkHAProxyServes fails unless h serves want for sni.
func checkHAProxyServes(t *testing.T, h *backend.HAProxy, sni string, want *x509.Certificate) {
	t.Helper()
	if got := backend.PeerCert(t, h.Addr, sni); !got.Equal(want) {
		t.Fatalf("HAProxy serves %v serial %X for %s, want %v serial %X", got.DNSNames, got.SerialNumber, sni, want.DNSNames, want.SerialNumber)
	}
}

// checkNoTransaction fails if an update was left uncommitted.
func checkNoTransaction(t *testing.T, h *backend.HAProxy) {
	t.Helper()
	if list := h.Command(t, "show ssl cert"); strings.Contains(list, "*") {
		t.Errorf("a transaction was left open:\n%s", list)
	}
}

func TestHAProxySetCert(t *testing.T) {
	initial, cert := haproxyBundle(t, "site.test")
	extra, _ := haproxyBundle(t, "extra.test")
	h := backend.StartHAProxy(t, initial, backend.HAProxyOptions{ExtraCerts: [][]byte{extra}, Threads: 1})
	api := HAProxy{Socket: h.AdminSocket, Timeout: 5 * time.Second}
	ctx := context.Background()
	worker := h.Worker(t)

	mismatched := func() []byte {
		c, _ := backend.SelfSigned(t, "site.test")
		_, k := backend.SelfSigned(t, "site.test")
		return append(c, k...)
	}
	messy := func() ([]byte, *x509.Certificate) {
		b, c := haproxyBundle(t, "site.test")
		b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
		b = bytes.Replace(b, []byte("-----BEGIN PRIVATE KEY"), []byte("\r\n\r\nBag Attributes\r\n    localKeyID: 01\r\n-----BEGIN PRIVATE KEY"), 1)
		return append([]byte("subject=/CN=site.test\n\n"), b...), c
	}
	huge := func() []byte {
		c, k := backend.SelfSigned(t, "site.test")
		return append(bytes.Repeat(c, 40), k...) // > 16 KiB: HAProxy's default tune.bufsize
	}

	tests := []struct {
		name    string
		path    string
		bundle  func() ([]byte, *x509.Certificate)
		wantErr string // "" for success
	}{
		{"new certificate", h.CertPath, func() ([]byte, *x509.Certificate) { return haproxyBundle(t, "site.test") }, ""},
		{"blank lines, CRLF and preambles", h.CertPath, messy, ""},
		{"key does not match", h.CertPath, func() ([]byte, *x509.Certificate) { return mismatched(), nil }, "inconsistencies between private key and certificate"},
		{"path not in the configuration", filepath.Join(h.Dir, "other.pem"), func() ([]byte, *x509.Certificate) { return haproxyBundle(t, "site.test") },
			h.CertPath + "; the path must be written exactly"},
		{"relative path", "site.pem", func() ([]byte, *x509.Certificate) { return haproxyBundle(t, "site.test") }, "not referenced by the configuration"},
		{"too big for HAProxy's buffer", h.CertPath, func() ([]byte, *x509.Certificate) { return huge(), nil }, "tune.bufsize"},
		{"no key", h.CertPath, func() ([]byte, *x509.Certificate) { c, _ := backend.SelfSigned(t); return c, nil }, "no PRIVATE KEY"},
		{"not PEM", h.CertPath, func() ([]byte, *x509.Certificate) { return []byte("hello\n\n"), nil }, "no CERTIFICATE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, newCert := tt.bundle()
			err := api.SetCert(ctx, tt.path, b)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				cert = newCert
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("SetCert: %v, want an error with %q", err, tt.wantErr)
			}
			checkHAProxyServes(t, h, "site.test", cert)
			checkNoTransaction(t, h)
			h.CheckNotReloaded(t, worker)
		})
	}

	t.Run("stale transaction for the same path", func(t *testing.T) {
		stale, _ := haproxyBundle(t, "stale.test")
		if answer := h.Command(t, "set ssl cert "+h.CertPath+" <<\n"+string(stale)); !strings.Contains(answer, "Transaction created") {
			t.Fatalf("set ssl cert by hand: %q", answer)
		}
		b, newCert := haproxyBundle(t, "site.test")
		if err := api.SetCert(ctx, h.CertPath, b); err != nil {
			t.Fatal(err)
		}
		cert = newCert
		checkHAProxyServes(t, h, "site.test", cert)
		checkNoTransaction(t, h)
	})

	t.Run("another client's transaction", func(t *testing.T) {
		other, _ := haproxyBundle(t, "extra.test")
		h.Command(t, "set ssl cert "+h.ExtraCertPaths[0]+" <<\n"+string(other))
		b, _ := haproxyBundle(t, "site.test")
		err := api.SetCert(ctx, h.CertPath, b)
		if err == nil || !strings.Contains(err.Error(), "uncommitted update of "+h.ExtraCertPaths[0]) {
			t.Fatalf("SetCert: %v, want a refusal naming %s", err, h.ExtraCertPaths[0])
		}
		if list := h.Command(t, "show ssl cert"); !strings.Contains(list, "*"+h.ExtraCertPaths[0]) {
			t.Errorf("the other client's transaction is gone:\n%s", list)
		}
		h.Command(t, "abort ssl cert "+h.ExtraCertPaths[0])
		checkHAProxyServes(t, h, "site.test", cert)
	})

	t.Run("ShowCert", func(t *testing.T) {
		show, err := api.ShowCert(ctx, h.CertPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Filename: " + h.CertPath, "Status: Used", "Subject: /CN=site.test"} {
			if !strings.Contains(show, want) {
				t.Errorf("ShowCert lacks %q:\n%s", want, show)
			}
		}
		if !sameSerial(fmt.Sprintf("%X", cert.SerialNumber), fieldOf(show, "Serial")) {
			t.Errorf("ShowCert serial %s, want %X", fieldOf(show, "Serial"), cert.SerialNumber)
		}
		if _, err := api.ShowCert(ctx, filepath.Join(h.Dir, "nope.pem")); err == nil || !strings.Contains(err.Error(), "Not found") {
			t.Errorf("ShowCert of an unknown path: %v", err)
		}
	})
}

// TestHAProxyConcurrentClients updates two certificates of one HAProxy at
// once. HAProxy 2.6 has a single transaction slot, and a "set ssl cert" for
// one path while another's transaction is open lands in that transaction:
// SetCert must never report success while the wrong certificate is served,
// nor leave a transaction open.
func TestHAProxyConcurrentClients(t *testing.T) {
	a0, _ := haproxyBundle(t, "a.test")
	b0, _ := haproxyBundle(t, "b.test")
	h := backend.StartHAProxy(t, a0, backend.HAProxyOptions{ExtraCerts: [][]byte{b0}, Threads: 2})
	api := HAProxy{Socket: h.AdminSocket}
	paths := map[string]string{"a.test": h.CertPath, "b.test": h.ExtraCertPaths[0]}
	var failures int
	for round := range 15 {
		var wg sync.WaitGroup
		errs := make(map[string]error)
		certs := make(map[string]*x509.Certificate)
		var mu sync.Mutex
		for name, path := range paths {
			b, c := haproxyBundle(t, name)
			wg.Go(func() {
				err := api.SetCert(context.Background(), path, b)
				mu.Lock()
				errs[name], certs[name] = err, c
				mu.Unlock()
			})
		}
		wg.Wait()
		for name, err := range errs {
			if err != nil {
				failures++
				t.Logf("round %d, %s: %v", round, name, err)
				continue
			}
			checkHAProxyServes(t, h, name, certs[name])
		}
		checkNoTransaction(t, h)
	}
	t.Logf("%d of 30 concurrent updates failed", failures)
	if failures > 5 {
		t.Errorf("%d of 30 concurrent updates failed despite retries", failures)
	}
	for name, path := range paths {
		b, c := haproxyBundle(t, name)
		if err := api.SetCert(context.Background(), path, b); err != nil {
			t.Fatal(err)
		}
		checkHAProxyServes(t, h, name, c)
	}
}

func TestHAProxyDeploy(t *testing.T) {
	initial, _ := haproxyBundle(t, "site.test")
	h := backend.StartHAProxy(t, initial, backend.HAProxyOptions{CertName: "with space;semicolon.pem", Threads: 1})
	api := HAProxy{Socket: "unix@" + h.AdminSocket}
	worker := h.Worker(t)

	b, c := haproxyBundle(t, "site.test")
	if err := api.Deploy(context.Background(), h.CertPath, b); err != nil {
		t.Fatal(err)
	}
	checkHAProxyServes(t, h, "site.test", c)
	h.CheckNotReloaded(t, worker)
	onDisk, err := os.ReadFile(h.CertPath)
	if err != nil || !bytes.Equal(onDisk, b) {
		t.Fatalf("file after Deploy: %v, equal %v", err, bytes.Equal(onDisk, b))
	}
	if fi, _ := os.Stat(h.CertPath); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}

	// A bad bundle reaches neither HAProxy nor the disk.
	if err := api.Deploy(context.Background(), h.CertPath, []byte("junk")); err == nil {
		t.Fatal("Deploy of junk succeeded")
	}
	if now, _ := os.ReadFile(h.CertPath); !bytes.Equal(now, b) {
		t.Error("Deploy of junk changed the file")
	}

	// What was deployed survives a reload.
	h.Reload(t)
	checkHAProxyServes(t, h, "site.test", c)
}

func TestHAProxyUnreachable(t *testing.T) {
	b, _ := haproxyBundle(t, "site.test")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		api  HAProxy
		ctx  context.Context
		want string
	}{
		{"no socket", HAProxy{Socket: filepath.Join(t.TempDir(), "none.sock")}, context.Background(), "connecting to the HAProxy runtime API"},
		{"closed port", HAProxy{Socket: "127.0.0.1:1"}, context.Background(), "connecting to the HAProxy runtime API"},
		{"cancelled", HAProxy{Socket: "127.0.0.1:1"}, cancelled, "context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.api.SetCert(tt.ctx, "/etc/haproxy/site.pem", b)
			if err == nil || !strings.Contains(err.Error(), tt.want) && !(tt.ctx.Err() != nil && errors.Is(err, tt.ctx.Err())) {
				t.Errorf("SetCert: %v, want %q", err, tt.want)
			}
			if _, err := tt.api.ShowCert(tt.ctx, "/etc/haproxy/site.pem"); err == nil {
				t.Error("ShowCert succeeded")
			}
		})
	}
}

// TestHAProxySilentServer: a socket that accepts and never answers is cut
// off by Timeout.
func TestHAProxySilentServer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "silent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c
		}
	}()
	start := time.Now()
	_, err = HAProxy{Socket: sock, Timeout: 200 * time.Millisecond}.ShowCert(context.Background(), "/x.pem")
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("ShowCert: %v after %v", err, time.Since(start))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want a deadline", err)
	}
	(<-accepted).Close()
}

func TestHAProxyCLIArg(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"/etc/haproxy/site.pem", "/etc/haproxy/site.pem", ""},
		{"/a b/c;d.pem", `/a\ b/c\;d.pem`, ""},
		{"tab\there", "tab\\\there", ""},
		{`back\slash`, `back\\slash`, ""},
		{"", "", "empty"},
		{"a\nb", "", "line break"},
		{"a\rb", "", "line break"},
	}
	for _, tt := range tests {
		got, err := cliArg(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("cliArg(%q): %v, want error %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("cliArg(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestHAProxyPayload(t *testing.T) {
	certPEM, keyPEM := backend.SelfSigned(t)
	clean := append(append([]byte{}, certPEM...), keyPEM...)
	tests := []struct {
		name, in, err string
	}{
		{"clean", string(clean), ""},
		{"CRLF and blank lines", strings.ReplaceAll(string(certPEM)+"\n\n"+string(keyPEM)+"\n", "\n", "\r\n"), ""},
		{"preamble", "Bag Attributes\n  friendlyName: x\n" + string(certPEM) + "subject=/CN=x\n\n" + string(keyPEM), ""},
		{"EC key", string(certPEM) + "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", ""},
		{"encrypted", string(certPEM) + "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n", "headers"},
		{"no key", string(certPEM), "no PRIVATE KEY"},
		{"no cert", string(keyPEM), "no CERTIFICATE"},
		{"empty", "", "no CERTIFICATE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := haproxyPayload([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(got, []byte("\n\n")) || bytes.Contains(got, []byte("\r")) || !bytes.HasSuffix(got, []byte("-----\n")) {
				t.Errorf("payload has an empty line, CR or no final newline:\n%s", got)
			}
			if tt.name == "clean" && !bytes.Equal(got, clean) {
				t.Errorf("clean bundle changed:\n%s", got)
			}
		})
	}
}

func TestHAProxySocketAddr(t *testing.T) {
	tests := []struct{ in, network, address string }{
		{"/run/haproxy/admin.sock", "unix", "/run/haproxy/admin.sock"},
		{"admin.sock", "unix", "admin.sock"},
		{"unix@/run/haproxy/admin.sock", "unix", "/run/haproxy/admin.sock"},
		{"127.0.0.1:9999", "tcp", "127.0.0.1:9999"},
		{"[::1]:9999", "tcp", "[::1]:9999"},
		{"localhost:9999", "tcp", "localhost:9999"},
		{"ipv4@127.0.0.1:9999", "tcp4", "127.0.0.1:9999"},
		{"ipv6@[::1]:9999", "tcp6", "[::1]:9999"},
	}
	for _, tt := range tests {
		if n, a := socketAddr(tt.in); n != tt.network || a != tt.address {
			t.Errorf("socketAddr(%q) = %s %s, want %s %s", tt.in, n, a, tt.network, tt.address)
		}
	}
}

func TestHAProxyAnswers(t *testing.T) {
	pending, loaded := parseCertList("# transaction\n*/a b.pem\n# filename\n/a b.pem\n/c.pem")
	if pending != "/a b.pem" || len(loaded) != 2 || loaded[1] != "/c.pem" {
		t.Errorf("parseCertList: %q %q", pending, loaded)
	}
	for answer, want := range map[string]string{
		"Transaction created for certificate /a b.pem!":                  "/a b.pem",
		"Transaction updated for certificate /x.pem!":                    "/x.pem",
		"Can't replace a certificate which is not referenced by the ...": "",
		"Transaction created for certificate /x.pem!\nmore":              "",
	} {
		if got := transactionPath(answer); got != want {
			t.Errorf("transactionPath(%q) = %q, want %q", answer, got, want)
		}
	}
	for _, tt := range []struct {
		want, got string
		same      bool
	}{
		{"0ABC", "ABC", true}, {"abc", "00ABC", true}, {"ABC", "ABD", false}, {"", "ABC", true}, {"ABC", "", false},
	} {
		if sameSerial(tt.want, tt.got) != tt.same {
			t.Errorf("sameSerial(%q, %q) != %v", tt.want, tt.got, tt.same)
		}
	}
}
