package proxy

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestManyIdleClients opens 5,000 connections that send nothing and checks
// that a normal client is still served promptly while they wait.
func TestManyIdleClients(t *testing.T) {
	n := 5000
	if testing.Short() {
		n = 500
	}
	be := startBackend(t, idHandler("backend"))
	// From one source, and below the eviction threshold: this is about
	// the cost of many idle clients, not about the limits (flood_test.go).
	p := startProxy(t, Config{ClientHelloTimeout: 30 * time.Second, MaxConns: 2 * n, MaxHelloWaitsPerSource: 2 * n, Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.DialTimeout("tcp", p.addr, prompt)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
	}
	p.waitActive(t, int64(n))
	for i := range 5 {
		start := time.Now()
		got, err := whichBackend(p.addr, "normal.example")
		if err != nil || got != "backend" {
			t.Fatalf("normal client with %d idle ones: %q, %v", n, got, err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("round trip %d took %v with %d idle clients", i, took, n)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	p.waitActive(t, 0)
}

// The memory measurement runs the clients and the backend in a child
// process (this test binary again, running TestIdleHelperProcess), so that
// this process holds only the proxy's two sockets per connection and its
// memory growth is the proxy's alone. The protocol on the child's stdin and
// stdout: it prints "backend ADDR", reads "go PROXYADDR N", opens N client
// connections that each send a ClientHello, accepts the N connections the
// proxy makes to its backend, prints "ready", and exits when stdin closes.
const helperEnv = "TLSALPN_PROXY_IDLE_HELPER"

func TestIdleHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper for the memory measurement")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("backend", ln.Addr())
	in := bufio.NewScanner(os.Stdin)
	if !in.Scan() {
		os.Exit(1)
	}
	var addr string
	var n int
	if _, err := fmt.Sscanf(in.Text(), "go %s %d", &addr, &n); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	var held []net.Conn
	accepted := make(chan struct{}, n)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			accepted <- struct{}{}
		}
	}()
	h := hello("idle.example", "h2")
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_, err = c.Write(h)
		}
		if err != nil {
			fmt.Println("error", i, err)
			os.Exit(1)
		}
		mu.Lock()
		held = append(held, c)
		mu.Unlock()
	}
	timeout := time.After(time.Minute)
	for range n {
		select {
		case <-accepted:
		case <-timeout:
			fmt.Println("error: backend connections missing")
			os.Exit(1)
		}
	}
	fmt.Println("ready")
	for in.Scan() {
	}
	os.Exit(0)
}

// memStats is the process's memory: the Go heap and stacks in use, and
// the resident set.
type memStats struct{ heap, stack, rss uint64 }

func readMem(t testing.TB) memStats {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var rss uint64
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rss = kb << 10
		}
	}
	return memStats{heap: ms.HeapInuse, stack: ms.StackInuse, rss: rss}
}

// idleProxiedMemory holds n idle proxied connections (ClientHello sent,
// backend connected, nothing moving) and returns the proxy process's
// growth per connection in bytes: Go heap+stacks, and RSS.
func idleProxiedMemory(t testing.TB, n int) (goPerConn, rssPerConn float64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	out := bufio.NewScanner(stdout)
	line := func() string {
		lines := make(chan string, 1)
		go func() {
			if out.Scan() {
				lines <- out.Text()
			}
			close(lines)
		}()
		select {
		case l := <-lines:
			return l
		case <-time.After(time.Minute):
			t.Fatal("helper process silent")
		}
		return ""
	}
	backendAddr, ok := strings.CutPrefix(line(), "backend ")
	if !ok {
		t.Fatal("helper process did not start")
	}
	p := startProxy(t, Config{MaxConns: 2 * n, MaxHelloWaitsPerSource: 2 * n, Routes: []Route{{Names: []string{"*"}, Backend: backendAddr}}}, nil, nil)

	// Warm up: one connection's worth of everything the first use
	// allocates once (pools, the poller, code pages).
	if c, err := net.Dial("tcp", p.addr); err == nil {
		c.Close()
	}
	p.waitActive(t, 0)
	before := readMem(t)
	fmt.Fprintf(stdin, "go %s %d\n", p.addr, n)
	if l := line(); l != "ready" {
		t.Fatalf("helper process: %q", l)
	}
	p.waitActive(t, int64(n))
	time.Sleep(100 * time.Millisecond) // every pipe settles into its wait
	after := readMem(t)
	goGrowth := float64(after.heap+after.stack) - float64(before.heap+before.stack)
	rssGrowth := float64(after.rss) - float64(before.rss)
	t.Logf("%d idle proxied connections: Go heap %+.1f KiB, stacks %+.1f KiB, RSS %+.1f KiB; per connection: Go %.2f KiB, RSS %.2f KiB",
		n, (float64(after.heap)-float64(before.heap))/1024, (float64(after.stack)-float64(before.stack))/1024, rssGrowth/1024,
		goGrowth/float64(n)/1024, rssGrowth/float64(n)/1024)
	stdin.Close()
	p.waitActive(t, 0)
	return goGrowth / float64(n), rssGrowth / float64(n)
}

// TestIdleProxiedMemory bounds the memory an idle proxied connection costs.
// The bound is generous (this is a behaviour test: memory does not grow
// with buffers per connection); the benchmark below gives the figure.
func TestIdleProxiedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 2,000 proxied connections")
	}
	n := 2000
	goPer, rssPer := idleProxiedMemory(t, n)
	bound := 64.0 * 1024
	if raceEnabled {
		bound *= 4 // the race detector shadows every allocation
	}
	if goPer > bound || rssPer > bound {
		t.Errorf("an idle proxied connection costs %.1f KiB of Go memory and %.1f KiB of RSS; want under %.0f KiB", goPer/1024, rssPer/1024, bound/1024)
	}
}

// BenchmarkIdleProxiedMemory reports the proxy's memory per idle proxied
// connection at 5,000 connections (TLSALPN_IDLE_CONNS changes the count),
// the figure the issue bounds at 24 KiB of RSS. Run it without -race:
//
//	go test -run '^$' -bench IdleProxiedMemory -benchtime 1x ./proxy
func BenchmarkIdleProxiedMemory(b *testing.B) {
	n := 5000
	if s := os.Getenv("TLSALPN_IDLE_CONNS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	var goPer, rssPer float64
	for range b.N {
		goPer, rssPer = idleProxiedMemory(b, n)
	}
	b.ReportMetric(rssPer/1024, "RSS-KiB/conn")
	b.ReportMetric(goPer/1024, "Go-KiB/conn")
}

// TestSlowSendersHoldNoBuffer: clients that have sent only part of their
// first record (a slowloris dribbling its ClientHello) cost the front door
// no ClientHello buffer while they wait: the heap grows by the connection
// bookkeeping alone, far less than the 4 KiB reader a hello is read with.
func TestSlowSendersHoldNoBuffer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the wait without a buffer is Linux's (MSG_PEEK and SIOCINQ)")
	}
	n := 2000
	if testing.Short() {
		n = 300
	}
	be := startBackend(t, idHandler("backend"))
	p := startProxy(t, Config{ClientHelloTimeout: time.Minute, MaxConns: 2 * n, MaxHelloWaitsPerSource: 2 * n, Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)
	h := hello("slow.example", "h2")
	for _, tc := range []struct {
		name string
		sent []byte
	}{
		{"part of the header", h[:3]},
		{"header and part of the record", h[:len(h)/2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := readMem(t)
			conns := make([]net.Conn, 0, n)
			defer func() {
				for _, c := range conns {
					c.Close()
				}
				p.waitActive(t, 0)
			}()
			for range n {
				c, err := net.DialTimeout("tcp", p.addr, prompt)
				if err == nil {
					_, err = c.Write(tc.sent)
				}
				if err != nil {
					t.Fatalf("client %d: %v", len(conns)+1, err)
				}
				conns = append(conns, c)
			}
			p.waitActive(t, int64(n))
			time.Sleep(200 * time.Millisecond) // every handler has reached its wait
			after := readMem(t)
			perConn := (float64(after.heap) - float64(before.heap)) / float64(n)
			t.Logf("%d slow senders: heap %.0f bytes per connection (client and proxy sides both)", n, perConn)
			if perConn > 2048 {
				t.Errorf("heap grew %.0f bytes per slow sender; want well under the 4 KiB ClientHello reader", perConn)
			}
			// A normal client is served meanwhile, and the slow ones
			// finishing their hellos are relayed.
			if got, err := whichBackend(p.addr, "normal.example"); err != nil || got != "backend" {
				t.Fatalf("normal client among slow senders: %q, %v", got, err)
			}
			for i, c := range conns[:10] {
				if _, err := c.Write(h[len(tc.sent):]); err != nil {
					t.Fatalf("finishing hello %d: %v", i, err)
				}
				c.SetReadDeadline(time.Now().Add(prompt))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || line != "backend\n" {
					t.Fatalf("slow sender %d, hello finished: got %q, %v; want the backend", i, line, err)
				}
			}
		})
	}
}
