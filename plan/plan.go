// Package plan answers "which validation method should I automate here?" by
// probing: the names' records against this host's addresses, who holds
// ports 443 and 80 (from /proc), what the outside sees on 443, and, when
// asked, whether acme-tls/1 and HTTP-01 reach a listener bound here for a
// moment. The decision is advice: only a failure to probe is an error.
//
// It returns its findings and its recommendation as data; cmd/tlsalpn
// renders them for people, or as JSON.
package plan

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/check"
	"github.com/tlsalpn/tlsalpn/procnet"
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
				f.ListenTest.Detail = notAsked
				f.HTTPTest.Detail = notAsked
			}
		}
	}

	plan.Table = p.table(plan)
	plan.Recommendation = p.recommend(plan)
	return plan, nil
}

// notAsked is a listen test's Detail when the Planner was not asked to
// run listen tests.
const notAsked = "not run: binding the port to test was not asked for"

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
