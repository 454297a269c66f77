//go:build linux

package sockmap

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func newForwarder(t testing.TB) *Forwarder {
	t.Helper()
	f, err := New()
	if errors.Is(err, ErrUnsupported) {
		t.Skipf("in-kernel forwarding unavailable here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func listen(t testing.TB) *net.TCPListener {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serve runs handle for every connection accepted on ln until the test
// ends.
func serve(t testing.TB, handle func(*net.TCPConn)) *net.TCPAddr {
	ln := listen(t)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.AcceptTCP()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// ready is what test backends send first. A client waits for it before it
// sends, as a TLS client waits for the server's flight: it reaches the
// client only once the relay forwards, so the client's bytes never wait
// unread on the relay (which Add would refuse).
const ready = "ready;"

func greet(handle func(*net.TCPConn)) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		if _, err := c.Write([]byte(ready)); err != nil {
			return
		}
		handle(c)
	}
}

// dialReady dials addr and reads the backend's greeting.
func dialReady(t testing.TB, addr *net.TCPAddr) *net.TCPConn {
	t.Helper()
	c := dial(t, addr)
	got := make([]byte, len(ready))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != ready {
		t.Fatalf("greeting %q, %v", got, err)
	}
	return c
}

// echo copies what it reads back until EOF, then half-closes.
func echo(c *net.TCPConn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				c.CloseWrite()
			}
			return
		}
	}
}

// relayOpts shape a test relay.
type relayOpts struct {
	idle   time.Duration
	prefix []byte
	// beforePipe runs on the relay's two sockets before forwarding
	// starts.
	beforePipe func(client, backend *net.TCPConn)
}

// relayResult is what one relayed connection ended with.
type relayResult struct {
	handled bool
	err     error
}

// relay accepts on a new listener, dials backend for each connection,
// writes opts.prefix to it, and forwards with Pipe (or io.Copy when f is
// nil). Results arrive on the returned channel.
func relay(t testing.TB, f *Forwarder, backend *net.TCPAddr, opts relayOpts) (*net.TCPAddr, <-chan relayResult) {
	results := make(chan relayResult, 4096)
	addr := serve(t, func(c *net.TCPConn) {
		b, err := net.DialTCP("tcp", nil, backend)
		if err != nil {
			results <- relayResult{err: err}
			return
		}
		defer b.Close()
		if len(opts.prefix) > 0 {
			if _, err := b.Write(opts.prefix); err != nil {
				results <- relayResult{err: err}
				return
			}
		}
		if opts.beforePipe != nil {
			opts.beforePipe(c, b)
		}
		if f == nil {
			copyRelay(c, b)
			results <- relayResult{}
			return
		}
		handled, err := Pipe(f, c, b, opts.idle)
		if !handled {
			copyRelay(c, b)
		}
		results <- relayResult{handled: handled, err: err}
	})
	return addr, results
}

// copyRelay is the plain user-space relay the benchmark compares with.
func copyRelay(c, b *net.TCPConn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(c, b)
		c.CloseWrite()
	}()
	io.Copy(b, c)
	b.CloseWrite()
	wg.Wait()
}

func dial(t testing.TB, addr *net.TCPAddr) *net.TCPConn {
	t.Helper()
	c, err := net.DialTCP("tcp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitEmpty fails the test unless both maps empty out soon.
func waitEmpty(t testing.TB, f *Forwarder) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := f.entries()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d map entries left after all pairs ended", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func wantHandled(t testing.TB, results <-chan relayResult, wantErr bool) {
	t.Helper()
	select {
	case r := <-results:
		if !r.handled {
			t.Fatalf("pair not forwarded in the kernel: %v", r.err)
		}
		if (r.err != nil) != wantErr {
			t.Fatalf("Pipe error = %v, want error: %v", r.err, wantErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not finish")
	}
}

func TestBulkEcho(t *testing.T) {
	f := newForwarder(t)
	for _, size := range []int{64 << 10, 16 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			addr, results := relay(t, f, serve(t, greet(echo)), relayOpts{})
			c := dialReady(t, addr)
			data := make([]byte, size)
			for i := range data {
				data[i] = byte(rand.Uint32())
			}
			// Write and read at once: the echo sends back while the
			// client still sends, so both directions are busy.
			werr := make(chan error, 1)
			go func() {
				_, err := c.Write(data)
				if err == nil {
					err = c.CloseWrite()
				}
				werr <- err
			}()
			h := sha256.New()
			n, err := io.Copy(h, c)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			if n != int64(size) || !bytes.Equal(h.Sum(nil), sha(data)) {
				t.Fatalf("echoed %d bytes, hash match %v; sent %d", n, bytes.Equal(h.Sum(nil), sha(data)), size)
			}
			wantHandled(t, results, false)
			waitEmpty(t, f)
		})
	}
}

func sha(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func TestRoundTrips(t *testing.T) {
	f := newForwarder(t)
	addr, results := relay(t, f, serve(t, greet(echo)), relayOpts{prefix: []byte("prefix!")})
	c := dialReady(t, addr)
	got := make([]byte, 100)
	if _, err := io.ReadFull(c, got[:7]); err != nil || string(got[:7]) != "prefix!" {
		t.Fatalf("prefix echo = %q, %v", got[:7], err)
	}
	msg := make([]byte, 100)
	for i := range 10000 {
		for j := range msg {
			msg[j] = byte(i + j)
		}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("round trip %d: %v", i, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("round trip %d: got %x, want %x", i, got[:8], msg[:8])
		}
	}
	c.CloseWrite()
	if n, err := io.Copy(io.Discard, c); n != 0 || err != nil {
		t.Fatalf("after half-close: %d more bytes, %v", n, err)
	}
	wantHandled(t, results, false)
	waitEmpty(t, f)
}

// TestBackendSpeaksFirst checks bytes the backend sent before the pair was
// hooked are forwarded, and before later ones.
func TestBackendSpeaksFirst(t *testing.T) {
	f := newForwarder(t)
	backend := serve(t, func(c *net.TCPConn) {
		c.Write([]byte("greeting;"))
		echo(c)
	})
	addr, results := relay(t, f, backend, relayOpts{beforePipe: func(_, b *net.TCPConn) {
		waitQueued(t, b)
	}})
	c := dial(t, addr)
	greeting := make([]byte, 9)
	if _, err := io.ReadFull(c, greeting); err != nil || string(greeting) != "greeting;" {
		t.Fatalf("got %q, %v", greeting, err)
	}
	c.Write([]byte("ping"))
	c.CloseWrite()
	all, err := io.ReadAll(c)
	if err != nil || string(all) != "ping" {
		t.Fatalf("got %q, %v", all, err)
	}
	wantHandled(t, results, false)
	waitEmpty(t, f)
}

// waitQueued waits until c has bytes in its receive queue.
func waitQueued(t testing.TB, c *net.TCPConn) {
	rc, _ := c.SyscallConn()
	for range 1000 {
		var n int
		rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
		if n > 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Error("backend sent nothing")
}

// TestRefusesQueuedClient checks a client with unread bytes is refused
// untouched and can still be copied in user space.
func TestRefusesQueuedClient(t *testing.T) {
	f := newForwarder(t)
	backend := serve(t, echo)
	ln := listen(t)
	c := dial(t, ln.Addr().(*net.TCPAddr))
	c.Write([]byte("early"))
	rc, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	waitQueued(t, rc)
	b := dial(t, backend)
	handled, err := Pipe(f, rc, b, 0)
	if handled || !errors.Is(err, ErrRefused) {
		t.Fatalf("Pipe = %v, %v; want refused", handled, err)
	}
	waitEmpty(t, f)
	go copyRelay(rc, b)
	c.CloseWrite()
	all, err := io.ReadAll(c)
	if err != nil || string(all) != "early" {
		t.Fatalf("fallback copy got %q, %v", all, err)
	}
}

// TestHalfClose checks each side's EOF reaches the other after all its
// data, while the other direction keeps working.
func TestHalfClose(t *testing.T) {
	f := newForwarder(t)
	const size = 4 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	t.Run("client first", func(t *testing.T) {
		// The backend reads to EOF, then answers with the hash.
		backend := serve(t, greet(func(c *net.TCPConn) {
			h := sha256.New()
			io.Copy(h, c)
			c.Write(h.Sum(nil))
		}))
		addr, results := relay(t, f, backend, relayOpts{})
		c := dialReady(t, addr)
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		reply, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(reply, sha(data)) {
			t.Fatalf("reply %x, %v; want the hash of what was sent", reply, err)
		}
		wantHandled(t, results, false)
		waitEmpty(t, f)
	})
	t.Run("backend first", func(t *testing.T) {
		// The backend sends everything and half-closes, then reads what
		// the client sends after that.
		got := make(chan []byte, 1)
		backend := serve(t, func(c *net.TCPConn) {
			c.Write(data)
			c.CloseWrite()
			all, _ := io.ReadAll(c)
			got <- all
		})
		addr, results := relay(t, f, backend, relayOpts{})
		c := dial(t, addr)
		all, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(sha(all), sha(data)) {
			t.Fatalf("client read %d bytes, %v; want %d, equal", len(all), err, size)
		}
		c.Write([]byte("after your EOF"))
		c.CloseWrite()
		if b := <-got; string(b) != "after your EOF" {
			t.Fatalf("backend got %q", b)
		}
		wantHandled(t, results, false)
		waitEmpty(t, f)
	})
}

// TestReset checks a reset from either side ends the pair promptly and
// empties the maps.
func TestReset(t *testing.T) {
	f := newForwarder(t)
	for _, side := range []string{"client", "backend"} {
		t.Run(side, func(t *testing.T) {
			bconn := make(chan *net.TCPConn, 1)
			backend := serve(t, greet(func(c *net.TCPConn) {
				bconn <- c
				io.Copy(io.Discard, c)
			}))
			addr, results := relay(t, f, backend, relayOpts{})
			c := dialReady(t, addr)
			c.Write([]byte("x"))
			b := <-bconn
			var victim *net.TCPConn
			if side == "client" {
				c.SetLinger(0)
				c.Close()
				victim = b
			} else {
				b.SetLinger(0)
				b.Close()
				victim = c
			}
			victim.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.Copy(io.Discard, victim); errors.Is(err, unix.ETIMEDOUT) || isTimeout(err) {
				t.Fatal("the other side's connection stayed open after a reset")
			}
			wantHandled(t, results, true)
			waitEmpty(t, f)
		})
	}
}

// TestRelayCloses checks that closing the relay's client connection from
// elsewhere (as Server.Shutdown does) ends the pair and empties the maps.
func TestRelayCloses(t *testing.T) {
	f := newForwarder(t)
	relayConn := make(chan *net.TCPConn, 1)
	addr, results := relay(t, f, serve(t, greet(echo)), relayOpts{beforePipe: func(c, _ *net.TCPConn) {
		relayConn <- c
	}})
	c := dialReady(t, addr)
	(<-relayConn).Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c); isTimeout(err) {
		t.Fatal("client connection stayed open after the relay closed it")
	}
	wantHandled(t, results, true)
	waitEmpty(t, f)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestManyPairs(t *testing.T) {
	f := newForwarder(t)
	addr, results := relay(t, f, serve(t, greet(echo)), relayOpts{})
	const pairs = 1000
	var wg sync.WaitGroup
	errs := make(chan error, pairs)
	for i := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTCP("tcp", nil, addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			greeting := make([]byte, len(ready))
			if _, err := io.ReadFull(c, greeting); err != nil {
				errs <- err
				return
			}
			msg := []byte(fmt.Sprintf("pair %d", i))
			got := make([]byte, len(msg))
			for range 10 {
				if _, err := c.Write(msg); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("pair %d: got %q, %v", i, got, err)
					return
				}
			}
			c.CloseWrite()
			if n, err := io.Copy(io.Discard, c); n != 0 || err != nil {
				errs <- fmt.Errorf("pair %d: after EOF %d bytes, %v", i, n, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for range pairs {
		wantHandled(t, results, false)
	}
	waitEmpty(t, f)
}

func TestIdleTimeout(t *testing.T) {
	f := newForwarder(t)
	const idle = 200 * time.Millisecond
	addr, results := relay(t, f, serve(t, greet(echo)), relayOpts{idle: idle})
	silent := dialReady(t, addr)
	active := dialReady(t, addr)
	start := time.Now()
	silentDone := make(chan time.Duration, 1)
	go func() {
		io.Copy(io.Discard, silent)
		silentDone <- time.Since(start)
	}()
	buf := make([]byte, 1)
	for time.Since(start) < 3*idle {
		if _, err := active.Write([]byte("a")); err != nil {
			t.Fatalf("active pair closed: %v", err)
		}
		if _, err := io.ReadFull(active, buf); err != nil {
			t.Fatalf("active pair closed: %v", err)
		}
		time.Sleep(idle / 4)
	}
	select {
	case d := <-silentDone:
		if d < idle || d > 2*idle {
			t.Errorf("silent pair closed after %v, want about %v", d, idle)
		}
	default:
		t.Fatal("silent pair still open")
	}
	wantHandled(t, results, true) // the silent one, timed out
	active.CloseWrite()
	io.Copy(io.Discard, active)
	wantHandled(t, results, false)
	waitEmpty(t, f)
}

// BenchmarkRoundTrips compares 1 KiB request/response round trips over 64
// connections through a user-space io.Copy relay and through Pipe.
func BenchmarkRoundTrips(b *testing.B) {
	for _, mode := range []string{"direct", "copy", "sockmap"} {
		b.Run(mode, func(b *testing.B) {
			var f *Forwarder
			if mode == "sockmap" {
				f = newForwarder(b)
			}
			addr := serve(b, greet(echo))
			if mode != "direct" {
				addr, _ = relay(b, f, addr, relayOpts{})
			}
			const conns = 64
			cs := make([]*net.TCPConn, conns)
			for i := range cs {
				cs[i] = dialReady(b, addr)
			}
			msg := make([]byte, 1024)
			b.ResetTimer()
			start := time.Now()
			busy0 := busyTicks(b)
			var wg sync.WaitGroup
			for i, c := range cs {
				n := b.N / conns
				if i < b.N%conns {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					got := make([]byte, len(msg))
					for range n {
						if _, err := c.Write(msg); err != nil {
							b.Error(err)
							return
						}
						if _, err := io.ReadFull(c, got); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "roundtrips/s")
			// Machine-wide CPU, kernel workers included: the relay's
			// cost no longer shows in this process's time.
			b.ReportMetric(float64(busyTicks(b)-busy0)*1e6/100/float64(b.N), "cpu-µs/roundtrip")
		})
	}
}

// busyTicks is the machine's non-idle CPU time so far, in USER_HZ (100/s)
// ticks, from /proc/stat.
func busyTicks(b *testing.B) uint64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	var busy uint64
	for i, field := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseUint(field, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy
}

// BenchmarkBulk compares one-way bulk transfer (the backend discards)
// through a user-space io.Copy relay and through Pipe.
func BenchmarkBulk(b *testing.B) {
	for _, mode := range []string{"direct", "copy", "sockmap"} {
		b.Run(mode, func(b *testing.B) {
			var f *Forwarder
			if mode == "sockmap" {
				f = newForwarder(b)
			}
			addr := serve(b, greet(func(c *net.TCPConn) {
				io.Copy(io.Discard, c)
			}))
			if mode != "direct" {
				addr, _ = relay(b, f, addr, relayOpts{})
			}
			c := dialReady(b, addr)
			buf := make([]byte, 1<<20)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			busy0 := busyTicks(b)
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(busyTicks(b)-busy0)*1e4/float64(b.N), "cpu-µs/MiB")
		})
	}
}
