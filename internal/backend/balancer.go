package backend

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Balancer is HAProxy as an L4 balancer in front of several servers: mode tcp, balance
// roundrobin, no TLS of its own, each connection passed whole to the next server that is up
// (a TCP connect every 200 ms tells). It is what puts a cluster of tlsalpn nodes behind one
// address, where the CA's validation connection lands on whichever node comes next.
type Balancer struct {
	Addr   string // 127.0.0.1:port
	Config string
	Log    string // one line per connection, naming the server it went to

	proc *process
}

// StartBalancer starts HAProxy balancing connections over servers (host:port each) in turn.
// t.Cleanup stops it. When HAProxy is not installed the test is skipped, or fails if $CI is
// set.
func StartBalancer(t testing.TB, servers []string) *Balancer {
	t.Helper()
	bin := findBinary(t, "haproxy")
	dir := t.TempDir()
	b := &Balancer{Config: filepath.Join(dir, "haproxy.cfg"), Log: filepath.Join(dir, "haproxy.log")}
	for attempt := 1; ; attempt++ {
		b.Addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		var c strings.Builder
		p := func(format string, args ...any) { fmt.Fprintf(&c, format+"\n", args...) }
		p("global")
		p("  log stdout format raw local0 info")
		p("defaults")
		p("  log global")
		p("  mode tcp")
		p("  option tcplog")
		p("  timeout connect 5s")
		p("  timeout client 1m")
		p("  timeout server 1m")
		p("frontend fe")
		p("  bind %s", b.Addr)
		p("  default_backend nodes")
		p("backend nodes")
		p("  balance roundrobin")
		for i, s := range servers {
			p("  server node%d %s check inter 200ms fall 1 rise 1", i+1, s)
		}
		if err := os.WriteFile(b.Config, []byte(c.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Truncate(b.Log, 0)
		b.proc = startProcess(t, "haproxy", bin, []string{"-db", "-f", b.Config}, b.Log)
		err := b.proc.waitFor("listener", func() error { return dialable(b.Addr) })
		if err == nil {
			break
		}
		b.proc.stop(t, sigStop)
		if err != errAddrInUse || attempt == 3 {
			t.Fatalf("starting HAProxy as a balancer: %v", err)
		}
	}
	t.Cleanup(func() { b.proc.stop(t, sigStop) })
	return b
}
