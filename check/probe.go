package check

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// dummyKeyAuthorization stands in for an unknown key authorization. The
// challenge package has no exported structural-only check, so without the
// real key authorization Verify is called with this one: every rule before
// the hash comparison runs unchanged, and the certificate is structurally
// sound exactly when Verify fails with ErrWrongHash (a certificate holding
// the hash of this very string is not a concern).
const dummyKeyAuthorization = "tlsalpn-check: no key authorization given"

// oidObsoleteACME is the draft-era acmeIdentifier OID that CAs refuse since
// January 2022. Never mutated.
var oidObsoleteACME = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 30, 1}

// handshake is the outcome of one connection attempt.
type handshake struct {
	state   tls.ConnectionState
	err     error
	dialErr bool // the TCP connect failed; no TLS was spoken
}

// addrProbe is everything learned about one address.
type addrProbe struct {
	addr   netip.AddrPort
	report AddressReport
	// handshakeFailed is true when the CA's own connection failed (connect,
	// handshake, or no certificate): Boulder then falls back from IPv6 to
	// IPv4.
	handshakeFailed bool
}

func (p *addrProbe) connectionFailed() bool { return p.handshakeFailed }

// firstCAFailure returns the first failed CA rule, or nil.
func (p *addrProbe) firstCAFailure() *Result {
	for i := range p.report.Results {
		if r := &p.report.Results[i]; !r.Pass && r.Rule.IsCARule() {
			return r
		}
	}
	return nil
}

// leakALPN are the ALPN offers of ordinary clients; none of them may get the
// validation certificate. The production handshake (h2 and http/1.1) is
// checked too.
var leakALPN = [...][]string{{"h2"}, {"http/1.1"}, nil}

// probe makes the CA's handshake, the leak handshakes and the production
// handshake to ap, all at once, and turns them into results.
func (c *Checker) probe(ctx context.Context, t Target, ap netip.AddrPort) *addrProbe {
	p := &addrProbe{addr: ap, report: AddressReport{Address: ap.String()}}

	var (
		wg    sync.WaitGroup
		acme  handshake
		prod  handshake
		leaks [len(leakALPN)]handshake
	)
	wg.Go(func() {
		acme = c.handshake(ctx, ap, &tls.Config{
			MinVersion:         tls.VersionTLS12,
			NextProtos:         []string{challenge.ALPNProto},
			ServerName:         challenge.ServerName(t.ID),
			InsecureSkipVerify: true, // the CA expects a self-signed certificate
		})
	})
	for i, protos := range leakALPN {
		wg.Go(func() { leaks[i] = c.handshake(ctx, ap, clientConfig(t.ID, protos)) })
	}
	if !c.SkipProduction {
		wg.Go(func() { prod = c.handshake(ctx, ap, clientConfig(t.ID, []string{"h2", "http/1.1"})) })
	}
	wg.Wait()

	p.report.Results, p.handshakeFailed = caResults(t, ap, acme, c.timeout())
	if res, ok := leakResult(leaks[:], prod, c.SkipProduction); ok {
		p.report.Results = append(p.report.Results, res)
	}
	if !c.SkipProduction && !prod.dialErr {
		var cert *Certificate
		var res []Result
		cert, res = c.productionResults(t.ID, ap, prod)
		p.report.Production = cert
		p.report.Results = append(p.report.Results, res...)
	}
	return p
}

// clientConfig is what a browser or scanner offers: TLS 1.2+, the name as
// SNI (none for an IP address), the given ALPN. Verification is done after
// the handshake, so that an untrusted certificate can still be described.
func clientConfig(id challenge.Identifier, protos []string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		NextProtos:         protos,
		ServerName:         id.Value,
		InsecureSkipVerify: true,
	}
}

// handshake dials ap and completes a TLS handshake within one timeout, as
// Boulder's getChallengeCert does, then closes the connection at once.
func (c *Checker) handshake(ctx context.Context, ap netip.AddrPort, conf *tls.Config) handshake {
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	start := time.Now()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", ap.String())
	if err != nil {
		c.logger().Debug("check: connect failed", "addr", ap, "alpn", conf.NextProtos, "err", err)
		return handshake{err: err, dialErr: true}
	}
	conn := tls.Client(raw, conf)
	defer conn.Close()
	if err := conn.HandshakeContext(ctx); err != nil {
		c.logger().Debug("check: handshake failed", "addr", ap, "sni", conf.ServerName, "alpn", conf.NextProtos, "err", err)
		return handshake{err: err}
	}
	st := conn.ConnectionState()
	c.logger().Debug("check: handshake", "addr", ap, "sni", conf.ServerName, "alpn", conf.NextProtos,
		"negotiated", st.NegotiatedProtocol, "certs", len(st.PeerCertificates), "took", time.Since(start))
	return handshake{state: st}
}

// caResults applies the CA's rules, in Boulder's order, to the CA-style
// handshake h with ap. It stops at the first failure, as the CA does, and
// reports whether the failure was one the CA falls back from.
func caResults(t Target, ap netip.AddrPort, h handshake, timeout time.Duration) (out []Result, handshakeFailed bool) {
	ip := ap.Addr()
	if h.dialErr {
		fix, remedy := connectFix(h.err, ap, timeout)
		return []Result{{
			Rule:      RuleConnect,
			CAMessage: ip.String() + ": " + caWords(h.err),
			Fix:       fix,
			Remedy:    remedy,
			Detail:    h.err.Error(),
		}}, true
	}
	out = append(out, Result{Rule: RuleConnect, Pass: true, Detail: "TCP connection established"})
	if h.err != nil {
		res := Result{
			Rule:      RuleTLSHandshake,
			CAMessage: ip.String() + ": " + caWords(h.err),
			Detail:    h.err.Error(),
		}
		msg := h.err.Error()
		switch {
		case strings.Contains(msg, "duplicate extension"):
			// Go's x509 parser, which the CA uses too, refuses the
			// certificate inside the handshake, so Boulder's own
			// "seen twice" check never gets to run.
			res.Rule = RuleUniqueExtensions
			res.Fix = "the validation certificate has an extension twice, so Go's TLS stack (the CA's included) cannot even parse it: emit each extension once"
		case strings.Contains(msg, "empty certificates"):
			// Boulder's "No certs presented" needs a completed handshake
			// without certificates, which Go's TLS client never allows.
			res.Rule = RuleCertificates
			res.Detail += ` (Boulder's "` + challenge.CAMessageNoCerts + `" applies only to a completed handshake, which Go's TLS client refuses without a certificate)`
			res.Fix = "the server sent no certificate: serve the validation certificate on acme-tls/1 handshakes"
		default:
			res.Fix, res.Remedy = handshakeFix(h.err, t, ap, timeout)
		}
		return append(out, res), true
	}
	st := h.state
	out = append(out, Result{Rule: RuleTLSHandshake, Pass: true, Detail: fmt.Sprintf("%s, %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))})

	if len(st.PeerCertificates) == 0 {
		return append(out, Result{
			Rule:      RuleCertificates,
			CAMessage: challenge.CAMessageNoCerts,
			Fix:       "the server sent no certificate: serve the validation certificate on acme-tls/1 handshakes",
		}), true
	}
	certsDetail := "1 certificate"
	if n := len(st.PeerCertificates); n > 1 {
		certsDetail = fmt.Sprintf("%d certificates; the CA looks at the first only, send just the validation certificate", n)
	}
	out = append(out, Result{Rule: RuleCertificates, Pass: true, Detail: certsDetail})

	if st.NegotiatedProtocol != challenge.ALPNProto {
		seen := "no protocol"
		if st.NegotiatedProtocol != "" {
			seen = fmt.Sprintf("%q", st.NegotiatedProtocol)
		}
		return append(out, Result{
			Rule:      RuleALPN,
			CAMessage: challenge.CAMessageNoALPN,
			Fix:       "something in front of this host terminates TLS and drops acme-tls/1: a CDN in full-proxy mode or a load balancer; let ALPN pass through or use DNS-01",
			Detail:    "offered only acme-tls/1, negotiated " + seen,
		}), false
	}
	out = append(out, Result{Rule: RuleALPN, Pass: true, Detail: "negotiated acme-tls/1"})
	return append(out, certResults(t, ap, st.PeerCertificates[0])...), false
}

// verifyRule maps challenge's sentinels to rules.
func verifyRule(err error) Rule {
	switch {
	case errors.Is(err, challenge.ErrNotSelfSigned):
		return RuleSelfSigned
	case errors.Is(err, challenge.ErrDuplicateExtension):
		return RuleUniqueExtensions
	case errors.Is(err, challenge.ErrMissingExtension), errors.Is(err, challenge.ErrNoExtension):
		return RuleRequiredExtensions
	case errors.Is(err, challenge.ErrWrongIdentifierCount), errors.Is(err, challenge.ErrIdentifierMismatch), errors.Is(err, challenge.ErrSANBytes):
		return RuleSAN
	case errors.Is(err, challenge.ErrNotCritical):
		return RuleCritical
	case errors.Is(err, challenge.ErrMalformedValue):
		return RuleValue
	case errors.Is(err, challenge.ErrWrongHash):
		return RuleKeyAuthorization
	}
	return ""
}

// certRules are the certificate rules in the order challenge.Verify (and
// Boulder) applies them.
var certRules = [...]Rule{RuleSelfSigned, RuleUniqueExtensions, RuleRequiredExtensions, RuleSAN, RuleCritical, RuleValue, RuleKeyAuthorization}

// certResults runs challenge.Verify on the validation certificate and
// reports every rule up to and including the first failure.
func certResults(t Target, ap netip.AddrPort, leaf *x509.Certificate) []Result {
	keyAuth := t.KeyAuthorization
	structural := keyAuth == ""
	if structural {
		keyAuth = dummyKeyAuthorization
	}
	err := challenge.Verify(leaf, t.ID, keyAuth)
	var ve *challenge.VerifyError
	if err != nil && !errors.As(err, &ve) {
		// Only argument errors are not *VerifyError; the identifier type
		// was checked before connecting, so this is not expected.
		return []Result{{Rule: RuleSelfSigned, CAMessage: err.Error(), Detail: err.Error(), Fix: "report this as a bug: the identifier was checked before connecting"}}
	}
	failed := Rule("")
	if ve != nil {
		failed = verifyRule(ve.Rule)
		if structural && failed == RuleKeyAuthorization {
			failed = ""
		}
	}
	obsolete := hasExtension(leaf, oidObsoleteACME)
	var out []Result
	for _, rule := range certRules {
		if rule == RuleKeyAuthorization && structural {
			break
		}
		if rule == failed {
			return append(out, Result{
				Rule:      rule,
				CAMessage: ve.CAMessage(t.ID, ap.String()),
				Fix:       certFix(ve, leaf, t.ID, obsolete),
				Detail:    ve.Detail,
			})
		}
		out = append(out, Result{Rule: rule, Pass: true, Detail: passDetail(rule, t.ID, obsolete)})
	}
	return out
}

func passDetail(r Rule, id challenge.Identifier, obsolete bool) string {
	switch r {
	case RuleSelfSigned:
		return "issuer equals subject and the signature verifies with its own key"
	case RuleUniqueExtensions:
		return "each extension once"
	case RuleRequiredExtensions:
		if obsolete {
			return "acmeIdentifier 1.3.6.1.5.5.7.1.31 and subjectAltName present (the obsolete 1.3.6.1.5.5.7.1.30.1 is there too and ignored)"
		}
		return "acmeIdentifier 1.3.6.1.5.5.7.1.31 and subjectAltName present"
	case RuleSAN:
		return fmt.Sprintf("exactly one SAN entry, %s, byte for byte", id.Value)
	case RuleCritical:
		return "acmeIdentifier is critical"
	case RuleValue:
		return "a DER OCTET STRING of 32 bytes"
	case RuleKeyAuthorization:
		return "SHA-256 of the key authorization matches"
	}
	return ""
}

func certFix(ve *challenge.VerifyError, leaf *x509.Certificate, id challenge.Identifier, obsolete bool) string {
	switch {
	case errors.Is(ve, challenge.ErrNotSelfSigned):
		return "the acme-tls/1 handshake got a certificate that is not self-signed (issuer differs from subject, or another key signed it): serve the self-signed validation certificate made for this challenge"
	case errors.Is(ve, challenge.ErrDuplicateExtension):
		return "emit each extension of the validation certificate once"
	case errors.Is(ve, challenge.ErrMissingExtension) && strings.Contains(ve.Detail, "2.5.29.17"):
		return "add a subjectAltName extension holding exactly the identifier"
	case errors.Is(ve, challenge.ErrMissingExtension) && obsolete:
		return "the certificate carries only the obsolete draft OID 1.3.6.1.5.5.7.1.30.1, refused since January 2022: upgrade the ACME client to one that uses 1.3.6.1.5.5.7.1.31 (RFC 8737)"
	case errors.Is(ve, challenge.ErrMissingExtension), errors.Is(ve, challenge.ErrNoExtension):
		return "the acme-tls/1 handshake got a certificate without the acmeIdentifier extension (1.3.6.1.5.5.7.1.31), an ordinary certificate: the server that answers does not know this challenge"
	case errors.Is(ve, challenge.ErrWrongIdentifierCount):
		return fmt.Sprintf("the validation certificate must hold exactly one SAN entry, %s, and nothing else: one certificate per name", id.Value)
	case errors.Is(ve, challenge.ErrIdentifierMismatch):
		return fmt.Sprintf("the certificate is for %s, not %s: the responder served another name's challenge certificate; pick it by the SNI %s", strings.Join(append(leaf.DNSNames, ipStrings(leaf.IPAddresses)...), ", "), id.Value, challenge.ServerName(id))
	case errors.Is(ve, challenge.ErrSANBytes):
		return "the SAN must be the identifier byte for byte: lower case, A-label (punycode), no trailing dot, IPv4 in 4 bytes, no other entries"
	case errors.Is(ve, challenge.ErrNotCritical):
		return "mark the acmeIdentifier extension critical (RFC 8737 §3)"
	case errors.Is(ve, challenge.ErrMalformedValue):
		return "the extension value must be the DER OCTET STRING 04 20 followed by SHA-256(key authorization), not the bare 32 bytes or anything else"
	case errors.Is(ve, challenge.ErrWrongHash):
		return "the certificate holds the hash of another key authorization (a stale challenge, or another account's): serve the certificate for the current token and account key"
	}
	return "fix the validation certificate: " + ve.Detail
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

func hasExtension(c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return true
		}
	}
	return false
}

// caWords is Boulder's detailedError (va/va.go) for a connection error,
// without the "<ip>: " prefix, in the same order of tests.
func caWords(err error) string {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) && bytes.Equal(rh.RecordHeader[:], []byte("HTTP/")) {
		return "Server only speaks HTTP, not TLS"
	}
	var op *net.OpError
	if errors.As(err, &op) {
		switch {
		case fmt.Sprintf("%T", op.Err) == "tls.alert":
			return op.Error()
		case op.Timeout() && op.Op == "dial":
			return "Timeout during connect (likely firewall problem)"
		case op.Timeout():
			return fmt.Sprintf("Timeout during %s (your server may be slow or overloaded)", op.Op)
		}
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		switch se.Err {
		case syscall.ECONNREFUSED:
			return "Connection refused"
		case syscall.ENETUNREACH:
			return "Network unreachable"
		case syscall.ECONNRESET:
			return "Connection reset by peer"
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "Timeout after connect (your server may be slow or overloaded)"
	}
	return GenericWords
}

// GenericWords is Boulder's catch-all for a connection error it has no
// better words for.
const GenericWords = "Error getting validation data"

// staleAAAA is appended to connection fixes for IPv6 addresses.
const staleAAAA = "; if the AAAA record is stale, remove it — the CA tries IPv6 first"

func connectFix(err error, ap netip.AddrPort, timeout time.Duration) (string, Remedy) {
	v6 := ""
	if ap.Addr().Is6() {
		v6 = staleAAAA
	}
	switch caWords(err) {
	case "Connection refused":
		return fmt.Sprintf("nothing listens on port %d at %s: start the responder or forward the port to it, and open the firewall%s", ap.Port(), ap.Addr(), v6), RemedyResponder
	case "Timeout during connect (likely firewall problem)":
		return fmt.Sprintf("nothing answered on port %d at %s within %s: a firewall or security group drops the packets, or the record points at the wrong host; open TCP %d to everyone (the CA's addresses are not published)%s", ap.Port(), ap.Addr(), timeout, ap.Port(), v6), ""
	case "Network unreachable":
		if ap.Addr().Is6() {
			return fmt.Sprintf("no route to %s from here: if the host has no working IPv6, remove the AAAA record — the CA tries IPv6 first", ap.Addr()), ""
		}
		return fmt.Sprintf("no route to %s from here: check the A record", ap.Addr()), ""
	case "Connection reset by peer":
		return fmt.Sprintf("the connection to %s was reset: a firewall, IPS or proxy in front of it drops the connection%s", ap, v6), ""
	}
	return fmt.Sprintf("could not connect to %s: %v%s", ap, err, v6), ""
}

func handshakeFix(err error, t Target, ap netip.AddrPort, timeout time.Duration) (string, Remedy) {
	words := caWords(err)
	sni := challenge.ServerName(t.ID)
	switch {
	case words == "Server only speaks HTTP, not TLS":
		return fmt.Sprintf("port %d at %s speaks plain HTTP: the CA needs TLS there; point the port at the TLS-ALPN-01 responder (or use HTTP-01 on port 80)", ap.Port(), ap.Addr()), ""
	case strings.HasSuffix(words, "no application protocol"):
		return fmt.Sprintf("the TLS server at %s refuses acme-tls/1: either it has ALPN configured without acme-tls/1 (let a responder in front of the web server answer it, or use DNS-01), or it is a TLS-ALPN-01 responder with no challenge pending for %s, which is correct outside a validation", ap, t.ID.Value), RemedyResponderInFront
	case strings.HasSuffix(words, "protocol version not supported"):
		return "the server speaks only TLS versions older than 1.2, which the CA refuses: enable TLS 1.2 or 1.3", ""
	case strings.HasSuffix(words, "unrecognized name"):
		return fmt.Sprintf("the server has nothing for SNI %s: start the responder with this name's challenge pending before asking the CA to validate", sni), ""
	case strings.HasPrefix(words, "remote error:"):
		return fmt.Sprintf("the server refused the CA's handshake (SNI %s, ALPN acme-tls/1 only, TLS 1.2 or later) with an alert: does the responder have a challenge pending for this name and support ECDHE?", sni), ""
	case strings.HasPrefix(words, "Timeout after connect"), strings.HasPrefix(words, "Timeout during"):
		return fmt.Sprintf("%s accepted the connection but did not finish the handshake within %s: the server is overloaded, or a proxy is waiting for something the CA will not send", ap, timeout), ""
	case words == "Connection reset by peer":
		return fmt.Sprintf("%s reset the connection during the handshake: a firewall, IPS or proxy drops handshakes it does not like (SNI %s, ALPN acme-tls/1)", ap, sni), ""
	}
	return fmt.Sprintf("the TLS handshake with %s failed (%v): make the responder answer TLS 1.2 or later with ALPN acme-tls/1", ap, err), ""
}

// leakResult reports whether any ordinary handshake got a certificate with
// the acmeIdentifier extension. It has nothing to say (false) when no
// ordinary handshake connected.
func leakResult(leaks []handshake, prod handshake, skipProd bool) (Result, bool) {
	type try struct {
		label string
		h     handshake
	}
	var tries []try
	for i, h := range leaks {
		label := "ALPN " + strings.Join(leakALPN[i], ",")
		if leakALPN[i] == nil {
			label = "no ALPN"
		}
		tries = append(tries, try{label, h})
	}
	if !skipProd {
		tries = append(tries, try{"ALPN h2,http/1.1", prod})
	}
	var leaked, completed []string
	connected := false
	for _, tr := range tries {
		if !tr.h.dialErr {
			connected = true
		}
		if tr.h.err != nil || len(tr.h.state.PeerCertificates) == 0 {
			continue
		}
		completed = append(completed, tr.label)
		leaf := tr.h.state.PeerCertificates[0]
		if hasExtension(leaf, challenge.OIDACMEIdentifier()) || hasExtension(leaf, oidObsoleteACME) {
			leaked = append(leaked, tr.label)
		}
	}
	if !connected {
		return Result{}, false
	}
	if len(leaked) > 0 {
		return Result{
			Rule:   RuleNoLeak,
			Detail: "the validation certificate was served to clients offering " + strings.Join(leaked, "; "),
			Fix:    "serve the validation certificate only when the client offers exactly acme-tls/1 (RFC 8737 §5); browsers and scanners see it as a self-signed certificate",
		}, true
	}
	if len(completed) == 0 {
		return Result{Rule: RuleNoLeak, Pass: true, Detail: "no handshake without acme-tls/1 got a certificate"}, true
	}
	return Result{Rule: RuleNoLeak, Pass: true, Detail: "no validation certificate for " + strings.Join(completed, "; ")}, true
}

// productionResults describes the certificate ordinary clients get and
// checks its chain and, when asked, how long it has left.
func (c *Checker) productionResults(id challenge.Identifier, ap netip.AddrPort, h handshake) (*Certificate, []Result) {
	if h.err != nil {
		return nil, []Result{{
			Rule:   RuleProduction,
			Detail: "handshake offering h2,http/1.1: " + h.err.Error(),
			Fix:    fmt.Sprintf("ordinary clients get no certificate at %s: serve the production certificate for %s there (a TLS-ALPN-01 responder should hand every other handshake to the web server)", ap, id.Value),
		}}
	}
	certs := h.state.PeerCertificates
	leaf := certs[0]
	now := time.Now()
	info := &Certificate{
		Subject:   leaf.Subject.String(),
		Names:     append(append([]string(nil), leaf.DNSNames...), ipStrings(leaf.IPAddresses)...),
		Issuer:    leaf.Issuer.String(),
		NotBefore: leaf.NotBefore,
		NotAfter:  leaf.NotAfter,
		DaysLeft:  int(leaf.NotAfter.Sub(now).Hours() / 24),
	}
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		DNSName:       id.Value,
		Roots:         c.Roots,
		Intermediates: inter,
		CurrentTime:   now,
	})
	desc := fmt.Sprintf("names %s; issuer %s; expires %s (%d days left)",
		strings.Join(info.Names, ", "), info.Issuer, leaf.NotAfter.UTC().Format(time.DateOnly), info.DaysLeft)
	if err != nil {
		info.ChainError = err.Error()
		res := Result{Rule: RuleProduction, Detail: desc + "; " + err.Error()}
		res.Fix, res.Remedy = chainFix(err, id, leaf)
		return info, []Result{res}
	}
	info.ChainValid = true
	out := []Result{{Rule: RuleProduction, Pass: true, Detail: desc + "; chain valid"}}
	if c.ExpiringWithin > 0 {
		left := leaf.NotAfter.Sub(now)
		res := Result{Rule: RuleExpiry, Pass: left > c.ExpiringWithin,
			Detail: fmt.Sprintf("expires %s, in %d days (threshold %s)", leaf.NotAfter.UTC().Format(time.RFC3339), info.DaysLeft, fmtDays(c.ExpiringWithin))}
		if !res.Pass {
			res.Fix = fmt.Sprintf("renew now and reload the server: the certificate expires in %d days", info.DaysLeft)
			res.Remedy = RemedyRenew
		}
		out = append(out, res)
	}
	return info, out
}

func fmtDays(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

func chainFix(err error, id challenge.Identifier, leaf *x509.Certificate) (string, Remedy) {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		if time.Now().Before(leaf.NotBefore) {
			return "the certificate is not valid yet: check the server's clock", ""
		}
		return fmt.Sprintf("the certificate expired on %s: renew it and reload the server", leaf.NotAfter.UTC().Format(time.DateOnly)), RemedyRenew
	case errors.As(err, &he):
		return fmt.Sprintf("the certificate does not cover %s: issue one that includes it, or fix which certificate the server picks for this SNI", id.Value), ""
	case errors.As(err, &ua):
		if hasExtension(leaf, challenge.OIDACMEIdentifier()) {
			return "ordinary clients get the self-signed validation certificate: see the no-leak rule", ""
		}
		return "the chain does not lead to a trusted root: serve fullchain.pem (certificate and intermediates), not cert.pem; for a private CA, trust its root", RemedyTrustRoot
	}
	return "the certificate chain does not verify: " + err.Error(), ""
}
