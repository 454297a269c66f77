package plan

// This file answers "which validation method should I automate here?" by
// probing: the names' records against this host's addresses, who holds
// ports 443 and 80 (from /proc), what the outside sees on 443, and, when
// asked, whether acme-tls/1 and HTTP-01 reach a listener bound here for a
// moment. The decision is advice: only a failure to probe is an error.

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/check"
	"github.com/tlsalpn/tlsalpn/procnet"
	challengeresponder "github.com/tlsalpn/tlsalpn/responder"
)

// DefaultHTTPPort is the port a CA connects to for HTTP-01 (RFC 8555 §8.3).
const DefaultHTTPPort = 80

// Method is an ACME challenge type.
type Method string

const (
	TLSALPN01 Method = "tls-alpn-01"
	HTTP01    Method = "http-01"
	DNS01     Method = "dns-01"
)

// Front says what answers a name's port 443, as far as probing can tell.
type Front string

const (
	// FrontDirect: at least one of the name's records is an address of
	// this host.
	FrontDirect Front = "direct"
	// FrontForwarded: no record is this host's, but the certificate seen
	// through them is the one this host serves: a NAT port forward or a
	// TCP pass-through load balancer, which lets acme-tls/1 through.
	FrontForwarded Front = "forwarded"
	// FrontProxy: no record is this host's and what answers there serves
	// another certificate: a TLS-terminating proxy or CDN, or another
	// host altogether.
	FrontProxy Front = "proxy"
	// FrontCDN: like FrontProxy, and it refuses acme-tls/1, as CDNs in
	// full-proxy mode do.
	FrontCDN Front = "cdn"
	// FrontElsewhere: the records point at addresses that are not this
	// host and do not answer TLS.
	FrontElsewhere Front = "elsewhere"
	// FrontNoRecords: the name has no A or AAAA record.
	FrontNoRecords Front = "no-records"
	// FrontWildcard: a wildcard, which is not probed.
	FrontWildcard Front = "wildcard"
)

// ALPN states of what answers acme-tls/1 at a name's first address.
const (
	ALPNNegotiated   = "negotiated"   // acme-tls/1 was negotiated (any certificate)
	ALPNRefused      = "refused"      // the TLS server does not speak it (alert, or no protocol)
	ALPNUnreachable  = "unreachable"  // no TCP connection
	ALPNInconclusive = "inconclusive" // some other handshake failure (e.g. no challenge for this SNI)
)

// Listener is a TCP socket in LISTEN state on this host, with the process
// that holds it when /proc tells; see package procnet, which finds them.
type Listener = procnet.Listener

// PortState is who, if anyone, listens on a port here.
type PortState struct {
	Port      int        `json:"port"`
	Free      bool       `json:"free"`
	Listeners []Listener `json:"listeners,omitempty"`
}

// Holder names the process that holds the port: "nginx (pid 812)", or
// "an unknown process (uid 33)" when /proc does not say.
func (p PortState) Holder() string {
	if p.Free {
		return ""
	}
	var out []string
	for _, l := range p.Listeners {
		if s := l.Owner(); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return strings.Join(out, ", ")
}

// Process is the name of the first process found holding the port, or "".
func (p PortState) Process() string {
	for _, l := range p.Listeners {
		if l.Process != "" {
			return l.Process
		}
	}
	return ""
}

func (p PortState) addresses() string {
	var out []string
	for _, l := range p.Listeners {
		if !slices.Contains(out, l.Address) {
			out = append(out, l.Address)
		}
	}
	return strings.Join(out, ", ")
}

// Host is what was found about this host.
type Host struct {
	Addresses  []netip.Addr `json:"addresses"`
	GlobalIPv6 bool         `json:"global_ipv6"`
	TLSPort    PortState    `json:"tls_port"`
	HTTPPort   PortState    `json:"http_port"`
}

// Outside is what a client sees on the TLS port at a name's addresses.
type Outside struct {
	// Address is the address the CA would try first.
	Address string `json:"address"`
	// ALPN is one of ALPNNegotiated, ALPNRefused, ALPNUnreachable or
	// ALPNInconclusive, for a handshake offering only acme-tls/1.
	ALPN   string `json:"alpn"`
	Detail string `json:"detail"`
	// Certificate is what ordinary clients (h2, http/1.1) get, if any.
	Certificate *check.Certificate `json:"certificate,omitempty"`
	// Skipped are records not probed (Planner.Dialable refused them).
	Skipped []netip.Addr `json:"skipped,omitempty"`
}

// ProbeResult is the outcome of a listen test.
type ProbeResult struct {
	Ran    bool   `json:"ran"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// NameFinding is what was found for one requested name.
type NameFinding struct {
	Name        string                   `json:"name"`
	Type        challenge.IdentifierType `json:"type"`
	Wildcard    bool                     `json:"wildcard"`
	A           []netip.Addr             `json:"a,omitempty"`
	AAAA        []netip.Addr             `json:"aaaa,omitempty"`
	LookupError string                   `json:"lookup_error,omitempty"`
	// Here are the records that are addresses of this host.
	Here []netip.Addr `json:"here,omitempty"`
	// RecordFixes say which record to fix, one line each.
	RecordFixes []string `json:"record_fixes,omitempty"`
	// RecordNotes are other remarks on the records (non-public addresses).
	RecordNotes   []string `json:"record_notes,omitempty"`
	Front         Front    `json:"front"`
	FrontEvidence string   `json:"front_evidence"`
	Outside       *Outside `json:"outside,omitempty"`
	// LocalCertificate is what this host's TLS port serves for the name.
	LocalCertificate *check.Certificate `json:"local_certificate,omitempty"`
	// ListenTest: acme-tls/1 with a throwaway challenge through the public
	// address to a listener bound here for the test.
	ListenTest ProbeResult `json:"listen_test"`
	// HTTPTest: an HTTP-01-style token fetched through the public address
	// from a listener bound here for the test.
	HTTPTest ProbeResult `json:"http_test"`

	id challenge.Identifier
}

// Row is one line of the decision table.
type Row struct {
	Question string   `json:"question"`
	Answer   string   `json:"answer"`
	Evidence []string `json:"evidence"`
}

// ConfigSnippet is a piece of configuration to put in a file.
type ConfigSnippet struct {
	Path string `json:"path"`
	Text string `json:"text"`
}

// Recommendation is the one method to automate, with the exact commands.
type Recommendation struct {
	Method  Method   `json:"method"`
	Summary string   `json:"summary"`
	Why     []string `json:"why"`
	// Before are fixes to make first (a stale record, a firewall).
	Before   []string        `json:"before,omitempty"`
	Commands []string        `json:"commands"`
	Config   []ConfigSnippet `json:"config,omitempty"`
	Notes    []string        `json:"notes,omitempty"`
}

// Plan is the outcome of Planner.Plan.
type Plan struct {
	Names          []*NameFinding `json:"names"`
	Host           Host           `json:"host"`
	ListenTest     bool           `json:"listen_test"`
	Table          []Row          `json:"table"`
	Recommendation Recommendation `json:"recommendation"`
}

// Planner probes this host and the names to decide which challenge to
// automate. The zero value probes for real: the system resolver, the
// interfaces' addresses, /proc, ports 443 and 80. A Planner must not be
// modified while in use.
type Planner struct {
	// Resolver looks up A and AAAA records; nil means net.DefaultResolver.
	Resolver check.Resolver
	// InterfaceAddrs returns this host's addresses; nil means those of
	// net.InterfaceAddrs.
	InterfaceAddrs func() ([]netip.Addr, error)
	// ProcRoot is where procfs is mounted; "" means "/proc".
	ProcRoot string
	// TLSPort is the port the CA validates TLS-ALPN-01 on; 0 means 443.
	TLSPort int
	// HTTPPort is the port the CA validates HTTP-01 on; 0 means 80.
	HTTPPort int
	// ListenTest binds the free ports briefly and checks that a
	// throwaway acme-tls/1 challenge, and an HTTP-01 token, are reached
	// through the names' public addresses.
	ListenTest bool
	// Listen binds for the listen test; nil means net.ListenConfig's.
	// The address is ":PORT".
	Listen func(ctx context.Context, network, address string) (net.Listener, error)
	// Dialable reports whether the planner may connect to an address;
	// nil allows every address. Tests allow only loopback.
	Dialable func(netip.Addr) bool
	// Timeout bounds each connection; 0 means DialTimeout.
	Timeout time.Duration
	// Roots verify the production certificate; nil means the system roots.
	Roots *x509.CertPool
	// Email only fills in the recommended commands; "" gives a
	// placeholder.
	Email string
	// Logger gets a debug line per handshake; nil discards.
	Logger *slog.Logger
}

func (p *Planner) tlsPort() int  { return cmp0(p.TLSPort, check.DefaultPort) }
func (p *Planner) httpPort() int { return cmp0(p.HTTPPort, DefaultHTTPPort) }

func cmp0(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func (p *Planner) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return check.DialTimeout
}

func (p *Planner) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (p *Planner) dialable(a netip.Addr) bool { return p.Dialable == nil || p.Dialable(a) }

// ParsePlanName parses a name to plan for: what challenge.ParseIdentifier
// accepts, plus wildcards ("*.example.com"), which only DNS-01 can
// validate. The identifier of a wildcard is its base name.
func ParsePlanName(s string) (id challenge.Identifier, wildcard bool, err error) {
	if base, ok := strings.CutPrefix(strings.TrimSpace(s), "*."); ok {
		id, err = challenge.ParseIdentifier(base)
		if err != nil || id.Type != challenge.DNS {
			return challenge.Identifier{}, true, fmt.Errorf("check: %q is not a wildcard DNS name", s)
		}
		return id, true, nil
	}
	id, err = challenge.ParseIdentifier(s)
	if err != nil {
		return challenge.Identifier{}, false, fmt.Errorf("check: %q: %w", s, err)
	}
	return id, false, nil
}

// Plan probes and decides. It fails only when probing itself fails (this
// host's addresses or /proc cannot be read, or a name does not parse);
// everything about the names is in the Plan.
func (p *Planner) Plan(ctx context.Context, names []string) (*Plan, error) {
	if len(names) == 0 {
		return nil, errors.New("check: plan: no names")
	}
	plan := &Plan{ListenTest: p.ListenTest}
	seen := map[string]bool{}
	for _, n := range names {
		id, wild, err := ParsePlanName(n)
		if err != nil {
			return nil, err
		}
		name := id.Value
		if wild {
			name = "*." + name
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		plan.Names = append(plan.Names, &NameFinding{Name: name, Type: id.Type, Wildcard: wild, id: id})
	}

	local, err := p.localAddrs()
	if err != nil {
		return nil, fmt.Errorf("check: plan: reading this host's addresses: %w", err)
	}
	plan.Host.Addresses = local
	plan.Host.GlobalIPv6 = slices.ContainsFunc(local, isGlobal6)
	if plan.Host.TLSPort, err = p.portState(p.tlsPort()); err != nil {
		return nil, err
	}
	if plan.Host.HTTPPort, err = p.portState(p.httpPort()); err != nil {
		return nil, err
	}

	var wg sync.WaitGroup
	for _, f := range plan.Names {
		if f.Wildcard {
			f.Front = FrontWildcard
			f.FrontEvidence = "not probed: RFC 8737 §3 forbids TLS-ALPN-01 for wildcards, and HTTP-01 cannot validate them either"
			f.ListenTest.Detail = "not run: a wildcard"
			f.HTTPTest.Detail = "not run: a wildcard"
			continue
		}
		wg.Go(func() {
			p.resolve(ctx, f, &plan.Host)
			p.probeOutside(ctx, f, &plan.Host)
			classify(f)
		})
	}
	wg.Wait()

	if p.ListenTest {
		p.listenTests(ctx, plan)
	} else {
		for _, f := range plan.Names {
			if !f.Wildcard {
				f.ListenTest.Detail = "not run: give --listen-test to bind the port briefly and test"
				f.HTTPTest.Detail = "not run: give --listen-test to bind the port briefly and test"
			}
		}
	}

	plan.Table = p.table(plan)
	plan.Recommendation = p.recommend(plan)
	return plan, nil
}

// --- this host -------------------------------------------------------------

func (p *Planner) localAddrs() ([]netip.Addr, error) {
	if p.InterfaceAddrs != nil {
		return p.InterfaceAddrs()
	}
	return check.HostAddrs()
}

func isGlobal6(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && a.IsGlobalUnicast() && !a.IsPrivate()
}

func (p *Planner) portState(port int) (PortState, error) {
	ls, err := procnet.Listeners(p.ProcRoot, port)
	if err != nil {
		return PortState{}, fmt.Errorf("check: plan: who listens on port %d: %w", port, err)
	}
	return PortState{Port: port, Free: len(ls) == 0, Listeners: ls}, nil
}

// --- the names -------------------------------------------------------------

func (p *Planner) resolve(ctx context.Context, f *NameFinding, h *Host) {
	if f.Type == challenge.IP {
		a := netip.MustParseAddr(f.id.Value)
		if a.Is4() {
			f.A = []netip.Addr{a}
		} else {
			f.AAAA = []netip.Addr{a}
		}
	} else {
		res := p.Resolver
		if res == nil {
			res = net.DefaultResolver
		}
		lctx, cancel := context.WithTimeout(ctx, p.timeout())
		defer cancel()
		var err4, err6 error
		var wg sync.WaitGroup
		wg.Go(func() { f.A, err4 = lookup(lctx, res, "ip4", f.id.Value) })
		wg.Go(func() { f.AAAA, err6 = lookup(lctx, res, "ip6", f.id.Value) })
		wg.Wait()
		var errs []string
		for _, e := range []error{err4, err6} {
			if e != nil && !isNotFound(e) && !strings.Contains(e.Error(), "no suitable address") {
				errs = append(errs, e.Error())
			}
		}
		f.LookupError = strings.Join(errs, "; ")
	}

	for _, a := range append(slices.Clone(f.AAAA), f.A...) {
		if slices.Contains(h.Addresses, a) {
			f.Here = append(f.Here, a)
			if !a.IsGlobalUnicast() || a.IsPrivate() {
				f.RecordNotes = append(f.RecordNotes, fmt.Sprintf("%s is not a public address: a public CA cannot reach it (a private CA on this network can)", a))
			}
		}
	}
	for _, a := range f.AAAA {
		if slices.Contains(f.Here, a) {
			continue
		}
		if !h.GlobalIPv6 {
			f.RecordFixes = append(f.RecordFixes, fmt.Sprintf("%s AAAA %s: this host has no global IPv6 address, so the CA will fail — it tries IPv6 first: remove the AAAA record, or give this host that address", f.Name, a))
			continue
		}
		f.RecordFixes = append(f.RecordFixes, fmt.Sprintf("%s AAAA %s is not this host (this host has %s): fix or remove it — the CA tries IPv6 first", f.Name, a, hostHas(h.Addresses, true)))
	}
	for _, a := range f.A {
		if slices.Contains(f.Here, a) {
			continue
		}
		fix := fmt.Sprintf("%s A %s is not this host (this host has %s): fix it", f.Name, a, hostHas(h.Addresses, false))
		if onlyPrivate4(h.Addresses) && a.IsGlobalUnicast() && !a.IsPrivate() {
			fix += fmt.Sprintf(", or, if this host is behind NAT at %s, forward TCP %d there to this host", a, check.DefaultPort)
		}
		f.RecordFixes = append(f.RecordFixes, fix)
	}
}

func lookup(ctx context.Context, r check.Resolver, network, host string) ([]netip.Addr, error) {
	got, err := r.LookupNetIP(ctx, network, host)
	var out []netip.Addr
	for _, a := range got {
		a = a.Unmap().WithZone("")
		if (network == "ip4") == a.Is4() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out, err
}

// hostHas lists this host's addresses of one family: the global ones when
// there are any, else all but loopback and link-local, else loopback.
func hostHas(addrs []netip.Addr, v6 bool) string {
	var loop, other, global []string
	for _, a := range addrs {
		switch {
		case a.Is6() != v6 || a.IsLinkLocalUnicast():
		case a.IsLoopback():
			loop = append(loop, a.String())
		default:
			other = append(other, a.String())
			if a.IsGlobalUnicast() && !a.IsPrivate() {
				global = append(global, a.String())
			}
		}
	}
	for _, l := range [][]string{global, other, loop} {
		if len(l) > 0 {
			return strings.Join(l, ", ")
		}
	}
	if v6 {
		return "no IPv6 address"
	}
	return "no IPv4 address"
}

func onlyPrivate4(addrs []netip.Addr) bool {
	any4 := false
	for _, a := range addrs {
		if !a.Is4() || a.IsLoopback() {
			continue
		}
		any4 = true
		if !a.IsPrivate() {
			return false
		}
	}
	return any4
}

// records are the name's addresses in the CA's order: IPv6 first.
func (f *NameFinding) records() []netip.Addr { return append(slices.Clone(f.AAAA), f.A...) }

// probeOutside handshakes with the name's addresses as the CA and as a
// browser would, and, when the TLS port is held here, with this host's
// own listener, to compare the certificates.
func (p *Planner) probeOutside(ctx context.Context, f *NameFinding, h *Host) {
	var wg sync.WaitGroup
	var addrs, skipped []netip.Addr
	for _, a := range f.records() {
		if p.dialable(a) {
			addrs = append(addrs, a)
		} else {
			skipped = append(skipped, a)
		}
	}
	target := check.Target{ID: f.id, Port: p.tlsPort()}
	if len(addrs) > 0 {
		wg.Go(func() {
			c := &check.Checker{Addresses: addrs, Timeout: p.timeout(), Roots: p.Roots, Logger: p.Logger}
			f.Outside = outsideOf(c.Check(ctx, target))
			f.Outside.Skipped = skipped
		})
	} else if len(skipped) > 0 {
		f.Outside = &Outside{ALPN: ALPNInconclusive, Detail: "not probed: no address may be dialed", Skipped: skipped}
	}
	if !h.TLSPort.Free {
		if la, ok := localDialAddr(h.TLSPort); ok && p.dialable(la) {
			wg.Go(func() {
				c := &check.Checker{Addresses: []netip.Addr{la}, Timeout: p.timeout(), Roots: p.Roots, Logger: p.Logger}
				r := c.Check(ctx, target)
				for _, a := range r.Addresses {
					if a.Production != nil {
						f.LocalCertificate = a.Production
					}
				}
			})
		}
	}
	wg.Wait()
}

// localDialAddr picks the address to reach this host's own listener on:
// loopback for a wildcard bind, else the address bound.
func localDialAddr(ps PortState) (netip.Addr, bool) {
	for _, l := range ps.Listeners {
		ap, err := netip.ParseAddrPort(l.Address)
		if err != nil {
			continue
		}
		a := ap.Addr()
		switch {
		case a.IsUnspecified() && a.Is4():
			return netip.MustParseAddr("127.0.0.1"), true
		case a.IsUnspecified():
			return netip.IPv6Loopback(), true
		}
		return a, true
	}
	return netip.Addr{}, false
}

// outsideOf summarises a Report: the ALPN outcome at the CA's first
// address and the production certificate seen.
func outsideOf(r *check.Report) *Outside {
	o := &Outside{ALPN: ALPNInconclusive, Detail: r.Summary}
	for _, a := range r.Addresses {
		if o.Certificate == nil && a.Production != nil {
			o.Certificate = a.Production
		}
	}
	if len(r.Addresses) == 0 {
		return o
	}
	first := r.Addresses[0]
	o.Address = first.Address
	o.ALPN, o.Detail = alpnState(first)
	return o
}

func alpnState(a check.AddressReport) (string, string) {
	for _, res := range a.Results {
		if res.Pass || !res.Rule.IsCARule() {
			continue
		}
		// The CA's words without its "<ip>: " prefix, and what was seen
		// when the CA's words say nothing.
		words := res.CAMessage
		if ap, err := netip.ParseAddrPort(a.Address); err == nil {
			words = strings.TrimPrefix(words, ap.Addr().String()+": ")
		}
		if words == "" || strings.HasSuffix(words, check.GenericWords) {
			words = strings.TrimSpace(words + " (" + res.Detail + ")")
		}
		switch res.Rule {
		case check.RuleConnect:
			return ALPNUnreachable, words
		case check.RuleTLSHandshake:
			if strings.Contains(res.Detail, "no application protocol") || strings.Contains(res.Detail, "unsupported application protocols") {
				return ALPNRefused, words
			}
			return ALPNInconclusive, words
		case check.RuleCertificates:
			return ALPNInconclusive, words
		case check.RuleALPN:
			return ALPNRefused, words
		}
		return ALPNNegotiated, "acme-tls/1 negotiated; the certificate then fails " + string(res.Rule) + " (expected: no challenge is pending)"
	}
	return ALPNNegotiated, "acme-tls/1 negotiated and a validation certificate served"
}

// sameCertificate reports whether two descriptions are of the same
// certificate.
func sameCertificate(a, b *check.Certificate) bool {
	return a != nil && b != nil && a.Subject == b.Subject && a.Issuer == b.Issuer &&
		a.NotBefore.Equal(b.NotBefore) && a.NotAfter.Equal(b.NotAfter) && slices.Equal(a.Names, b.Names)
}

func describeCert(c *check.Certificate) string {
	if c == nil {
		return "none"
	}
	return fmt.Sprintf("%s from %s, until %s", strings.Join(c.Names, ", "), c.Issuer, c.NotAfter.UTC().Format(time.DateOnly))
}

// classify decides what answers the name's TLS port.
func classify(f *NameFinding) {
	o := f.Outside
	switch {
	case len(f.Here) > 0:
		f.Front = FrontDirect
		f.FrontEvidence = "no proxy: the name resolves to this host (" + joinAddrs(f.Here) + ")"
		if o != nil && o.Certificate != nil && f.LocalCertificate != nil && !sameCertificate(o.Certificate, f.LocalCertificate) {
			f.FrontEvidence += "; but the certificate seen at " + o.Address + " (" + describeCert(o.Certificate) + ") is not the one this host serves (" + describeCert(f.LocalCertificate) + ")"
		}
	case len(f.A)+len(f.AAAA) == 0:
		f.Front = FrontNoRecords
		f.FrontEvidence = "the name has no A or AAAA record"
		if f.LookupError != "" {
			f.FrontEvidence += " (" + f.LookupError + ")"
		}
	case o == nil || o.Certificate == nil:
		f.Front = FrontElsewhere
		f.FrontEvidence = fmt.Sprintf("the name resolves to %s, not this host, and nothing there served a certificate", joinAddrs(f.records()))
		if o != nil && o.Detail != "" {
			f.FrontEvidence += ": " + o.Detail
		}
	case sameCertificate(o.Certificate, f.LocalCertificate):
		f.Front = FrontForwarded
		f.FrontEvidence = fmt.Sprintf("the name resolves to %s, not this host, but the certificate seen there is the one this host serves (%s): a NAT port forward or a TCP pass-through load balancer", joinAddrs(f.records()), describeCert(o.Certificate))
	case o.ALPN == ALPNRefused:
		f.Front = FrontCDN
		f.FrontEvidence = fmt.Sprintf("%s terminates TLS with a certificate this host does not serve (%s; here: %s) and refuses acme-tls/1: a CDN or TLS-terminating proxy", o.Address, describeCert(o.Certificate), describeCert(f.LocalCertificate))
	default:
		f.Front = FrontProxy
		f.FrontEvidence = fmt.Sprintf("%s serves a certificate this host does not serve (%s; here: %s): a TLS-terminating proxy or CDN, or another host", o.Address, describeCert(o.Certificate), describeCert(f.LocalCertificate))
	}
	switch f.Front {
	case FrontForwarded, FrontCDN, FrontProxy:
		// The records point at what is in front, as they should.
		f.RecordNotes = append(f.RecordNotes, fmt.Sprintf("%s points at %s, which is in front of this host, not this host itself: expected, nothing to fix", f.Name, joinAddrs(f.records())))
		f.RecordFixes = nil
	}
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// --- listen tests ----------------------------------------------------------

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
const fromHere = " (tested from this host: a firewall or security group in front of it is not crossed; run tlsalpn check NAME from elsewhere for that)"

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

// --- the decision table ----------------------------------------------------

// perName folds one answer per probed name into a row: the common answer,
// or "mixed".
func perName(question string, names []*NameFinding, fn func(f *NameFinding) (answer, evidence string)) Row {
	row := Row{Question: question}
	var answers []string
	for _, f := range names {
		if f.Wildcard {
			continue
		}
		a, ev := fn(f)
		if !slices.Contains(answers, a) {
			answers = append(answers, a)
		}
		if ev != "" {
			row.Evidence = append(row.Evidence, f.Name+": "+ev)
		}
	}
	switch len(answers) {
	case 0:
		row.Answer = "n/a"
		row.Evidence = append(row.Evidence, "only wildcards requested: nothing to probe")
	case 1:
		row.Answer = answers[0]
	default:
		row.Answer = "mixed"
	}
	return row
}

func (p *Planner) table(plan *Plan) []Row {
	var rows []Row

	wild := Row{Question: "wildcard requested?", Answer: "no"}
	var plain []string
	for _, f := range plan.Names {
		if f.Wildcard {
			wild.Answer = "yes"
			wild.Evidence = append(wild.Evidence, f.Name+": RFC 8737 §3 forbids TLS-ALPN-01 for wildcards (and HTTP-01 cannot do them): only DNS-01 can validate it")
		} else {
			plain = append(plain, f.Name)
		}
	}
	if wild.Answer == "no" {
		wild.Evidence = []string{"none of " + strings.Join(plain, ", ")}
	}
	rows = append(rows, wild)

	dns := perName("names resolve to this host?", plan.Names, func(f *NameFinding) (string, string) {
		ev := fmt.Sprintf("A %s; AAAA %s", addrList(f.A, f.Here), addrList(f.AAAA, f.Here))
		if f.LookupError != "" {
			ev += "; lookup error: " + f.LookupError
		}
		for _, n := range f.RecordNotes {
			ev += "; " + n
		}
		for _, fix := range f.RecordFixes {
			ev += "; FIX: " + fix
		}
		switch {
		case len(f.Here) == 0:
			return "no", ev
		case len(f.RecordFixes) > 0:
			return "partly", ev
		}
		return "yes", ev
	})
	if dns.Answer == "mixed" {
		dns.Answer = "partly"
	}
	dns.Evidence = append(dns.Evidence, "this host: "+joinAddrs(plan.Host.Addresses))
	if !plan.Host.GlobalIPv6 {
		dns.Evidence[len(dns.Evidence)-1] += " (no global IPv6)"
	}
	rows = append(rows, dns)

	for _, ps := range []PortState{plan.Host.TLSPort, plan.Host.HTTPPort} {
		r := Row{Question: fmt.Sprintf("port %d held here?", ps.Port), Answer: "free"}
		if ps.Free {
			r.Evidence = []string{fmt.Sprintf("no LISTEN socket on port %d in /proc/net/tcp or tcp6", ps.Port)}
		} else {
			r.Answer = "held by " + ps.Holder()
			r.Evidence = []string{"LISTEN on " + ps.addresses()}
			if ps.Process() == "" {
				r.Evidence = append(r.Evidence, "the process is not known: its /proc/PID/fd is not readable (run as root to see it)")
			}
		}
		rows = append(rows, r)
	}

	tlsPort := p.tlsPort()
	rows = append(rows, perName(fmt.Sprintf("port %d reachable?", tlsPort), plan.Names, func(f *NameFinding) (string, string) {
		switch {
		case f.ListenTest.Ran && f.ListenTest.Pass:
			return "yes", "the listen test connected through " + joinAddrs(f.Here)
		case f.Outside == nil:
			return "unknown", "no address to connect to"
		case f.Outside.ALPN == ALPNUnreachable && len(f.Here) > 0 && plan.Host.TLSPort.Free:
			return "nothing listens yet", f.Outside.Address + ": " + f.Outside.Detail + " (the port is free here; tlsalpn issue listens while validating)"
		case f.Outside.ALPN == ALPNUnreachable:
			return "no", f.Outside.Address + ": " + f.Outside.Detail
		}
		ev := f.Outside.Address + " answered TLS"
		if len(f.Outside.Skipped) > 0 {
			ev += "; not probed: " + joinAddrs(f.Outside.Skipped)
		}
		return "yes", ev
	}))

	rows = append(rows, perName("acme-tls/1 passes?", plan.Names, func(f *NameFinding) (string, string) {
		switch {
		case f.ListenTest.Ran && f.ListenTest.Pass:
			return "yes", f.ListenTest.Detail
		case f.ListenTest.Ran:
			return "no", f.ListenTest.Detail
		case f.Outside == nil:
			return "not tested", f.ListenTest.Detail
		}
		switch f.Outside.ALPN {
		case ALPNNegotiated:
			return "yes", "negotiated at " + f.Outside.Address + ": " + f.Outside.Detail
		case ALPNRefused:
			ev := "refused at " + f.Outside.Address + ": " + f.Outside.Detail
			if f.Front == FrontDirect && !plan.Host.TLSPort.Free {
				ev += fmt.Sprintf("; that is %s here, which does not answer the CA: tlsalpn serve in front of it does", plan.Host.TLSPort.Holder())
			}
			return "no", ev
		case ALPNUnreachable:
			return "not tested", f.ListenTest.Detail
		}
		return "unknown", f.Outside.Detail
	}))

	rows = append(rows, perName("behind a proxy or CDN?", plan.Names, func(f *NameFinding) (string, string) {
		switch f.Front {
		case FrontDirect:
			return "no", f.FrontEvidence
		case FrontForwarded:
			return "no (forwarded)", f.FrontEvidence
		case FrontProxy:
			return "yes: a proxy", f.FrontEvidence
		case FrontCDN:
			return "yes: a CDN", f.FrontEvidence
		case FrontElsewhere:
			return "no: DNS points elsewhere", f.FrontEvidence
		}
		return "unknown", f.FrontEvidence
	}))

	rows = append(rows, perName("HTTP-01 reachable?", plan.Names, func(f *NameFinding) (string, string) {
		switch {
		case f.HTTPTest.Ran && f.HTTPTest.Pass:
			return "yes", f.HTTPTest.Detail
		case f.HTTPTest.Ran:
			return "no", f.HTTPTest.Detail
		}
		return "not tested", f.HTTPTest.Detail
	}))
	return rows
}

// addrList writes addresses, marking this host's.
func addrList(as, here []netip.Addr) string {
	if len(as) == 0 {
		return "none"
	}
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
		if slices.Contains(here, a) {
			s[i] += " (this host)"
		} else {
			s[i] += " (not this host)"
		}
	}
	return strings.Join(s, ", ")
}

// --- the recommendation ----------------------------------------------------

func (p *Planner) email() string {
	if p.Email != "" {
		return shellQuote(p.Email)
	}
	return "YOU@EXAMPLE.ORG"
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_@:/[]") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func dFlags(names []*NameFinding) string {
	var b strings.Builder
	for i, f := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("-d " + shellQuote(f.Name))
	}
	return b.String()
}

func nameList(names []*NameFinding) string {
	s := make([]string, len(names))
	for i, f := range names {
		s[i] = f.Name
	}
	return strings.Join(s, ", ")
}

func (p *Planner) recommend(plan *Plan) Recommendation {
	var wild, plain []*NameFinding
	for _, f := range plan.Names {
		if f.Wildcard {
			wild = append(wild, f)
		} else {
			plain = append(plain, f)
		}
	}
	if len(wild) > 0 {
		rec := p.dns01(plan.Names, []string{fmt.Sprintf("%s is a wildcard: RFC 8737 §3 forbids TLS-ALPN-01 for wildcards (the CA cannot learn which names a wildcard covers by connecting to one), and HTTP-01 cannot validate them either; only DNS-01 can", nameList(wild))})
		if len(plain) > 0 {
			alt := p.recommendFor(plan, plain)
			rec.Notes = append(rec.Notes, fmt.Sprintf("or keep the wildcard alone on DNS-01 and get %s in a separate certificate with %s: %s", nameList(plain), strings.ToUpper(string(alt.Method)), alt.Commands[0]))
		}
		return rec
	}
	return p.recommendFor(plan, plain)
}

func (p *Planner) recommendFor(plan *Plan, names []*NameFinding) Recommendation {
	var before []string
	var blocked []*NameFinding
	for _, f := range names {
		before = append(before, f.RecordFixes...)
		switch f.Front {
		case FrontDirect, FrontForwarded:
		default:
			blocked = append(blocked, f)
		}
	}

	if len(blocked) > 0 {
		var why []string
		for _, f := range blocked {
			switch f.Front {
			case FrontCDN:
				why = append(why, f.Name+": "+f.FrontEvidence+"; the CA's acme-tls/1 handshake never reaches this host")
			case FrontProxy:
				why = append(why, f.Name+": "+f.FrontEvidence+"; the CA's acme-tls/1 handshake would be answered there, not here")
			case FrontNoRecords:
				why = append(why, f.Name+": "+f.FrontEvidence+"; the CA has nowhere to connect")
			default:
				why = append(why, f.Name+": "+f.FrontEvidence+"; the CA would connect there, not here")
			}
		}
		httpOK := true
		for _, f := range names {
			httpOK = httpOK && f.HTTPTest.Ran && f.HTTPTest.Pass
		}
		if httpOK && plan.Host.HTTPPort.Free {
			why = append(why, fmt.Sprintf("port %d is free here and a token served on it was fetched through the names' public addresses: HTTP-01 requests reach this host", plan.Host.HTTPPort.Port))
			return Recommendation{
				Method:  HTTP01,
				Summary: "HTTP-01 on port 80: TLS-ALPN-01 cannot reach this host, plain HTTP does",
				Why:     why,
				Before:  before,
				Commands: []string{
					fmt.Sprintf("certbot certonly --standalone %s --email %s --agree-tos", dFlags(names), p.email()),
					"systemctl enable --now certbot-renew.timer   # or the certbot.timer your package installs",
				},
				Notes: []string{"HTTP-01 needs port 80 free at renewal time too (certbot --standalone binds it for a few seconds); lego --http does the same"},
			}
		}
		// DNS-01 connects to nothing: wrong records do not stop it.
		rec := p.dns01(names, why)
		switch {
		case !plan.Host.HTTPPort.Free:
			rec.Notes = append(rec.Notes, fmt.Sprintf("HTTP-01 was not tested: port %d is held by %s here", plan.Host.HTTPPort.Port, plan.Host.HTTPPort.Holder()))
		case !plan.ListenTest:
			rec.Notes = append(rec.Notes, "HTTP-01 may work if what is in front forwards port 80 here: run tlsalpn plan again with --listen-test (as root) to find out")
		default:
			rec.Notes = append(rec.Notes, "HTTP-01 was tested and does not reach this host (see the table)")
		}
		for _, f := range blocked {
			switch f.Front {
			case FrontCDN, FrontProxy:
				rec.Notes = append(rec.Notes, f.Name+": to use TLS-ALPN-01 instead, switch the CDN or proxy to DNS-only or TCP pass-through for this name, then run tlsalpn plan again")
			case FrontElsewhere, FrontNoRecords:
				rec.Notes = append(rec.Notes, fmt.Sprintf("%s: to use TLS-ALPN-01 instead, point its A (and AAAA) record at this host (%s), then run tlsalpn plan again", f.Name, hostHas(plan.Host.Addresses, false)))
			}
		}
		return rec
	}

	// Every name reaches this host.
	ps := plan.Host.TLSPort
	if !ps.Free {
		return p.serveAdvice(ps, names, before)
	}
	rec := Recommendation{
		Method:  TLSALPN01,
		Summary: fmt.Sprintf("TLS-ALPN-01 with tlsalpn issue: port %d is free and the names resolve to this host", ps.Port),
		Why: []string{
			fmt.Sprintf("port %d is free here: tlsalpn issue listens on it for the second the CA validates, then lets go", ps.Port),
			"every name resolves to this host: " + nameList(names),
		},
		Before: before,
		Commands: []string{
			fmt.Sprintf("tlsalpn issue %s --email %s --agree-tos", dFlags(names), p.email()),
			"systemctl daemon-reload && systemctl enable --now tlsalpn-renew.timer",
		},
		Config: []ConfigSnippet{
			{Path: "/etc/systemd/system/tlsalpn-renew.service", Text: RenewServiceUnit},
			{Path: "/etc/systemd/system/tlsalpn-renew.timer", Text: RenewTimerUnit},
		},
		Notes: []string{
			fmt.Sprintf("tlsalpn renew binds port %d for a second at each renewal: if a web server will take the port later, use tlsalpn serve in front of it instead", ps.Port),
			"run tlsalpn issue as root, as the timer runs tlsalpn renew: both then use /var/lib/tlsalpn (a user's certificates are under their home, where the timer does not look)",
		},
	}
	for _, f := range names {
		if f.Outside != nil && f.Outside.Address != "" && f.Outside.ALPN != ALPNUnreachable && !(f.ListenTest.Ran && f.ListenTest.Pass) {
			rec.Before = append(rec.Before, fmt.Sprintf("%s: something answers TLS at %s although no process here listens on port %d: a DNAT rule (docker -p, kube-proxy) or another network namespace takes the traffic; tlsalpn issue would listen but the CA would reach that instead: remove the rule, or run tlsalpn where the traffic lands", f.Name, f.Outside.Address, ps.Port))
		}
		switch {
		case f.ListenTest.Ran && f.ListenTest.Pass:
			rec.Why = append(rec.Why, f.Name+": the listen test answered a throwaway challenge through "+joinAddrs(f.Here))
		case f.ListenTest.Ran:
			fix := f.Name + ": the listen test failed: " + f.ListenTest.Detail
			if f.ListenTest.Fix != "" {
				fix += "; fix: " + f.ListenTest.Fix
			}
			rec.Before = append(rec.Before, fix)
		case !plan.ListenTest:
			rec.Notes = append(rec.Notes, "acme-tls/1 was not tested end to end: run tlsalpn plan again with --listen-test (as root) to bind the port briefly and answer a throwaway challenge")
		default:
			note := f.Name + ": acme-tls/1 was not tested end to end: " + strings.TrimPrefix(f.ListenTest.Detail, "not run: ")
			if f.ListenTest.Fix != "" {
				note += "; " + f.ListenTest.Fix
			}
			rec.Notes = append(rec.Notes, note)
		}
	}
	rec.Notes = slices.Compact(rec.Notes)
	return rec
}

func (p *Planner) dns01(names []*NameFinding, why []string) Recommendation {
	return Recommendation{
		Method:  DNS01,
		Summary: "DNS-01 through your DNS provider's API",
		Why:     why,
		Commands: []string{
			fmt.Sprintf("certbot certonly --dns-PROVIDER --dns-PROVIDER-credentials /etc/letsencrypt/PROVIDER.ini %s --email %s --agree-tos", dFlags(names), p.email()),
		},
		Notes: []string{"tlsalpn does not do DNS-01: use a client with a plugin for your DNS provider (certbot's dns-* plugins, lego --dns, acme.sh --dns); renewal then needs no open port at all"},
	}
}

// webServer is how to move one kind of web server off the TLS port.
type webServer struct {
	out, hook string
	// config moves the server to 127.0.0.1:8443 as it is: no PROXY
	// protocol, so that tlsalpn serve can steer (hand new connections
	// straight to the server's socket) between validations.
	config ConfigSnippet
	// proxy says where to enable the PROXY protocol in the server, for
	// those who want every client's address even during validations.
	proxy string
	note  string
}

func serverFor(proc, first string, tlsPort int) webServer {
	port := strconv.Itoa(tlsPort)
	switch proc {
	case "nginx":
		return webServer{
			out:    "/etc/nginx/tls/" + first,
			hook:   "systemctl reload nginx",
			config: ConfigSnippet{Path: "/etc/nginx/sites-enabled/" + first, Text: "server {\n    listen 127.0.0.1:8443 ssl;   # was: listen " + port + " ssl; (and listen [::]:" + port + " ssl;)\n    ssl_certificate     /etc/nginx/tls/" + first + "/fullchain.pem;\n    ssl_certificate_key /etc/nginx/tls/" + first + "/key.pem;\n    ...\n}\n"},
			proxy:  `in nginx: "listen 127.0.0.1:8443 ssl proxy_protocol;" with "set_real_ip_from 127.0.0.1;" and "real_ip_header proxy_protocol;"`,
		}
	case "haproxy":
		return webServer{
			out:    "/etc/haproxy/tls/" + first,
			hook:   "cat \"$TLSALPN_FULLCHAIN\" \"$TLSALPN_KEY\" > /etc/haproxy/certs/" + first + ".pem && systemctl reload haproxy",
			config: ConfigSnippet{Path: "/etc/haproxy/haproxy.cfg", Text: "frontend https\n    bind 127.0.0.1:8443 ssl crt /etc/haproxy/certs/" + first + ".pem   # was: bind :" + port + " ssl crt ...\n"},
			proxy:  `in HAProxy: accept-proxy at the end of that bind line`,
			note:   "to update HAProxy without a reload, use tlsalpn serve --config with its runtime API (see config/example-haproxy.yaml)",
		}
	case "apache2", "httpd":
		return webServer{
			out:    "/etc/" + proc + "/tls/" + first,
			hook:   "systemctl reload " + proc,
			config: ConfigSnippet{Path: "/etc/" + proc + "/sites-enabled/" + first + ".conf", Text: "Listen 127.0.0.1:8443 https   # was: Listen " + port + "\n<VirtualHost 127.0.0.1:8443>\n    ServerName " + first + "\n    SSLEngine on\n    SSLCertificateFile    /etc/" + proc + "/tls/" + first + "/fullchain.pem\n    SSLCertificateKeyFile /etc/" + proc + "/tls/" + first + "/key.pem\n</VirtualHost>\n"},
			proxy:  `in Apache: "RemoteIPProxyProtocol On" in the VirtualHost (needs mod_remoteip: a2enmod remoteip)`,
		}
	case "caddy":
		return webServer{
			out:    "/etc/caddy/tls/" + first,
			hook:   "systemctl reload caddy",
			config: ConfigSnippet{Path: "/etc/caddy/Caddyfile", Text: "{\n    https_port 8443\n    default_bind 127.0.0.1\n}\n" + first + " {\n    tls /etc/caddy/tls/" + first + "/fullchain.pem /etc/caddy/tls/" + first + "/key.pem\n    ...\n}\n"},
			proxy:  `in Caddy's global options: "servers { listener_wrappers { proxy_protocol { allow 127.0.0.1/32 } tls } }"`,
			note:   "Caddy can answer TLS-ALPN-01 itself: if it holds the port and manages its own certificates, you may not need tlsalpn at all",
		}
	}
	name := proc
	if name == "" {
		name = "the server"
	}
	return webServer{
		out:    "/etc/ssl/tlsalpn/" + first,
		hook:   "systemctl reload SERVICE",
		config: ConfigSnippet{Path: "(" + name + "'s configuration)", Text: "listen on 127.0.0.1:8443 with TLS instead of :" + port + "\ncertificate: /etc/ssl/tlsalpn/" + first + "/fullchain.pem\nkey:         /etc/ssl/tlsalpn/" + first + "/key.pem\n"},
		proxy:  "in " + name + " for 127.0.0.1:8443 (version 2; if it cannot read it, keep the command as it is)",
	}
}

func (p *Planner) serveAdvice(ps PortState, names []*NameFinding, before []string) Recommendation {
	proc := ps.Process()
	who := ps.Holder()
	if proc == "tlsalpn" {
		return Recommendation{
			Method:   TLSALPN01,
			Summary:  fmt.Sprintf("TLS-ALPN-01: tlsalpn already holds port %d", ps.Port),
			Why:      []string{fmt.Sprintf("port %d is held by %s: tlsalpn serve answers the CA there already", ps.Port, who)},
			Before:   before,
			Commands: []string{"tlsalpn check " + strings.ReplaceAll(dFlags(names), "-d ", "")},
			Notes:    []string{"add the names to the certificates: section of its configuration if they are not there, then send it SIGHUP"},
		}
	}
	srv := serverFor(proc, names[0].Name, ps.Port)
	label := proc
	if label == "" {
		label = "the server holding the port"
	}
	why := []string{
		fmt.Sprintf("port %d is held by %s: tlsalpn issue cannot bind it, and %s does not answer acme-tls/1", ps.Port, who, label),
		fmt.Sprintf("tlsalpn serve takes port %d in front of %s: it answers the CA's acme-tls/1 handshakes itself and passes every other connection to %s untouched (pass-through, %s keeps terminating TLS)", ps.Port, label, label, label),
	}
	for _, f := range names {
		if f.Front == FrontForwarded {
			why = append(why, f.Name+": "+f.FrontEvidence)
		}
	}
	rec := Recommendation{
		Method:  TLSALPN01,
		Summary: fmt.Sprintf("TLS-ALPN-01 with tlsalpn serve in front of %s: move %s to 127.0.0.1:8443", label, label),
		Why:     why,
		Before:  before,
		Commands: []string{
			fmt.Sprintf("move %s from :%d to 127.0.0.1:8443 (config below) and reload it", label, ps.Port),
			fmt.Sprintf("tlsalpn serve --listen :%d --backend 127.0.0.1:8443 %s --email %s --agree-tos --out %s --deploy-hook %s",
				ps.Port, dFlags(names), p.email(), srv.out, shellQuote(srv.hook)),
		},
		Config: []ConfigSnippet{srv.config},
		Notes: []string{
			"run tlsalpn serve under systemd (Restart=always) so the port is never left unattended; tlsalpn serve --help shows the config-file form",
			steeringNote(proc, names),
			"for every client's exact address, even during validations: add --send-proxy 2 to the tlsalpn serve command and enable the PROXY protocol " + srv.proxy + "; this turns steering off, so every connection is then relayed",
		},
	}
	if srv.note != "" {
		rec.Notes = append(rec.Notes, srv.note)
	}
	return rec
}

// steeringNote says what the recommended tlsalpn serve does with clients'
// addresses: with one backend on this host and no PROXY protocol it steers,
// so the server sees them except during validations.
func steeringNote(proc string, names []*NameFinding) string {
	server := proc
	if server == "" {
		server = "the server"
	}
	note := fmt.Sprintf("between validations tlsalpn serve hands each new connection straight to %s's own socket on 127.0.0.1:8443 (steering: Linux 5.9 or later, tlsalpn serve run as root), so %s sees clients' real addresses and nothing is relayed; during a validation's few seconds at each renewal, new connections are relayed and appear to come from 127.0.0.1", server, server)
	if slices.ContainsFunc(names, func(f *NameFinding) bool {
		return slices.ContainsFunc(f.Here, func(a netip.Addr) bool { return a.Is6() && !a.Is4In6() })
	}) {
		note += "; IPv6 clients are always relayed, since the socket on 127.0.0.1 takes IPv4 only"
	}
	return note + "; without steering (not root, a kernel before 5.9) every connection is relayed and appears to come from 127.0.0.1"
}

// isNotFound reports whether err says the name has no such record, which
// is a finding, not a failure to look.
func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && (de.IsNotFound || de.Err == "no suitable address found")
}
