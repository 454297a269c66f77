package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/deploy"
	"github.com/tlsalpn/tlsalpn/frontdoor"
	"github.com/tlsalpn/tlsalpn/internal/backend"
	"github.com/tlsalpn/tlsalpn/internal/democa"
)

// servedLeaf returns the serial (hex, as tlsalpn prints it) and issuer
// of the certificate a client gets for name through the front door at
// addr, or "" when the handshake fails.
func servedLeaf(addr, name string) (serial, issuer string) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true, ServerName: name, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return "", ""
	}
	defer c.Close()
	leaf := c.ConnectionState().PeerCertificates[0]
	return leaf.SerialNumber.Text(16), leaf.Issuer.CommonName
}

// startServeNginx runs serve in front of a real nginx for example.com,
// steering off (every connection relayed, so the test does not depend on
// the machine allowing BPF), and waits until clients get the CA's
// certificate through it. It returns the storage, the output directory
// and the serial served.
func startServeNginx(t *testing.T, ca *cliCA, dir string, start func(t *testing.T, args ...string) *syncBuffer) (store, out, serial string, stderr *syncBuffer) {
	t.Helper()
	out, store = filepath.Join(dir, "out"), filepath.Join(dir, "store")
	certPEM, keyPEM := backend.SelfSigned(t, "example.com")
	if _, err := deploy.Write(out, deploy.Files{Cert: certPEM, FullChain: certPEM, Key: keyPEM}); err != nil {
		t.Fatal(err)
	}
	ngx := backend.StartNginx(t, filepath.Join(out, "fullchain.pem"), filepath.Join(out, "key.pem"), backend.NginxOptions{})
	stderr = start(t, "--listen", ca.listen, "--backend", ngx.Addr, "-d", "example.com",
		"--ca", ca.DirectoryURL(), "--ca-root", ca.root, "--email", "ops@example.com", "--agree-tos",
		"--storage", store, "--out", out, "--deploy-hook", ngx.ReloadCommand(), "--profile", "default", "--steer", "off")
	waitFor(t, "nginx to serve the CA's certificate through serve", 30*time.Second, func() bool {
		var issuer string
		serial, issuer = servedLeaf(ca.listen, "example.com")
		return strings.Contains(issuer, "Pebble")
	})
	// The keeper stores the CA's renewal information with the certificate
	// (or, when none came with it, at its look a second later): from its
	// next look on it sleeps for a minute or more, so what happens next is
	// serve noticing a change, or that look.
	waitFor(t, "the keeper to store renewal information and settle", 10*time.Second, func() bool {
		metas, _ := filepath.Glob(filepath.Join(store, "lineages", "example.com", "meta.json"))
		if len(metas) != 1 {
			return false
		}
		data, _ := os.ReadFile(metas[0])
		return strings.Contains(string(data), `"ari"`)
	})
	return store, out, serial, stderr
}

// inProcess runs serve in the test's process.
func inProcess(t *testing.T, args ...string) *syncBuffer {
	_, stderr, _ := startServe(t, args...)
	return stderr
}

// asProcess runs the tlsalpn binary's serve, a process of its own, until
// the test ends, when it gets SIGTERM.
func asProcess(t *testing.T, args ...string) *syncBuffer {
	t.Helper()
	bin := buildBinaries(t)
	stderr := &syncBuffer{}
	cmd := exec.Command(filepath.Join(bin, "tlsalpn"), append([]string{"serve"}, args...)...)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve process: %v\n%s", err, stderr.String())
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("serve process did not stop within 15s of SIGTERM:\n%s", stderr.String())
		}
	})
	return stderr
}

// TestServeProcessSeesRevokeAndRenew: against a tlsalpn serve process of
// its own in front of nginx, "tlsalpn revoke" gets the certificate
// replaced in seconds, and "tlsalpn renew --force" is handed to it and
// prints the new serial; when serve stops, its lease goes with it.
func TestServeProcessSeesRevokeAndRenew(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	// Runs after serve stopped (cleanups run last first).
	t.Cleanup(func() {
		if leases, _ := filepath.Glob(filepath.Join(dir, "store", "serve", "*.json")); len(leases) != 0 {
			t.Errorf("serve stopped, but left its lease: %v", leases)
		}
	})
	store, _, revoked, stderr := startServeNginx(t, ca, dir, asProcess)
	ctx := context.Background()

	if code, stdout, errOut := runCLI(t, ctx, "revoke", "example.com", "--storage", store); code != exitOK {
		t.Fatalf("revoke: exit %d: %s %s", code, stdout, errOut)
	}
	var serial string
	waitFor(t, "serve to replace the revoked certificate", 20*time.Second, func() bool {
		// The CA's: an nginx still reloading may hand out the
		// self-signed certificate it started with.
		var issuer string
		serial, issuer = servedLeaf(ca.listen, "example.com")
		return serial != "" && serial != revoked && strings.Contains(issuer, "Pebble")
	})

	code, stdout, errOut := runCLI(t, ctx, "renew", "--force", "--storage", store, "--timeout", "60s")
	m := regexp.MustCompile(`renewed by tlsalpn serve \(pid (\d+)\) \(forced\): serial ([0-9a-f]+)`).FindStringSubmatch(stdout)
	if code != exitOK || m == nil || m[1] == itoa(os.Getpid()) {
		t.Fatalf("renew --force while a serve process runs: exit %d\nstdout: %s\nstderr: %s\nserve: %s", code, stdout, errOut, stderr.String())
	}
	waitFor(t, "nginx to serve the renewed certificate", 10*time.Second, func() bool {
		s, _ := servedLeaf(ca.listen, "example.com")
		return s == m[2]
	})
	if serial == m[2] {
		t.Errorf("renew printed the serial already served, %s", serial)
	}
	if leases, _ := filepath.Glob(filepath.Join(store, "serve", "*.json")); len(leases) != 1 {
		t.Errorf("serve's lease: %v; want one", leases)
	}
}

// TestServeSeesRevoke: "tlsalpn revoke" while serve runs: within seconds
// serve has obtained a new certificate, deployed it to nginx, and clients
// no longer get the revoked serial.
func TestServeSeesRevoke(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	store, out, revoked, stderr := startServeNginx(t, ca, t.TempDir(), inProcess)

	code, stdout, errOut := runCLI(t, context.Background(), "revoke", "example.com", "--storage", store)
	if code != exitOK || !strings.Contains(stdout, revoked) || !strings.Contains(stdout, "keeps example.com: it obtains and deploys a new certificate within seconds") {
		t.Fatalf("revoke: exit %d: %s %s", code, stdout, errOut)
	}
	start := time.Now()
	var serial string
	waitFor(t, "serve to replace the revoked certificate", 20*time.Second, func() bool {
		var issuer string
		serial, issuer = servedLeaf(ca.listen, "example.com")
		return serial != "" && serial != revoked && strings.Contains(issuer, "Pebble")
	})
	t.Logf("revoked %s; clients got %s after %s", revoked, serial, time.Since(start).Round(time.Millisecond))
	if got := verifyChain(t, ca, filepath.Join(out, "fullchain.pem"), "example.com").SerialNumber.Text(16); got != serial {
		t.Errorf("deployed serial %s, served %s", got, serial)
	}
	_, list, _ := runCLI(t, context.Background(), "list", "--storage", store)
	if strings.Contains(list, "REVOKED") {
		t.Errorf("list still shows a revoked certificate:\n%s", list)
	}
	if !strings.Contains(stderr.String(), "certificate was revoked; obtaining a new one") {
		t.Errorf("serve's log does not say it replaced the revoked certificate:\n%s", stderr.String())
	}
}

// TestServeRenewHandoff: "tlsalpn renew --force" while serve holds the
// port is handed to serve, which renews through its listener; the command
// prints the new serial and exits 0, and nginx serves it. Issuing a name
// serve does not manage says that serve holds the port.
func TestServeRenewHandoff(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	store, out, old, stderr := startServeNginx(t, ca, t.TempDir(), inProcess)

	ctx := context.Background()
	start := time.Now()
	code, stdout, errOut := runCLI(t, ctx, "renew", "--force", "--storage", store, "--timeout", "60s")
	t.Logf("renew --force took %s", time.Since(start).Round(time.Millisecond))
	if code != exitOK {
		t.Fatalf("renew --force while serve runs: exit %d\nstdout: %s\nstderr: %s\nserve: %s", code, stdout, errOut, stderr.String())
	}
	m := regexp.MustCompile(`renewed by tlsalpn serve \(pid \d+\) \(forced\): serial ([0-9a-f]+)`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("renew --force does not say serve renewed it, with the serial:\n%s", stdout)
	}
	t.Logf("renew --force:\n%s", stdout)
	serial := m[1]
	if serial == old {
		t.Fatalf("renew reports the old serial %s", old)
	}
	waitFor(t, "nginx to serve the renewed certificate", 10*time.Second, func() bool {
		s, _ := servedLeaf(ca.listen, "example.com")
		return s == serial
	})
	if got := verifyChain(t, ca, filepath.Join(out, "fullchain.pem"), "example.com").SerialNumber.Text(16); got != serial {
		t.Errorf("deployed serial %s, renew printed %s", got, serial)
	}
	if keys, _ := os.ReadDir(filepath.Join(store, "requests", "renew")); len(keys) != 0 {
		t.Errorf("renewal requests left in storage: %v", keys)
	}

	// A name serve does not manage: issue is told who holds the port.
	code, _, errOut = runCLI(t, ctx, ca.issueArgs(store, filepath.Join(t.TempDir(), "other"), "other.example")...)
	if code != exitFailure || !regexp.MustCompile(`port \d+ is held by tlsalpn serve \(pid \d+\), which does not manage other\.example`).MatchString(errOut) {
		t.Errorf("issue of a name serve does not manage: exit %d: %s", code, errOut)
	}
	t.Logf("issue of a name serve does not manage: %s", errOut)
	// A name it manages, ordered again: issue is pointed at renew --force.
	code, _, errOut = runCLI(t, ctx, append(ca.issueArgs(store, "", "example.com"), "--force")...)
	if code != exitFailure || !regexp.MustCompile(`port \d+ is held by tlsalpn serve \(pid \d+\), which manages example\.com already`).MatchString(errOut) {
		t.Errorf("issue of a name serve manages: exit %d: %s", code, errOut)
	}
	// What serve would undo at once is refused, saying where to change it.
	for _, args := range [][]string{
		{"delete", "example.com", "--storage", store},
		{"reconfigure", "example.com", "--deploy-hook", "true", "--storage", store},
	} {
		code, _, errOut = runCLI(t, ctx, args...)
		if code != exitUsage || !strings.Contains(errOut, "keeps example.com as its config file says") {
			t.Errorf("%s of a certificate serve keeps: exit %d: %s", args[0], code, errOut)
		}
	}
}

func TestServeLeaseLive(t *testing.T) {
	host, _ := os.Hostname()
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name string
		l    serveLease
		want bool
	}{
		{"this host, running, refreshed", serveLease{Host: host, PID: os.Getpid(), Refreshed: now}, true},
		{"this host, process gone", serveLease{Host: host, PID: exited.Process.Pid, Refreshed: now}, false},
		{"this host, running, not refreshed (pid reused)", serveLease{Host: host, PID: os.Getpid(), Refreshed: now.Add(-leaseStale - time.Second)}, false},
		{"this host, no pid", serveLease{Host: host, Refreshed: now}, false},
		{"another host, refreshed", serveLease{Host: "node-b.invalid", PID: 1, Refreshed: now}, true},
		{"another host, not refreshed", serveLease{Host: "node-b.invalid", PID: 1, Refreshed: now.Add(-leaseStale - time.Second)}, false},
	}
	for _, tc := range tests {
		if got := tc.l.Live(now); got != tc.want {
			t.Errorf("%s: live = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSamePort(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{":443", "", true},
		{":443", "127.0.0.1:443", true},
		{"0.0.0.0:443", "192.0.2.1:443", true},
		{"[::]:443", "127.0.0.1:443", true},
		{"127.0.0.1:443", "127.0.0.2:443", false},
		{"127.0.0.1:443", "127.0.0.1:8443", false},
		{"", ":8443", false},
		{"bad", ":443", false},
	}
	for _, tc := range tests {
		if got := samePort(tc.a, tc.b); got != tc.want {
			t.Errorf("samePort(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestCertIDOfKey(t *testing.T) {
	tests := []struct {
		key    string
		want   string
		wantOK bool
	}{
		{"lineages/example.com/meta.json", "example.com", true},
		// A version is written before the record switches to it: the
		// record's change is the one to act on.
		{"lineages/example.com/1f2e/cert.pem", "", false},
		{"lineages/example.com", "", false},
		{"certificates/ca/example.com/meta.json", "", false},
		{"accounts/ca/ops@example.com/account.json", "", false},
		{"requests/renew/x.json", "", false},
	}
	for _, tc := range tests {
		got, ok := frontdoor.CertIDOfKey(tc.key)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("frontdoor.CertIDOfKey(%q) = %q, %v; want %q, %v", tc.key, got, ok, tc.want, tc.wantOK)
		}
	}
}

// TestRenewStaleServeLease: a lease left by a serve that is gone (its
// process exited) hands nothing to anyone: renew renews here, as without
// serve.
func TestRenewStaleServeLease(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	ctx := context.Background()
	if code, _, errOut := runCLI(t, ctx, ca.issueArgs(store, filepath.Join(dir, "out"), "example.com")...); code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, errOut)
	}
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	lease, _ := json.Marshal(serveLease{Host: host, PID: exited.Process.Pid, Listen: ca.listen, Refreshed: time.Now(),
		Certificates: []leaseCert{{ID: "example.com", Names: []string{"example.com"}}}})
	if err := os.MkdirAll(filepath.Join(store, "serve"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(store, "serve", host+".json"), lease, 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, errOut := runCLI(t, ctx, "renew", "--force", "--storage", store, "--timeout", "30s")
	if code != exitOK || !strings.Contains(stdout, "renewed (forced): serial") || strings.Contains(stdout, "handing") {
		t.Errorf("renew --force with a stale serve lease: exit %d\nstdout: %s\nstderr: %s", code, stdout, errOut)
	}
}
