package responder

import (
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// freeAddr returns a loopback address nobody listens on. OnDemand binds
// and releases it again and again, and other suites running beside this
// one may take a released 127.0.0.1 port meanwhile (their outgoing
// connections use ephemeral ports there too), so on Linux it is on a
// random address of 127.0.0.0/8 that nobody else uses.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln := listenAnyLoopback(t)
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// listenAnyLoopback listens on a port of a random 127/8 address: once it
// is closed, a listener of another package's tests, run beside these and
// nearly all on 127.0.0.1, cannot take the same address.
func listenAnyLoopback(t *testing.T) net.Listener {
	t.Helper()
	ip := net.IPv4(127, byte(1+rand.IntN(250)), byte(rand.IntN(256)), byte(1+rand.IntN(250)))
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		ln = listenLoopback(t, "tcp") // not Linux: only 127.0.0.1 is there
	}
	return ln
}

func refusesConnections(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return errors.Is(err, syscall.ECONNREFUSED)
	}
	defer c.Close()
	// With nothing listening, a dial whose ephemeral port happens to be
	// addr's own connects to itself (TCP simultaneous open): that is not
	// a listener.
	return c.LocalAddr().String() == c.RemoteAddr().String()
}

// countingListen is the default listen, counting binds.
func countingListen(n *atomic.Int32) func(context.Context, string) (net.Listener, error) {
	return func(ctx context.Context, addr string) (net.Listener, error) {
		n.Add(1)
		var lc net.ListenConfig
		return lc.Listen(ctx, "tcp", addr)
	}
}

func TestOnDemandBindsOnlyWhilePending(t *testing.T) {
	addr := freeAddr(t)
	r := New()
	var binds atomic.Int32
	o := NewOnDemand(r, addr, countingListen(&binds))
	ctx := context.Background()

	if o.Addr() != nil || !refusesConnections(addr) {
		t.Fatal("bound before any Publish")
	}

	names := []string{"a.example", "b.example"}
	ids := make([]challenge.Identifier, len(names))
	certs := make([]*tls.Certificate, len(names))
	for i, n := range names {
		ids[i], certs[i] = challengeCert(t, n)
	}
	// Two concurrent publishes share one listener.
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := o.Publish(ctx, n, certs[i]); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := binds.Load(); got != 1 {
		t.Errorf("bound %d times for two pending challenges, want 1", got)
	}
	if o.Addr() == nil || o.Addr().String() != addr {
		t.Errorf("Addr = %v, want %s", o.Addr(), addr)
	}
	for i, n := range names {
		checkOutcome(t, handshake(t, addr, n, acmeOnly, nil), served, ids[i], nil)
		checkOutcome(t, handshake(t, addr, n, []string{"h2"}, nil), refused, ids[i], nil)
	}

	if err := o.Unpublish(ctx, names[0]); err != nil {
		t.Fatal(err)
	}
	checkOutcome(t, handshake(t, addr, names[0], acmeOnly, nil), refused, ids[0], nil)
	checkOutcome(t, handshake(t, addr, names[1], acmeOnly, nil), served, ids[1], nil)

	if err := o.Unpublish(ctx, names[1]); err != nil {
		t.Fatal(err)
	}
	if o.Addr() != nil || !refusesConnections(addr) {
		t.Error("still bound after the last Unpublish")
	}
	if r.Pending() != 0 {
		t.Errorf("Pending = %d", r.Pending())
	}
	// An extra Unpublish neither fails nor unbalances the count.
	if err := o.Unpublish(ctx, names[1]); err != nil {
		t.Error(err)
	}

	// The port was really freed: the next challenge binds it again.
	if _, err := o.Publish(ctx, names[0], certs[0]); err != nil {
		t.Fatal(err)
	}
	checkOutcome(t, handshake(t, addr, names[0], acmeOnly, nil), served, ids[0], nil)
	o.Unpublish(ctx, names[0])
	if got := binds.Load(); got != 2 {
		t.Errorf("bound %d times in all, want 2", got)
	}
	if !refusesConnections(addr) {
		t.Error("still bound at the end")
	}
}

func TestOnDemandBindError(t *testing.T) {
	occupied := listenAnyLoopback(t)
	defer occupied.Close()
	addr := occupied.Addr().String()
	r := New()
	o := NewOnDemand(r, addr, nil)
	id, cert := challengeCert(t, "example.com")
	ctx := context.Background()

	seen, err := o.Publish(ctx, "example.com", cert)
	if err == nil || seen != nil {
		t.Fatal("Publish succeeded on a port in use")
	}
	var be *BindError
	if !errors.Is(err, syscall.EADDRINUSE) || !errors.As(err, &be) || !be.InUse() || !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q should be a BindError that is InUse, wrap EADDRINUSE and name %s", err, addr)
	}
	if r.Pending() != 0 || o.Addr() != nil {
		t.Error("a failed bind left state behind")
	}

	occupied.Close()
	if _, err := o.Publish(ctx, "example.com", cert); err != nil {
		t.Fatalf("Publish after the port was freed: %v", err)
	}
	checkOutcome(t, handshake(t, addr, "example.com", acmeOnly, nil), served, id, nil)
	o.Unpublish(ctx, "example.com")
	if !refusesConnections(addr) {
		t.Error("still bound")
	}
}

func TestOnDemandPublishErrorReleases(t *testing.T) {
	addr := freeAddr(t)
	o := NewOnDemand(New(), addr, nil)
	if _, err := o.Publish(context.Background(), "not a name", &tls.Certificate{Certificate: [][]byte{{1}}}); err == nil {
		t.Fatal("Publish of an invalid name succeeded")
	}
	if o.Addr() != nil || !refusesConnections(addr) {
		t.Error("listener left bound after a failed Publish")
	}
}

func TestBindError(t *testing.T) {
	for _, tc := range []struct {
		err               error
		inUse, permission bool
	}{
		{&net.OpError{Op: "listen", Err: syscall.EADDRINUSE}, true, false},
		{&net.OpError{Op: "listen", Err: syscall.EACCES}, false, true},
		{&net.OpError{Op: "listen", Err: syscall.EPERM}, false, true},
		{errors.New("other"), false, false},
	} {
		be := &BindError{Addr: ":443", Err: tc.err}
		if be.InUse() != tc.inUse || be.Permission() != tc.permission {
			t.Errorf("BindError{%v}: InUse %v, Permission %v; want %v, %v", tc.err, be.InUse(), be.Permission(), tc.inUse, tc.permission)
		}
	}
}

// TestOnDemandConcurrent publishes and withdraws through OnDemand from
// several goroutines while a client validates; run with -race.
func TestOnDemandConcurrent(t *testing.T) {
	addr := freeAddr(t)
	r := New()
	o := NewOnDemand(r, addr, nil)
	ctx := context.Background()
	names := []string{"a.example", "b.example", "c.example"}
	var wg sync.WaitGroup
	for _, n := range names {
		_, cert := challengeCert(t, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				if _, err := o.Publish(ctx, n, cert); err != nil {
					t.Error(err)
					return
				}
				o.Addr()
				time.Sleep(time.Millisecond)
				if err := o.Unpublish(ctx, n); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if o.Addr() != nil || r.Pending() != 0 || !refusesConnections(addr) {
		t.Error("state left behind after balanced Publish/Unpublish")
	}
}
