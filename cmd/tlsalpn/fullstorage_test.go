package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestRenewResumesAfterStorageFilledUp: the storage disk fills up between
// the CA issuing the certificate and tlsalpn storing it. That run fails,
// loudly; once space is freed, the next run stores the very certificate
// the CA issued instead of ordering another one.
func TestRenewResumesAfterStorageFilledUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small file system to fill up")
	}
	dir := t.TempDir()
	store, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	if err := os.Mkdir(store, 0o700); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", store).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, b)
	}
	t.Cleanup(func() { exec.Command("umount", store).Run() })
	filler := filepath.Join(store, "filler")
	var fillOnIssue atomic.Bool
	counter := issueCounter{onIssue: func() {
		if !fillOnIssue.Load() {
			return
		}
		f, err := os.Create(filler)
		if err != nil {
			return
		}
		defer f.Close()
		for {
			if _, err := f.Write(make([]byte, 4096)); err != nil {
				return // ENOSPC: the disk is full
			}
		}
	}}
	ca := startCountingCA(t, &counter)
	ctx := context.Background()
	if code, _, stderr := runCLI(t, ctx, ca.issueArgs(store, out, "full.example.com")...); code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, stderr)
	}

	fillOnIssue.Store(true)
	code, stdout, stderr := runCLI(t, ctx, "renew", "--force", "--storage", store)
	t.Logf("renew into a disk that filled up: exit %d\n%s%s", code, stdout, stderr)
	if code != exitFailure || !strings.Contains(stdout+stderr, "no space left on device") {
		t.Fatalf("renew with the disk full after issuance: exit %d; want 1 and the reason", code)
	}
	fillOnIssue.Store(false)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, ctx, "renew", "--force", "--storage", store)
	if code != exitOK || !strings.Contains(stdout, "renewed") {
		t.Fatalf("renew after space was freed: exit %d\n%s%s", code, stdout, stderr)
	}
	if n := counter.count(); n != 2 {
		t.Errorf("the CA issued %d certificates for one issue and one renewal, want 2: the one issued into a full disk was thrown away", n)
	}
	verifyChain(t, ca, filepath.Join(out, "fullchain.pem"), "full.example.com")
}
