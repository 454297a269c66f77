package manager

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// TestPoolShares checks that the pool gives specs that share a CA,
// account and listener one issuer and one standalone listener, that a
// spec with other hooks gets a listener of its own, and that the
// listener's bind runs the spec's pre-hook first: a second listener on a
// port would fail, and a server not stopped would keep the port.
func TestPoolShares(t *testing.T) {
	store, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "pre-hook-ran")
	ondemand := map[string]int{}
	var binds []func(ctx context.Context, addr string) (net.Listener, error)
	p := &Pool{
		Store: store, AgreeTOS: true, Hooks: NewStandaloneHooks(nil, "", ""),
		OnDemand: func(listen string, bind func(ctx context.Context, addr string) (net.Listener, error)) issuer.Publisher {
			ondemand[listen]++
			binds = append(binds, bind)
			return nil
		},
	}
	base := Spec{Names: []string{"a.example"}, CA: "https://127.0.0.1:1/dir", Email: "ops@example.com", Listen: "127.0.0.1:0"}
	hooked := base
	hooked.PreHook = "touch " + marker

	ctx := context.Background()
	tests := []struct {
		name      string
		spec      Spec
		same      bool // the same issuer as base's
		listeners int  // standalone listeners made so far
	}{
		{"first", base, true, 1},
		{"same CA, account and listener", Spec{Names: []string{"b.example"}, CA: base.CA, Email: base.Email, Listen: base.Listen}, true, 1},
		{"other account", Spec{Names: []string{"c.example"}, CA: base.CA, Email: "other@example.com", Listen: base.Listen}, false, 1},
		{"other hooks", hooked, false, 2},
	}
	first, err := p.Get(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		iss, err := p.Get(ctx, tc.spec)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if (iss == first) != tc.same {
			t.Errorf("%s: same issuer %v, want %v", tc.name, iss == first, tc.same)
		}
		if got := len(binds); got != tc.listeners {
			t.Errorf("%s: %d standalone listeners, want %d", tc.name, got, tc.listeners)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the pre-hook ran before any bind")
	}
	ln, err := binds[1](ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("binding the hooked spec's listener did not run its pre-hook first: %v", err)
	}
	if err := p.Hooks.Finish(ctx); err != nil {
		t.Error(err)
	}
	p.CloseIdle()
}
