package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/check"
)

// preflight checks a published challenge the way the CA will, with the
// check package, before the issuer tells the CA it is ready. When the name
// resolves to this host it checks through the public address (port 443, on
// every A and AAAA record, in the CA's order), which also catches a stale
// AAAA record or a proxy in front that drops acme-tls/1; otherwise, as on a
// machine behind NAT or before DNS is set up, it checks the local listener.
type preflight struct {
	listen   string // the responder's address, e.g. ":443"
	resolver check.Resolver
	timeout  time.Duration
	// localAddrs reports this host's addresses; nil means the interfaces'.
	localAddrs func() ([]netip.Addr, error)
}

func newPreflight(listen string) *preflight {
	return &preflight{listen: listen, resolver: net.DefaultResolver, timeout: 5 * time.Second}
}

func (p *preflight) Preflight(ctx context.Context, id challenge.Identifier, keyAuth string) error {
	target := check.Target{ID: id, Port: check.DefaultPort, KeyAuthorization: keyAuth}
	checker := &check.Checker{Resolver: p.resolver, Timeout: p.timeout, SkipProduction: true}
	public, err := p.resolvesHere(ctx, id)
	if err != nil {
		return err
	}
	where := "through its public address"
	if !public {
		host, port, err := p.localTarget()
		if err != nil {
			return err
		}
		target.Port = port
		checker.Addresses = []netip.Addr{host}
		where = "on the local listener " + netip.AddrPortFrom(host, uint16(port)).String()
	}
	rep := checker.Check(ctx, target)
	if rep.CA.Pass {
		return nil
	}
	msg := rep.CA.Problem
	if fix := rep.FirstFix(); fix != "" {
		msg += "; fix: " + fix
	}
	return fmt.Errorf("checked %s: %s", where, msg)
}

// resolvesHere reports whether any address of id belongs to this host.
func (p *preflight) resolvesHere(ctx context.Context, id challenge.Identifier) (bool, error) {
	var addrs []netip.Addr
	if id.Type == challenge.IP {
		a, err := netip.ParseAddr(id.Value)
		if err != nil {
			return false, err
		}
		addrs = []netip.Addr{a}
	} else {
		// The answer only picks where to check from: a slow or lossy
		// resolver must not hold up the order, so both lookups run at
		// once and for one second at most (a lost UDP packet would
		// otherwise cost the resolver's five-second retry).
		lctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var (
			wg     sync.WaitGroup
			v6, v4 []netip.Addr
		)
		wg.Add(2)
		go func() { defer wg.Done(); v6, _ = p.resolver.LookupNetIP(lctx, "ip6", id.Value) }()
		go func() { defer wg.Done(); v4, _ = p.resolver.LookupNetIP(lctx, "ip4", id.Value) }()
		wg.Wait()
		addrs = append(v6, v4...)
	}
	local, err := p.local()
	if err != nil {
		return false, nil
	}
	for _, a := range addrs {
		for _, l := range local {
			if a.Unmap() == l.Unmap() && !a.IsLoopback() {
				return true, nil
			}
		}
	}
	return false, nil
}

func (p *preflight) local() ([]netip.Addr, error) {
	if p.localAddrs != nil {
		return p.localAddrs()
	}
	return check.HostAddrs()
}

// localTarget turns the listen address into one to connect to: an
// unspecified host (":443", "0.0.0.0:443", "[::]:443") means loopback.
func (p *preflight) localTarget() (netip.Addr, int, error) {
	host, portStr, err := net.SplitHostPort(p.listen)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("preflight: listen address %q: %w", p.listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return netip.Addr{}, 0, fmt.Errorf("preflight: listen address %q has no numeric port", p.listen)
	}
	if host == "" {
		return netip.MustParseAddr("127.0.0.1"), port, nil
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		// A host name: let the resolver pick, as a client would.
		ips, rerr := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
		if rerr != nil || len(ips) == 0 {
			return netip.Addr{}, 0, errors.Join(fmt.Errorf("preflight: cannot resolve listen host %q", host), rerr)
		}
		a = ips[0]
	}
	if a.IsUnspecified() {
		if a.Is6() {
			return netip.IPv6Loopback(), port, nil
		}
		return netip.MustParseAddr("127.0.0.1"), port, nil
	}
	return a, port, nil
}
