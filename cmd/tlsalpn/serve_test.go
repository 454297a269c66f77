package main

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/syncbuf"
)

// syncBuffer is a command's output written beside the test that reads it.
type syncBuffer = syncbuf.Buffer

// startServe runs "tlsalpn serve" in-process until the test ends.
func startServe(t *testing.T, args ...string) (stdout, stderr *syncBuffer, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	e := &env{stdout: stdout, stderr: stderr, getenv: func(string) string { return "" }}
	done := make(chan int, 1)
	go func() { done <- run(ctx, e, append([]string{"serve"}, args...)) }()
	var once sync.Once
	code := -1
	stop = func() int {
		once.Do(func() { cancel(); code = <-done })
		return code
	}
	t.Cleanup(func() { stop() })
	return stdout, stderr, stop
}

// echoTLSBackend is a stand-in for nginx in tests that only need bytes to
// pass: a TLS server with its own certificate that echoes.
func echoTLSBackend(t *testing.T, name string) string {
	t.Helper()
	id, _ := challenge.ParseIdentifier(name)
	cert, err := challenge.Build(id, "backend.cert")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}})
				io.Copy(tc, tc)
			}()
		}
	}()
	return ln.Addr().String()
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServeFlagsModeObtainsAndProxies(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	backend := echoTLSBackend(t, "backend.example")
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	stdout, stderr, stop := startServe(t, "--listen", ca.listen, "--backend", backend, "-d", "example.com",
		"--ca", ca.DirectoryURL(), "--ca-root", ca.root, "--email", "ops@example.com", "--agree-tos",
		"--storage", filepath.Join(dir, "store"), "--out", out, "--profile", "default")
	waitFor(t, "serve to listen", 10*time.Second, func() bool { return strings.Contains(stdout.String(), "listening on") })
	waitFor(t, "the certificate to be deployed", 20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(out, "fullchain.pem"))
		return err == nil
	})
	verifyChain(t, ca, filepath.Join(out, "fullchain.pem"), "example.com")

	// A normal client goes through to the backend, untouched.
	c, err := tls.Dial("tcp", ca.listen, &tls.Config{InsecureSkipVerify: true, ServerName: "example.com", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ConnectionState().PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != "backend.example" {
		t.Errorf("client saw %v, want the backend's certificate", got)
	}
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Errorf("echo through the front door: %q %v", buf, err)
	}
	c.Close()
	if code := stop(); code != exitOK {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
}

func TestServeCheckConfig(t *testing.T) {
	for _, ex := range []string{"example-nginx.yaml", "example-haproxy.yaml"} {
		code, stdout, stderr := runCLI(t, context.Background(), "serve", "--check-config", filepath.Join("..", "..", "config", ex))
		if code != exitOK || !strings.Contains(stdout, "OK") {
			t.Errorf("%s: exit %d: %s %s", ex, code, stdout, stderr)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("lisen: \":443\"\nroutes:\n  - names: [\"*\"]\n    backend: 127.0.0.1:8443\n"), 0o644)
	code, _, stderr := runCLI(t, context.Background(), "serve", "--check-config", bad)
	if code != exitUsage || !strings.Contains(stderr, `did you mean "listen"`) || !strings.Contains(stderr, "bad.yaml:1:1") {
		t.Errorf("bad config: exit %d: %s", code, stderr)
	}
}
