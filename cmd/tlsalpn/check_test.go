package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// checkCA is a root for production certificates, written to a PEM file for
// --ca-root.
type checkCA struct {
	key     *ecdsa.PrivateKey
	cert    *x509.Certificate
	pemFile string
}

func newCheckCA(t *testing.T) *checkCA {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "check cmd test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	file := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &checkCA{key: k, cert: c, pemFile: file}
}

func (ca *checkCA) leaf(t *testing.T, name string, lifetime time.Duration) *tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(lifetime),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, k.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// checkResponder serves the challenge certificate for name and keyAuth on
// acme-tls/1 handshakes and prod on all others, on 127.0.0.1; it returns
// the port.
func checkResponder(t *testing.T, name, keyAuth string, prod *tls.Certificate) int {
	t.Helper()
	acmeCert, err := challenge.Build(challenge.Identifier{Type: challenge.DNS, Value: name}, keyAuth)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		NextProtos: []string{challenge.ALPNProto, "h2", "http/1.1"},
		GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if slices.Equal(h.SupportedProtos, []string{challenge.ALPNProto}) {
				return acmeCert, nil
			}
			return prod, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				c.(*tls.Conn).Handshake()
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).Port
}

func TestCheckCommand(t *testing.T) {
	ca := newCheckCA(t)
	const keyAuth = "tok.thumb"
	good := checkResponder(t, "good.test", keyAuth, ca.leaf(t, "good.test", 60*24*time.Hour))
	soon := checkResponder(t, "soon.test", keyAuth, ca.leaf(t, "soon.test", 10*24*time.Hour))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	at := func(name string, port int) string { return name + ":" + strconv.Itoa(port) }
	base := []string{"check", "--address", "127.0.0.1", "--ca-root", ca.pemFile, "--timeout", "5s"}

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr string
	}{
		{
			name: "pass", args: []string{"--key-authorization", keyAuth, at("good.test", good)}, code: exitOK,
			stdout: []string{"ADDRESS", "key-authorization", "PASS", "the CA would pass at 127.0.0.1:", "verdict: PASS (0 failing, 0 expiring, 1 fine, of 1)"},
		},
		{
			name: "token and thumbprint, wrong hash", args: []string{"--token", "tok", "--thumbprint", "other", at("good.test", good)}, code: exitUsage,
			stdout: []string{"key-authorization", "FAIL", "Received certificate with acmeValidationV1 extension value", "fix 127.0.0.1:"},
			stderr: "1 of 1 names fail",
		},
		{
			name: "expiring", args: []string{"--monitor=false", "--expiring-within", "30d", at("soon.test", soon)}, code: exitFailure,
			stdout: []string{"production-expiry", "EXPIRING", "renew now", "to renew: tlsalpn renew", "verdict: EXPIRING"},
			stderr: "expiring within 30d",
		},
		{
			name: "not expiring within 5 days", args: []string{"--monitor=false", "--expiring-within", "120h", at("soon.test", soon)}, code: exitOK,
			stdout: []string{"verdict: PASS"},
		},
		{
			name: "failing beats expiring", args: []string{"--monitor=false", "--expiring-within", "30d", at("soon.test", soon), at("gone.test", closed), at("good.test", good)}, code: exitUsage,
			stdout: []string{"127.0.0.1: Connection refused", "nothing listens on port", "the responder: tlsalpn serve, or tlsalpn issue", "verdict: FAIL (1 failing, 1 expiring, 1 fine, of 3)"},
			stderr: "1 of 3 names fail",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, context.Background(), append(slices.Clone(base), tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			if tt.stderr != "" && !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr %q lacks %q", stderr, tt.stderr)
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		code, stdout, _ := runCLI(t, context.Background(), append(slices.Clone(base), "--json", at("good.test", good), at("gone.test", closed))...)
		if code != exitUsage {
			t.Errorf("exit %d, want %d", code, exitUsage)
		}
		var out struct {
			Verdict string `json:"verdict"`
			Reports []struct {
				Name    string `json:"name"`
				Verdict string `json:"verdict"`
				CA      struct {
					Pass    bool   `json:"pass"`
					Problem string `json:"problem"`
				} `json:"ca"`
				Addresses []struct {
					Address string `json:"address"`
					Results []struct {
						Rule      string `json:"rule"`
						Pass      bool   `json:"pass"`
						CAMessage string `json:"ca_message"`
						Fix       string `json:"fix"`
					} `json:"results"`
				} `json:"addresses"`
			} `json:"reports"`
		}
		if err := json.Unmarshal([]byte(stdout), &out); err != nil {
			t.Fatalf("%v:\n%s", err, stdout)
		}
		if out.Verdict != "fail" || len(out.Reports) != 2 {
			t.Fatalf("verdict %q, %d reports:\n%s", out.Verdict, len(out.Reports), stdout)
		}
		g, b := out.Reports[0], out.Reports[1]
		if g.Name != "good.test" || g.Verdict != "pass" || !g.CA.Pass {
			t.Errorf("good.test: %+v", g)
		}
		if b.Name != "gone.test" || b.Verdict != "fail" || b.CA.Problem != "127.0.0.1: Connection refused" ||
			len(b.Addresses) != 1 || b.Addresses[0].Results[0].Rule != "connect" || b.Addresses[0].Results[0].Fix == "" {
			t.Errorf("gone.test: %+v", b)
		}
	})
}

func TestCheckUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"check"}, "no names"},
		{[]string{"check", "*.example.com"}, "DNS-01"},
		{[]string{"check", "example.com:99999"}, "port"},
		{[]string{"check", "--address", "example.net", "example.com"}, `--address "example.net"`},
		{[]string{"check", "--token", "t", "example.com"}, "go together"},
		{[]string{"check", "--key-authorization", "t.p", "--token", "t", "--thumbprint", "p", "example.com"}, "not both"},
		{[]string{"check", "--key-authorization", "nodot", "example.com"}, "TOKEN.THUMBPRINT"},
		{[]string{"check", "--key-authorization", "t.p", "a.example", "b.example"}, "exactly one name"},
		{[]string{"check", "--expiring-within", "30x", "example.com"}, "--expiring-within"},
		{[]string{"check", "--expiring-within", "0d", "example.com"}, "not positive"},
		{[]string{"check", "--ca-root", "/nonexistent/root.pem", "example.com"}, "--ca-root"},
		{[]string{"check", "--timeout", "0s", "example.com"}, "--timeout"},
		{[]string{"check", "--expiring-within", "30d", "--token", "t", "--thumbprint", "p", "example.com"}, "--monitor=false"},
		{[]string{"check", "--monitor=maybe", "example.com"}, "monitor"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args[1:], " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, context.Background(), tt.args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr: %s", code, exitUsage, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q: nothing should have been checked", stdout)
			}
			if got := lines(stderr); len(got) != 1 || !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q, want one line containing %q", stderr, tt.want)
			}
		})
	}
}

// TestCheckMonitor: --monitor (and --expiring-within, which implies it)
// judges only what ordinary clients get, reports the handshake, the
// certificate and the expiry separately, and exits with the documented
// code for each outcome.
func TestCheckMonitor(t *testing.T) {
	ca := newCheckCA(t)
	const keyAuth = "tok.thumb"
	good := checkResponder(t, "good.test", keyAuth, ca.leaf(t, "good.test", 60*24*time.Hour))
	soon := checkResponder(t, "soon.test", keyAuth, ca.leaf(t, "soon.test", 10*24*time.Hour))
	expired := checkResponder(t, "old.test", keyAuth, ca.leaf(t, "old.test", -time.Minute))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	at := func(name string, port int) string { return name + ":" + strconv.Itoa(port) }
	base := []string{"check", "--address", "127.0.0.1", "--timeout", "5s"}
	trusted := append(slices.Clone(base), "--ca-root", ca.pemFile)

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr string
	}{
		{
			name: "healthy", args: append(slices.Clone(trusted), "--monitor", at("good.test", good)), code: exitOK,
			stdout: []string{"HANDSHAKE", "CERTIFICATE", "EXPIRY", "ok: TLS 1.3", "ok: good.test; issuer CN=check cmd test root", "ok: " + time.Now().Add(60*24*time.Hour).UTC().Format(time.DateOnly), "status: OK (1 ok,"},
		},
		{
			name: "healthy, outside the window", args: append(slices.Clone(trusted), "--expiring-within", "30d", at("good.test", good)), code: exitOK,
			stdout: []string{"good.test: OK: every address serves a valid certificate for longer than 30d"},
		},
		{
			name: "expiring within the window", args: append(slices.Clone(trusted), "--expiring-within", "30d", at("soon.test", soon)), code: exitFailure,
			stdout: []string{"ok: soon.test;", "EXPIRING: ", "fix 127.0.0.1:", "renew now", "status: EXPIRING (0 ok, 1 expiring"},
			stderr: "1 of 1 names have a certificate expiring within 30d",
		},
		{
			name: "expired", args: append(slices.Clone(trusted), "--monitor", at("old.test", expired)), code: exitMonitorCertificate,
			stdout: []string{"FAIL: the certificate has expired", "EXPIRED: ", "renew it and reload the server; to renew: tlsalpn renew", "status: CERTIFICATE"},
			stderr: "1 of 1 names serve a certificate clients refuse",
		},
		{
			name: "not the name", args: append(slices.Clone(trusted), "--monitor", at("other.test", good)), code: exitMonitorCertificate,
			stdout: []string{"FAIL: the certificate does not cover other.test", "ok: "},
		},
		{
			name: "untrusted root", args: append(slices.Clone(base), "--monitor", at("good.test", good)), code: exitMonitorCertificate,
			stdout: []string{"FAIL: the chain does not lead to a trusted root", "for a private CA, trust its root with --ca-root"},
		},
		{
			name: "unreachable", args: append(slices.Clone(trusted), "--expiring-within", "30d", at("gone.test", closed)), code: exitMonitorUnreachable,
			stdout: []string{"FAIL: connect failed: Connection refused", "unknown: no certificate seen", "nothing listens on port", "tlsalpn serve, or tlsalpn issue", "status: UNREACHABLE"},
			stderr: "1 of 1 names are unreachable",
		},
		{
			name: "unreachable beats expiring, both shown", args: append(slices.Clone(trusted), "--expiring-within", "30d", at("soon.test", soon), at("gone.test", closed), at("good.test", good)), code: exitMonitorUnreachable,
			stdout: []string{"soon.test: EXPIRING", "gone.test: UNREACHABLE", "good.test: OK", "status: UNREACHABLE (1 ok, 1 expiring, 0 certificate, 1 unreachable, of 3)"},
		},
		{
			name: "certificate beats unreachable", args: append(slices.Clone(trusted), "--monitor", at("gone.test", closed), at("other.test", good)), code: exitMonitorCertificate,
			stdout: []string{"status: CERTIFICATE (0 ok, 0 expiring, 1 certificate, 1 unreachable, of 2)"},
		},
		{
			name: "no acme-tls/1 probe: a key authorization is a usage error", args: append(slices.Clone(trusted), "--monitor", "--key-authorization", keyAuth, at("good.test", good)), code: exitUsage,
			stderr: "--monitor makes no acme-tls/1 handshake",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, context.Background(), tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr: %s", code, tt.code, stdout, stderr)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			if strings.Contains(stdout, "acme-tls/1") || strings.Contains(stdout, "key-authorization") {
				t.Errorf("monitoring mentions the CA's check:\n%s", stdout)
			}
			if tt.stderr != "" && !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr %q lacks %q", stderr, tt.stderr)
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		code, stdout, _ := runCLI(t, context.Background(), append(slices.Clone(trusted), "--json", "--expiring-within", "30d", at("soon.test", soon), at("gone.test", closed))...)
		if code != exitMonitorUnreachable {
			t.Errorf("exit %d, want %d", code, exitMonitorUnreachable)
		}
		var out struct {
			Status  string `json:"status"`
			Reports []struct {
				Name      string `json:"name"`
				Status    string `json:"status"`
				Addresses []struct {
					HandshakeOK   bool   `json:"handshake_ok"`
					CertificateOK bool   `json:"certificate_ok"`
					Expiry        string `json:"expiry"`
					Certificate   *struct {
						DaysLeft int `json:"days_left"`
					} `json:"certificate"`
				} `json:"addresses"`
			} `json:"reports"`
		}
		if err := json.Unmarshal([]byte(stdout), &out); err != nil {
			t.Fatalf("%v:\n%s", err, stdout)
		}
		if out.Status != "unreachable" || len(out.Reports) != 2 {
			t.Fatalf("status %q, %d reports:\n%s", out.Status, len(out.Reports), stdout)
		}
		s, g := out.Reports[0], out.Reports[1]
		if s.Status != "expiring" || len(s.Addresses) != 1 || !s.Addresses[0].HandshakeOK || !s.Addresses[0].CertificateOK ||
			s.Addresses[0].Expiry != "expiring" || s.Addresses[0].Certificate == nil || s.Addresses[0].Certificate.DaysLeft != 9 {
			t.Errorf("soon.test: %+v", s)
		}
		if g.Status != "unreachable" || len(g.Addresses) != 1 || g.Addresses[0].HandshakeOK || g.Addresses[0].Expiry != "unknown" || g.Addresses[0].Certificate != nil {
			t.Errorf("gone.test: %+v", g)
		}
	})
}

// TestCheckHelp: --help teaches both modes with examples and every exit
// code of each.
func TestCheckHelp(t *testing.T) {
	code, out, _ := runCLI(t, context.Background(), "check", "--help")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"Usage: tlsalpn check", "--monitor", "tlsalpn check --expiring-within 30d example.com",
		"Exit codes of the CA's check", "Exit codes of --monitor", "\n  3  ", "\n  4  ", "Flags:"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
}
