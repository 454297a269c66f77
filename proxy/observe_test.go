package proxy

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/manager"
)

// tally is an Observer that keeps what it is told, for the tests.
type tally struct {
	mu         sync.Mutex
	refused    map[Refusal]int
	notPending int
	routes     map[string]*routeTally // by the route's first name
}

type routeTally struct {
	t                    *tally
	open, closed         map[Path]int
	up, down             int64
	handshakes, hsFailed int
	hsTime               time.Duration
}

func newTally() *tally { return &tally{refused: map[Refusal]int{}, routes: map[string]*routeTally{}} }

func (t *tally) Route(r Route) RouteObserver {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := t.routes[r.Names[0]]
	if rt == nil {
		rt = &routeTally{t: t, open: map[Path]int{}, closed: map[Path]int{}}
		t.routes[r.Names[0]] = rt
	}
	return rt
}
func (t *tally) Refused(r Refusal)    { t.mu.Lock(); t.refused[r]++; t.mu.Unlock() }
func (t *tally) ChallengeNotPending() { t.mu.Lock(); t.notPending++; t.mu.Unlock() }
func (r *routeTally) Opened(p Path)   { r.t.mu.Lock(); r.open[p]++; r.t.mu.Unlock() }
func (r *routeTally) Closed(p Path, up, down int64) {
	r.t.mu.Lock()
	r.closed[p]++
	r.up += up
	r.down += down
	r.t.mu.Unlock()
}
func (r *routeTally) Handshake(d time.Duration, err error) {
	r.t.mu.Lock()
	if err != nil {
		r.hsFailed++
	} else {
		r.handshakes++
		r.hsTime += d
	}
	r.t.mu.Unlock()
}

// snapshot copies what t holds for route name under its lock.
func (t *tally) snapshot(name string) (routeTally, map[Refusal]int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ref := map[Refusal]int{}
	for k, v := range t.refused {
		ref[k] = v
	}
	var rt routeTally
	if r := t.routes[name]; r != nil {
		rt = *r
		rt.open, rt.closed = map[Path]int{}, map[Path]int{}
		for k, v := range r.open {
			rt.open[k] = v
		}
		for k, v := range r.closed {
			rt.closed[k] = v
		}
	}
	return rt, ref
}

// startObserved runs a Server for cfg with o as its Observer.
func startObserved(t *testing.T, cfg Config, certs CertSource, o Observer) string {
	t.Helper()
	s, err := New(cfg, nil, certs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetObserver(o); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

// TestObserverPaths: the Observer sees each routed connection opened and
// closed on its path with the bytes it carried, each terminated
// handshake with its time, and each refusal by its reason.
func TestObserverPaths(t *testing.T) {
	cert := selfSigned(t, "app.example")
	cache := manager.NewCache()
	cache.Put([]string{"app.example"}, cert)
	relayBE := startBackend(t, idHandler("relay"))
	httpBE := httpBackend(t, "http")
	o := newTally()
	addr := startObserved(t, Config{
		ClientHelloTimeout: 300 * time.Millisecond,
		Routes: []Route{
			{Names: []string{"relay.example"}, Backend: relayBE.addr},
			{Names: []string{"app.example"}, Backend: httpBE.Listener.Addr().String(), Mode: TerminateHTTP},
			{Names: []string{"down.example"}, Backend: closedPort(t)},
		},
	}, cache, o)

	// Relayed: the hello and a line each way.
	h := hello("relay.example", "h2")
	c := dial(t, addr)
	c.Write(h)
	c.SetReadDeadline(time.Now().Add(prompt))
	buf := make([]byte, len("relay\n"))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	c.Close()

	// Terminated (HTTP): two requests on one connection, HTTP/1.1 and
	// HTTP/2 (the front door completes the handshake, timed, before
	// the HTTP server takes the connection: h2 must still be chosen).
	for _, h2 := range []bool{false, true} {
		hc := httpsClient(addr, poolOf(cert), h2, nil)
		getSeen(t, hc, "https://app.example/a")
		s, resp := getSeen(t, hc, "https://app.example/b")
		if want := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2]; resp.Proto != want || s.Backend != "http" {
			t.Errorf("client spoke %s to %q, want %s to the backend", resp.Proto, s.Backend, want)
		}
		hc.CloseIdleConnections()
	}

	// Refused: silent until the ClientHello timeout, no route, backend
	// down, not TLS.
	silent := dial(t, addr)
	expectClosed(t, silent, 2*prompt)
	for _, b := range [][]byte{hello("nowhere.example"), hello("down.example"), []byte("GET / HTTP/1.0\r\n\r\n")} {
		c := dial(t, addr)
		c.Write(b)
		expectClosed(t, c, prompt)
	}

	var relay, app routeTally
	var refused map[Refusal]int
	deadline := time.Now().Add(2 * prompt)
	for {
		relay, refused = o.snapshot("relay.example")
		app, _ = o.snapshot("app.example")
		if relay.closed[Relayed] == 1 && app.closed[Terminated] == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if relay.open[Relayed] != 1 || relay.closed[Relayed] != 1 || relay.up != int64(len(h)) || relay.down != int64(len("relay\n")) {
		t.Errorf("relayed route saw %+v; want 1 opened and closed, %d bytes in, %d out", relay, len(h), len("relay\n"))
	}
	if app.open[Terminated] != 2 || app.closed[Terminated] != 2 || app.up < 1000 || app.down < 1000 || app.handshakes != 2 || app.hsTime <= 0 || app.hsFailed != 0 {
		t.Errorf("terminated route saw %+v; want 2 connections with their handshakes and their bytes both ways", app)
	}
	want := map[Refusal]int{RefusedHelloTimeout: 1, RefusedNoRoute: 1, RefusedBackendDown: 1, RefusedBadHello: 1}
	for r, n := range want {
		if refused[r] != n {
			t.Errorf("refused %s: %d, want %d (all: %v)", r, refused[r], n, refused)
		}
	}
	if len(refused) != len(want) {
		t.Errorf("refusals %v, want %v", refused, want)
	}
}
