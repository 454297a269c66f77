package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/cluster"
	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage/etcd"
)

// TestListRenewedBy: on a cluster's storage, list names per certificate the live node that
// renews it (the Owner among the nodes that keep it), "any node" when no live node keeps it,
// in the table and in --json; on a directory it says nothing of nodes.
func TestListRenewedBy(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	c := etcdtest.Start(t, 1)
	dir := t.TempDir()
	key := writeKey(t, dir, "storage.key", false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := c.URL("list")
	certs := []string{"one.example", "both.example", "none.example"}
	for _, name := range certs {
		args := append(ca.issueArgs(url, filepath.Join(dir, name), name), "--encryption-key", key)
		if code, _, stderr := runCLI(t, ctx, args...); code != exitOK {
			t.Fatalf("issue %s: exit %d: %s", name, code, stderr)
		}
	}
	rawKey, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	store, err := etcd.Open(ctx, etcd.Config{Endpoints: c.Endpoints(), Prefix: "list", EncryptionKey: rawKey})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// Two live nodes: n1 keeps one.example and both.example, n2 both.example; none keeps
	// none.example.
	keeps := map[string][]string{"n1": {"one.example", "both.example"}, "n2": {"both.example"}}
	var infos []cluster.Info
	for _, id := range []string{"n1", "n2"} {
		n, err := cluster.Start(ctx, cluster.Config{Storage: store, Info: cluster.Info{ID: id, Addr: "127.0.0.1:" + itoa(freePort(t))}, Local: responder.New()})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Stop()
		if err := n.SetKeeps(ctx, keeps[id]); err != nil {
			t.Fatal(err)
		}
		infos = append(infos, cluster.Info{ID: id, Keeps: keeps[id]})
	}
	both := cluster.Owner("both.example", []string{"n1", "n2"})
	want := map[string]string{"one.example": "n1", "both.example": both, "none.example": "any node"}

	code, stdout, stderr := runCLI(t, ctx, "list", "--json", "--storage", url, "--encryption-key", key)
	var entries []listEntry
	if code != exitOK || json.Unmarshal([]byte(stdout), &entries) != nil || len(entries) != len(certs) {
		t.Fatalf("list --json: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, le := range entries {
		if le.RenewedBy != want[le.CertName] {
			t.Errorf("list --json: %s renewed_by %q, want %q", le.CertName, le.RenewedBy, want[le.CertName])
		}
		if got := cmpOr(cluster.Renewer(le.CertName, infos), "any node"); got != want[le.CertName] {
			t.Errorf("cluster.Renewer(%s) = %q, want %q", le.CertName, got, want[le.CertName])
		}
	}
	code, stdout, stderr = runCLI(t, ctx, "list", "--storage", url, "--encryption-key", key)
	if code != exitOK || !strings.Contains(stdout, "RENEWED BY") {
		t.Fatalf("list: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, l := range lines(stdout) {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if w, ok := want[f[0]]; ok && !regexp.MustCompile(`\sok\s+`+regexp.QuoteMeta(w)+`$`).MatchString(l) {
			t.Errorf("list: row of %s does not end in state ok and %q: %q", f[0], w, l)
		}
	}

	// On a directory: no column, no field.
	fsDir := filepath.Join(dir, "host")
	if code, _, stderr := runCLI(t, ctx, ca.issueArgs(fsDir, filepath.Join(dir, "fsout"), "one.example")...); code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, stderr)
	}
	code, stdout, _ = runCLI(t, ctx, "list", "--storage", fsDir)
	if code != exitOK || strings.Contains(stdout, "RENEWED BY") {
		t.Errorf("list of a directory: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = runCLI(t, ctx, "list", "--json", "--storage", fsDir)
	if code != exitOK || strings.Contains(stdout, "renewed_by") {
		t.Errorf("list --json of a directory: exit %d\n%s", code, stdout)
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
