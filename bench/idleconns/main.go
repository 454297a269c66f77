//go:build linux

// Command idleconns opens N connections through a proxy, makes sure each
// is relayed end to end (the proxy has read its ClientHello and dialled
// the backend), leaves them all idle, and reports the proxy process's
// resident memory per connection (VmRSS delta / N, read from
// /proc/PID/status) and, given the proxy's Prometheus /metrics, its Go
// heap and stacks per connection. Used by bench/proxy.sh and
// bench/hosting.sh.
//
// Two kinds of connection:
//   - request (default): a full TLS handshake and one GET on each, to a
//     backend that is a web server (nginx): a visitor's keep-alive
//     connection after its first request;
//   - hello: a ClientHello and nothing more, to bench/sink, which writes
//     one byte on each connection it accepts: the proxy's cost alone, at
//     a scale (100,000) where a TLS handshake each would take minutes.
//
// One source address can open only as many connections to one
// destination as the ephemeral port range has ports (about 28,000), so
// at that scale the connections come from -sources addresses, 127.0.0.2
// on, and go to several names (-sni, comma-separated, taken in turn) that
// the proxy routes to several backend ports, for its own dials.
//
//	go run ./bench/idleconns -addr 127.0.0.1:9443 -pid 1234 -n 5000
//	go run ./bench/idleconns -addr 127.0.0.1:9443 -pid 1234 -n 100000 -mode hello -sources 8 -sni idle0.example,idle1.example
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tlsalpn/tlsalpn/bench/internal/loadgen"
)

func rssKiB(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the proxy's memory (pid %d): %w", pid, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			return strconv.Atoi(strings.Fields(line)[1])
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// goStats is what the proxy's Prometheus /metrics says of its Go runtime.
type goStats struct{ heap, stack, goroutines float64 }

// goMemory reads the Go heap and stacks in use and the goroutines from a
// Prometheus /metrics page.
func goMemory(url string) (goStats, error) {
	resp, err := http.Get(url)
	if err != nil {
		return goStats{}, fmt.Errorf("reading the proxy's metrics: %w", err)
	}
	defer resp.Body.Close()
	var g goStats
	want := map[string]*float64{
		"go_memstats_heap_inuse_bytes":  &g.heap,
		"go_memstats_stack_inuse_bytes": &g.stack,
		"go_goroutines":                 &g.goroutines,
	}
	found := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || want[f[0]] == nil {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			return goStats{}, fmt.Errorf("metrics %s: %w", f[0], err)
		}
		*want[f[0]] = v
		found++
	}
	if found != len(want) {
		return goStats{}, fmt.Errorf("%s lacks some of go_memstats_heap_inuse_bytes, go_memstats_stack_inuse_bytes, go_goroutines", url)
	}
	return g, sc.Err()
}

type opener struct {
	addr, path, mode string
	hellos           [][]byte // by name, for mode hello
	names            []string
	dialers          []*net.Dialer
}

// open makes connection i and returns it once the proxy has relayed it:
// the backend's answer (an HTTP response, or the sink's byte) came back.
func (o *opener) open(i int) (net.Conn, error) {
	d := o.dialers[i%len(o.dialers)]
	name := o.names[i%len(o.names)]
	raw, err := d.Dial("tcp", o.addr)
	if err != nil {
		return nil, fmt.Errorf("dialing the proxy from %s: %w", d.LocalAddr, err)
	}
	raw.SetDeadline(time.Now().Add(30 * time.Second))
	if o.mode == "hello" {
		if _, err := raw.Write(o.hellos[i%len(o.hellos)]); err != nil {
			raw.Close()
			return nil, fmt.Errorf("sending the ClientHello for %s: %w", name, err)
		}
		var b [1]byte
		if _, err := io.ReadFull(raw, b[:]); err != nil || b[0] != '+' {
			raw.Close()
			return nil, fmt.Errorf("waiting for the sink's byte through the proxy (%s): %q, %v", name, b[:], err)
		}
		raw.SetDeadline(time.Time{})
		return raw, nil
	}
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: name, NextProtos: []string{"http/1.1"}})
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", o.path, name)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("GET %s from %s through the proxy: %w", o.path, name, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("GET %s from %s through the proxy: %s", o.path, name, resp.Status)
	}
	raw.SetDeadline(time.Time{})
	return c, nil
}

func main() {
	addr := flag.String("addr", "", "proxy host:port")
	pid := flag.Int("pid", 0, "proxy process id")
	n := flag.Int("n", 5000, "connections")
	mode := flag.String("mode", "request", "request (TLS handshake and a GET, to a web server) or hello (a ClientHello only, to bench/sink)")
	path := flag.String("path", "/1k", "mode request: path to request on each connection")
	snis := flag.String("sni", "bench.example", "server names, comma-separated, taken in turn")
	sources := flag.Int("sources", 1, "source addresses: 1 is 127.0.0.1, k > 1 is 127.0.0.2 to 127.0.0.(k+1)")
	parallel := flag.Int("c", 8, "connections opened at once")
	metrics := flag.String("metrics", "", "the proxy's Prometheus /metrics URL, for its Go heap and stacks (optional)")
	settle := flag.Duration("settle", 2*time.Second, "wait after the last connection before measuring")
	flag.Parse()
	usage := func(msg string) {
		fmt.Fprintln(os.Stderr, "idleconns:", msg)
		flag.Usage()
		os.Exit(2)
	}
	switch {
	case *addr == "" || *pid <= 0:
		usage("-addr and -pid are required")
	case *n < 1:
		usage("-n must be at least 1")
	case *mode != "request" && *mode != "hello":
		usage(fmt.Sprintf("-mode %q: want request or hello", *mode))
	case *parallel < 1:
		usage("-c must be at least 1")
	case flag.NArg() > 0:
		usage("unexpected arguments")
	}
	o := &opener{addr: *addr, path: *path, mode: *mode, names: strings.Split(*snis, ",")}
	if *sources == 1 {
		o.dialers = []*net.Dialer{{Timeout: 10 * time.Second}}
	} else {
		srcs, err := loadgen.Sources(*sources)
		if err != nil {
			usage(err.Error())
		}
		for _, s := range srcs {
			o.dialers = append(o.dialers, loadgen.Dialer(s, 10*time.Second))
		}
	}
	ports, err := loadgen.EphemeralPorts()
	if err != nil {
		fail(err)
	}
	// Every connection goes to the one proxy address, so each source
	// address can open as many as the ephemeral range has ports. The
	// proxy's own dials are bounded the same way per backend address,
	// which the caller sees to (a backend port per name).
	if perSource := (*n + *sources - 1) / *sources; perSource > ports*9/10 {
		usage(fmt.Sprintf("%d connections from %d source address(es) would take %d ports each, and the ephemeral range (net.ipv4.ip_local_port_range) has %d: use more -sources", *n, *sources, perSource, ports))
	}
	if err := loadgen.RaiseNoFile(uint64(*n) + 256); err != nil {
		fail(err)
	}
	if *mode == "hello" {
		for _, name := range o.names {
			h, err := loadgen.ClientHello(name, "h2", "http/1.1")
			if err != nil {
				fail(err)
			}
			o.hellos = append(o.hellos, h)
		}
	}

	before, err := rssKiB(*pid)
	if err != nil {
		fail(err)
	}
	var goBefore goStats
	if *metrics != "" {
		if goBefore, err = goMemory(*metrics); err != nil {
			fail(err)
		}
	}
	conns := make([]net.Conn, *n)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	start := time.Now()
	for range *parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= *n {
					return
				}
				c, err := o.open(i)
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i+1, err); cancel() })
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	cancel()
	opened := time.Since(start)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if firstErr != nil {
		held := 0
		for _, c := range conns {
			if c != nil {
				held++
			}
		}
		if errors.Is(firstErr, syscall.EMFILE) {
			firstErr = fmt.Errorf("%w (this process's RLIMIT_NOFILE)", firstErr)
		}
		fail(fmt.Errorf("%d of %d connections relayed, then: %w", held, *n, firstErr))
	}
	time.Sleep(*settle)
	after, err := rssKiB(*pid)
	if err != nil {
		fail(err)
	}
	backend := "web server"
	if *mode == "hello" {
		backend = "bench/sink"
	}
	fmt.Printf("idle relayed connections: n=%d, mode %s (backend %s), %d source address(es), %d name(s), opened in %.1fs\n",
		*n, *mode, backend, *sources, len(o.names), opened.Seconds())
	fmt.Printf("  proxy RSS %d KiB -> %d KiB: %.1f KiB per connection\n", before, after, float64(after-before)/float64(*n))
	if *metrics != "" {
		goAfter, err := goMemory(*metrics)
		if err != nil {
			fail(err)
		}
		per := func(a, b float64) float64 { return (b - a) / float64(*n) }
		fmt.Printf("  proxy Go heap+stacks %+.0f KiB: %.1f KiB per connection (heap %.1f KiB, goroutine stacks %.1f KiB; %.2f goroutines per connection)\n",
			(goAfter.heap+goAfter.stack-goBefore.heap-goBefore.stack)/1024, per(goBefore.heap+goBefore.stack, goAfter.heap+goAfter.stack)/1024,
			per(goBefore.heap, goAfter.heap)/1024, per(goBefore.stack, goAfter.stack)/1024, per(goBefore.goroutines, goAfter.goroutines))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "idleconns:", err)
	os.Exit(1)
}
