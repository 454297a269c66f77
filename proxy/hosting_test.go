package proxy

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hostingRoutes is a configuration of a hosting node: n routes, each for
// one exact name (site<i>.example) and one wildcard (*.w<i>.example),
// to backend.
func hostingRoutes(n int, backend string) []Route {
	routes := make([]Route, n)
	for i := range routes {
		routes[i] = Route{Names: []string{fmt.Sprintf("site%d.example", i), fmt.Sprintf("*.w%d.example", i)}, Backend: backend}
	}
	return routes
}

// BenchmarkRouteMatch measures the routing cost of a new connection with
// 1, 100 and 10,000 routes: an exact hit, a wildcard hit and a miss. A
// hosting node has thousands of names, so ns/op must stay flat as the
// table grows. The names looked up cycle through the whole table, so that
// a large table is not measured on a few hot cache lines alone.
func BenchmarkRouteMatch(b *testing.B) {
	for _, n := range []int{1, 100, 10_000} {
		rt, err := compileRoutes(hostingRoutes(n, "127.0.0.1:1"))
		if err != nil {
			b.Fatal(err)
		}
		lookups := map[string][]string{}
		for i := range n {
			lookups["exact"] = append(lookups["exact"], fmt.Sprintf("site%d.example", i))
			lookups["wildcard"] = append(lookups["wildcard"], fmt.Sprintf("app.w%d.example", i))
			lookups["miss"] = append(lookups["miss"], fmt.Sprintf("other%d.example", i))
		}
		for _, kind := range []string{"exact", "wildcard", "miss"} {
			names, wantHit := lookups[kind], kind != "miss"
			b.Run(fmt.Sprintf("routes=%d/%s", n, kind), func(b *testing.B) {
				i := 0
				for b.Loop() {
					if (rt.match(names[i]) != nil) != wantHit {
						b.Fatalf("match(%q): hit = %v, want %v", names[i], !wantHit, wantHit)
					}
					if i++; i == len(names) {
						i = 0
					}
				}
			})
		}
	}
}

// BenchmarkReload measures a reload (SIGHUP) of a configuration of 1,000
// and 10,000 routes: the validation and compilation a Server does before
// it swaps the new generation in.
func BenchmarkReload(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			cfgs := [2]Config{{Routes: hostingRoutes(n, "127.0.0.1:1")}, {Routes: hostingRoutes(n, "127.0.0.1:2")}}
			s, err := New(cfgs[0], nil, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			i := 0
			for b.Loop() {
				i ^= 1
				if err := s.Reload(cfgs[i]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestReloadAtHostingScaleLosesNone reloads a 10,000-route configuration
// over and over while clients keep connecting to names at both ends of the
// table, exact and wildcard: not one connection may fail or reach the
// wrong backend, whichever generation routes it. The first and the last
// route have backends of their own, so a table built or swapped wrongly
// sends a name to the wrong one; one name's backend differs between the
// two configurations, so each reload is seen to take effect; every reload
// waits for connections made since the one before, so the load spans each
// of them; and connections relayed before the first reload must still
// carry data after the last.
func TestReloadAtHostingScaleLosesNone(t *testing.T) {
	const n = 10_000
	first, middle, last := startBackend(t, idHandler("first")), startBackend(t, idHandler("middle")), startBackend(t, idHandler("last"))
	// gen.example tells the generations apart: each reload must route new
	// connections by the configuration it loaded, at once.
	gens := [2]*backend{startBackend(t, idHandler("gen0")), startBackend(t, idHandler("gen1"))}
	routes := func(gen int) []Route {
		r := hostingRoutes(n, middle.addr)
		r[0].Backend, r[n-1].Backend = first.addr, last.addr
		return append(r, Route{Names: []string{"gen.example"}, Backend: gens[gen].addr})
	}
	cfgs := [2]Config{{Routes: routes(0)}, {Routes: routes(1), IdleTimeout: time.Minute}}
	p := startProxy(t, cfgs[0], nil, nil)
	want := map[string]string{
		"site0.example": "first", fmt.Sprintf("site%d.example", n-1): "last",
		"a.w0.example": "first", fmt.Sprintf("b.w%d.example", n-1): "last",
		"site1.example": "middle", "c.w1.example": "middle",
	}
	var names []string
	for name := range want {
		names = append(names, name)
	}

	// Established before any reload, held across all of them.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for _, name := range names {
		c := dial(t, p.addr)
		held = append(held, c)
		if _, err := c.Write(hello(name, "h2")); err != nil {
			t.Fatal(err)
		}
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != want[name]+"\n" {
			t.Fatalf("%s before the reloads: %q, %v; want %s", name, line, err, want[name])
		}
	}

	var (
		stop     atomic.Bool
		made     atomic.Int64
		failures sync.Map // error text -> true, for the report
		failed   atomic.Int64
		wg       sync.WaitGroup
	)
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000 && !stop.Load(); i++ { // bounded
				name := names[(c+i)%len(names)]
				got, err := whichBackend(p.addr, name)
				made.Add(1)
				if err != nil || got != want[name] {
					failed.Add(1)
					failures.Store(fmt.Sprintf("%s: %q, %v; want %s", name, got, err, want[name]), true)
				}
			}
		}()
	}
	reloads := 0
	start := time.Now()
	var took time.Duration
	for ; reloads < 20 && time.Since(start) < 10*time.Second; reloads++ {
		// Let the clients make connections under the current generation
		// before the next reload replaces it.
		for since := made.Load(); made.Load() < since+4 && time.Since(start) < 10*time.Second; {
			time.Sleep(time.Millisecond)
		}
		t0 := time.Now()
		gen := (reloads + 1) % 2
		if err := p.Reload(cfgs[gen]); err != nil {
			t.Fatal(err)
		}
		took += time.Since(t0)
		if got, err := whichBackend(p.addr, "gen.example"); err != nil || got != fmt.Sprintf("gen%d", gen) {
			t.Fatalf("reload %d: gen.example went to %q, %v; want gen%d, the generation just loaded", reloads+1, got, err, gen)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d reloads of %d routes (%v each) during %d connections in %v", reloads, n, took/time.Duration(reloads), made.Load(), time.Since(start))
	if made.Load() < int64(4*reloads) {
		t.Errorf("only %d connections across %d reloads: the load did not span them", made.Load(), reloads)
	}
	if f := failed.Load(); f > 0 {
		failures.Range(func(k, _ any) bool { t.Error(k); return true })
		t.Fatalf("%d of %d connections failed or were misrouted across %d reloads", f, made.Load(), reloads)
	}
	for i, c := range held {
		c.SetDeadline(time.Now().Add(prompt))
		if err := echoRoundTrip(c, "still here\n"); err != nil {
			t.Errorf("connection to %s relayed before the reloads: %v after them", names[i], err)
		}
	}
}

// TestCompileRoutesAllocations: a reload of a hosting configuration
// normalises and stores each name once. Checking the names and then
// building the table from them again (as reloads did) cost five
// allocations a route of two names; one pass costs about one.
func TestCompileRoutesAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	const n = 1000
	routes := hostingRoutes(n, "127.0.0.1:1")
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := compileRoutes(routes); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("compileRoutes of %d routes: %.0f allocations, %.2f per route", n, allocs, allocs/n)
	if per := allocs / n; per > 2 {
		t.Errorf("compileRoutes of %d routes of two names made %.2f allocations a route; want at most 2 (one pass over the names)", n, per)
	}
}
