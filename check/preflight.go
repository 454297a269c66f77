package check

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// Preflight is an issuer.Preflighter: it checks a published challenge
// the way the CA will, with a Checker, before the issuer tells the CA it is ready, and says
// exactly what it could check from here.
//
// The CA connects to the name's A and AAAA addresses on port 443 (caPort;
// test CAs such as Pebble dial another port), not to wherever the
// responder listens, so that is what the preflight dials first: every
// address the name resolves to here, on the CA's port, in the CA's order.
// When the address the CA would end up using is on this host, that check
// is conclusive and a failure stops the order before it costs a failed
// authorization. When it is not (the public address of a cloud machine or
// of a host behind NAT is not on any interface), reaching it from here
// depends on the router looping the connection back, which many do not
// (and some answer with their own web interface instead): a failure then
// proves nothing, so the preflight checks the local listener and says that
// this is all it could  The same holds when the name does not
// resolve from here.
type Preflight struct {
	Listen string // the responder's address, e.g. ":443"
	// CAPort is the port the CA connects to: 443 (RFC 8737 §3), or
	// another for a test CA whose validation dials elsewhere.
	CAPort   int
	Resolver Resolver
	// Timeout bounds each connection, connect and handshake together.
	Timeout time.Duration
	// Logger gets a warning when only the local listener could be
	// checked; nil discards.
	Logger *slog.Logger
	// LocalAddrs reports this host's addresses; nil means the interfaces'.
	LocalAddrs func() ([]netip.Addr, error)
}

// preflightTimeout bounds each preflight connection. A responder on this
// host answers in milliseconds; the budget is for a loop through a router.
const preflightTimeout = 3 * time.Second

// NewPreflight returns the preflight for a responder on listen that the
// CA reaches on caPort (0 means 443), resolving names with resolver (nil
// means the system's).
func NewPreflight(listen string, caPort int, resolver Resolver, logger *slog.Logger) *Preflight {
	if caPort == 0 {
		caPort = DefaultPort
	}
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	return &Preflight{Listen: listen, CAPort: caPort, Resolver: resolver, Timeout: preflightTimeout, Logger: logger}
}

// ResolverAt resolves with the DNS server at server (HOST:PORT), over UDP
// and TCP, or with the system's resolver when server is empty: a lab CA's
// server, whose names the system's resolver does not know, or a test's on
// loopback.
func ResolverAt(server string) Resolver {
	if server == "" {
		return net.DefaultResolver
	}
	return serverResolver{server: server, r: &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, server)
	}}}
}

// serverResolver asks one DNS server, and says so in its errors (the
// standard resolver names the one in resolv.conf, which it did not ask).
type serverResolver struct {
	server string
	r      *net.Resolver
}

func (s serverResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	ips, err := s.r.LookupNetIP(ctx, network, host)
	var de *net.DNSError
	if errors.As(err, &de) {
		de.Server = s.server
	}
	return ips, err
}

// Preflight returns what it checked, in words for people, or why the CA
// would fail.
func (p *Preflight) Preflight(ctx context.Context, id challenge.Identifier, keyAuth string) (string, error) {
	addrs, lookupErr := p.resolve(ctx, id)
	if len(addrs) == 0 {
		why := fmt.Sprintf("%s does not resolve from here", id.Value)
		if lookupErr != nil {
			why += ": " + lookupErr.Error()
		}
		return p.localOnly(ctx, id, keyAuth, why)
	}

	checker := &Checker{Addresses: addrs, Timeout: p.Timeout, SkipProduction: true}
	rep := checker.Check(ctx, Target{ID: id, Port: p.CAPort, KeyAuthorization: keyAuth})
	decisive := netip.AddrPort{}
	if n := len(rep.CA.Tried); n > 0 {
		decisive, _ = netip.ParseAddrPort(rep.CA.Tried[n-1])
	}
	here := p.onThisHost(decisive.Addr())
	fellBack := ""
	if rep.CA.Pass && len(rep.CA.Tried) > 1 {
		// Say that the CA will have to fall back, and why.
		fellBack = "; " + rep.CA.Summary
	}
	switch {
	case rep.CA.Pass && here:
		return fmt.Sprintf("checked %s at %s, an address of this host, on the CA's port %d (a firewall in front of this host cannot be seen from here)%s",
			id.Value, decisive, p.CAPort, fellBack), nil
	case rep.CA.Pass:
		return fmt.Sprintf("checked %s at %s on the CA's port %d from this host (%s is not on this host: the connection went through it and back to this responder; a firewall rule for outside sources cannot be seen from here)%s",
			id.Value, decisive, p.CAPort, decisive.Addr(), fellBack), nil
	case here || !decisive.IsValid():
		err := fmt.Errorf("checked %s at %s, an address of this host, on the CA's port %d: %s", id.Value, decisive, p.CAPort, preflightProblem(rep))
		if _, port, lerr := p.localTarget(); lerr == nil && port != p.CAPort {
			return "", &OtherPortError{Listen: p.Listen, ListenPort: port, CAPort: p.CAPort, Err: err}
		}
		return "", err
	}
	why := fmt.Sprintf("address %s is not on this host, and from here %s gave: %s, which may be the router's doing rather than what the CA will see",
		decisive.Addr(), decisive, rep.CA.Problem)
	return p.localOnly(ctx, id, keyAuth, why)
}

// OtherPortError is a failed preflight on this host where the responder
// listens on another port than the CA connects to: the likely cause, which
// the caller advises on in its own terms (how its listening address is
// set; whether its preflight can be skipped for a firewall redirect of
// incoming connections, which does not apply to this host's own).
type OtherPortError struct {
	Listen     string // the responder's listening address
	ListenPort int    // its port
	CAPort     int    // the port the CA connects to
	Err        error  // what the check of the CA's port found
}

func (e *OtherPortError) Error() string { return e.Err.Error() }

func (e *OtherPortError) Unwrap() error { return e.Err }

// localOnly checks the local listener, when nothing better could be
// checked, and says so: on success in its words and in a warning, since
// the CA may still fail to connect from outside.
func (p *Preflight) localOnly(ctx context.Context, id challenge.Identifier, keyAuth, why string) (string, error) {
	host, port, err := p.localTarget()
	if err != nil {
		return "", err
	}
	local := netip.AddrPortFrom(host, uint16(port))
	checker := &Checker{Addresses: []netip.Addr{host}, Timeout: p.Timeout, SkipProduction: true}
	rep := checker.Check(ctx, Target{ID: id, Port: port, KeyAuthorization: keyAuth})
	words := fmt.Sprintf("checked only the local listener on %s; could not check from outside (%s)", local, why)
	if !rep.CA.Pass {
		return "", fmt.Errorf("%s: %s", words, preflightProblem(rep))
	}
	p.log().Warn("preflight: "+words+"; if the CA then cannot connect, forward TCP port "+strconv.Itoa(p.CAPort)+
		" of the public address to this host and open it in the firewall or security group", "identifier", id.Value)
	return words, nil
}

// preflightProblem is the CA's words for a failed report and the first fix.
func preflightProblem(rep *Report) string {
	msg := rep.CA.Problem
	if fix := rep.FirstFix(); fix != "" {
		msg += "; fix: " + fix
	}
	return msg
}

func (p *Preflight) log() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// resolve returns the addresses the CA would connect to, as resolved from
// here: the address itself for an IP identifier.
func (p *Preflight) resolve(ctx context.Context, id challenge.Identifier) ([]netip.Addr, error) {
	if id.Type == challenge.IP {
		a, err := netip.ParseAddr(id.Value)
		if err != nil {
			return nil, err
		}
		return []netip.Addr{a.Unmap()}, nil
	}
	// A slow or lossy resolver must not hold up the order, so both
	// lookups run at once and for one second at most (a lost UDP packet
	// would otherwise cost the resolver's five-second retry).
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var (
		wg         sync.WaitGroup
		v6, v4     []netip.Addr
		err6, err4 error
	)
	wg.Go(func() { v6, err6 = p.Resolver.LookupNetIP(lctx, "ip6", id.Value) })
	wg.Go(func() { v4, err4 = p.Resolver.LookupNetIP(lctx, "ip4", id.Value) })
	wg.Wait()
	var out []netip.Addr
	for _, a := range append(v6, v4...) {
		if a = a.Unmap().WithZone(""); !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, errors.Join(err6, err4)
	}
	return out, nil
}

// onThisHost reports whether a is an address of one of this host's
// interfaces, where a connection from here reaches this host directly.
func (p *Preflight) onThisHost(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	local, err := p.local()
	if err != nil {
		return false
	}
	for _, l := range local {
		if l.Unmap() == a.Unmap() {
			return true
		}
	}
	return false
}

func (p *Preflight) local() ([]netip.Addr, error) {
	if p.LocalAddrs != nil {
		return p.LocalAddrs()
	}
	return HostAddrs()
}

// localTarget turns the listen address into one to connect to: an
// unspecified host (":443", "0.0.0.0:443", "[::]:443") means loopback.
func (p *Preflight) localTarget() (netip.Addr, int, error) {
	host, portStr, err := net.SplitHostPort(p.Listen)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("preflight: listen address %q: %w", p.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return netip.Addr{}, 0, fmt.Errorf("preflight: listen address %q has no numeric port", p.Listen)
	}
	if host == "" {
		return netip.MustParseAddr("127.0.0.1"), port, nil
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		// A host name: let the resolver pick, as a client would.
		ips, rerr := p.Resolver.LookupNetIP(context.Background(), "ip", host)
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
