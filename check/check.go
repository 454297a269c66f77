// Package check validates a host from the outside the way Let's Encrypt's
// Boulder VA validates a TLS-ALPN-01 challenge, before the CA does: it
// resolves the name, connects to every address with the CA's TLS settings,
// applies the CA's checks to what comes back with the CA's own words, and
// says in one line per failure how to fix it.
//
// The CA tries only the first IPv6 address, and the first IPv4 address only
// after an IPv6 connection or handshake error; a Report states what the CA
// would conclude from that, and also checks every address, because each
// remote perspective resolves the name itself and a stale record hurts
// sooner or later.
//
// Beyond what the CA checks, a Report covers two things the CA cannot see:
// whether the validation certificate leaks to ordinary clients (security
// scanners flag it as a self-signed certificate), and the production
// certificate as browsers see it: its names, issuer, chain and days left.
package check

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// DialTimeout is the CA's budget for one connection, connect and handshake
// together (Boulder's singleDialTimeout), and the default Checker.Timeout.
const DialTimeout = 10 * time.Second

// DefaultConcurrency is how many names CheckAll checks at once by default.
const DefaultConcurrency = 16

// DefaultPort is the port a CA connects to for TLS-ALPN-01 (RFC 8737 §3).
const DefaultPort = 443

// Resolver looks up the addresses of a name. network is "ip4" for A records
// or "ip6" for AAAA records. *net.Resolver satisfies it; tests inject a
// fake one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Target is one name to check: an identifier, the port to connect to, and,
// when known, the key authorization of its pending challenge.
type Target struct {
	ID   challenge.Identifier
	Port int
	// KeyAuthorization is token + "." + the account key's thumbprint. When
	// empty, only the structure of the validation certificate is checked,
	// not the hash it carries.
	KeyAuthorization string
}

// ParseTarget parses "NAME", "NAME:PORT", "IP", "IP:PORT" or "[IPv6]:PORT"
// into a Target with DefaultPort when no port is given. A bare IPv6 address
// such as "2001:db8::1" is an address, never an address and a port.
func ParseTarget(s string) (Target, error) {
	port := DefaultPort
	host := s
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return Target{}, fmt.Errorf("check: %q: port %q is not a number from 1 to 65535", s, p)
		}
		host, port = h, n
	}
	id, err := challenge.ParseIdentifier(host)
	if err != nil {
		return Target{}, fmt.Errorf("check: %q: %w", s, err)
	}
	return Target{ID: id, Port: port}, nil
}

// Rule names a check. The CA's rules come in the order Boulder applies them;
// a failure stops the CA, so the rules after it on the same address are not
// reported.
type Rule string

// The CA's rules, per address, in Boulder's order.
const (
	RuleResolve            Rule = "resolve"                  // A and AAAA records exist (name level)
	RuleConnect            Rule = "connect"                  // TCP connect
	RuleTLSHandshake       Rule = "tls-handshake"            // TLS 1.2+ handshake offering only acme-tls/1
	RuleCertificates       Rule = "certificates"             // the server sent a certificate
	RuleALPN               Rule = "alpn"                     // acme-tls/1 was negotiated
	RuleSelfSigned         Rule = "self-signed"              // signature by its own key, subject == issuer
	RuleUniqueExtensions   Rule = "unique-extensions"        // no extension OID twice
	RuleRequiredExtensions Rule = "required-extensions"      // acmeIdentifier (1.3.6.1.5.5.7.1.31) and SAN present
	RuleSAN                Rule = "san"                      // exactly the identifier, byte for byte
	RuleCritical           Rule = "acme-identifier-critical" // acmeIdentifier is critical
	RuleValue              Rule = "acme-identifier-value"    // a DER OCTET STRING of 32 bytes
	RuleKeyAuthorization   Rule = "key-authorization"        // SHA-256 of the key authorization (only when known)
)

// Rules the CA does not check, but users and their monitoring care about.
const (
	// RuleNoLeak: handshakes offering h2, http/1.1, both, or no ALPN must
	// not get a certificate with the acmeIdentifier extension.
	RuleNoLeak Rule = "no-leak"
	// RuleProduction: the certificate ordinary clients get (ALPN h2 and
	// http/1.1, SNI the name) chains to a trusted root, covers the name and
	// has not expired.
	RuleProduction Rule = "production-certificate"
	// RuleExpiry: the production certificate is valid for longer than
	// Checker.ExpiringWithin. Its failure alone makes the verdict Expiring.
	RuleExpiry Rule = "production-expiry"
)

// IsCARule reports whether the CA applies r, that is whether its failure on
// the address the CA uses fails the authorization.
func (r Rule) IsCARule() bool {
	switch r {
	case RuleNoLeak, RuleProduction, RuleExpiry:
		return false
	}
	return true
}

// Result is the outcome of one rule.
type Result struct {
	Rule Rule `json:"rule"`
	Pass bool `json:"pass"`
	// CAMessage is the problem detail the CA gives for this failure, in
	// Boulder's words (with its "<ip>: " or "Incorrect validation
	// certificate ..." prefix where Boulder adds one). Empty when the rule
	// passes or is not a CA rule.
	CAMessage string `json:"ca_message,omitempty"`
	// Fix says in one line what to change. Empty when the rule passes.
	Fix string `json:"fix,omitempty"`
	// Remedy is the kind of change Fix asks for, when it is one the
	// program running the check carries out itself (start its responder,
	// renew): Fix says it in general words, and the program names its own
	// command or flag for it.
	Remedy Remedy `json:"remedy,omitempty"`
	// Detail is what was seen: the Go error, the names, the dates.
	Detail string `json:"detail,omitempty"`
}

// Remedy is a kind of fix that an ACME client carries out with its own
// commands; the check names the kind, the client says how.
type Remedy string

const (
	// RemedyResponder: nothing listens on the port the CA connects to;
	// start the TLS-ALPN-01 responder there (or forward the port to it).
	RemedyResponder Remedy = "start-responder"
	// RemedyResponderInFront: the TLS server on the port refuses
	// acme-tls/1; put a responder in front of it. Outside a validation a
	// responder refuses it too, which is correct: monitoring (Monitor)
	// then says more than this check.
	RemedyResponderInFront Remedy = "responder-in-front"
	// RemedyRenew: the certificate expires soon or has expired; renew it
	// and reload the server.
	RemedyRenew Remedy = "renew"
	// RemedyTrustRoot: the chain leads to no root the check trusts; for a
	// private CA, its root must be given to the check (Checker.Roots).
	RemedyTrustRoot Remedy = "trust-root"
)

// Verdict is the overall outcome for a name.
type Verdict string

const (
	Pass     Verdict = "pass"     // everything passes
	Fail     Verdict = "fail"     // some rule fails: the CA would fail, or some address, the leak check or the production certificate fails
	Expiring Verdict = "expiring" // only RuleExpiry fails
)

// Certificate describes the production certificate an address serves.
type Certificate struct {
	Subject    string    `json:"subject"`
	Names      []string  `json:"names"`
	Issuer     string    `json:"issuer"`
	NotBefore  time.Time `json:"not_before"`
	NotAfter   time.Time `json:"not_after"`
	DaysLeft   int       `json:"days_left"`
	ChainValid bool      `json:"chain_valid"`
	ChainError string    `json:"chain_error,omitempty"`
}

// AddressReport holds the results for one address, CA rules first.
type AddressReport struct {
	Address    string       `json:"address"` // ip:port, as the CA writes it
	Results    []Result     `json:"results"`
	Production *Certificate `json:"production,omitempty"`
}

// CAConclusion is what the CA would conclude, trying addresses in its order.
type CAConclusion struct {
	Pass bool `json:"pass"`
	// Tried are the addresses the CA would connect to, in order.
	Tried []string `json:"tried"`
	// Problem is the problem detail the CA would return; empty on pass.
	Problem string `json:"problem,omitempty"`
	// Summary is one sentence on how the CA gets there.
	Summary string `json:"summary"`
}

// Report is the outcome for one Target.
type Report struct {
	Name       string                   `json:"name"`
	Type       challenge.IdentifierType `json:"type"`
	Port       int                      `json:"port"`
	ServerName string                   `json:"server_name"` // the SNI the CA sends
	Verdict    Verdict                  `json:"verdict"`
	// Summary is one line: the first failure, or what passed.
	Summary string `json:"summary"`
	// KeyAuthorizationChecked is false when no key authorization was
	// given: the validation certificate's hash was then not compared.
	KeyAuthorizationChecked bool            `json:"key_authorization_checked"`
	CA                      CAConclusion    `json:"ca"`
	Results                 []Result        `json:"results,omitempty"` // name-level rules (RuleResolve)
	Addresses               []AddressReport `json:"addresses"`
}

// Checker checks targets. The zero value resolves with net.DefaultResolver,
// uses the CA's 10 s timeout and the system roots. A Checker is safe for
// concurrent use and must not be modified while in use.
type Checker struct {
	// Resolver looks up A and AAAA records; nil means net.DefaultResolver.
	Resolver Resolver
	// Addresses, when set, are used for every target instead of DNS, as
	// if they were the name's A and AAAA records, and instead of an IP
	// identifier's own address (to check a listener that answers for it
	// elsewhere, as behind NAT).
	Addresses []netip.Addr
	// Timeout bounds each connection, connect and handshake together.
	// 0 means DialTimeout, the CA's.
	Timeout time.Duration
	// Roots verify the production certificate; nil means the system roots.
	Roots *x509.CertPool
	// ExpiringWithin makes a production certificate that expires within
	// this long fail RuleExpiry, and the verdict Expiring. 0 disables it.
	ExpiringWithin time.Duration
	// SkipProduction skips RuleProduction and RuleExpiry, for a host that
	// serves no production certificate yet (a preflight before the first
	// issuance).
	SkipProduction bool
	// Concurrency bounds how many targets CheckAll checks at once;
	// 0 means DefaultConcurrency. The addresses of one target are always
	// checked concurrently.
	Concurrency int
	// Logger gets a debug line per handshake; nil discards.
	Logger *slog.Logger
	// Checked, when set, is called as CheckAll and MonitorAll finish each
	// target, one call at a time: a long run over many hosts can show
	// how far it is.
	Checked func(Target)
}

func (c *Checker) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DialTimeout
}

func (c *Checker) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// CheckAll checks targets concurrently, at most Concurrency at a time, and
// returns their reports in the order of targets.
func (c *Checker) CheckAll(ctx context.Context, targets []Target) []*Report {
	n := c.Concurrency
	if n <= 0 {
		n = DefaultConcurrency
	}
	reports := make([]*Report, len(targets))
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, t := range targets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			reports[i] = c.Check(ctx, t)
			c.checked(&mu, t)
		}()
	}
	wg.Wait()
	return reports
}

// checked calls Checked for t, under mu so that calls do not overlap.
func (c *Checker) checked(mu *sync.Mutex, t Target) {
	if c.Checked == nil {
		return
	}
	mu.Lock()
	defer mu.Unlock()
	c.Checked(t)
}

// Check checks one target: resolution, then every address concurrently,
// then what the CA would conclude. Failures are in the Report; Check itself
// cannot fail.
func (c *Checker) Check(ctx context.Context, t Target) *Report {
	port := t.Port
	if port == 0 {
		port = DefaultPort
	}
	r := &Report{
		Name:                    t.ID.Value,
		Type:                    t.ID.Type,
		Port:                    port,
		ServerName:              challenge.ServerName(t.ID),
		KeyAuthorizationChecked: t.KeyAuthorization != "",
	}
	if t.ID.Type != challenge.DNS && t.ID.Type != challenge.IP {
		r.Verdict = Fail
		r.Summary = challenge.ErrIdentifierType.Error()
		r.CA = CAConclusion{Problem: challenge.ErrIdentifierType.Error(), Summary: "the CA would refuse the authorization: " + challenge.ErrIdentifierType.Error()}
		return r
	}

	addrs, res := c.addresses(ctx, t.ID)
	if res != nil {
		r.Results = append(r.Results, *res)
	}
	v4, v6 := split(addrs)

	probes := make([]*addrProbe, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			probes[i] = c.probe(ctx, t, netip.AddrPortFrom(a, uint16(port)))
		}()
	}
	wg.Wait()
	byAddr := make(map[netip.Addr]*addrProbe, len(probes))
	for _, p := range probes {
		byAddr[p.addr.Addr()] = p
		r.Addresses = append(r.Addresses, p.report)
	}

	r.CA = conclude(t.ID, r.Results, v4, v6, byAddr, r.KeyAuthorizationChecked)
	r.Verdict, r.Summary = verdict(r)
	return r
}

// addresses returns the addresses to check and, when DNS was used, the
// RuleResolve result.
func (c *Checker) addresses(ctx context.Context, id challenge.Identifier) ([]netip.Addr, *Result) {
	if len(c.Addresses) > 0 {
		out := make([]netip.Addr, 0, len(c.Addresses))
		for _, a := range c.Addresses {
			out = append(out, a.Unmap())
		}
		return out, nil
	}
	if id.Type == challenge.IP {
		a, err := netip.ParseAddr(id.Value)
		if err != nil {
			return nil, &Result{Rule: RuleResolve, CAMessage: fmt.Sprintf("can't parse IP address %q: %s", id.Value, err)}
		}
		return []netip.Addr{a.Unmap()}, nil
	}
	res := c.Resolver
	if res == nil {
		res = net.DefaultResolver
	}
	lookupCtx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	var (
		wg         sync.WaitGroup
		a4, a6     []netip.Addr
		err4, err6 error
	)
	wg.Add(2)
	go func() { defer wg.Done(); a4, err4 = res.LookupNetIP(lookupCtx, "ip4", id.Value) }()
	go func() { defer wg.Done(); a6, err6 = res.LookupNetIP(lookupCtx, "ip6", id.Value) }()
	wg.Wait()
	// IPv6 first, as the CA tries them.
	var addrs []netip.Addr
	for _, a := range a6 {
		if a = a.Unmap(); a.Is6() {
			addrs = append(addrs, a.WithZone(""))
		}
	}
	for _, a := range a4 {
		if a = a.Unmap(); a.Is4() {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		r := &Result{Rule: RuleResolve, Fix: "the name has no usable A or AAAA record: add one pointing at the host that answers TLS-ALPN-01 (or check the spelling)"}
		switch {
		case isNotFound(err4) && isNotFound(err6):
			r.CAMessage = "DNS problem: NXDOMAIN looking up A for " + id.Value + " - check that a DNS record exists for this domain"
		case err4 != nil && err6 != nil:
			r.CAMessage = "DNS problem: looking up A and AAAA for " + id.Value + " failed"
		default:
			r.CAMessage = fmt.Sprintf("no valid A records found for %s; no valid AAAA records found for %s", id.Value, id.Value)
		}
		r.Detail = strings.TrimSpace(fmt.Sprintf("A: %s; AAAA: %s", lookupText(a4, err4), lookupText(a6, err6)))
		return nil, r
	}
	detail := fmt.Sprintf("A: %s; AAAA: %s", lookupText(a4, err4), lookupText(a6, err6))
	for _, a := range addrs {
		if !a.IsGlobalUnicast() || a.IsPrivate() {
			detail += fmt.Sprintf("; %s is not a public address: a public CA ignores it", a)
		}
	}
	return addrs, &Result{Rule: RuleResolve, Pass: true, Detail: detail}
}

// isNotFound reports whether err says the name has no records of the type:
// NXDOMAIN, or (from Go's resolver) none of the family asked for.
func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && (de.IsNotFound || de.Err == "no suitable address found")
}

func lookupText(addrs []netip.Addr, err error) string {
	if err != nil {
		if isNotFound(err) {
			return "none"
		}
		return err.Error()
	}
	if len(addrs) == 0 {
		return "none"
	}
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.Unmap().String()
	}
	return strings.Join(s, ", ")
}

// split returns the IPv4 and IPv6 addresses, each in the order given.
func split(addrs []netip.Addr) (v4, v6 []netip.Addr) {
	for _, a := range addrs {
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	return v4, v6
}

// conclude replays Boulder's tryGetChallengeCert and validateTLSALPN01:
// v6[0] first; v4[0] only after a connection or handshake error on v6[0]
// (including no certificates); no fallback when the certificate is wrong.
func conclude(id challenge.Identifier, nameResults []Result, v4, v6 []netip.Addr, probes map[netip.Addr]*addrProbe, keyAuthChecked bool) CAConclusion {
	for _, res := range nameResults {
		if !res.Pass {
			return CAConclusion{Problem: res.CAMessage, Summary: "the CA would fail before connecting: " + res.CAMessage}
		}
	}
	if len(v4)+len(v6) == 0 {
		msg := fmt.Sprintf("No IP addresses found for %q", id.Value)
		return CAConclusion{Problem: msg, Summary: "the CA would fail: " + msg}
	}
	var out CAConclusion
	var fellBack string
	if len(v6) > 0 {
		p := probes[v6[0]]
		out.Tried = append(out.Tried, p.report.Address)
		if !p.connectionFailed() {
			return finish(out, p, "", keyAuthChecked)
		}
		fellBack = fmt.Sprintf("AAAA address %s fails (%s)", p.report.Address, p.firstCAFailure().CAMessage)
		if len(v4) == 0 {
			out.Problem = fmt.Sprintf("Unable to contact %q at %q, no IPv4 addresses to try as fallback", id.Value, v6[0].String())
			out.Summary = "the CA would fail: " + fellBack + " and there is no A record to fall back to"
			return out
		}
	}
	p := probes[v4[0]]
	out.Tried = append(out.Tried, p.report.Address)
	return finish(out, p, fellBack, keyAuthChecked)
}

func finish(out CAConclusion, p *addrProbe, fellBack string, keyAuthChecked bool) CAConclusion {
	if f := p.firstCAFailure(); f != nil {
		out.Problem = f.CAMessage
		words := f.CAMessage
		if strings.HasSuffix(words, GenericWords) {
			// Boulder's catch-all says nothing; say what happened.
			words += " (" + f.Detail + ")"
		}
		if fellBack != "" {
			out.Summary = fmt.Sprintf("the CA would fail: %s and A address %s fails: %s", fellBack, p.report.Address, words)
		} else {
			out.Summary = fmt.Sprintf("the CA would fail at %s: %s", p.report.Address, words)
		}
		return out
	}
	out.Pass = true
	switch {
	case fellBack != "":
		out.Summary = fmt.Sprintf("the CA would pass, but only by falling back: %s, then A address %s passes", fellBack, p.report.Address)
	default:
		out.Summary = "the CA would pass at " + p.report.Address
	}
	if !keyAuthChecked {
		out.Summary += " (structure only: the key authorization hash was not checked; give the key authorization to check it)"
	}
	return out
}

// verdict folds every result into the name's verdict and a one-line summary.
func verdict(r *Report) (Verdict, string) {
	var expiring *Result
	expiringAddr := ""
	check := func(addr string, res *Result) (string, bool) {
		if res.Pass {
			return "", false
		}
		if res.Rule == RuleExpiry {
			if expiring == nil {
				expiring, expiringAddr = res, addr
			}
			return "", false
		}
		words := res.CAMessage
		if words == "" {
			words = res.Detail
		}
		if addr != "" {
			return fmt.Sprintf("%s %s: %s", addr, res.Rule, words), true
		}
		return fmt.Sprintf("%s: %s", res.Rule, words), true
	}
	if !r.CA.Pass {
		return Fail, r.CA.Summary
	}
	for i := range r.Results {
		if s, bad := check("", &r.Results[i]); bad {
			return Fail, s
		}
	}
	for _, a := range r.Addresses {
		for i := range a.Results {
			if s, bad := check(a.Address, &a.Results[i]); bad {
				return Fail, "the CA would pass, but " + s
			}
		}
	}
	if expiring != nil {
		return Expiring, fmt.Sprintf("%s: %s", expiringAddr, expiring.Detail)
	}
	return Pass, r.CA.Summary
}

// FirstFix is the fix line of the first failing CA rule: what to change
// first for the CA to pass.
func (r *Report) FirstFix() string {
	for _, res := range r.Results {
		if !res.Pass && res.Fix != "" {
			return res.Fix
		}
	}
	for _, a := range r.Addresses {
		for _, res := range a.Results {
			if !res.Pass && res.Fix != "" && res.Rule.IsCARule() {
				return res.Fix
			}
		}
	}
	return ""
}
