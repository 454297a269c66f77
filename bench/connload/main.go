//go:build linux

// Command connload is the load of the hosting benchmarks
// (bench/hosting.sh) against a front door: a normal client, -c workers
// each making one ordinary request after another (a new TCP connection,
// a full TLS handshake and a GET of -path, checked: 200 and a body),
// names taken in turn from -sni, for -d (or, with -keepalive, requests
// on one TLS connection per worker); and, optionally, a burst of
// -burst new connections spread evenly over -burst-in, -burst-at after
// the start, each sending a ClientHello for -burst-sni and waiting for
// the one byte bench/sink writes when the front door has relayed it.
//
// It reports the normal client's latency (p50, p99, max) before and
// during the burst, its failures with the first few errors, and how many
// burst connections were served, refused by the front door (closed
// without the sink's byte) or failed (dial errors, timeouts). It exits 1
// when a normal request failed: the reload benchmark requires none.
//
// The burst comes from -sources addresses, 127.0.0.2 on, as a burst from
// the Internet comes from many; the normal client from 127.0.0.1.
//
//	go run ./bench/connload -addr 127.0.0.1:9443 -sni site0.example -d 5s -burst 20000 -burst-sni burst.example
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
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tlsalpn/tlsalpn/bench/internal/loadgen"
)

// sample is one normal request: when it started and how long it took.
type sample struct {
	start time.Time
	took  time.Duration
	// The phases of a request on a new connection: the TCP connect (the
	// kernel's handshake, before the front door accepts), the TLS
	// handshake (the front door accepts, reads the ClientHello, dials
	// the backend and relays two flights), the GET (one more round trip).
	dial, handshake time.Duration
}

type normalResult struct {
	mu       sync.Mutex
	samples  []sample
	failed   int
	firstErr []string
}

func (r *normalResult) add(s sample, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.failed++
		if len(r.firstErr) < 5 {
			r.firstErr = append(r.firstErr, err.Error())
		}
		return
	}
	r.samples = append(r.samples, s)
}

// client is one worker of the normal client. With keepAlive it keeps its
// TLS connection for the next request (a browser on a page), else each
// request takes a new TCP connection and a full TLS handshake (a new
// visitor); after a failure it starts again on a new connection.
type client struct {
	addr, path string
	keepAlive  bool
	conn       *tls.Conn
	br         *bufio.Reader
	phases     sample // dial and handshake of the last request that made a connection
}

func (c *client) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// request makes one ordinary request through the front door.
func (c *client) request(ctx context.Context, name string) error {
	c.phases = sample{}
	if c.conn == nil {
		d := net.Dialer{Timeout: 5 * time.Second}
		t0 := time.Now()
		raw, err := d.DialContext(ctx, "tcp", c.addr)
		if err != nil {
			return fmt.Errorf("%s: dialing the front door: %w", name, err)
		}
		c.phases.dial = time.Since(t0)
		raw.SetDeadline(time.Now().Add(5 * time.Second))
		c.conn = tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: name, NextProtos: []string{"http/1.1"}})
		c.br = bufio.NewReader(c.conn)
		if err := c.conn.Handshake(); err != nil {
			c.close()
			return fmt.Errorf("%s: TLS handshake through the front door: %w", name, err)
		}
		c.phases.handshake = time.Since(t0) - c.phases.dial
	}
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	closing := ""
	if !c.keepAlive {
		closing = "Connection: close\r\n"
		defer c.close()
	}
	fmt.Fprintf(c.conn, "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", c.path, name, closing)
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		c.close()
		return fmt.Errorf("%s: GET %s: %w", name, c.path, err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || n == 0 {
		c.close()
		return fmt.Errorf("%s: GET %s: %s, %d bytes, %v", name, c.path, resp.Status, n, err)
	}
	if resp.Close {
		c.close() // the server ends the connection here (nginx's keepalive_requests)
	}
	return nil
}

type burstResult struct {
	served, refused, failed atomic.Int64
	firstErr                sync.Map // kind -> first error
	lastStart               atomic.Int64
}

// burstConn makes one burst connection: the front door must relay its
// ClientHello to the sink, whose byte comes back.
func burstConn(d *net.Dialer, addr string, hello []byte, res *burstResult) {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		res.failed.Add(1)
		res.firstErr.LoadOrStore("dial", err.Error())
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(hello); err != nil {
		res.refused.Add(1)
		res.firstErr.LoadOrStore("write", err.Error())
		return
	}
	var b [1]byte
	_, err = io.ReadFull(c, b[:])
	switch {
	case err == nil && b[0] == '+':
		res.served.Add(1)
	case errors.Is(err, os.ErrDeadlineExceeded):
		res.failed.Add(1)
		res.firstErr.LoadOrStore("timeout", err.Error())
	default:
		res.refused.Add(1)
		res.firstErr.LoadOrStore("refused", fmt.Sprintf("%q, %v", b[:], err))
	}
}

func percentiles(s []sample) string {
	if len(s) == 0 {
		return "no requests"
	}
	return fmt.Sprintf("%d requests, %s", len(s), spread(s, func(x sample) time.Duration { return x.took }))
}

// spread is the p50, p99 and max of one duration of the samples.
func spread(s []sample, of func(sample) time.Duration) string {
	d := make([]time.Duration, len(s))
	for i := range s {
		d[i] = of(s[i])
	}
	slices.Sort(d)
	at := func(p float64) time.Duration { return d[min(len(d)-1, int(p*float64(len(d))))] }
	ms := func(x time.Duration) string { return fmt.Sprintf("%.1f ms", float64(x)/float64(time.Millisecond)) }
	return fmt.Sprintf("p50 %s, p99 %s, max %s", ms(at(0.50)), ms(at(0.99)), ms(d[len(d)-1]))
}

// phases says where the time of new connections went.
func phases(s []sample) string {
	var fresh []sample
	for _, x := range s {
		if x.dial > 0 {
			fresh = append(fresh, x)
		}
	}
	if len(fresh) == 0 {
		return ""
	}
	return fmt.Sprintf("TCP connect %s; TLS handshake %s; GET %s",
		spread(fresh, func(x sample) time.Duration { return x.dial }),
		spread(fresh, func(x sample) time.Duration { return x.handshake }),
		spread(fresh, func(x sample) time.Duration { return x.took - x.dial - x.handshake }))
}

func main() {
	addr := flag.String("addr", "", "front door host:port")
	snis := flag.String("sni", "bench.example", "normal client: server names, comma-separated, taken in turn")
	path := flag.String("path", "/1k", "normal client: path to GET")
	workers := flag.Int("c", 1, "normal client: requests in flight")
	dur := flag.Duration("d", 5*time.Second, "how long the normal client runs (at least: until a second after the burst)")
	keepAlive := flag.Bool("keepalive", false, "normal client: each worker keeps its TLS connection for its next request (with one name)")
	burst := flag.Int("burst", 0, "burst: new connections (0: none)")
	burstSNI := flag.String("burst-sni", "burst.example", "burst: server name of its ClientHellos")
	burstAt := flag.Duration("burst-at", time.Second, "burst: when it starts, after the normal client")
	burstIn := flag.Duration("burst-in", time.Second, "burst: the time its connections are spread over")
	sources := flag.Int("sources", 64, "burst: source addresses, 127.0.0.2 on")
	burstWorkers := flag.Int("burst-workers", 512, "burst: connections in flight at most")
	burstOnly := flag.Bool("burst-only", false, "make only the burst, at once, and report it (how connload runs its burst: in a process of its own)")
	flag.Parse()
	usage := func(msg string) {
		fmt.Fprintln(os.Stderr, "connload:", msg)
		flag.Usage()
		os.Exit(2)
	}
	if *burstOnly {
		if *addr == "" || *burst < 1 || *burstIn <= 0 || *burstWorkers < 1 {
			usage("-burst-only needs -addr, a positive -burst and -burst-in, and -burst-workers at least 1")
		}
		runBurst(*addr, *burst, *burstSNI, *burstIn, *sources, *burstWorkers)
		return
	}
	switch {
	case *addr == "":
		usage("-addr is required")
	case *workers < 1 || *dur <= 0:
		usage("-c must be at least 1 and -d positive")
	case *burst < 0 || *burstIn <= 0 || *burstWorkers < 1:
		usage("-burst must not be negative, -burst-in must be positive, -burst-workers at least 1")
	case *burst > 0 && *burstAt+*burstIn >= *dur:
		usage(fmt.Sprintf("the burst (-burst-at %v, -burst-in %v) must be meant to end before the normal client stops (-d %v)", *burstAt, *burstIn, *dur))
	case flag.NArg() > 0:
		usage("unexpected arguments")
	}
	names := strings.Split(*snis, ",")
	if *keepAlive && len(names) > 1 {
		usage("-keepalive takes one -sni name: a connection's name is fixed by its handshake")
	}
	start := time.Now()
	// The normal client runs for -d, and on until a second after the last
	// burst connection when the burst takes longer than meant (the front
	// door cannot keep up): "after the burst" is then measured too.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var normal normalResult
	var wg sync.WaitGroup
	var turn atomic.Int64
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &client{addr: *addr, path: *path, keepAlive: *keepAlive}
			defer c.close()
			for ctx.Err() == nil {
				name := names[int(turn.Add(1)-1)%len(names)]
				t := time.Now()
				err := c.request(ctx, name)
				if ctx.Err() != nil {
					return // cut short by the end of the run, not a failure
				}
				normal.add(sample{start: t, took: time.Since(t), dial: c.phases.dial, handshake: c.phases.handshake}, err)
			}
		}()
	}

	// The burst runs in a process of its own, as it would on other
	// machines: in this one its hundreds of goroutines would queue the
	// normal client's behind them in the Go scheduler, and its latency
	// would be connload's, not the front door's.
	var burstStart, burstDone time.Time
	var burstOut []byte
	if *burst > 0 {
		burstStart = start.Add(*burstAt)
		time.Sleep(time.Until(burstStart))
		cmd := exec.Command(os.Args[0], "-burst-only", "-addr", *addr, "-burst", strconv.Itoa(*burst), "-burst-sni", *burstSNI,
			"-burst-in", burstIn.String(), "-sources", strconv.Itoa(*sources), "-burst-workers", strconv.Itoa(*burstWorkers))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			fail(fmt.Errorf("the burst: %w", err))
		}
		burstOut = out
		burstDone = time.Now()
	}
	time.Sleep(max(time.Until(start.Add(*dur)), time.Until(burstDone.Add(time.Second))))
	cancel()
	wg.Wait()
	elapsed := time.Since(start)

	how := "new TLS connection + GET %s per request"
	if *keepAlive {
		how = "keep-alive GET %s on one TLS connection each"
	}
	fmt.Printf("normal client: %d worker(s), "+how+", names %s, %.1fs\n", *workers, *path, *snis, elapsed.Seconds())
	if *burst == 0 {
		fmt.Printf("  %s\n", percentiles(normal.samples))
	} else {
		var before, during, after []sample
		for _, s := range normal.samples {
			switch end := s.start.Add(s.took); {
			case end.Before(burstStart):
				before = append(before, s)
			case s.start.After(burstDone):
				after = append(after, s)
			default:
				during = append(during, s)
			}
		}
		fmt.Printf("  before the burst: %s\n", percentiles(before))
		fmt.Printf("  during the burst: %s\n", percentiles(during))
		if p := phases(during); p != "" {
			fmt.Printf("    on new connections: %s\n", p)
		}
		fmt.Printf("  after the burst:  %s\n", percentiles(after))
		os.Stdout.Write(burstOut)
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		fmt.Printf("  the normal client's own CPU (on this machine too): %.2fs user, %.2fs system\n",
			time.Duration(ru.Utime.Nano()).Seconds(), time.Duration(ru.Stime.Nano()).Seconds())
	}
	fmt.Printf("  normal requests failed: %d\n", normal.failed)
	for _, e := range normal.firstErr {
		fmt.Printf("    %s\n", e)
	}
	if normal.failed > 0 {
		os.Exit(1)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "connload:", err)
	os.Exit(1)
}

// runBurst makes n burst connections spread over in, from sources source
// addresses, at most workers at a time, and reports them.
func runBurst(addr string, n int, sni string, in time.Duration, sources, workers int) {
	srcs, err := loadgen.Sources(sources)
	if err != nil {
		fail(err)
	}
	var dialers []*net.Dialer
	for _, s := range srcs {
		dialers = append(dialers, loadgen.Dialer(s, 5*time.Second))
	}
	hello, err := loadgen.ClientHello(sni, "h2", "http/1.1")
	if err != nil {
		fail(err)
	}
	if err := loadgen.RaiseNoFile(uint64(workers + 256)); err != nil {
		fail(err)
	}
	var br burstResult
	burstStart := time.Now()
	var next atomic.Int64
	var bwg sync.WaitGroup
	gap := in / time.Duration(n)
	for range workers {
		bwg.Add(1)
		go func() {
			defer bwg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				time.Sleep(time.Until(burstStart.Add(time.Duration(i) * gap)))
				br.lastStart.Store(int64(time.Since(burstStart)))
				burstConn(dialers[i%int64(len(dialers))], addr, hello, &br)
			}
		}()
	}
	bwg.Wait()
	burstDone := time.Now()
	fmt.Printf("burst: %d new connections (ClientHello for %s, backend bench/sink -close) from %d source addresses, at most %d in flight, meant to start within %v, from a process of its own\n",
		n, sni, sources, workers, in)
	fmt.Printf("  last one started %.2fs after the first; all done in %.2fs: %d served, %d refused by the front door, %d failed\n",
		time.Duration(br.lastStart.Load()).Seconds(), burstDone.Sub(burstStart).Seconds(), br.served.Load(), br.refused.Load(), br.failed.Load())
	br.firstErr.Range(func(k, v any) bool {
		fmt.Printf("  first %s: %s\n", k, v)
		return true
	})
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		fmt.Printf("  the burst's own CPU (on this machine too): %.2fs user, %.2fs system\n",
			time.Duration(ru.Utime.Nano()).Seconds(), time.Duration(ru.Stime.Nano()).Seconds())
	}
}
