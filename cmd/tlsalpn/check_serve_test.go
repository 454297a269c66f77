package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/deploy"
	"github.com/tlsalpn/tlsalpn/internal/backend"
	"github.com/tlsalpn/tlsalpn/internal/democa"
)

// TestCheckMonitorBehindServe (issue 8, finding 5): monitoring a healthy
// tlsalpn serve in front of nginx, with the command the README gives for
// monitoring, exits 0 and reports the handshake and the expiry; a window
// longer than the certificate's life exits 1 with the expiry verdict, not
// a handshake failure. Serve has no challenge pending, so an acme-tls/1
// probe would fail: monitoring must not make one.
func TestCheckMonitorBehindServe(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	certPEM, keyPEM := backend.SelfSigned(t, "example.com")
	if _, err := deploy.Write(out, deploy.Files{Cert: certPEM, FullChain: certPEM, Key: keyPEM}); err != nil {
		t.Fatal(err)
	}
	ngx := backend.StartNginx(t, filepath.Join(out, "fullchain.pem"), filepath.Join(out, "key.pem"), backend.NginxOptions{})
	gen := ngx.Generation(t)
	_, stderr, stop := startServe(t, "--listen", ca.listen, "--backend", ngx.Addr, "-d", "example.com",
		"--ca", ca.DirectoryURL(), "--ca-root", ca.root, "--email", "ops@example.com", "--agree-tos",
		"--storage", filepath.Join(dir, "store"), "--out", out, "--deploy-hook", ngx.ReloadCommand(), "--profile", "default",
		"--steer", "off")
	waitForPort(t, ca.listen, 10*time.Second)
	waitFor(t, "nginx to serve the CA's certificate through serve", 30*time.Second, func() bool {
		issuer, err := getThrough(ca.listen, "example.com", []string{"http/1.1"})
		return err == nil && strings.Contains(issuer, "Pebble")
	})
	ngx.WaitReloaded(t, gen) // no old worker serves the self-signed certificate any more

	roots, err := ca.IssuerRootsPEM(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rootFile := filepath.Join(dir, "issuer-roots.pem")
	if err := os.WriteFile(rootFile, roots, 0o644); err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(ca.listen, "127.0.0.1:")
	target := "example.com:" + port
	for _, tt := range []struct {
		name   string
		args   []string
		code   int
		stdout []string
	}{
		{"healthy", []string{"--expiring-within", "30d"}, exitOK,
			[]string{"ok: TLS 1.", "ok: example.com; issuer CN=Pebble", " days left", "example.com: OK:", "status: OK (1 ok,"}},
		{"within the window", []string{"--expiring-within", "100d"}, exitFailure,
			[]string{"ok: TLS 1.", "ok: example.com; issuer CN=Pebble", "EXPIRING: ", "example.com: EXPIRING:", "status: EXPIRING"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"check", "--address", "127.0.0.1", "--ca-root", rootFile, "--timeout", "5s"}, tt.args...)
			code, stdout, stderrOut := runCLI(t, context.Background(), append(args, target)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr: %s", code, tt.code, stdout, stderrOut)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
		})
	}
	if code := stop(); code != exitOK {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
}
