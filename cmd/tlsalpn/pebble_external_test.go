package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIssueAgainstStockPebble runs the tlsalpn binary against the pebble
// binary pinned in go.mod, started as Pebble's README starts it: its own
// default config file, -strict, and the random 0–5 s VA sleeps on. Only
// the DNS server (pebble-challtestsrv, pointing every name at 127.0.0.1)
// is ours, as in any Pebble setup, and the config's fixed ports (14000,
// 15000 on every address, validation on 5001) become free loopback ports,
// so that the test never collides with another run or a real service.
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
	acmeAddr, mgmtAddr := "127.0.0.1:"+itoa(freePort(t)), "127.0.0.1:"+itoa(freePort(t))
	tlsPort := itoa(freePort(t))
	config := stockPebbleConfig(t, pebbleDir, map[string]any{"listenAddress": acmeAddr, "managementListenAddress": mgmtAddr, "tlsPort": json.Number(tlsPort)})
	start(pebbleDir, "pebble", "-config", config, "-strict", "-dnsserver", "127.0.0.1:"+dnsPort)
	waitForPort(t, acmeAddr, 20*time.Second)

	dir := t.TempDir()
	began := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "tlsalpn"), "issue", "-d", "stock-pebble.example.com",
		"--ca", "https://"+acmeAddr+"/dir", "--ca-root", filepath.Join(pebbleDir, "test/certs/pebble.minica.pem"),
		"--agree-tos", "--email", "ops@example.com", "--listen", "127.0.0.1:"+tlsPort, "--validation-port", tlsPort,
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
	resp, err := hc.Get("https://" + mgmtAddr + "/roots/0")
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

// stockPebbleConfig writes Pebble's own test/config/pebble-config.json
// with the "pebble" settings in set replaced, and returns its path.
func stockPebbleConfig(t *testing.T, pebbleDir string, set map[string]any) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(pebbleDir, "test/config/pebble-config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	for k, v := range set {
		if _, ok := cfg["pebble"][k]; !ok {
			t.Fatalf("Pebble's config has no %q", k)
		}
		cfg["pebble"][k] = v
	}
	out, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "pebble-config.json")
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
