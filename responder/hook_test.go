package responder

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// TestPendingHook: the hook hears "pending" before the first challenge is
// published and "withdrawn" after the last, once each, whatever the
// Publish and Unpublish calls between; a Publish waiting for its name's
// turn counts as pending; a hook that refuses fails the Publish.
func TestPendingHook(t *testing.T) {
	var calls []bool
	refuse := false
	r := New(WithPendingHook(func(_ context.Context, pending bool) error {
		if pending && refuse {
			return errors.New("cannot hold")
		}
		calls = append(calls, pending)
		return nil
	}))
	_, a := challengeCert(t, "a.example")
	_, b := challengeCert(t, "b.example")
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	publish := func(ctx context.Context, name string, cert *tls.Certificate) func() error {
		return func() error { _, err := r.Publish(ctx, name, cert); return err }
	}
	steps := []struct {
		name    string
		do      func() error
		wantErr bool
		want    string // calls so far
	}{
		{"publish a", publish(ctx, "a.example", a), false, "[true]"},
		{"publish B.", publish(ctx, "B.example.", b), false, "[true]"},
		{"publish a again, given up waiting", publish(cancelled, "a.example", a), true, "[true]"},
		{"unpublish never published", func() error { return r.Unpublish(ctx, "c.example") }, false, "[true]"},
		{"unpublish a", func() error { return r.Unpublish(ctx, "a.example") }, false, "[true]"},
		{"unpublish a again", func() error { return r.Unpublish(ctx, "a.example") }, false, "[true]"},
		{"unpublish b", func() error { return r.Unpublish(ctx, "b.example") }, false, "[true false]"},
		{"publish without a certificate", publish(ctx, "d.example", nil), true, "[true false]"},
		{"publish a, hook refuses", func() error { refuse = true; defer func() { refuse = false }(); return publish(ctx, "a.example", a)() }, true, "[true false]"},
		{"publish a", publish(ctx, "a.example", a), false, "[true false true]"},
		{"unpublish a", func() error { return r.Unpublish(ctx, "a.example") }, false, "[true false true false]"},
	}
	for _, st := range steps {
		err := st.do()
		if (err != nil) != st.wantErr {
			t.Fatalf("%s: err = %v, want error %v", st.name, err, st.wantErr)
		}
		if got := fmt.Sprint(calls); got != st.want {
			t.Fatalf("after %s: hook calls %s, want %s", st.name, got, st.want)
		}
	}
	if r.IsPending("a.example") {
		t.Error("a.example pending after a refused Publish")
	}
}

// TestPendingHookWaiter: a Publish waiting for its name's turn keeps the
// hook's "pending" until it is itself withdrawn.
func TestPendingHookWaiter(t *testing.T) {
	var mu sync.Mutex
	var calls []bool
	r := New(WithPendingHook(func(_ context.Context, pending bool) error {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, pending)
		return nil
	}))
	_, c1 := challengeCert(t, "a.example")
	ctx := context.Background()
	if _, err := r.Publish(ctx, "a.example", c1); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := r.Publish(ctx, "a.example", c1); done <- err }()
	time.Sleep(20 * time.Millisecond) // let it wait
	r.Unpublish(ctx, "a.example")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := fmt.Sprint(calls)
	mu.Unlock()
	if got != "[true]" {
		t.Fatalf("with the waiter published: hook calls %s, want [true]", got)
	}
	r.Unpublish(ctx, "a.example")
	mu.Lock()
	defer mu.Unlock()
	if got := fmt.Sprint(calls); got != "[true false]" {
		t.Fatalf("after the last Unpublish: hook calls %s, want [true false]", got)
	}
}

func TestLookup(t *testing.T) {
	_, cert := challengeCert(t, "example.com")
	r := New()
	r.Publish(context.Background(), "example.com", cert)
	for _, tc := range []struct {
		sni     string
		alpn    []string
		found   bool
		wantErr error
	}{
		{"example.com", acmeOnly, true, nil},
		{"EXAMPLE.COM.", acmeOnly, true, nil},
		{"example.com", []string{"h2"}, false, nil},
		{"example.com", nil, false, nil},
		{"example.com", []string{"h2", challenge.ALPNProto}, false, nil},
		{"other.example", acmeOnly, false, ErrNoChallenge},
		{"", acmeOnly, false, ErrNoChallenge},
		{"exa mple.com", acmeOnly, false, ErrNoChallenge},
	} {
		c, err := r.Lookup(tc.sni, tc.alpn)
		if (c != nil) != tc.found || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Errorf("Lookup(%q, %q) = %v, %v; want found %v, error %v", tc.sni, tc.alpn, c != nil, err, tc.found, tc.wantErr)
		}
	}
}

// TestServeConnLookedUp: ServeConn serves the challenge Lookup found,
// without a second lookup, but refuses it once it was withdrawn.
func TestServeConnLookedUp(t *testing.T) {
	id, cert := challengeCert(t, "example.com")
	r := New()
	ctx := context.Background()
	r.Publish(ctx, "example.com", cert)
	c, err := r.Lookup("example.com", acmeOnly)
	if c == nil {
		t.Fatalf("Lookup: %v", err)
	}
	ln := listenLoopback(t, "tcp")
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.ServeConn(conn, c)
			}()
		}
	}()
	addr := ln.Addr().String()
	checkOutcome(t, handshake(t, addr, "example.com", acmeOnly, nil), served, id, nil)
	r.Unpublish(ctx, "example.com")
	checkOutcome(t, handshake(t, addr, "example.com", acmeOnly, nil), refused, id, nil)
}

// TestLookupAllocs: the decision a front door makes on every connection
// allocates nothing, for a normal hello and for the CA's alike.
func TestLookupAllocs(t *testing.T) {
	_, cert := challengeCert(t, "example.com")
	r := New()
	r.Publish(context.Background(), "example.com", cert)
	h2 := []string{"h2", "http/1.1"}
	for _, tc := range []struct {
		sni  string
		alpn []string
	}{
		{"example.com", h2},
		{"example.com", acmeOnly},
		{"other.example", acmeOnly},
	} {
		if n := testing.AllocsPerRun(100, func() { r.Lookup(tc.sni, tc.alpn) }); n != 0 {
			t.Errorf("Lookup(%q, %q): %v allocations, want 0", tc.sni, tc.alpn, n)
		}
	}
}
