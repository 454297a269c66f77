//go:build linux

// The flood tests bind clients to addresses across 127.0.0.0/8, which Linux
// routes to loopback whole; elsewhere only 127.0.0.1 exists.

package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"
	"golang.org/x/sys/unix"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/responder"
)

// dialerFrom dials from the loopback address src.
func dialerFrom(src string) *net.Dialer {
	return &net.Dialer{Timeout: prompt, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
}

// tlsDialFrom is tlsDial from the loopback address src.
func tlsDialFrom(src, addr, sni string, alpn ...string) (*tls.Conn, error) {
	c, err := tls.DialWithDialer(dialerFrom(src), "tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: sni, NextProtos: alpn})
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(prompt))
	return c, nil
}

// needFiles makes sure this process may open n descriptors, raising its
// soft limit if need be, and skips the test when the hard limit is lower.
func needFiles(t testing.TB, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("reading RLIMIT_NOFILE: %v", err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("needs %d file descriptors; RLIMIT_NOFILE's hard limit is %d (raise it, e.g. ulimit -Hn %d, to run this test)", n, lim.Max, n)
	}
	old := lim
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("needs %d file descriptors; raising RLIMIT_NOFILE from %d: %v", n, old.Cur, err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// settle waits until the proxy has taken in what is queued for it: its
// count of connections stays put for a while.
func (p *testProxy) settle(t testing.TB) int64 {
	t.Helper()
	deadline := time.Now().Add(4 * prompt)
	last, still := p.Active(), 0
	for still < 5 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if n := p.Active(); n != last {
			last, still = n, 0
		} else {
			still++
		}
	}
	return last
}

// TestFlood is issue 9's attack on the front door: sockets that never send
// a ClientHello, 9,000 of them from one address (127.0.0.2) against the
// default limits, and the same spread over many addresses near a smaller
// limit. While they are open, a normal client from another address
// (127.0.0.3) must complete TLS round trips through the front door to its
// backend, every time; a validation handshake (127.0.0.4) must get the
// validation certificate; and Pebble (from 127.0.0.1) must validate an
// order's tls-alpn-01 challenge through the front door. Before the limits,
// the attack held every slot and all three were refused.
func TestFlood(t *testing.T) {
	const attempts = 20
	tests := []struct {
		name      string
		maxConns  int // 0: the default
		sources   int // attacking addresses: 127.0.0.2, or 127.0.2.1 and up
		perSource int // sockets from each
	}{
		{"9000 from one source", 0, 1, 9000},
		{"1200 from 20 sources, limit 1000", 1000, 20, 60}, // under the per-source limit: eviction's case
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			attackers := tt.sources * tt.perSource
			needFiles(t, uint64(attackers+max(tt.maxConns, DefaultMaxConns)+500))
			r, id := pendingResponder(t, "example.com")
			be := startBackend(t, tlsEchoHandler(selfSigned(t, "backend.example")))
			// The attacker reconnects each socket the 10 s
			// ClientHello timeout frees; a timeout longer than the
			// test stands for that. It also reconnects every socket
			// the front door closes, below.
			p := startProxy(t, Config{MaxConns: tt.maxConns, ClientHelloTimeout: time.Minute, Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, r, nil)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			ca, err := democa.Start(ctx, democa.Options{TLSPort: portOf(t, p.addr), NoSleep: true})
			if err != nil {
				t.Fatalf("starting Pebble: %v", err)
			}
			defer ca.Close()

			dialers := []*net.Dialer{dialerFrom("127.0.0.2")}
			if tt.sources > 1 {
				dialers = nil
				for i := range tt.sources {
					dialers = append(dialers, dialerFrom(net.IPv4(127, 0, 2, 1+byte(i)).String()))
				}
			}
			for _, d := range dialers {
				// 9,000 connections at once can overflow the accept
				// queue on a busy machine: the kernel then drops SYNs,
				// and the client's retry comes 1 s, then 3 s, later.
				d.Timeout = 20 * time.Second
			}
			conns := make([]net.Conn, 0, attackers)
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for i := range attackers {
				c, err := dialers[i%len(dialers)].Dial("tcp", p.addr)
				if err != nil {
					t.Fatalf("attack socket %d: %v", len(conns)+1, err)
				}
				conns = append(conns, c)
			}
			held := p.settle(t)

			// While the clients below try, the attacker reconnects
			// each socket the front door closes (refused or evicted).
			stop, churned := make(chan struct{}), make(chan int, 1)
			var stopping atomic.Bool
			go func() {
				n := 0
				defer func() { churned <- n }()
				for {
					select {
					case <-stop:
						return
					default:
					}
					closed := closedByPeer(t, conns)
					for _, k := range closed {
						if stopping.Load() {
							break
						}
						conns[k].Close()
						if c, err := dialers[k%len(dialers)].Dial("tcp", p.addr); err == nil {
							conns[k] = c
							n++
						}
					}
					if len(closed) == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			}()
			stopped := false
			stopChurn := func() int {
				if stopped {
					return 0
				}
				stopped = true
				stopping.Store(true)
				close(stop)
				return <-churned
			}
			defer stopChurn()

			served := 0
			var lastErr error
			for range attempts {
				c, err := tlsDialFrom("127.0.0.3", p.addr, "www.example.com", "h2")
				if err == nil {
					if leaf := c.ConnectionState().PeerCertificates[0]; leaf.DNSNames[0] != "backend.example" {
						t.Fatalf("normal client got a certificate for %v, want the backend's", leaf.DNSNames)
					}
					err = echoRoundTrip(c, "through the flood")
					c.Close()
				}
				if err == nil {
					served++
				} else {
					lastErr = err
				}
			}
			c, err := tlsDialFrom("127.0.0.4", p.addr, "example.com", "acme-tls/1")
			if err == nil {
				err = challenge.Verify(c.ConnectionState().PeerCertificates[0], id, keyAuth)
				c.Close()
			}
			validated := err == nil
			pebbleErr := pebbleValidates(ctx, ca, r, "flood.example")
			reconnects := stopChurn()
			t.Logf("%d idle sockets from %d sources (%d reconnected meanwhile): the front door holds %d of them; normal client served %d of %d; validation handshake passed: %v; Pebble validated: %v",
				attackers, tt.sources, reconnects, held, served, attempts, validated, pebbleErr == nil)
			if served != attempts {
				t.Errorf("normal client served %d of %d times during the flood; last error: %v", served, attempts, lastErr)
			}
			if !validated {
				t.Errorf("validation handshake during the flood: %v", err)
			}
			if pebbleErr != nil {
				t.Errorf("Pebble's validation during the flood: %v", pebbleErr)
			}
		})
	}
}

// closedByPeer returns the indexes of the connections whose peer has
// closed them, with one poll over them all.
func closedByPeer(t testing.TB, conns []net.Conn) []int {
	pfds := make([]unix.PollFd, len(conns))
	for i, c := range conns {
		pfds[i].Fd = -1 // poll skips it
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			continue
		}
		rc.Control(func(fd uintptr) { pfds[i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLRDHUP} })
	}
	if _, err := unix.Poll(pfds, 0); err != nil && !errors.Is(err, unix.EINTR) {
		t.Errorf("polling the attack sockets: %v", err)
		return nil
	}
	var closed []int
	for i, p := range pfds {
		if p.Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
			closed = append(closed, i)
		}
	}
	return closed
}

// portOf is the port of the address addr.
func portOf(t testing.TB, addr string) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return int(ap.Port())
}

// pebbleValidates orders a certificate for name from ca and solves its
// tls-alpn-01 challenge with r, behind the front door Pebble dials (the
// port ca was started with; its DNS stub says 127.0.0.1). It returns nil
// once Pebble has found the authorization valid: its validator connected
// through the front door and got the validation certificate.
func pebbleValidates(ctx context.Context, ca *democa.CA, r *responder.Responder, name string) error {
	client := &acme.Client{Directory: ca.DirectoryURL(), HTTPClient: ca.HTTPClient(), PollInterval: 20 * time.Millisecond, PollTimeout: 10 * time.Second}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	acct, err := client.NewAccount(ctx, acme.Account{PrivateKey: key, TermsOfServiceAgreed: true})
	if err != nil {
		return fmt.Errorf("creating an account: %w", err)
	}
	order, err := client.NewOrder(ctx, acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: name}}})
	if err != nil {
		return fmt.Errorf("ordering %s: %w", name, err)
	}
	for _, u := range order.Authorizations {
		authz, err := client.GetAuthorization(ctx, acct, u)
		if err != nil {
			return fmt.Errorf("fetching the authorization for %s: %w", name, err)
		}
		i := slices.IndexFunc(authz.Challenges, func(ch acme.Challenge) bool { return ch.Type == acme.ChallengeTypeTLSALPN01 })
		if i < 0 {
			return fmt.Errorf("no tls-alpn-01 challenge for %s", name)
		}
		chal := authz.Challenges[i]
		id, err := challenge.ParseIdentifier(authz.IdentifierValue())
		if err != nil {
			return err
		}
		cert, err := challenge.Build(id, chal.KeyAuthorization)
		if err != nil {
			return err
		}
		if _, err := r.Publish(ctx, challenge.ServerName(id), cert); err != nil {
			return err
		}
		defer r.Unpublish(context.Background(), challenge.ServerName(id))
		if _, err := client.InitiateChallenge(ctx, acct, chal); err != nil {
			return fmt.Errorf("answering the challenge for %s: %w", name, err)
		}
		if _, err := client.PollAuthorization(ctx, acct, authz); err != nil {
			return fmt.Errorf("validating %s: %w", name, err)
		}
	}
	return nil
}

// TestEvictOldestWaiting checks that near the global limit a burst from
// many sources evicts the oldest connections that have not sent their
// ClientHello, in order, and never one that has.
func TestEvictOldestWaiting(t *testing.T) {
	const (
		max     = 100
		relayed = 10 // with their hello sent
		waiting = 80 // relayed+waiting is evictAt(max): nothing evicted yet
		burst   = 30
	)
	if evictAt(max) != relayed+waiting {
		t.Fatalf("evictAt(%d) = %d; the test assumes %d", max, evictAt(max), relayed+waiting)
	}
	be := startBackend(t, idHandler("backend"))
	p := startProxy(t, Config{MaxConns: max, ClientHelloTimeout: time.Minute, Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)

	var ready []net.Conn
	for i := range relayed {
		c, err := dialerFrom("127.0.0.5").Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(prompt))
		c.Write(hello("relayed.example"))
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "backend\n" {
			t.Fatalf("relayed connection %d: %q, %v", i, line, err)
		}
		c.SetDeadline(time.Time{})
		ready = append(ready, c)
	}
	// Each from its own source, in order: the accept loop takes them in
	// the order their handshakes completed.
	var old, young []net.Conn
	for i := range waiting + burst {
		c, err := dialerFrom(net.IPv4(127, 0, 1+byte(i/200), 1+byte(i%200)).String()).Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if i < burst {
			old = append(old, c)
		} else {
			young = append(young, c)
		}
	}
	for i, c := range old {
		if took := expectClosed(t, c, prompt); took > time.Second {
			t.Errorf("oldest waiting connection %d evicted after %v", i, took)
		}
	}
	for i, c := range young {
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("waiting connection %d of the %d youngest closed (%v); only the %d oldest should be", i, len(young), err, burst)
		}
	}
	p.waitActive(t, relayed+waiting)
	for i, c := range ready {
		if err := echoRoundTrip(c, "still here"); err != nil {
			t.Errorf("relayed connection %d after the burst: %v", i, err)
		}
	}
	// A normal client gets in, by evicting the oldest waiting one.
	if got, err := whichBackendFrom("127.0.0.3", p.addr, "normal.example"); err != nil || got != "backend" {
		t.Fatalf("normal client after the burst: %q, %v", got, err)
	}
	// Once every connection is gone, so is every slot: an evicted
	// connection's end does not free its slot a second time.
	for _, c := range slices.Concat(ready, old, young) {
		c.Close()
	}
	p.waitActive(t, 0)
	if live, waiting, sources := p.gate.counts(); live != 0 || waiting != 0 || sources != 0 {
		t.Errorf("with no connections left the gate counts %d admitted, %d waiting, %d sources", live, waiting, sources)
	}
}

// counts is what the gate holds: admitted connections, waiting ones, and
// sources with waiting ones.
func (g *gate) counts() (live, waiting, sources int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for w := g.head; w != nil; w = w.next {
		waiting++
	}
	return g.live, waiting, len(g.perSource)
}

// TestGateAllocs: admitting a connection, evicting for it, its hello and
// its end cost one small allocation (the waiter): the accept path stays as
// cheap as it was.
func TestGateAllocs(t *testing.T) {
	src := netip.MustParseAddr("192.0.2.1")
	var full gate
	for range 20 {
		full.admit(nil, src, 10, 128)
	}
	evicting := testing.AllocsPerRun(1000, func() {
		w, victim, v := full.admit(nil, src, 10, 128) // evicts the oldest
		if v != admitted || victim == nil || w == nil {
			t.Fatalf("verdict %v, victim %v", v, victim)
		}
		full.release(victim) // its handler ending: nothing left to free
	})
	var g gate
	plain := testing.AllocsPerRun(1000, func() {
		w, _, _ := g.admit(nil, src, 10, 128)
		g.hello(w)
		g.release(w)
	})
	if evicting > 1 || plain > 1 {
		t.Errorf("allocations per connection: %.1f evicting, %.1f otherwise; want 1", evicting, plain)
	}
	// Waiting connections stop growing at nine tenths.
	if live, waiting, _ := full.counts(); live != 9 || waiting != 9 {
		t.Errorf("after evicting for each new connection: %d admitted, %d waiting; want 9 and 9", live, waiting)
	}
}

// TestHelloWaitsPerSource checks the per-source limit on connections that
// have not sent their ClientHello: the one over it is closed at once,
// other sources are not affected, a hello sent frees a place, and a
// trusted proxy is not limited.
func TestHelloWaitsPerSource(t *testing.T) {
	const perSource = 5
	be := startBackend(t, idHandler("backend"))
	start := func(t *testing.T, trusted ...netip.Prefix) *testProxy {
		cfg := Config{MaxHelloWaitsPerSource: perSource, ClientHelloTimeout: time.Minute, TrustedProxies: trusted, Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}
		return startProxy(t, cfg, nil, nil)
	}
	dialFrom := func(t *testing.T, src, addr string) net.Conn {
		t.Helper()
		c, err := dialerFrom(src).Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	t.Run("over the limit", func(t *testing.T) {
		p := start(t)
		var held []net.Conn
		for range perSource {
			held = append(held, dialFrom(t, "127.0.0.2", p.addr))
		}
		p.waitActive(t, perSource)
		if took := expectClosed(t, dialFrom(t, "127.0.0.2", p.addr), prompt); took > time.Second {
			t.Errorf("connection over the per-source limit closed after %v", took)
		}
		if got, err := whichBackendFrom("127.0.0.3", p.addr, "other.example"); err != nil || got != "backend" {
			t.Fatalf("another source: %q, %v", got, err)
		}
		// One of the five sends its hello: its source may open another.
		held[0].Write(hello("first.example"))
		held[0].SetReadDeadline(time.Now().Add(prompt))
		if line, err := bufio.NewReader(held[0]).ReadString('\n'); err != nil || line != "backend\n" {
			t.Fatalf("hello sent: %q, %v", line, err)
		}
		if got, err := whichBackendFrom("127.0.0.2", p.addr, "again.example"); err != nil || got != "backend" {
			t.Fatalf("the source after one of its hellos: %q, %v", got, err)
		}
		p.waitActive(t, perSource) // the four waiting and the relayed one
	})
	t.Run("trusted proxy", func(t *testing.T) {
		p := start(t, netip.MustParsePrefix("127.0.0.2/32"))
		for range 2 * perSource {
			dialFrom(t, "127.0.0.2", p.addr)
		}
		p.waitActive(t, 2*perSource)
	})
	t.Run("client behind a trusted proxy", func(t *testing.T) {
		p := start(t, netip.MustParsePrefix("127.0.0.2/32"))
		client := netip.MustParseAddr("203.0.113.9")
		for range perSource {
			dialFrom(t, "127.0.0.2", p.addr).Write(v2Header(t, 2, "203.0.113.9:5555", "198.51.100.1:443"))
		}
		deadline := time.Now().Add(prompt)
		for p.gate.waitingFrom(client) != perSource {
			if time.Now().After(deadline) {
				t.Fatalf("%d connections counted for the client the PROXY headers named, want %d", p.gate.waitingFrom(client), perSource)
			}
			time.Sleep(time.Millisecond)
		}
		over := dialFrom(t, "127.0.0.2", p.addr)
		over.Write(v2Header(t, 2, "203.0.113.9:5556", "198.51.100.1:443"))
		if took := expectClosed(t, over, prompt); took > time.Second {
			t.Errorf("connection over the client's limit closed after %v", took)
		}
		other := dialFrom(t, "127.0.0.2", p.addr)
		other.Write(v2Header(t, 2, "203.0.113.10:5555", "198.51.100.1:443"))
		other.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := other.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("another client behind the same proxy: %v, want it kept waiting for its hello", err)
		}
		p.waitActive(t, perSource+1)
	})
}

// waitingFrom is how many waiting connections the gate counts for src.
func (g *gate) waitingFrom(src netip.Addr) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.perSource[src]
}

// TestSourceOf checks the key connections are counted under per source.
func TestSourceOf(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string // "" for none: not counted per source
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7").To4(), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::1"), Port: 1}, "2001:db8:1:2::"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:3::1"), Port: 1}, "2001:db8:1:3::"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Zone: "eth0", Port: 1}, "fe80::"},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 1}, "::"},
		{&net.TCPAddr{}, ""},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, ""},
	}
	for _, tt := range tests {
		got := ""
		if a := sourceOf(tt.addr); a.IsValid() {
			got = a.String()
		}
		if got != tt.want {
			t.Errorf("sourceOf(%v) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

// whichBackendFrom is whichBackend from the loopback address src.
func whichBackendFrom(src, addr, sni string) (string, error) {
	c, err := dialerFrom(src).Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(prompt))
	if _, err := c.Write(hello(sni, "h2")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return line[:len(line)-1], nil
}

// logRecords keeps what is logged, for tests to look at.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecords) WithGroup(string) slog.Handler            { return l }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}

// warnings returns the Warn records whose message starts with prefix, each
// as its attributes.
func (l *logRecords) warnings(prefix string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.recs {
		if r.Level != slog.LevelWarn || !strings.HasPrefix(r.Message, prefix) {
			continue
		}
		attrs := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		out = append(out, attrs)
	}
	return out
}

// TestFloodIsLogged checks that the front door says, once and with the
// address, when a source hits its limit and when it evicts: a flood must
// not be silent, nor flood the log.
func TestFloodIsLogged(t *testing.T) {
	be := startBackend(t, idHandler("backend"))
	routes := []Route{{Names: []string{"*"}, Backend: be.addr}}
	dialFrom := func(t *testing.T, src, addr string) net.Conn {
		t.Helper()
		c, err := dialerFrom(src).Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	t.Run("source over its limit", func(t *testing.T) {
		var log logRecords
		p := startProxyLogged(t, "127.0.0.1:0", Config{MaxHelloWaitsPerSource: 2, ClientHelloTimeout: time.Minute, Routes: routes}, nil, nil, slog.New(&log))
		dialFrom(t, "127.0.0.2", p.addr)
		dialFrom(t, "127.0.0.2", p.addr)
		for range 3 {
			expectClosed(t, dialFrom(t, "127.0.0.2", p.addr), prompt)
		}
		w := log.warnings("one source has too many connections")
		if len(w) != 1 || w[0]["source"] != "127.0.0.2" || w[0]["max_per_source"] != "2" {
			t.Errorf("warnings: %v; want one naming source 127.0.0.2 and its limit 2", w)
		}
	})
	t.Run("eviction", func(t *testing.T) {
		var log logRecords
		p := startProxyLogged(t, "127.0.0.1:0", Config{MaxConns: 10, ClientHelloTimeout: time.Minute, Routes: routes}, nil, nil, slog.New(&log))
		first := dialFrom(t, "127.0.1.1", p.addr)
		for i := range evictAt(10) - 1 {
			dialFrom(t, net.IPv4(127, 0, 1, 2+byte(i)).String(), p.addr)
		}
		for i := range 3 {
			dialFrom(t, net.IPv4(127, 0, 2, 1+byte(i)).String(), p.addr)
		}
		expectClosed(t, first, prompt)
		w := log.warnings("near the connection limit")
		if len(w) != 1 || w[0]["remote"] != first.LocalAddr().String() {
			t.Errorf("warnings: %v; want one naming the first evicted, %v", w, first.LocalAddr())
		}
	})
}
