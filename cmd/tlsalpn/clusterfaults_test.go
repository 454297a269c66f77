package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
)

// TestServeWrongKey: a serve node started on a cluster's storage with an encryption key that
// is not the one the cluster's data was written with refuses to start (exit 1, saying so),
// binds nothing and writes nothing to etcd: no node registration, no challenge, no record.
func TestServeWrongKey(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	c := etcdtest.Start(t, 1)
	cli := c.Client(t)
	dir := t.TempDir()
	key := writeKey(t, dir, "storage.key", false)
	wrong := writeKey(t, dir, "wrong.key", true)
	url := c.URL("wrongkey")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	args := append(ca.issueArgs(url, filepath.Join(dir, "out"), "example.com"), "--encryption-key", key)
	if code, _, stderr := runCLI(t, ctx, args...); code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, stderr)
	}
	before := etcdSnapshot(t, cli)
	listen := "127.0.0.1:" + itoa(freePort(t))
	// Bounded: a serve that took the key would run until sctx ends.
	sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
	defer scancel()
	code, stdout, stderr := runCLI(t, sctx, "serve", "--listen", listen, "--backend", "127.0.0.1:"+itoa(freePort(t)), "-d", "example.com",
		"--ca", ca.DirectoryURL(), "--ca-root", ca.root, "--email", "ops@example.com", "--agree-tos",
		"--out", filepath.Join(dir, "serve-out"), "--storage", url, "--encryption-key", wrong, "--node-id", "n1", "--node-address", listen)
	t.Logf("serve with the wrong key: exit %d, stderr:\n%s", code, stderr)
	if code != exitFailure || !strings.Contains(stderr, "this is not the key the cluster's data was written with; nothing was written") {
		t.Errorf("serve with the wrong key: exit %d\nstdout: %s\nstderr: %s\nwant exit %d saying it is not the cluster's key", code, stdout, stderr, exitFailure)
	}
	if sctx.Err() != nil {
		t.Fatal("serve with the wrong key ran until the test's deadline")
	}
	after := etcdSnapshot(t, cli)
	if !equalMaps(before, after) {
		for k := range after {
			if _, ok := before[k]; !ok {
				t.Errorf("written to etcd by the refused serve: %s", k)
			}
		}
		t.Errorf("etcd changed: %d keys before, %d after", len(before), len(after))
	}
}
