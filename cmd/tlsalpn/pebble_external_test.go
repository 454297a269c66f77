package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIssueAgainstStockPebble runs the tlsalpn binary against the pebble
// binary pinned in go.mod, started exactly as Pebble's README starts it:
// its own default config file, -strict, and the random 0–5 s VA sleeps on.
// Only the DNS server (pebble-challtestsrv, pointing every name at
// 127.0.0.1) is ours, as in any Pebble setup. Pebble's default config
// binds the fixed ports 14000, 15000 and validates on 5001.
func TestIssueAgainstStockPebble(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs binaries")
	}
	bin := buildBinaries(t)
	modDir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/letsencrypt/pebble/v2").Output()
	if err != nil {
		t.Fatal(err)
	}
	pebbleDir := strings.TrimSpace(string(modDir))
	dnsPort := itoa(freePort(t))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := func(dir, name string, args ...string) *bytes.Buffer {
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=", "PEBBLE_WFE_NONCEREJECT=")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("%s output:\n%s", name, out.String())
			}
		})
		return &out
	}
	start(pebbleDir, "pebble-challtestsrv", "-dnsserver", "127.0.0.1:"+dnsPort, "-defaultIPv4", "127.0.0.1",
		"-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-management", "127.0.0.1:"+itoa(freePort(t)))
	waitForPort(t, "127.0.0.1:"+dnsPort, 20*time.Second)
	start(pebbleDir, "pebble", "-config", "test/config/pebble-config.json", "-strict", "-dnsserver", "127.0.0.1:"+dnsPort)
	waitForPort(t, "127.0.0.1:14000", 20*time.Second)

	dir := t.TempDir()
	began := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "tlsalpn"), "issue", "-d", "stock-pebble.example.com",
		"--ca", "https://127.0.0.1:14000/dir", "--ca-root", filepath.Join(pebbleDir, "test/certs/pebble.minica.pem"),
		"--agree-tos", "--email", "ops@example.com", "--listen", "127.0.0.1:5001", "--validation-port", "5001",
		"--storage", filepath.Join(dir, "store"), "--out", filepath.Join(dir, "out"))
	out, err := cmd.CombinedOutput()
	took := time.Since(began)
	if err != nil {
		t.Fatalf("tlsalpn issue: %v\n%s", err, out)
	}
	t.Logf("issued against stock Pebble in %s:\n%s", took.Round(time.Millisecond), out)
	if took > 60*time.Second {
		t.Errorf("took %s, acceptance is under 60 s", took)
	}

	// The chain must verify against Pebble's issuing root, fetched from its
	// management interface.
	hc, err := httpClient(filepath.Join(pebbleDir, "test/certs/pebble.minica.pem"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get("https://127.0.0.1:15000/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("fetching Pebble's root: %v %s", err, resp.Status)
	}
	verifyAgainst(t, rootPEM, filepath.Join(dir, "out", "fullchain.pem"), "stock-pebble.example.com")
}
