package plan

// The listen tests: bind the free ports for a moment and see whether a
// throwaway acme-tls/1 challenge and an HTTP-01 token reach them.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/check"
	challengeresponder "github.com/tlsalpn/tlsalpn/responder"
)

func (p *Planner) listen(ctx context.Context, port int) (net.Listener, error) {
	addr := ":" + strconv.Itoa(port)
	if p.Listen != nil {
		return p.Listen(ctx, "tcp", addr)
	}
	var lc net.ListenConfig
	return lc.Listen(ctx, "tcp", addr)
}

// listenTests runs the TLS-ALPN-01 test (names that resolve here, when the
// TLS port is free) and the HTTP-01 test (names with records, when the
// HTTP port is free).
func (p *Planner) listenTests(ctx context.Context, plan *Plan) {
	var tlsNames, httpNames []*NameFinding
	for _, f := range plan.Names {
		if f.Wildcard {
			continue
		}
		switch {
		case !plan.Host.TLSPort.Free:
			f.ListenTest.Detail = fmt.Sprintf("not run: port %d is held by %s", plan.Host.TLSPort.Port, plan.Host.TLSPort.Holder())
		case len(f.Here) == 0:
			f.ListenTest.Detail = "not run: the name does not resolve to this host, so a test handshake would reach whatever is there, not a listener here"
		default:
			tlsNames = append(tlsNames, f)
		}
		switch {
		case !plan.Host.HTTPPort.Free:
			f.HTTPTest.Detail = fmt.Sprintf("not run: port %d is held by %s", plan.Host.HTTPPort.Port, plan.Host.HTTPPort.Holder())
		case !slices.ContainsFunc(f.records(), p.dialable):
			f.HTTPTest.Detail = "not run: the name has no address to test through"
		default:
			httpNames = append(httpNames, f)
		}
	}
	var wg sync.WaitGroup
	if len(tlsNames) > 0 {
		wg.Go(func() { p.tlsListenTest(ctx, tlsNames) })
	}
	if len(httpNames) > 0 {
		wg.Go(func() { p.httpListenTest(ctx, httpNames) })
	}
	wg.Wait()
}

// fromHere is appended to what a listen test found: the test connects from
// this host, so a firewall in front of it is not crossed.
const fromHere = " (tested from this host: a firewall or security group in front of it is not crossed; check the name from another network for that)"

func (p *Planner) tlsListenTest(ctx context.Context, names []*NameFinding) {
	port := p.tlsPort()
	ln, err := p.listen(ctx, port)
	if err != nil {
		for _, f := range names {
			f.ListenTest = ProbeResult{Detail: fmt.Sprintf("not run: cannot bind port %d: %v", port, err), Fix: bindFix(err, port)}
		}
		return
	}
	r := challengeresponder.New(challengeresponder.WithLogger(p.logger()))
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() { served <- r.Serve(sctx, ln) }()
	defer func() { stop(); <-served }()

	var wg sync.WaitGroup
	for _, f := range names {
		keyAuth := "tlsalpn-plan-" + randomHex(16) + "." + randomHex(16)
		cert, err := challenge.Build(f.id, keyAuth)
		if err == nil {
			_, err = r.Publish(ctx, challenge.ServerName(f.id), cert)
		}
		if err != nil {
			f.ListenTest = ProbeResult{Ran: true, Detail: "making the throwaway challenge: " + err.Error()}
			continue
		}
		var addrs []netip.Addr
		for _, a := range f.records() {
			if p.dialable(a) {
				addrs = append(addrs, a)
			}
		}
		wg.Go(func() {
			c := &check.Checker{Addresses: addrs, Timeout: p.timeout(), SkipProduction: true, Logger: p.Logger}
			rep := c.Check(ctx, check.Target{ID: f.id, Port: port, KeyAuthorization: keyAuth})
			if rep.CA.Pass {
				f.ListenTest = ProbeResult{Ran: true, Pass: true, Detail: "a throwaway acme-tls/1 challenge was answered: " + rep.CA.Summary + fromHere}
				return
			}
			f.ListenTest = ProbeResult{Ran: true, Detail: rep.CA.Problem + fromHere, Fix: rep.FirstFix()}
		})
	}
	wg.Wait()
}

func bindFix(err error, port int) string {
	if errors.Is(err, os.ErrPermission) {
		return fmt.Sprintf("ports below 1024 need root or CAP_NET_BIND_SERVICE: run the plan as root to test port %d", port)
	}
	return ""
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// httpListenTest serves a token on the HTTP port and fetches it as the CA
// would: http://NAME/.well-known/acme-challenge/TOKEN, IPv6 first, IPv4
// after a connection error, no redirects followed.
func (p *Planner) httpListenTest(ctx context.Context, names []*NameFinding) {
	port := p.httpPort()
	ln, err := p.listen(ctx, port)
	if err != nil {
		for _, f := range names {
			f.HTTPTest = ProbeResult{Detail: fmt.Sprintf("not run: cannot bind port %d: %v", port, err), Fix: bindFix(err, port)}
		}
		return
	}
	token := randomHex(16)
	body := "tlsalpn-plan " + randomHex(16)
	path := "/.well-known/acme-challenge/" + token
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != path {
				http.NotFound(w, r)
				return
			}
			io.WriteString(w, body)
		}),
		ReadHeaderTimeout: p.timeout(),
	}
	served := make(chan struct{})
	go func() { srv.Serve(ln); close(served) }()
	defer func() { srv.Close(); <-served }()

	var wg sync.WaitGroup
	for _, f := range names {
		wg.Go(func() { f.HTTPTest = p.fetchToken(ctx, f, port, path, body) })
	}
	wg.Wait()
}

func (p *Planner) fetchToken(ctx context.Context, f *NameFinding, port int, path, body string) ProbeResult {
	var addrs []netip.Addr
	for _, a := range f.records() {
		if p.dialable(a) {
			addrs = append(addrs, a)
		}
	}
	host := f.id.Value
	if f.Type == challenge.IP && strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	url := "http://" + host + path
	if port != DefaultHTTPPort {
		url = "http://" + net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port)) + path
	}
	var tried []string
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, uint16(port)).String()
		tried = append(tried, ap)
		client := &http.Client{
			Timeout: p.timeout(),
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, network, ap)
				},
				DisableKeepAlives: true,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return ProbeResult{Ran: true, Detail: err.Error()}
		}
		resp, err := client.Do(req)
		if err != nil {
			var op *net.OpError
			if errors.As(err, &op) && op.Op == "dial" {
				continue // the CA falls back to the next address family
			}
			return ProbeResult{Ran: true, Detail: fmt.Sprintf("GET %s via %s: %v", url, ap, err)}
		}
		got, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		where := ap
		if len(f.Here) == 0 {
			where += " (not this host: something in front passed it on)"
		}
		if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(got)) == body {
			detail := fmt.Sprintf("GET %s via %s returned the token served here", url, where)
			if len(f.Here) > 0 {
				detail += " (tested from this host: a firewall or security group in front of it is not crossed)"
			}
			return ProbeResult{Ran: true, Pass: true, Detail: detail}
		}
		return ProbeResult{Ran: true, Detail: fmt.Sprintf("GET %s via %s returned %s, not the token served here", url, where, resp.Status),
			Fix: "whatever answers port 80 there does not pass /.well-known/acme-challenge/ to this host"}
	}
	return ProbeResult{Ran: true, Detail: "could not connect to " + strings.Join(tried, ", ")}
}
