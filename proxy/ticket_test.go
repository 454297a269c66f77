package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/manager"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// serveProxy serves s, which the test may have adjusted after New, on a
// loopback port until the test ends.
func serveProxy(t testing.TB, s *Server) *testProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &testProxy{Server: s, addr: ln.Addr().String(), served: make(chan error, 1)}
	go func() { p.served <- s.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		s.Shutdown(ctx)
		<-p.served
	})
	return p
}

// TestTicketKeyRotation: session tickets resume across a reload (SIGHUP)
// and across one rotation of the ticket keys, and no longer once the key
// that issued them has been rotated out.
func TestTicketKeyRotation(t *testing.T) {
	cert := selfSigned(t, "app.example")
	cache := manager.NewCache()
	cache.Put([]string{"app.example"}, cert)
	be := startBackend(t, echoHandler)
	for _, mode := range []Mode{TerminateTCP, TerminateHTTP} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := Config{Routes: []Route{{Names: []string{"app.example"}, Backend: be.addr, Mode: mode}}}
			s, err := New(cfg, nil, cache, nil)
			if err != nil {
				t.Fatal(err)
			}
			clock := &fakeClock{t: time.Now()}
			s.tls.keys.now = clock.now // before any handshake
			p := serveProxy(t, s)

			// handshake connects with the client session cache sc and
			// reports whether the session was resumed.
			handshake := func(sc tls.ClientSessionCache) bool {
				t.Helper()
				c, err := tls.Dial("tcp", p.addr, &tls.Config{RootCAs: poolOf(cert), ServerName: "app.example", ClientSessionCache: sc})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				// TLS 1.3 tickets arrive after the handshake: read once.
				c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				c.Read(make([]byte, 1))
				return c.ConnectionState().DidResume
			}
			// first holds a ticket from the first key only; current
			// is renewed at each connection.
			first, current := tls.NewLRUClientSessionCache(4), tls.NewLRUClientSessionCache(4)
			steps := []struct {
				what   string
				before func()
				sc     tls.ClientSessionCache
				want   bool
			}{
				{"first connection", nil, first, false},
				{"first connection of the other client", nil, current, false},
				{"after a reload", func() {
					if err := p.Reload(Config{Routes: cfg.Routes, IdleTimeout: time.Minute}); err != nil {
						t.Fatal(err)
					}
				}, current, true},
				{"after a rotation, a ticket of the previous key", func() { clock.advance(ticketKeyRotation) }, current, true},
				{"after a second rotation, a ticket of the kept previous key", func() { clock.advance(ticketKeyRotation) }, current, true},
				{"after a second rotation, a ticket of a key rotated out", nil, first, false},
			}
			for _, st := range steps {
				if st.before != nil {
					st.before()
				}
				if got := handshake(st.sc); got != st.want {
					t.Errorf("%s: DidResume = %v, want %v", st.what, got, st.want)
				}
			}
		})
	}
}
