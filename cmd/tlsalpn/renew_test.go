package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsalpn/tlsalpn/internal/democa"
)

// TestRenewRedeploysFailedDeployment: a certificate issued but not
// deployed (the hook failed) is deployed by the next renew, which says so,
// and left alone by the one after.
func TestRenewRedeploysFailedDeployment(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	flag, marker := filepath.Join(dir, "broken"), filepath.Join(dir, "hook-ran")
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	hook := `if [ -e '` + flag + `' ]; then echo 'reload refused' >&2; exit 1; fi; echo ok >> '` + marker + `'`
	ctx := context.Background()
	code, _, stderr := runCLI(t, ctx, append(ca.issueArgs(storage, out, "example.com"), "--deploy-hook", hook)...)
	if code != exitFailure || !strings.Contains(stderr, "reload refused") {
		t.Fatalf("issue with a failing hook: exit %d: %s", code, stderr)
	}
	// list says the deployment failed, for people and for scripts.
	code, stdout, _ := runCLI(t, ctx, "list", "--storage", storage)
	if code != exitOK || !strings.Contains(stdout, "its deployment failed (tlsalpn renew retries it): ") || !strings.Contains(stdout, "reload refused") {
		t.Errorf("list after a failed deployment: exit %d:\n%s", code, stdout)
	}
	code, stdout, _ = runCLI(t, ctx, "list", "--json", "--storage", storage)
	if code != exitOK || !strings.Contains(stdout, `"deploy_error": "`) {
		t.Errorf("list --json after a failed deployment: exit %d:\n%s", code, stdout)
	}
	os.Remove(flag)

	tests := []struct {
		want string // in stdout
		runs int    // hook runs after
	}{
		{"deployed (previous attempt had failed); not due", 1},
		{"not due: renews around", 1},
	}
	for _, tt := range tests {
		code, stdout, stderr := runCLI(t, ctx, "renew", "--storage", storage)
		if code != exitOK || !strings.Contains(stdout, tt.want) {
			t.Fatalf("renew: exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, tt.want)
		}
		if runs, _ := os.ReadFile(marker); strings.Count(string(runs), "ok") != tt.runs {
			t.Errorf("after renew printed %q, the hook ran %d times; want %d", tt.want, strings.Count(string(runs), "ok"), tt.runs)
		}
	}
	verifyChain(t, ca, filepath.Join(out, "fullchain.pem"), "example.com")
	if _, stdout, _ := runCLI(t, ctx, "list", "--storage", storage); strings.Contains(stdout, "deployment failed") {
		t.Errorf("list still reports a failed deployment after it was redeployed:\n%s", stdout)
	}
}
