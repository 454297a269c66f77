package frontdoor

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/config"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/storage/etcd"
)

// TestClusterNoPreflight: serve --no-preflight (a pool without a preflight) makes the node's
// publisher skip the checks of each node's address as well; otherwise a node whose address
// does not answer fails the order, named.
func TestClusterNoPreflight(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := config.Parse([]byte("listen: \"127.0.0.1:8443\"\nacme:\n  ca: \"https://127.0.0.1:1/dir\"\nroutes:\n  - names: [\"*\"]\n    backend: 127.0.0.1:9\n"), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	tests := []struct {
		name        string
		noPreflight bool
		wantErr     string
	}{
		{"checks", false, "node n-checks"},
		{"no preflight", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, err := etcd.Open(ctx, etcd.Config{Endpoints: c.Endpoints(), Prefix: "nopreflight/" + strings.ReplaceAll(tt.name, " ", "-")})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			fc := Config{Config: cfg, Storage: store, Logger: slog.New(slog.DiscardHandler), NodeAddress: dead}
			if tt.noPreflight {
				fc.NewPool = func() *manager.Pool { return &manager.Pool{} }
			}
			fc.NodeID = "n-" + strings.ReplaceAll(tt.name, " ", "-")
			rt, err := newRuntime(fc)
			if err != nil {
				t.Fatal(err)
			}
			nctx, stop := context.WithCancel(ctx)
			defer stop()
			if err := rt.joinCluster(nctx, fc, nil); err != nil {
				t.Fatal(err)
			}
			defer rt.node.Stop()
			cert, _ := challenge.Build(challenge.Identifier{Type: challenge.DNS, Value: "a.example"}, "token.thumbprint")
			_, err = rt.node.Publisher().Publish(ctx, "a.example", cert)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Publish: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Publish: %v; want an error naming %q", err, tt.wantErr)
			}
			rt.node.Publisher().Unpublish(ctx, "a.example")
		})
	}
}
