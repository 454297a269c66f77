package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/plan"
)

// planTestResolver answers every name with one IPv4 address.
type planTestResolver netip.Addr

func (r planTestResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	if network == "ip4" {
		return []netip.Addr{netip.Addr(r)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// planTestPlanner makes "this host" 127.0.0.1, the names resolve to it, the
// ports are tlsPort and httpPort, and nothing but loopback may be dialed.
func planTestPlanner(tlsPort, httpPort int) *plan.Planner {
	lo := netip.MustParseAddr("127.0.0.1")
	return &plan.Planner{
		Resolver:       planTestResolver(lo),
		InterfaceAddrs: func() ([]netip.Addr, error) { return []netip.Addr{lo}, nil },
		TLSPort:        tlsPort,
		HTTPPort:       httpPort,
		Listen: func(ctx context.Context, network, addr string) (net.Listener, error) {
			var lc net.ListenConfig
			return lc.Listen(ctx, network, "127.0.0.1"+addr)
		},
		Dialable: func(a netip.Addr) bool { return a.IsLoopback() },
	}
}

func runPlanWith(t *testing.T, base *plan.Planner, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := planWith(ctx, e, args, base)
	t.Logf("tlsalpn plan %s\n%s%s", strings.Join(args, " "), out.String(), errb.String())
	return out.String(), err
}

func planTestTLS(t *testing.T, name string) int {
	t.Helper()
	ca := newCheckCA(t)
	cert := ca.leaf(t, name, 24*time.Hour)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
	return ln.Addr().(*net.TCPAddr).Port
}

// TestPlanCommandServeAdvice: this test process holds the TLS port (found
// in the real /proc), so the plan is tlsalpn serve in front of it, as a
// table and as JSON.
func TestPlanCommandServeAdvice(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp: not Linux")
	}
	port := planTestTLS(t, "example.com")
	base := planTestPlanner(port, freePort(t))
	comm, _ := os.ReadFile("/proc/self/comm")
	self := strings.TrimSpace(string(comm))

	out, err := runPlanWith(t, base, "-d", "example.com", "--email", "ops@example.com", "--timeout", "2s")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"QUESTION", "ANSWER", "EVIDENCE",
		"port " + itoa(port) + " held here?",
		"held by " + self + " (pid " + itoa(os.Getpid()) + ")",
		"\nRecommendation: TLS-ALPN-01 with tlsalpn serve in front of " + self,
		"  run:\n",
		"\n    tlsalpn serve --listen :" + itoa(port) + " --backend 127.0.0.1:8443 -d example.com --email ops@example.com --agree-tos",
		"  config (" + self + "'s configuration):\n    listen on 127.0.0.1:8443 with TLS instead of :" + itoa(port) + "\n",
		"\n    - between validations tlsalpn serve hands each new connection straight to " + self + "'s own socket on 127.0.0.1:8443 (steering: Linux 5.9 or later, tlsalpn serve run as root), so " + self + " sees clients' real addresses",
		"\n    - for every client's exact address, even during validations: add --send-proxy 2 to the tlsalpn serve command and enable the PROXY protocol in " + self + " ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// The command and config are the steered setup: the PROXY protocol
	// appears only in the note that offers it instead.
	_, rec, _ := strings.Cut(out, "\nRecommendation:")
	_, run, _ := strings.Cut(rec, "  run:\n")
	run, _, _ = strings.Cut(run, "  notes:\n")
	if run == "" {
		t.Errorf("no commands in the recommendation:\n%s", out)
	}
	for _, bad := range []string{"--send-proxy", "proxy_protocol", "PROXY"} {
		if strings.Contains(run, bad) {
			t.Errorf("commands and config mention %q:\n%s", bad, run)
		}
	}
	if strings.Contains(out, "drop --send-proxy") {
		t.Errorf("output has the old note on dropping --send-proxy:\n%s", out)
	}

	out, err = runPlanWith(t, base, "-d", "example.com", "--json", "--timeout", "2s")
	if err != nil {
		t.Fatal(err)
	}
	var got plan.Plan
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json: %v", err)
	}
	if got.Recommendation.Method != plan.TLSALPN01 || got.Host.TLSPort.Free || got.Host.TLSPort.Port != port ||
		len(got.Names) != 1 || got.Names[0].Front != plan.FrontDirect || len(got.Table) == 0 {
		t.Errorf("--json: %+v", got)
	}
}

// TestPlanCommandListenTest: the port is free and --listen-test answers a
// throwaway challenge through the name's address: tlsalpn issue.
func TestPlanCommandListenTest(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp: not Linux")
	}
	tlsPort, httpPort := freePort(t), freePort(t)
	for httpPort == tlsPort {
		httpPort = freePort(t)
	}
	base := planTestPlanner(tlsPort, httpPort)
	out, err := runPlanWith(t, base, "-d", "example.com", "-d", "www.example.com", "--listen-test", "--email", "ops@example.com", "--timeout", "2s")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"a throwaway acme-tls/1 challenge was answered",
		"tlsalpn issue -d example.com -d www.example.com --email ops@example.com --agree-tos",
		"config /etc/systemd/system/tlsalpn-renew.timer:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	for _, l := range lines(out) {
		if strings.HasPrefix(l, "acme-tls/1 passes?") && !strings.Contains(l, " yes ") {
			t.Errorf("row %q: want yes", l)
		}
	}
}

// TestPlanCommandRealHost probes this machine for real, for an IP name
// (no DNS) on loopback: whatever it finds, a plan is advice and exits 0.
func TestPlanCommandRealHost(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp: not Linux")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code, out, errOut := runCLI(t, ctx, "plan", "-d", "127.0.0.1", "--timeout", "2s")
	if code != exitOK || !strings.Contains(out, "\nRecommendation: ") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
}

func TestPlanUsageErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"plan"}, "no names: give at least one -d NAME"},
		{[]string{"plan", "-d", "exa mple.com"}, `-d "exa mple.com"`},
		{[]string{"plan", "-d", "*.192.0.2.1"}, "is not a wildcard DNS name"},
		{[]string{"plan", "-d", "example.com", "extra"}, `unexpected argument "extra"`},
		{[]string{"plan", "-d", "example.com", "--timeout", "0s"}, "--timeout 0s: give a positive duration"},
		{[]string{"plan", "--bogus"}, "flag provided but not defined: -bogus"},
	}
	for _, tc := range tests {
		code, out, errOut := runCLI(t, ctx, tc.args...)
		if code != exitUsage || out != "" || !strings.HasPrefix(errOut, "tlsalpn plan: ") ||
			!strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", tc.args, code, out, errOut, tc.want)
		}
	}
	code, out, _ := runCLI(t, ctx, "plan", "--help")
	if code != exitOK || !strings.Contains(out, "Usage: tlsalpn plan -d NAME") || !strings.Contains(out, "--listen-test") {
		t.Errorf("--help: exit %d\n%s", code, out)
	}
}
