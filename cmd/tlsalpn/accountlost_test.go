package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsalpn/tlsalpn/internal/democa"
)

// TestRenewAfterCALostAccount: when the CA no longer knows the stored
// account (accountDoesNotExist, as from a CA that lost its database), renew
// registers it again and renews, instead of failing every run for ever.
func TestRenewAfterCALostAccount(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	store, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	ctx := context.Background()
	if code, _, stderr := runCLI(t, ctx, ca.issueArgs(store, out, "lost.example.com")...); code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, stderr)
	}
	files, _ := filepath.Glob(filepath.Join(store, "accounts", "*", "*", "account.json"))
	if len(files) != 1 {
		t.Fatalf("account files: %q, want one", files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	lost := rec["location"].(string) + "-lost"
	rec["location"] = lost
	data, _ = json.Marshal(rec)
	if err := os.WriteFile(files[0], data, 0o600); err != nil {
		t.Fatal(err)
	}

	for i := range 2 { // the second run uses the account registered again
		code, stdout, stderr := runCLI(t, ctx, "renew", "--force", "--storage", store)
		if code != exitOK || !strings.Contains(stdout, "renewed") {
			t.Fatalf("renew %d with an account the CA lost: exit %d\nstdout: %s\nstderr: %s", i+1, code, stdout, stderr)
		}
	}
	data, _ = os.ReadFile(files[0])
	if bytes.Contains(data, []byte(lost)) {
		t.Errorf("account.json still names the lost account:\n%s", data)
	}
	verifyChain(t, ca, filepath.Join(out, "fullchain.pem"), "lost.example.com")
}
