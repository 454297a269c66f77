package plan

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/procnet/procnettest"
)

// TestPlanPortStateHolder: who holds a port, as the plan words it, from
// what procnet reports.
func TestPlanPortStateHolder(t *testing.T) {
	fp := procnettest.Proc{
		TCP: []procnettest.Socket{
			{Addr: "0.0.0.0:443", State: procnettest.Listen, Inode: 111},
			{Addr: "127.0.0.1:80", State: procnettest.Listen, UID: 33, Inode: 222},
			{Addr: "127.0.0.1:8080", State: procnettest.Listen, UID: 1000, Inode: 555},
		},
		TCP6: []procnettest.Socket{{Addr: "[::]:443", State: procnettest.Listen, Inode: 333}},
		Procs: map[int]procnettest.Process{
			812:  {Comm: "nginx", FDs: map[int]uint64{3: 111, 4: 333}},
			1234: {Comm: "haproxy", FDs: map[int]uint64{3: 555}},
		},
	}
	p := &Planner{ProcRoot: fp.Write(t)}
	tests := []struct {
		port            int
		holder, process string
		addresses       string
	}{
		{443, "nginx (pid 812)", "nginx", "0.0.0.0:443, [::]:443"},
		{80, "an unknown process (uid 33)", "", "127.0.0.1:80"},
		{8080, "haproxy (pid 1234)", "haproxy", "127.0.0.1:8080"},
		{22, "", "", ""},
	}
	for _, tc := range tests {
		ps, err := p.portState(tc.port)
		if err != nil {
			t.Fatalf("port %d: %v", tc.port, err)
		}
		if ps.Free != (tc.holder == "") || ps.Holder() != tc.holder || ps.Process() != tc.process || ps.addresses() != tc.addresses {
			t.Errorf("port %d: free %v, holder %q, process %q, addresses %q; want holder %q, process %q, addresses %q",
				tc.port, ps.Free, ps.Holder(), ps.Process(), ps.addresses(), tc.holder, tc.process, tc.addresses)
		}
	}
	p.ProcRoot = t.TempDir()
	if _, err := p.portState(443); err == nil || !strings.Contains(err.Error(), "who listens on port 443") {
		t.Errorf("no /proc/net: error %v", err)
	}
}

// --- fakes for the planner ---------------------------------------------------

// planResolver answers "ip4 NAME" and "ip6 NAME" from a map.
type planResolver map[string][]string

func (r planResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range r[network+" "+host] {
		out = append(out, netip.MustParseAddr(s))
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}

func addrs(ss ...string) func() ([]netip.Addr, error) {
	return func() ([]netip.Addr, error) {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out, nil
	}
}

func loopbackOnly(a netip.Addr) bool { return a.IsLoopback() }

// loopbackListen binds 127.0.0.1 where the planner asks for ":PORT".
func loopbackListen(ctx context.Context, network, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(ctx, network, "127.0.0.1"+addr)
}

// TestPlanRecords: the records against this host's addresses, and the
// recommendation they lead to, with nothing dialed (only documentation
// addresses, which the planner is not allowed to dial here).
func TestPlanRecords(t *testing.T) {
	free := procnettest.Proc{}.Write(t)
	tests := []struct {
		name     string
		names    []string
		dns      planResolver
		host     []string
		method   Method
		fixes    []string // substrings of RecordFixes, in order
		front    Front
		way      Way
		blocked  []string // the names whose acme-tls/1 cannot reach here
		evidence string   // substring of the first plain name's FrontEvidence
		answer   string   // of "names resolve to this host?"
	}{
		{
			name: "resolves here", names: []string{"example.com"},
			dns:    planResolver{"ip4 example.com": {"192.0.2.10"}, "ip6 example.com": {"2001:db8::7"}},
			host:   []string{"127.0.0.1", "192.0.2.10", "2001:db8::7", "fe80::1"},
			method: TLSALPN01, front: FrontDirect, way: WayIssue,
		},
		{
			name: "stale AAAA", names: []string{"example.com"},
			dns:    planResolver{"ip4 example.com": {"192.0.2.10"}, "ip6 example.com": {"2001:db8::5"}},
			host:   []string{"192.0.2.10", "2001:db8::7"},
			method: TLSALPN01, front: FrontDirect,
			fixes: []string{"example.com AAAA 2001:db8::5 is not this host (this host has 2001:db8::7): fix or remove it — the CA tries IPv6 first"},
			way:   WayIssue, answer: "partly",
		},
		{
			name: "AAAA without global IPv6 here", names: []string{"example.com"},
			dns:    planResolver{"ip4 example.com": {"192.0.2.10"}, "ip6 example.com": {"2001:db8::5"}},
			host:   []string{"127.0.0.1", "::1", "192.0.2.10", "fe80::1", "fd00::2"},
			method: TLSALPN01, front: FrontDirect,
			fixes: []string{"example.com AAAA 2001:db8::5: this host has no global IPv6 address, so the CA will fail — it tries IPv6 first"},
			way:   WayIssue,
		},
		{
			name: "A elsewhere", names: []string{"example.com"},
			dns:    planResolver{"ip4 example.com": {"198.51.100.9"}},
			host:   []string{"192.0.2.10"},
			method: DNS01, front: FrontElsewhere,
			fixes: []string{"example.com A 198.51.100.9 is not this host (this host has 192.0.2.10): fix it"},
			way:   WayDNS01, blocked: []string{"example.com"}, evidence: "the name resolves to 198.51.100.9, not this host",
		},
		{
			name: "behind NAT", names: []string{"example.com"},
			dns:    planResolver{"ip4 example.com": {"203.0.113.5"}},
			host:   []string{"127.0.0.1", "10.0.0.5"},
			method: DNS01, front: FrontElsewhere,
			fixes: []string{"example.com A 203.0.113.5 is not this host (this host has 10.0.0.5): fix it, or, if this host is behind NAT at 203.0.113.5, forward TCP 443 there to this host"},
			way:   WayDNS01, blocked: []string{"example.com"},
		},
		{
			name: "no records", names: []string{"nowhere.example"},
			dns: planResolver{}, host: []string{"192.0.2.10"},
			method: DNS01, front: FrontNoRecords,
			way: WayDNS01, blocked: []string{"nowhere.example"}, evidence: "the name has no A or AAAA record",
		},
		{
			name: "wildcard", names: []string{"*.example.com", "example.com"},
			dns: planResolver{"ip4 example.com": {"192.0.2.10"}}, host: []string{"192.0.2.10"},
			method: DNS01, front: FrontDirect, way: WayDNS01,
		},
		{
			name: "IP identifier", names: []string{"192.0.2.10"},
			dns: planResolver{}, host: []string{"192.0.2.10"},
			method: TLSALPN01, front: FrontDirect, way: WayIssue,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &Planner{Resolver: tc.dns, InterfaceAddrs: addrs(tc.host...), ProcRoot: free, Dialable: loopbackOnly, Timeout: 2 * time.Second}
			plan, err := p.Plan(context.Background(), tc.names)
			if err != nil {
				t.Fatal(err)
			}
			var f *NameFinding
			for _, nf := range plan.Names {
				if !nf.Wildcard {
					f = nf
					break
				}
			}
			if f.Front != tc.front {
				t.Errorf("front %q, want %q (%s)", f.Front, tc.front, f.FrontEvidence)
			}
			if len(f.RecordFixes) != len(tc.fixes) {
				t.Fatalf("record fixes %q, want %d like %q", f.RecordFixes, len(tc.fixes), tc.fixes)
			}
			for i, want := range tc.fixes {
				if !strings.HasPrefix(f.RecordFixes[i], want) {
					t.Errorf("record fix %d:\n got %s\nwant %s…", i, f.RecordFixes[i], want)
				}
			}
			rec := plan.Recommendation
			if rec.Method != tc.method || rec.Way != tc.way || !slices.Equal(rec.Names, tc.names) || !slices.Equal(rec.Blocked, tc.blocked) {
				t.Errorf("recommendation %s %s for %q, blocked %q; want %s %s for %q, blocked %q", rec.Method, rec.Way, rec.Names, rec.Blocked, tc.method, tc.way, tc.names, tc.blocked)
			}
			if !strings.Contains(f.FrontEvidence, tc.evidence) {
				t.Errorf("front evidence %q lacks %q", f.FrontEvidence, tc.evidence)
			}
			if wild := slices.ContainsFunc(tc.names, func(n string) bool { return strings.HasPrefix(n, "*.") }); wild {
				if !slices.Equal(rec.Wildcards, []string{"*.example.com"}) || rec.Alternative == nil || rec.Alternative.Way != WayIssue || !slices.Equal(rec.Alternative.Names, []string{"example.com"}) {
					t.Errorf("wildcard recommendation %+v, alternative %+v", rec, rec.Alternative)
				}
			}
			for _, fix := range f.RecordFixes {
				if rec.Method != DNS01 && !slices.Contains(rec.Before, fix) {
					t.Errorf("record fix %q not in the recommendation's fix-first list %q", fix, rec.Before)
				}
			}
			if tc.answer != "" {
				wantRow(t, plan, "names resolve to this host?", tc.answer)
			}
			if len(plan.Table) != 8 {
				t.Errorf("table has %d rows, want 8", len(plan.Table))
			}
		})
	}
}

func TestParsePlanName(t *testing.T) {
	tests := []struct {
		in   string
		want string
		wild bool
		bad  bool
	}{
		{in: "Example.COM.", want: "example.com"},
		{in: "*.example.com", want: "example.com", wild: true},
		{in: "192.0.2.1", want: "192.0.2.1"},
		{in: "*.192.0.2.1", bad: true},
		{in: "exa mple.com", bad: true},
		{in: "*", bad: true},
	}
	for _, tc := range tests {
		id, wild, err := ParsePlanName(tc.in)
		if (err != nil) != tc.bad || (err == nil && (id.Value != tc.want || wild != tc.wild)) {
			t.Errorf("ParsePlanName(%q) = %v, %v, %v", tc.in, id, wild, err)
		}
	}
}

// --- loopback servers ---------------------------------------------------------

// planCert is an ordinary self-signed certificate for name.
func planCert(t *testing.T, name string) *tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// webTLS is a web server's TLS on addr: cert, ALPN h2 and http/1.1 only,
// so it refuses a client that offers only acme-tls/1.
func webTLS(t *testing.T, addr string, cert *tls.Certificate) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"h2", "http/1.1"}}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				tls.Server(c, conf).Handshake()
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// tcpForward passes every connection on from to to, byte for byte: a NAT
// port forward or a TCP pass-through load balancer.
func tcpForward(t *testing.T, from, to string) {
	t.Helper()
	ln, err := net.Listen("tcp", from)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				up, err := net.DialTimeout("tcp", to, 2*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				up.SetDeadline(time.Now().Add(5 * time.Second))
				go io.Copy(up, c)
				io.Copy(c, up)
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// httpForward is a CDN's port 80: plain HTTP passed on to origin.
func httpForward(t *testing.T, from, origin string) {
	t.Helper()
	ln, err := net.Listen("tcp", from)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: origin}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// freeLoopbackPort is a port free on 127.0.0.1 and, when other is set, on
// that address too.
func freeLoopbackPort(t *testing.T, other string) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ok := true
		if other != "" {
			l2, err := net.Listen("tcp", net.JoinHostPort(other, strconv.Itoa(port)))
			if err == nil {
				l2.Close()
			} else {
				ok = false
			}
		}
		ln.Close()
		if ok {
			return port
		}
	}
	t.Fatal("no free loopback port")
	return 0
}

func have127002() bool {
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// TestPlanProbes runs the planner against loopback servers standing in for
// this host's web server, a CDN and a port forward. "This host" is
// 127.0.0.1; "elsewhere" is 127.0.0.2. Nothing leaves loopback.
func TestPlanProbes(t *testing.T) {
	if !have127002() {
		t.Skip("cannot bind 127.0.0.2")
	}
	type env struct{ tlsPort, httpPort int }
	tests := []struct {
		name       string
		resolveTo  string
		listenTest bool
		realProc   bool // the test process itself holds the TLS port
		setup      func(t *testing.T, e env) procnettest.Proc
		check      func(t *testing.T, plan *Plan, e env)
	}{
		{
			name: "port free, listen test passes", resolveTo: "127.0.0.1", listenTest: true,
			setup: func(t *testing.T, e env) procnettest.Proc { return procnettest.Proc{} },
			check: func(t *testing.T, plan *Plan, e env) {
				f := plan.Names[0]
				if !f.ListenTest.Ran || !f.ListenTest.Pass {
					t.Errorf("listen test: %+v", f.ListenTest)
				}
				if !f.HTTPTest.Ran || !f.HTTPTest.Pass {
					t.Errorf("HTTP test: %+v", f.HTTPTest)
				}
				wantWay(t, plan, TLSALPN01, WayIssue)
				if len(plan.Recommendation.Config) != 2 || !strings.Contains(plan.Recommendation.Config[1].Text, "OnCalendar") {
					t.Errorf("no renew timer in %+v", plan.Recommendation.Config)
				}
				wantRow(t, plan, "acme-tls/1 passes?", "yes")
			},
		},
		{
			name: "port free, no listen test", resolveTo: "127.0.0.1",
			setup: func(t *testing.T, e env) procnettest.Proc { return procnettest.Proc{} },
			check: func(t *testing.T, plan *Plan, e env) {
				wantWay(t, plan, TLSALPN01, WayIssue)
				wantRow(t, plan, "acme-tls/1 passes?", "not tested")
				wantRow(t, plan, fmt.Sprintf("port %d reachable?", e.tlsPort), "nothing listens yet")
			},
		},
		{
			name: "nginx holds the port", resolveTo: "127.0.0.1", listenTest: true,
			setup: func(t *testing.T, e env) procnettest.Proc {
				webTLS(t, "127.0.0.1:"+strconv.Itoa(e.tlsPort), planCert(t, "example.com"))
				return procnettest.Proc{
					TCP:   []procnettest.Socket{{Addr: "127.0.0.1:" + strconv.Itoa(e.tlsPort), State: procnettest.Listen, Inode: 7001}},
					Procs: map[int]procnettest.Process{812: {Comm: "nginx", FDs: map[int]uint64{3: 7001}}},
				}
			},
			check: func(t *testing.T, plan *Plan, e env) {
				f := plan.Names[0]
				if f.Front != FrontDirect || f.Outside == nil || f.Outside.ALPN != ALPNRefused {
					t.Errorf("front %s, outside %+v", f.Front, f.Outside)
				}
				if f.ListenTest.Ran || !strings.Contains(f.ListenTest.Detail, "held by nginx (pid 812)") {
					t.Errorf("listen test: %+v", f.ListenTest)
				}
				rec := plan.Recommendation
				wantWay(t, plan, TLSALPN01, WayServe)
				want := WebServer{Process: "nginx", Holder: "nginx (pid 812)", Backend: "127.0.0.1:8443", Out: "/etc/nginx/tls/example.com", Hook: "systemctl reload nginx",
					ProxyProtocol: `in nginx: "listen 127.0.0.1:8443 ssl proxy_protocol;" with "set_real_ip_from 127.0.0.1;" and "real_ip_header proxy_protocol;"`}
				if rec.Port != e.tlsPort || rec.Server == nil || *rec.Server != want {
					t.Errorf("port %d, server %+v\nwant port %d, server %+v", rec.Port, rec.Server, e.tlsPort, want)
				}
				if len(rec.Config) != 1 || !strings.Contains(rec.Config[0].Text, "    listen 127.0.0.1:8443 ssl;") {
					t.Errorf("config %+v", rec.Config)
				}
				wantSteered(t, rec, `"listen 127.0.0.1:8443 ssl proxy_protocol;"`)
				wantRow(t, plan, fmt.Sprintf("port %d held here?", e.tlsPort), "held by nginx (pid 812)")
				wantRow(t, plan, "acme-tls/1 passes?", "no")
				wantRow(t, plan, "behind a proxy or CDN?", "no")
			},
		},
		{
			name: "this test process holds the port (real /proc)", resolveTo: "127.0.0.1", realProc: true,
			setup: func(t *testing.T, e env) procnettest.Proc {
				webTLS(t, "127.0.0.1:"+strconv.Itoa(e.tlsPort), planCert(t, "example.com"))
				return procnettest.Proc{}
			},
			check: func(t *testing.T, plan *Plan, e env) {
				comm, _ := os.ReadFile("/proc/self/comm")
				self := strings.TrimSpace(string(comm))
				if got := plan.Host.TLSPort.Process(); got != self {
					t.Errorf("port %d held by %q, want this process %q", e.tlsPort, got, self)
				}
				wantWay(t, plan, TLSALPN01, WayServe)
				if srv := plan.Recommendation.Server; srv == nil || srv.Process != self {
					t.Errorf("server %+v, want %s", srv, self)
				}
			},
		},
		{
			name: "CDN in front swallows ALPN; port 80 forwarded", resolveTo: "127.0.0.2", listenTest: true,
			setup: func(t *testing.T, e env) procnettest.Proc {
				webTLS(t, "127.0.0.1:"+strconv.Itoa(e.tlsPort), planCert(t, "example.com"))
				webTLS(t, "127.0.0.2:"+strconv.Itoa(e.tlsPort), planCert(t, "sni.cdn.example"))
				httpForward(t, "127.0.0.2:"+strconv.Itoa(e.httpPort), "127.0.0.1:"+strconv.Itoa(e.httpPort))
				return procnettest.Proc{
					TCP:   []procnettest.Socket{{Addr: "127.0.0.1:" + strconv.Itoa(e.tlsPort), State: procnettest.Listen, Inode: 7001}},
					Procs: map[int]procnettest.Process{812: {Comm: "nginx", FDs: map[int]uint64{3: 7001}}},
				}
			},
			check: func(t *testing.T, plan *Plan, e env) {
				f := plan.Names[0]
				if f.Front != FrontCDN {
					t.Errorf("front %s: %s", f.Front, f.FrontEvidence)
				}
				if !strings.Contains(f.ListenTest.Detail, "held by nginx") {
					t.Errorf("listen test: %+v", f.ListenTest)
				}
				if !f.HTTPTest.Ran || !f.HTTPTest.Pass {
					t.Errorf("HTTP test: %+v", f.HTTPTest)
				}
				wantWay(t, plan, HTTP01, WayHTTP01)
				if rec := plan.Recommendation; rec.Port != e.httpPort || !slices.Equal(rec.Blocked, []string{"example.com"}) {
					t.Errorf("port %d, blocked %q", rec.Port, rec.Blocked)
				}
				wantRow(t, plan, "behind a proxy or CDN?", "yes: a CDN")
			},
		},
		{
			name: "CDN in front, nothing here, no listen test", resolveTo: "127.0.0.2",
			setup: func(t *testing.T, e env) procnettest.Proc {
				webTLS(t, "127.0.0.2:"+strconv.Itoa(e.tlsPort), planCert(t, "sni.cdn.example"))
				return procnettest.Proc{}
			},
			check: func(t *testing.T, plan *Plan, e env) {
				wantWay(t, plan, DNS01, WayDNS01)
				if f := plan.Names[0]; !slices.Equal(plan.Recommendation.Blocked, []string{"example.com"}) || f.Front != FrontCDN ||
					!strings.Contains(f.FrontEvidence, "refuses acme-tls/1: a CDN or TLS-terminating proxy") {
					t.Errorf("blocked %q, front %s: %s", plan.Recommendation.Blocked, f.Front, f.FrontEvidence)
				}
			},
		},
		{
			name: "port forward to the web server here", resolveTo: "127.0.0.2",
			setup: func(t *testing.T, e env) procnettest.Proc {
				webTLS(t, "127.0.0.1:"+strconv.Itoa(e.tlsPort), planCert(t, "example.com"))
				tcpForward(t, "127.0.0.2:"+strconv.Itoa(e.tlsPort), "127.0.0.1:"+strconv.Itoa(e.tlsPort))
				return procnettest.Proc{
					TCP:   []procnettest.Socket{{Addr: "0.0.0.0:" + strconv.Itoa(e.tlsPort), State: procnettest.Listen, Inode: 7002}},
					Procs: map[int]procnettest.Process{99: {Comm: "haproxy", FDs: map[int]uint64{3: 7002}}},
				}
			},
			check: func(t *testing.T, plan *Plan, e env) {
				if f := plan.Names[0]; f.Front != FrontForwarded {
					t.Errorf("front %s: %s", f.Front, f.FrontEvidence)
				}
				wantWay(t, plan, TLSALPN01, WayServe)
				if srv := plan.Recommendation.Server; srv == nil || srv.Process != "haproxy" || !strings.Contains(srv.Hook, "systemctl reload haproxy") {
					t.Errorf("server %+v", srv)
				}
			},
		},
		{
			name: "port looks free but something answers (DNAT)", resolveTo: "127.0.0.1",
			setup: func(t *testing.T, e env) procnettest.Proc {
				webTLS(t, "127.0.0.1:"+strconv.Itoa(e.tlsPort), planCert(t, "container.example"))
				return procnettest.Proc{}
			},
			check: func(t *testing.T, plan *Plan, e env) {
				wantWay(t, plan, TLSALPN01, WayIssue)
				if !slices.Equal(plan.Recommendation.Intercepted, []string{"example.com"}) {
					t.Errorf("intercepted %q, want example.com", plan.Recommendation.Intercepted)
				}
			},
		},
		{
			name: "DNS elsewhere, nothing answers", resolveTo: "127.0.0.2", listenTest: true,
			setup: func(t *testing.T, e env) procnettest.Proc { return procnettest.Proc{} },
			check: func(t *testing.T, plan *Plan, e env) {
				f := plan.Names[0]
				if f.Front != FrontElsewhere || !strings.Contains(f.ListenTest.Detail, "does not resolve to this host") {
					t.Errorf("front %s, listen test %+v", f.Front, f.ListenTest)
				}
				wantWay(t, plan, DNS01, WayDNS01)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := env{tlsPort: freeLoopbackPort(t, "127.0.0.2")}
			for e.httpPort == 0 || e.httpPort == e.tlsPort {
				e.httpPort = freeLoopbackPort(t, "127.0.0.2")
			}
			fp := tc.setup(t, e)
			p := &Planner{
				Resolver:       planResolver{"ip4 example.com": {tc.resolveTo}},
				InterfaceAddrs: addrs("127.0.0.1"),
				ProcRoot:       fp.Write(t),
				TLSPort:        e.tlsPort,
				HTTPPort:       e.httpPort,
				ListenTest:     tc.listenTest,
				Listen:         loopbackListen,
				Dialable:       loopbackOnly,
				Timeout:        2 * time.Second,
			}
			if tc.realProc {
				p.ProcRoot = ""
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			plan, err := p.Plan(ctx, []string{"example.com"})
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, plan, e)
			if t.Failed() {
				for _, r := range plan.Table {
					t.Logf("%s | %s | %s", r.Question, r.Answer, strings.Join(r.Evidence, " // "))
				}
				t.Logf("recommendation: %+v", plan.Recommendation)
			}
		})
	}
}

// TestPlanServeAdvice: for every kind of server, tlsalpn serve in front of
// it is recommended in the steered form (no PROXY protocol anywhere in the
// commands or the config), and a note says how to get the PROXY protocol
// instead, in that server's own words.
func TestPlanServeAdvice(t *testing.T) {
	tests := []struct {
		proc     string
		config   string // in the config snippet
		proxy    string // where to enable the PROXY protocol
		hook     string
		ipv6Here bool
	}{
		{"nginx", "listen 127.0.0.1:8443 ssl;", `"listen 127.0.0.1:8443 ssl proxy_protocol;" with "set_real_ip_from 127.0.0.1;" and "real_ip_header proxy_protocol;"`, "systemctl reload nginx", false},
		{"haproxy", "bind 127.0.0.1:8443 ssl crt /etc/haproxy/certs/example.com.pem ", "in HAProxy: accept-proxy at the end of that bind line", `> /etc/haproxy/certs/example.com.pem && systemctl reload haproxy`, false},
		{"apache2", "<VirtualHost 127.0.0.1:8443>", `"RemoteIPProxyProtocol On" in the VirtualHost (needs mod_remoteip: a2enmod remoteip)`, "systemctl reload apache2", false},
		{"httpd", "Listen 127.0.0.1:8443 https", `"RemoteIPProxyProtocol On"`, "systemctl reload httpd", true},
		{"caddy", "https_port 8443", `proxy_protocol { allow 127.0.0.1/32 }`, "systemctl reload caddy", false},
		{"lighttpd", "listen on 127.0.0.1:8443 with TLS", "in lighttpd for 127.0.0.1:8443 (version 2; if it cannot read it, keep the command as it is)", "systemctl reload SERVICE", false},
		{"", "listen on 127.0.0.1:8443 with TLS", "in the server for 127.0.0.1:8443", "systemctl reload SERVICE", false},
	}
	for _, tc := range tests {
		t.Run(tc.proc, func(t *testing.T) {
			ps := PortState{Port: 443, Listeners: []Listener{{Address: "0.0.0.0:443", Process: tc.proc, PID: 812}}}
			f := &NameFinding{Name: "example.com", Front: FrontDirect, Here: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}
			if tc.ipv6Here {
				f.Here = append(f.Here, netip.MustParseAddr("2001:db8::1"))
			}
			plan := &Plan{Names: []*NameFinding{f}, Host: Host{TLSPort: ps}}
			rec := (&Planner{}).recommend(plan)
			if rec.Method != TLSALPN01 || rec.Way != WayServe || rec.Port != 443 || rec.Server == nil || len(rec.Config) != 1 {
				t.Fatalf("recommendation %+v", rec)
			}
			if srv := rec.Server; srv.Process != tc.proc || srv.Backend != Backend || !strings.Contains(srv.Hook, tc.hook) || srv.IPv6 != tc.ipv6Here {
				t.Errorf("server %+v; want process %q, hook with %q, IPv6 %v", srv, tc.proc, tc.hook, tc.ipv6Here)
			}
			if !strings.Contains(rec.Config[0].Text, tc.config) {
				t.Errorf("config lacks %q:\n%s", tc.config, rec.Config[0].Text)
			}
			wantSteered(t, rec, tc.proxy)
		})
	}
}

// wantSteered checks that rec moves the server behind the responder in
// the form that lets it steer: no PROXY protocol in the config, and where
// to enable it instead containing proxy.
func wantSteered(t *testing.T, rec Recommendation, proxy string) {
	t.Helper()
	for _, c := range rec.Config {
		for _, bad := range []string{"proxy_protocol", "set_real_ip_from", "real_ip_header", "RemoteIPProxyProtocol", "accept-proxy", "listener_wrappers"} {
			if strings.Contains(c.Text, bad) {
				t.Errorf("config %s has %q, which turns steering off:\n%s", c.Path, bad, c.Text)
			}
		}
	}
	if !strings.Contains(rec.Server.ProxyProtocol, proxy) {
		t.Errorf("PROXY protocol %q lacks %q", rec.Server.ProxyProtocol, proxy)
	}
}

func wantWay(t *testing.T, plan *Plan, m Method, way Way) {
	t.Helper()
	rec := plan.Recommendation
	if rec.Method != m || rec.Way != way {
		t.Errorf("method %s, way %s; want %s, %s", rec.Method, rec.Way, m, way)
	}
}

func wantRow(t *testing.T, plan *Plan, question, answer string) {
	t.Helper()
	for _, r := range plan.Table {
		if r.Question == question {
			if r.Answer != answer {
				t.Errorf("%s: answer %q, want %q (%q)", question, r.Answer, answer, r.Evidence)
			}
			return
		}
	}
	t.Errorf("no row %q", question)
}
