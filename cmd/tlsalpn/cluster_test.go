package main

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/cluster"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage/etcd"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

func TestServeNodeFlags(t *testing.T) {
	t.Run("on a directory: usage error, nothing written", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "store")
		// Bounded: if the flags were taken, serve would run.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		code, _, stderr := runCLI(t, ctx, "serve", "--storage", dir, "--listen", "127.0.0.1:"+itoa(freePort(t)), "--backend", "127.0.0.1:9",
			"-d", "a.example", "--email", "ops@example.com", "--agree-tos", "--ca", "https://127.0.0.1:1/dir", "--node-id", "n1")
		if code != exitUsage || !strings.Contains(stderr, "--node-id and --node-address are for cluster mode") {
			t.Fatalf("exit %d, stderr %q; want %d and the reason", code, stderr, exitUsage)
		}
		if files := treeFiles(t, dir); files != nil {
			t.Errorf("storage written on a usage error: %v", files)
		}
	})
	tests := []struct {
		name, id, addr, storage string
		want                    string // "" = accepted
	}{
		{"none", "", "", "/var/lib/tlsalpn", ""},
		{"id on etcd", "node-1", "", "etcd://127.0.0.1:2379/tlsalpn", ""},
		{"address on etcd", "", "10.0.0.1:443", "etcd://127.0.0.1:2379/tlsalpn", ""},
		{"address on a directory", "", "10.0.0.1:443", "/var/lib/tlsalpn", "are for cluster mode"},
		{"bad id", "node/1", "", "etcd://127.0.0.1:2379/tlsalpn", "--node-id"},
		{"address without port", "", "10.0.0.1", "etcd://127.0.0.1:2379/tlsalpn", "want HOST:PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkNodeFlags(&serveFlags{nodeID: tt.id, nodeAddress: tt.addr}, tt.storage)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("err = %v, want one saying %q", err, tt.want)
			}
		})
	}
}

// TestClusterCommands: on a cluster's storage, list shows the live nodes, and issue and renew
// publish through them while any is live, binding nothing.
func TestClusterCommands(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := etcd.Open(ctx, etcd.Config{Endpoints: c.Endpoints(), Prefix: "cmd-test", EncryptionKey: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	logger := slog.New(slog.DiscardHandler)

	is := &manager.Pool{}
	if used, err := useCluster(ctx, store, is, logger); used || err != nil || is.Publisher != nil {
		t.Fatalf("no node live: useCluster = %v, %v; want the command to answer the CA itself", used, err)
	}
	var out bytes.Buffer
	if err := printNodes(ctx, &out, store); err != nil || !strings.Contains(out.String(), "no live cluster node") {
		t.Fatalf("no node: %q, %v", out.String(), err)
	}

	nctx, stop := context.WithCancel(ctx)
	defer stop()
	closed := "127.0.0.1:" + itoa(freePort(t)) // the node's address answers nothing
	node, err := cluster.Start(nctx, cluster.Config{Storage: store, Info: cluster.Info{ID: "n1", Addr: closed, Version: "9.9"}, Local: responder.New()})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Stop()
	if err := node.SetKeeps(ctx, []string{"a.example", "b.example"}); err != nil {
		t.Fatal(err)
	}

	out.Reset()
	if err := printNodes(ctx, &out, store); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "NODE") || !strings.Contains(s, "n1") || !strings.Contains(s, closed) || !strings.Contains(s, "9.9") || !strings.Contains(s, "2 certificates") {
		t.Fatalf("nodes listed as %q", s)
	}
	is = &manager.Pool{Preflight: newIssuers(store, logger, nil).Preflight}
	if used, err := useCluster(ctx, store, is, logger); !used || err != nil {
		t.Fatalf("a node live: useCluster = %v, %v", used, err)
	}
	if _, ok := is.Publisher.(*cluster.Publisher); !ok || is.Preflight != nil {
		t.Fatalf("pool publishes through %T with preflight %v; want the cluster's, and no local preflight", is.Publisher, is.Preflight != nil)
	}
	// The publisher checks the node's address (which answers nothing here), unless the
	// command was told --no-preflight (a pool without a preflight).
	cert, err := challenge.Build(challenge.Identifier{Type: challenge.DNS, Value: "a.example"}, "token.thumbprint")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := is.Publisher.Publish(ctx, "a.example", cert); err == nil || !strings.Contains(err.Error(), "n1") {
		t.Fatalf("Publish with the node's address dead: %v; want a failure naming n1", err)
	}
	noPreflight := &manager.Pool{}
	if used, err := useCluster(ctx, store, noPreflight, logger); !used || err != nil {
		t.Fatal(used, err)
	}
	if _, err := noPreflight.Publisher.Publish(ctx, "a.example", cert); err != nil {
		t.Fatalf("--no-preflight: %v; want the acknowledgement alone to do", err)
	}
	noPreflight.Publisher.Unpublish(ctx, "a.example")

	dir, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := printNodes(ctx, &out, dir); err != nil || out.Len() != 0 {
		t.Fatalf("a directory: %q, %v; want nothing", out.String(), err)
	}
}
