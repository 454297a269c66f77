package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// TestReload checks that a reload leaves established connections on the
// old backend, sends new ones to the new backend, and that an invalid
// configuration is refused without disturbing the current one.
func TestReload(t *testing.T) {
	oldBE := startBackend(t, idHandler("old"))
	newBE := startBackend(t, idHandler("new"))
	p := startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: oldBE.addr}}}, nil, nil)

	// A long-lived connection to the old backend.
	long := dial(t, p.addr)
	long.SetDeadline(time.Now().Add(10 * time.Second))
	long.Write(hello("long.example"))
	br := bufio.NewReader(long)
	if line, err := br.ReadString('\n'); err != nil || line != "old\n" {
		t.Fatalf("long-lived connection: %q, %v", line, err)
	}
	// One accepted but still before its ClientHello: it is routed by the
	// configuration current when its hello arrives.
	early := dial(t, p.addr)
	p.waitActive(t, 2)

	if err := p.Reload(Config{Routes: []Route{{Names: []string{"*"}, Backend: newBE.addr}}}); err != nil {
		t.Fatal(err)
	}
	if got, err := whichBackend(p.addr, "a.example"); err != nil || got != "new" {
		t.Fatalf("new connection after reload: %q, %v", got, err)
	}
	if err := echoRoundTrip(br2rw{br, long}, "still there"); err != nil {
		t.Fatalf("long-lived connection after reload: %v", err)
	}
	early.SetDeadline(time.Now().Add(prompt))
	early.Write(hello("early.example"))
	if line, err := bufio.NewReader(early).ReadString('\n'); err != nil || line != "new\n" {
		t.Errorf("connection accepted before the reload, hello after: %q, %v; want the new backend", line, err)
	}

	bad := []Config{
		{Routes: []Route{{Names: []string{"*"}, Backend: newBE.addr, Mode: "bogus"}}},
		{Routes: []Route{{Names: []string{"*"}, Backend: "nowhere"}}},
		{Routes: []Route{{Names: []string{"a.example"}, Backend: newBE.addr, Mode: TerminateHTTP}}}, // no certificates
	}
	for _, cfg := range bad {
		err := p.Reload(cfg)
		if err == nil || !strings.Contains(err.Error(), "current one stays") {
			t.Errorf("Reload(%+v): %v, want a refusal", cfg.Routes, err)
		}
		if got, err := whichBackend(p.addr, "a.example"); err != nil || got != "new" {
			t.Fatalf("after a refused reload: %q, %v", got, err)
		}
	}
	if err := echoRoundTrip(br2rw{br, long}, "and still"); err != nil {
		t.Fatalf("long-lived connection after refused reloads: %v", err)
	}
	// Limits reload too.
	if err := p.Reload(Config{MaxConns: 1, Routes: []Route{{Names: []string{"*"}, Backend: newBE.addr}}}); err != nil {
		t.Fatal(err)
	}
	c := dial(t, p.addr)
	expectClosed(t, c, prompt)
}

type br2rw struct {
	*bufio.Reader
	net.Conn
}

func (b br2rw) Read(p []byte) (int, error) { return b.Reader.Read(p) }

// TestShutdown checks the graceful drain: listeners close at once, a
// connection that ends before the deadline ends normally, and one that
// does not is closed at the deadline with an error.
func TestShutdown(t *testing.T) {
	t.Run("drains", func(t *testing.T) {
		be := startBackend(t, idHandler("backend"))
		p := startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)
		c := dial(t, p.addr)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(hello("drain.example"))
		br := bufio.NewReader(c)
		br.ReadString('\n')

		done := make(chan error, 1)
		start := time.Now()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done <- p.Shutdown(ctx)
		}()
		select {
		case err := <-p.served:
			if !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve: %v, want ErrServerClosed", err)
			}
		case <-time.After(prompt):
			t.Fatal("Serve still running")
		}
		p.served <- ErrServerClosed // for the cleanup
		waitRefused(t, p.addr)
		// The open connection still works, then ends.
		if err := echoRoundTrip(br2rw{br, c}, "during drain"); err != nil {
			t.Fatalf("open connection during drain: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v with a connection open", err)
		case <-time.After(100 * time.Millisecond):
		}
		c.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		case <-time.After(prompt):
			t.Fatal("Shutdown did not return after the last connection ended")
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("Shutdown took %v", took)
		}
		if err := p.Serve(context.Background(), newListener(t)); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve after Shutdown: %v", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		be := startBackend(t, idHandler("backend"))
		p := startProxy(t, Config{ClientHelloTimeout: 30 * time.Second, Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)
		proxied := dial(t, p.addr)
		proxied.Write(hello("open.example"))
		bufio.NewReader(proxied).ReadString('\n')
		waiting := dial(t, p.addr) // still before its hello
		p.waitActive(t, 2)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := p.Shutdown(ctx)
		took := time.Since(start)
		if err == nil || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: %v, want a deadline error", err)
		}
		if took < 150*time.Millisecond || took > prompt {
			t.Errorf("Shutdown took %v with a 200ms deadline", took)
		}
		expectClosed(t, proxied, prompt)
		expectClosed(t, waiting, prompt)
		if n := p.Active(); n != 0 {
			t.Errorf("Active() = %d after Shutdown", n)
		}
	})
	t.Run("context ends Serve", func(t *testing.T) {
		s, err := New(Config{}, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ln := newListener(t)
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx, ln) }()
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(prompt):
			t.Fatal("Serve did not return after its context ended")
		}
		waitRefused(t, ln.Addr().String())
	})
}

func newListener(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// waitRefused waits until connections to addr are refused: the listening
// socket closes a moment after Accept has returned.
func waitRefused(t testing.TB, addr string) {
	t.Helper()
	for deadline := time.Now().Add(prompt); ; time.Sleep(time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, prompt)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts connections", addr)
		}
	}
}
