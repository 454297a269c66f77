package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/manager"
)

// hostedCerts loads n certificates, one per name site<i>.example, into a
// new cache, and returns it with terminating routes for them to backend.
func hostedCerts(b *testing.B, n int, backend string) (*manager.Cache, []Route) {
	b.Helper()
	cache := manager.NewCache()
	routes := make([]Route, n)
	start := time.Now()
	for i := range n {
		name := fmt.Sprintf("site%d.example", i)
		cache.Put([]string{name}, selfSigned(b, name))
		routes[i] = Route{Names: []string{name}, Backend: backend, Mode: TerminateTCP}
	}
	b.Logf("%d certificates made and cached in %v", n, time.Since(start))
	return cache, routes
}

// terminatedRoundTrip makes a connection to addr for name, completes the
// handshake, and sends and reads back one byte through the backend (which
// also takes in a TLS 1.3 session ticket); it returns how long that took
// and whether the session was resumed.
func terminatedRoundTrip(b *testing.B, addr, name string, sc tls.ClientSessionCache) (time.Duration, bool) {
	start := time.Now()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: name, ClientSessionCache: sc})
	if err != nil {
		b.Fatalf("handshake for %s: %v", name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(prompt))
	buf := []byte{'x'}
	if _, err := c.Write(buf); err != nil {
		b.Fatalf("writing to %s: %v", name, err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		b.Fatalf("reading from %s: %v", name, err)
	}
	if got := c.ConnectionState().PeerCertificates[0].DNSNames[0]; got != name {
		b.Fatalf("certificate for %s presented for %s", got, name)
	}
	return time.Since(start), c.ConnectionState().DidResume
}

// BenchmarkTerminateHandshake compares full TLS handshakes (terminate tcp
// mode, loopback, an in-process client, then one byte echoed through the
// backend) against a front door holding one certificate and one holding
// 10,000 chosen by SNI. Each iteration does one of each, in turn, so that
// the machine's other load falls on both alike; ratio is the handshake
// rate with 10,000 certificates over the rate with one (1 = no cost).
func BenchmarkTerminateHandshake(b *testing.B) {
	be := startBackend(b, echoHandler)
	oneCache, oneRoutes := hostedCerts(b, 1, be.addr)
	manyCache, manyRoutes := hostedCerts(b, 10_000, be.addr)
	one := startProxy(b, Config{Routes: oneRoutes}, nil, oneCache)
	many := startProxy(b, Config{Routes: manyRoutes}, nil, manyCache)
	var tOne, tMany time.Duration
	i := 0
	for b.Loop() {
		d, _ := terminatedRoundTrip(b, one.addr, "site0.example", nil)
		tOne += d
		d, _ = terminatedRoundTrip(b, many.addr, fmt.Sprintf("site%d.example", (i*7919)%10_000), nil)
		tMany += d
		i++
	}
	b.ReportMetric(float64(tOne.Nanoseconds())/float64(i), "ns/handshake-1cert")
	b.ReportMetric(float64(tMany.Nanoseconds())/float64(i), "ns/handshake-10kcerts")
	b.ReportMetric(float64(tOne)/float64(tMany), "ratio")
}

// BenchmarkTerminateResumption compares resumed handshakes (a session
// ticket from the previous connection) with full ones, in turn, against a
// front door holding 10,000 certificates; ratio is the resumed handshake
// rate over the full one.
func BenchmarkTerminateResumption(b *testing.B) {
	be := startBackend(b, echoHandler)
	cache, routes := hostedCerts(b, 10_000, be.addr)
	p := startProxy(b, Config{Routes: routes}, nil, cache)
	sc := tls.NewLRUClientSessionCache(1)
	terminatedRoundTrip(b, p.addr, "site42.example", sc) // the first ticket
	var tFull, tResumed time.Duration
	n := 0
	for b.Loop() {
		d, _ := terminatedRoundTrip(b, p.addr, "site42.example", nil)
		tFull += d
		d, resumed := terminatedRoundTrip(b, p.addr, "site42.example", sc)
		if !resumed {
			b.Fatal("the session was not resumed")
		}
		tResumed += d
		n++
	}
	b.ReportMetric(float64(tFull.Nanoseconds())/float64(n), "ns/full")
	b.ReportMetric(float64(tResumed.Nanoseconds())/float64(n), "ns/resumed")
	b.ReportMetric(float64(tFull)/float64(tResumed), "ratio")
}
