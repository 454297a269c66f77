package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsalpn/tlsalpn/internal/democa"
)

// TestListExpiringWithin: list --expiring-within names, one line each, the
// stored certificates that expire within the threshold and exits 1 for
// them, as check --expiring-within does, so that cron mails it and a
// Nagios check warns; a threshold no certificate is inside exits 0.
func TestListExpiringWithin(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage := filepath.Join(dir, "store")
	ctx := context.Background()
	// A 6-day certificate and a 90-day one.
	for _, c := range []struct{ profile, name string }{{"shortlived", "short.example"}, {"default", "long.example"}} {
		if code, _, stderr := runCLI(t, ctx, ca.issueArgsProfile(c.profile, storage, filepath.Join(dir, c.name), c.name)...); code != exitOK {
			t.Fatalf("issue %s: exit %d: %s", c.name, code, stderr)
		}
	}
	for _, tc := range []struct {
		within     string
		code       int
		stdout     []string
		notStdout  []string
		stderrWant string
	}{
		{"14d", exitFailure, []string{"short.example: expires ", "names short.example"}, []string{"long.example"}, "1 of 2 certificates expire within 14d"},
		{"2400h", exitFailure, []string{"short.example: expires ", "long.example: expires "}, nil, "2 of 2 certificates expire within 2400h"},
		{"5d", exitOK, []string{"OK: none of 2 certificates expires within 5d"}, []string{"short.example", "long.example"}, ""},
		{"14x", exitUsage, nil, nil, "--expiring-within"},
		{"0d", exitUsage, nil, nil, "not positive"},
	} {
		t.Run(tc.within, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, ctx, "list", "--storage", storage, "--expiring-within", tc.within)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s %s", code, tc.code, stdout, stderr)
			}
			for _, w := range tc.stdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q: %s", w, stdout)
				}
			}
			for _, w := range tc.notStdout {
				if strings.Contains(stdout, w) {
					t.Errorf("stdout has %q: %s", w, stdout)
				}
			}
			if !strings.Contains(stderr, tc.stderrWant) {
				t.Errorf("stderr lacks %q: %s", tc.stderrWant, stderr)
			}
		})
	}
	// --json lists the same certificates for scripts.
	code, stdout, _ := runCLI(t, ctx, "list", "--json", "--storage", storage, "--expiring-within", "14d")
	var entries []listEntry
	if code != exitFailure || json.Unmarshal([]byte(stdout), &entries) != nil || len(entries) != 1 || entries[0].CertName != "short.example" {
		t.Errorf("list --json --expiring-within 14d: exit %d: %s", code, stdout)
	}
}

// TestListExpiringWithinDeployFailed: a certificate stored fresh but not
// deployed is reported too: the server still has an older one, whose
// expiry the stored one hides.
func TestListExpiringWithinDeployFailed(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage := filepath.Join(dir, "store")
	ctx := context.Background()
	args := append(ca.issueArgs(storage, filepath.Join(dir, "out"), "hook.example"), "--deploy-hook", "exit 3")
	if code, _, stderr := runCLI(t, ctx, args...); code != exitFailure {
		t.Fatalf("issue with a failing hook: exit %d, want 1: %s", code, stderr)
	}
	code, stdout, stderr := runCLI(t, ctx, "list", "--storage", storage, "--expiring-within", "14d")
	if code != exitFailure || !strings.Contains(stdout, "hook.example: DEPLOY FAILED: serial ") || !strings.Contains(stderr, "1 are not deployed") {
		t.Errorf("exit %d: %s %s", code, stdout, stderr)
	}
}
