//go:build linux

package steer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/responder"
)

// A test binary started with STEER_TEST_CHILD=ADDR is a backend in
// another process: it listens on ADDR, prints the address, and answers
// every connection with "child".
func TestMain(m *testing.M) {
	if spec := os.Getenv("STEER_TEST_STEERER"); spec != "" {
		// A steering process of its own: "FRONT BACKEND".
		front, backend, _ := strings.Cut(spec, " ")
		_, err := New(context.Background(), Config{Front: netip.MustParseAddrPort(front), Backend: netip.MustParseAddrPort(backend)})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("steering")
		select {} // until killed
	}
	if addr := os.Getenv("STEER_TEST_CHILD"); addr != "" {
		ln, err := listenTCP(addr)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println(ln.Addr())
		serveTag(ln, "child")
		return
	}
	os.Exit(m.Run())
}

// serveTag answers every connection accepted on ln with tag and the
// local address the client connected to, then closes it.
func serveTag(ln net.Listener, tag string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%s %s\n", tag, c.LocalAddr())
		c.Close()
	}
}

// listenTCP listens with plain TCP: since Go 1.24 net.Listen uses
// Multipath TCP, which a sockmap does not take (nginx and HAProxy listen
// with TCP).
// "0.0.0.0" listens on IPv4 only (Go's "tcp" would make it dual-stack).
func listenTCP(addr string) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	network := "tcp"
	if strings.HasPrefix(addr, "0.0.0.0:") {
		network = "tcp4"
	}
	return lc.Listen(context.Background(), network, addr)
}

func listenTag(t *testing.T, addr, tag string) net.Listener {
	t.Helper()
	ln, err := listenTCP(addr)
	if err != nil {
		t.Skipf("listening on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveTag(ln, tag)
	return ln
}

// who dials addr and returns the tag of the listener that accepted, and
// the local address it saw.
func who(t *testing.T, addr string) (tag, local string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("reading from %s: %v", addr, err)
	}
	tag, local, _ = strings.Cut(strings.TrimSpace(line), " ")
	return tag, local
}

func addrPort(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// newSteerer starts a Steerer, skipping the test where the kernel or the
// privileges do not allow steering at all.
func newSteerer(t *testing.T, cfg Config) *Steerer {
	t.Helper()
	if cfg.Recheck == 0 {
		cfg.Recheck = 20 * time.Millisecond
	}
	s, err := New(context.Background(), cfg)
	if errors.Is(err, ErrUnsupported) {
		t.Skipf("kernel steering unsupported here: %v", err)
	}
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestSteersToBackend(t *testing.T) {
	tests := []struct {
		name    string
		front   string // listen address; port 0
		backend string
		// backendHost, when set, is the address the backend is named by
		// (its socket listens on the unspecified address).
		backendHost string
		dial        []string // hosts to dial on the front door's port
		relayed     []string // hosts on the front door's port that must reach the front door
		frontAny    bool
	}{
		{name: "IPv4", front: "127.0.0.1:0", backend: "127.0.0.1:0", dial: []string{"127.0.0.1"}},
		{name: "IPv4 other local address not steered", front: "127.0.0.2:0", backend: "127.0.0.1:0", dial: []string{"127.0.0.2"}},
		{name: "IPv6", front: "[::1]:0", backend: "[::1]:0", dial: []string{"::1"}},
		{name: "IPv4 wildcard front", front: "0.0.0.0:0", backend: "127.0.0.1:0", dial: []string{"127.0.0.1", "127.0.0.3"}},
		// Go's ":443": both families; an IPv6 connection cannot be
		// given to an IPv4-only backend and is relayed instead.
		{name: "dual-stack front, IPv4 backend", front: ":0", backend: "127.0.0.1:0", dial: []string{"127.0.0.1"}, relayed: []string{"::1"}},
		// Backend listening on [::], named as ::1 (what the front door dials).
		{name: "dual-stack front and backend", front: ":0", backend: "[::]:0", backendHost: "::1", dial: []string{"127.0.0.1", "::1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			back := listenTag(t, tc.backend, "backend")
			front := listenTag(t, tc.front, "front")
			fp := addrPort(t, front.Addr())
			port := fmt.Sprint(fp.Port())
			for _, h := range append(tc.dial, tc.relayed...) {
				if tag, _ := who(t, net.JoinHostPort(h, port)); tag != "front" {
					t.Fatalf("before steering, %s reached %q", h, tag)
				}
			}
			bp := addrPort(t, back.Addr())
			if tc.backendHost != "" {
				bp = netip.AddrPortFrom(netip.MustParseAddr(tc.backendHost), bp.Port())
			}
			s := newSteerer(t, Config{Front: fp, Backend: bp})
			if !s.Steering() {
				t.Fatal("Steering() = false after New")
			}
			for _, h := range tc.dial {
				addr := net.JoinHostPort(h, port)
				tag, local := who(t, addr)
				if tag != "backend" {
					t.Errorf("%s reached %q; want the backend", addr, tag)
				}
				// The backend sees the address the client asked for.
				if lp := netip.MustParseAddrPort(local); lp.Port() != fp.Port() {
					t.Errorf("backend saw local address %s; want port %d", local, fp.Port())
				}
			}
			for _, h := range tc.relayed {
				if tag, _ := who(t, net.JoinHostPort(h, port)); tag != "front" {
					t.Errorf("%s reached %q; want the front door", h, tag)
				}
			}
			// Counted: what reached the backend, not what was relayed.
			if got := s.Steered(); got != uint64(len(tc.dial)) {
				t.Errorf("Steered() = %d after %d connections steered and %d relayed; want %d", got, len(tc.dial), len(tc.relayed), len(tc.dial))
			}
			// The socket taken is the backend's own, in this process.
			if l := s.Socket(); l.PID != os.Getpid() || l.Local.Port() != addrPort(t, back.Addr()).Port() {
				t.Errorf("Socket() = %+v; want pid %d port %d", l, os.Getpid(), addrPort(t, back.Addr()).Port())
			}
			wantRelayed := ""
			if len(tc.relayed) > 0 {
				wantRelayed = "IPv6"
			}
			if got := s.Relayed(); got != wantRelayed {
				t.Errorf("Relayed() = %q; want %q", got, wantRelayed)
			}
			// The backend's own port is not touched.
			if tag, _ := who(t, back.Addr().String()); tag != "backend" {
				t.Errorf("the backend's own address reached %q", tag)
			}
		})
	}
}

func TestHoldRelease(t *testing.T) {
	back := listenTag(t, "127.0.0.1:0", "backend")
	front := listenTag(t, "127.0.0.1:0", "front")
	s := newSteerer(t, Config{Front: addrPort(t, front.Addr()), Backend: addrPort(t, back.Addr())})
	addr := front.Addr().String()
	steps := []struct {
		do   func() error
		want string
	}{
		{func() error { return nil }, "backend"},
		{s.Hold, "front"},
		{s.Hold, "front"},
		{func() error { s.Release(); return nil }, "front"}, // one hold left
		{func() error { s.Release(); return nil }, "backend"},
		{func() error { s.Release(); return nil }, "backend"}, // unmatched: no effect
		{s.Hold, "front"},
		{func() error { s.Release(); return nil }, "backend"},
	}
	for i, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if tag, _ := who(t, addr); tag != st.want {
			t.Fatalf("step %d: reached %q; want %q", i, tag, st.want)
		}
		if got := s.Steering(); got != (st.want == "backend") {
			t.Errorf("step %d: Steering() = %v", i, got)
		}
	}
}

// A connection that started on one path stays there when steering
// changes: a keep-alive connection relayed during a validation is not cut.
func TestEstablishedConnectionsKeepTheirPath(t *testing.T) {
	back, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	front, err := listenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	echo := func(ln net.Listener, tag string) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					fmt.Fprintf(c, "%s %s", tag, line)
				}
			}()
		}
	}
	go echo(back, "backend")
	go echo(front, "front")
	s := newSteerer(t, Config{Front: addrPort(t, front.Addr()), Backend: addrPort(t, back.Addr())})
	steered, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer steered.Close()
	if err := s.Hold(); err != nil {
		t.Fatal(err)
	}
	relayed, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer relayed.Close()
	s.Release()
	for i := range 3 {
		for _, c := range []struct {
			conn net.Conn
			want string
		}{{steered, "backend"}, {relayed, "front"}} {
			c.conn.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c.conn, "ping %d\n", i)
			line, err := bufio.NewReader(c.conn).ReadString('\n')
			if err != nil || line != fmt.Sprintf("%s ping %d\n", c.want, i) {
				t.Fatalf("round %d: got %q, %v; want the %s", i, line, err, c.want)
			}
		}
		if i == 0 {
			if err := s.Hold(); err != nil {
				t.Fatal(err)
			}
		} else {
			s.Release()
		}
	}
}

// When the backend closes its listening socket (a restart), connections
// fall back to the front door at once, and steering resumes by itself
// once the backend listens again.
func TestBackendRestart(t *testing.T) {
	back := listenTag(t, "127.0.0.1:0", "backend")
	front := listenTag(t, "127.0.0.1:0", "front")
	baddr := back.Addr().String()
	s := newSteerer(t, Config{Front: addrPort(t, front.Addr()), Backend: addrPort(t, back.Addr())})
	if tag, _ := who(t, front.Addr().String()); tag != "backend" {
		t.Fatalf("reached %q before the restart", tag)
	}
	back.Close()
	if tag, _ := who(t, front.Addr().String()); tag != "front" {
		t.Fatalf("with the backend's socket closed, reached %q; want the front door", tag)
	}
	if s.Steering() {
		t.Error("Steering() = true with the backend's socket closed")
	}
	listenTag(t, baddr, "backend2")
	deadline := time.Now().Add(5 * time.Second)
	for !s.Steering() {
		if time.Now().After(deadline) {
			t.Fatal("steering did not resume within 5s of the backend listening again")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if tag, _ := who(t, front.Addr().String()); tag != "backend2" {
		t.Fatalf("after the restart, reached %q; want the new backend", tag)
	}
}

// startChild runs this test binary again with env set (see TestMain) and
// returns the first line it prints; the child is killed at the test's end.
func startChild(t *testing.T, env string) (*exec.Cmd, string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	return cmd, line, err
}

// The backend's socket belongs to another process, as nginx's does.
func TestBackendInAnotherProcess(t *testing.T) {
	cmd, line, err := startChild(t, "STEER_TEST_CHILD=127.0.0.1:0")
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	baddr, err := netip.ParseAddrPort(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("child said %q", line)
	}
	front := listenTag(t, "127.0.0.1:0", "front")
	s := newSteerer(t, Config{Front: addrPort(t, front.Addr()), Backend: baddr})
	if tag, _ := who(t, front.Addr().String()); tag != "child" {
		t.Fatalf("reached %q; want the other process's socket", tag)
	}
	// The map does not keep the child's socket alive: when the child
	// dies its port is free again and connections go to the front door.
	cmd.Process.Kill()
	cmd.Wait()
	if tag, _ := who(t, front.Addr().String()); tag != "front" {
		t.Fatalf("after the child died, reached %q", tag)
	}
	ln, err := net.Listen("tcp", baddr.String())
	if err != nil {
		t.Fatalf("the dead child's port is still taken: %v", err)
	}
	ln.Close()
	_ = s
}

func TestNew(t *testing.T) {
	front := listenTag(t, "127.0.0.1:0", "front")
	fp := addrPort(t, front.Addr())
	// A port nothing listens on.
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := addrPort(t, free.Addr())
	free.Close()
	tests := []struct {
		name    string
		cfg     Config
		wantErr error
		wantMsg string
	}{
		{"no backend listening", Config{Front: fp, Backend: freeAddr}, ErrNoBackend, "nothing listens on " + freeAddr.String()},
		{"unspecified backend", Config{Front: fp, Backend: netip.MustParseAddrPort("0.0.0.0:8443")}, nil, "need a host address"},
		{"no front port", Config{Front: netip.MustParseAddrPort("127.0.0.1:0"), Backend: freeAddr}, nil, "need an address with a port"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(context.Background(), tc.cfg)
			if errors.Is(err, ErrUnsupported) {
				t.Skipf("kernel steering unsupported here: %v", err)
			}
			if err == nil {
				s.Close()
				t.Fatal("New succeeded")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("error %v; want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q; want it to say %q", err, tc.wantMsg)
			}
			// Nothing is left attached.
			if tag, _ := who(t, front.Addr().String()); tag != "front" {
				t.Errorf("after a failed New, reached %q", tag)
			}
		})
	}
}

func TestClose(t *testing.T) {
	back := listenTag(t, "127.0.0.1:0", "backend")
	front := listenTag(t, "127.0.0.1:0", "front")
	s, err := New(context.Background(), Config{Front: addrPort(t, front.Addr()), Backend: addrPort(t, back.Addr())})
	if errors.Is(err, ErrUnsupported) {
		t.Skipf("kernel steering unsupported here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if tag, _ := who(t, front.Addr().String()); tag != "backend" {
		t.Fatalf("reached %q", tag)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if tag, _ := who(t, front.Addr().String()); tag != "front" {
		t.Fatalf("after Close, reached %q", tag)
	}
	if s.Steering() {
		t.Error("Steering() = true after Close")
	}
}

// pendingResponder returns a responder whose pending hook is w, as the
// front door wires it, and a publish func for names with a real challenge
// certificate.
func pendingResponder(t *testing.T, w *Switch) (*responder.Responder, func(ctx context.Context, name string) error) {
	t.Helper()
	r := responder.New(responder.WithPendingHook(w.Pending))
	return r, func(ctx context.Context, name string) error {
		id, err := challenge.ParseIdentifier(strings.TrimSuffix(name, "."))
		if err != nil {
			return err
		}
		cert, err := challenge.Build(id, "token.thumbprint")
		if err != nil {
			return err
		}
		_, err = r.Publish(ctx, name, cert)
		return err
	}
}

// TestSwitch: steering is held from the first challenge published on the
// responder until the last is withdrawn, whatever the calls between.
func TestSwitch(t *testing.T) {
	back := listenTag(t, "127.0.0.1:0", "backend")
	front := listenTag(t, "127.0.0.1:0", "front")
	s := newSteerer(t, Config{Front: addrPort(t, front.Addr()), Backend: addrPort(t, back.Addr())})
	var w Switch
	if old, err := w.Swap(s); err != nil || old != nil {
		t.Fatalf("Swap = %v, %v", old, err)
	}
	r, publish := pendingResponder(t, &w)
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	addr := front.Addr().String()
	steps := []struct {
		name string
		do   func() error
		want string
	}{
		{"publish a", func() error { return publish(ctx, "a.example") }, "front"},
		{"publish b", func() error { return publish(ctx, "B.example.") }, "front"},
		{"unpublish c, never published", func() error { return r.Unpublish(ctx, "c.example") }, "front"},
		{"unpublish a", func() error { return r.Unpublish(ctx, "a.example") }, "front"},
		{"unpublish a again", func() error { return r.Unpublish(ctx, "a.example") }, "front"},
		{"publish b again, given up while waiting its turn", func() error {
			if err := publish(cancelled, "b.example"); err == nil {
				return errors.New("publish did not fail")
			}
			return nil
		}, "front"},
		{"unpublish b", func() error { return r.Unpublish(ctx, "b.example") }, "backend"},
		{"failed publish", func() error {
			if _, err := r.Publish(ctx, "d.example", nil); err == nil {
				return errors.New("publish did not fail")
			}
			return nil
		}, "backend"},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if tag, _ := who(t, addr); tag != st.want {
			t.Fatalf("after %s, reached %q; want %q", st.name, tag, st.want)
		}
	}
	// A Switch without a Steerer lets challenges through.
	_, publish2 := pendingResponder(t, &Switch{})
	if err := publish2(ctx, "e.example"); err != nil {
		t.Fatal(err)
	}
}

// Swapping the Steerer while a challenge is pending keeps new
// connections on the front door until it is withdrawn.
func TestSwitchSwap(t *testing.T) {
	back := listenTag(t, "127.0.0.1:0", "backend")
	front := listenTag(t, "127.0.0.1:0", "front")
	cfg := Config{Front: addrPort(t, front.Addr()), Backend: addrPort(t, back.Addr())}
	var w Switch
	r, publish := pendingResponder(t, &w)
	ctx := context.Background()
	addr := front.Addr().String()
	if err := publish(ctx, "a.example"); err != nil {
		t.Fatal(err)
	}
	s1 := newSteerer(t, cfg)
	if old, err := w.Swap(s1); err != nil || old != nil {
		t.Fatalf("Swap = %v, %v", old, err)
	}
	if tag, _ := who(t, addr); tag != "front" {
		t.Fatalf("pending challenge, new steerer: reached %q", tag)
	}
	if err := r.Unpublish(ctx, "a.example"); err != nil {
		t.Fatal(err)
	}
	if tag, _ := who(t, addr); tag != "backend" {
		t.Fatalf("after Unpublish: reached %q", tag)
	}
	if old, err := w.Swap(nil); err != nil || old != s1 {
		t.Fatalf("Swap(nil) = %v, %v", old, err)
	}
}

// A steering process that dies, even by SIGKILL, takes its steering with
// it: nothing is left attached to the namespace.
func TestSteeringDiesWithItsProcess(t *testing.T) {
	back := listenTag(t, "127.0.0.1:0", "backend")
	front2 := listenTag(t, "127.0.0.1:0", "front2")
	cmd, line, err := startChild(t, "STEER_TEST_STEERER="+front2.Addr().String()+" "+back.Addr().String())
	if strings.Contains(line, ErrUnsupported.Error()) {
		t.Skipf("kernel steering unsupported here: %s", line)
	}
	if err != nil || line != "steering\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	if tag, _ := who(t, front2.Addr().String()); tag != "backend" {
		t.Fatalf("while the child steers, reached %q", tag)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if tag, _ := who(t, front2.Addr().String()); tag != "front2" {
		t.Fatalf("after the child was killed, reached %q; want the front door's own listener", tag)
	}
}
