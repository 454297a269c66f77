package check

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// Status is a monitoring verdict: what ordinary clients get from a name.
// The statuses are ordered by how much they matter to someone on call:
// a certificate clients refuse now, then an address clients cannot reach,
// then a certificate that will expire soon.
type Status string

const (
	// StatusOK: every address completed a handshake and served a
	// certificate that chains to a trusted root, covers the name and is
	// valid for longer than the expiry window.
	StatusOK Status = "ok"
	// StatusExpiring: everything is fine but some certificate expires
	// within Checker.ExpiringWithin.
	StatusExpiring Status = "expiring"
	// StatusUnreachable: the name does not resolve, or some address
	// refuses the connection, times out or fails the handshake.
	StatusUnreachable Status = "unreachable"
	// StatusCertificate: some address serves a certificate that clients
	// refuse now: its chain does not verify, it does not cover the name,
	// or it has expired or is not valid yet.
	StatusCertificate Status = "certificate"
)

// rank orders statuses from fine to worst.
func (s Status) rank() int {
	switch s {
	case StatusOK:
		return 0
	case StatusExpiring:
		return 1
	case StatusUnreachable:
		return 2
	case StatusCertificate:
		return 3
	}
	return 4
}

// Worst returns whichever of s and o matters more.
func (s Status) Worst(o Status) Status {
	if o.rank() > s.rank() {
		return o
	}
	return s
}

// Expiry is the expiry verdict on one address, separate from whether the
// handshake and the chain are sound: a server can be unreachable from
// here and still have a certificate that is about to expire elsewhere, and
// a handshake failure must not read as "not expiring".
type Expiry string

const (
	ExpiryOK       Expiry = "ok"       // valid for longer than the window (or no window given)
	ExpiryExpiring Expiry = "expiring" // expires within the window
	ExpiryExpired  Expiry = "expired"  // past NotAfter, or before NotBefore
	ExpiryUnknown  Expiry = "unknown"  // no certificate was seen
)

// MonitorAddress is what an ordinary client got from one address.
type MonitorAddress struct {
	Address string `json:"address"` // ip:port
	// HandshakeOK is true when a TLS handshake offering h2 and http/1.1
	// with the name as SNI completed.
	HandshakeOK bool `json:"handshake_ok"`
	// Handshake is the protocol and cipher suite negotiated, or what went
	// wrong (connect or handshake error).
	Handshake string `json:"handshake"`
	// Certificate describes the leaf served; nil when the handshake failed.
	Certificate *Certificate `json:"certificate,omitempty"`
	// CertificateOK is true when the chain verifies against the roots and
	// covers the name at this moment.
	CertificateOK bool `json:"certificate_ok"`
	// Expiry is the expiry verdict; DaysLeft is in Certificate.
	Expiry Expiry `json:"expiry"`
	// Status is this address's overall verdict.
	Status Status `json:"status"`
	// Problem says in one line what is wrong; empty when Status is ok.
	Problem string `json:"problem,omitempty"`
	// Fix says in one line what to do; empty when Status is ok.
	Fix string `json:"fix,omitempty"`
	// Remedy is the kind of Fix, as in Result.
	Remedy Remedy `json:"remedy,omitempty"`
}

// MonitorReport is what ordinary clients get from one name, address by
// address: no acme-tls/1 handshake is made, so it holds at any time, also
// behind a TLS-ALPN-01 responder with no challenge pending.
type MonitorReport struct {
	Name string `json:"name"`
	Port int    `json:"port"`
	// Resolve is the outcome of the A and AAAA lookups; nil when addresses
	// were given or the name is an IP address.
	Resolve   *Result          `json:"resolve,omitempty"`
	Addresses []MonitorAddress `json:"addresses"`
	Status    Status           `json:"status"`
	// Summary is one line: the worst address's problem, or what is fine.
	Summary string `json:"summary"`
}

// Monitor checks what ordinary clients get from t, on every address at
// once: one handshake each, offering h2 and http/1.1 with the name as SNI
// (none for an IP address), then the chain against Checker.Roots, the name
// and the expiry against Checker.ExpiringWithin. It makes no acme-tls/1
// handshake, so unlike Check it passes behind a responder that has no
// challenge pending. t.KeyAuthorization is ignored.
func (c *Checker) Monitor(ctx context.Context, t Target) *MonitorReport {
	port := t.Port
	if port == 0 {
		port = DefaultPort
	}
	r := &MonitorReport{Name: t.ID.Value, Port: port}
	if t.ID.Type != challenge.DNS && t.ID.Type != challenge.IP {
		r.Status, r.Summary = StatusUnreachable, challenge.ErrIdentifierType.Error()
		return r
	}
	addrs, res := c.addresses(ctx, t.ID)
	r.Resolve = res
	if len(addrs) == 0 {
		r.Status = StatusUnreachable
		r.Summary = "the name does not resolve: " + res.Detail
		return r
	}
	r.Addresses = make([]MonitorAddress, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() {
			ap := netip.AddrPortFrom(a, uint16(port))
			h := c.handshake(ctx, ap, clientConfig(t.ID, []string{"h2", "http/1.1"}))
			r.Addresses[i] = c.judgeClient(t.ID, ap, h)
		})
	}
	wg.Wait()
	r.Status = StatusOK
	worst := -1
	for i, a := range r.Addresses {
		if a.Status.rank() > r.Status.rank() {
			r.Status, worst = a.Status, i
		}
	}
	switch {
	case worst >= 0:
		a := r.Addresses[worst]
		r.Summary = a.Address + ": " + a.Problem
	case c.ExpiringWithin > 0:
		r.Summary = fmt.Sprintf("every address serves a valid certificate for longer than %s", fmtDays(c.ExpiringWithin))
	default:
		r.Summary = "every address serves a valid certificate"
	}
	return r
}

// MonitorAll runs Monitor on targets concurrently, at most Concurrency at a
// time, and returns the reports in the order of targets.
func (c *Checker) MonitorAll(ctx context.Context, targets []Target) []*MonitorReport {
	n := c.Concurrency
	if n <= 0 {
		n = DefaultConcurrency
	}
	reports := make([]*MonitorReport, len(targets))
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, t := range targets {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			reports[i] = c.Monitor(ctx, t)
			c.checked(&mu, t)
		})
	}
	wg.Wait()
	return reports
}

// judgeClient turns one ordinary handshake into the handshake, certificate
// and expiry verdicts, each on its own.
func (c *Checker) judgeClient(id challenge.Identifier, ap netip.AddrPort, h handshake) MonitorAddress {
	out := MonitorAddress{Address: ap.String(), Expiry: ExpiryUnknown}
	if h.err != nil {
		out.Status = StatusUnreachable
		out.Handshake = h.err.Error()
		if h.dialErr {
			words := caWords(h.err)
			if words == GenericWords {
				words = h.err.Error()
			}
			out.Problem = "connect failed: " + words
			out.Fix, out.Remedy = connectFix(h.err, ap, c.timeout())
		} else {
			out.Problem = "TLS handshake failed: " + h.err.Error()
			out.Fix = fmt.Sprintf("%s accepts connections but ordinary clients (SNI %s, ALPN h2 and http/1.1) cannot complete a TLS handshake: check the web server's TLS configuration for this name", ap, id.Value)
		}
		return out
	}
	st := h.state
	out.HandshakeOK = true
	out.Handshake = fmt.Sprintf("%s, %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	if st.NegotiatedProtocol != "" {
		out.Handshake += ", ALPN " + st.NegotiatedProtocol
	}
	leaf := st.PeerCertificates[0]
	now := time.Now()
	info := &Certificate{
		Subject:   leaf.Subject.String(),
		Names:     append(append([]string(nil), leaf.DNSNames...), ipStrings(leaf.IPAddresses)...),
		Issuer:    leaf.Issuer.String(),
		NotBefore: leaf.NotBefore,
		NotAfter:  leaf.NotAfter,
		DaysLeft:  int(leaf.NotAfter.Sub(now).Hours() / 24),
	}
	out.Certificate = info

	switch left := leaf.NotAfter.Sub(now); {
	case now.After(leaf.NotAfter) || now.Before(leaf.NotBefore):
		out.Expiry = ExpiryExpired
	case c.ExpiringWithin > 0 && left <= c.ExpiringWithin:
		out.Expiry = ExpiryExpiring
	default:
		out.Expiry = ExpiryOK
	}

	inter := x509.NewCertPool()
	for _, ic := range st.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	_, err := leaf.Verify(x509.VerifyOptions{DNSName: id.Value, Roots: c.Roots, Intermediates: inter, CurrentTime: now})
	if err != nil {
		info.ChainError = err.Error()
		out.Status = StatusCertificate
		out.Problem = certProblem(err, id)
		out.Fix, out.Remedy = chainFix(err, id, leaf)
		return out
	}
	info.ChainValid = true
	out.CertificateOK = true
	if out.Expiry == ExpiryExpiring {
		out.Status = StatusExpiring
		out.Problem = fmt.Sprintf("the certificate expires %s, in %d days (window %s)", leaf.NotAfter.UTC().Format(time.DateOnly), info.DaysLeft, fmtDays(c.ExpiringWithin))
		out.Fix, out.Remedy = "renew now and reload the server; if renewal runs from cron, its log says why it has not", RemedyRenew
		return out
	}
	out.Status = StatusOK
	return out
}

// certProblem says in a few words why clients refuse the certificate.
func certProblem(err error, id challenge.Identifier) string {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &ci) && ci.Reason == x509.Expired:
		return "the certificate has expired or is not valid yet"
	case errors.As(err, &he):
		return "the certificate does not cover " + id.Value
	case errors.As(err, &ua):
		return "the chain does not lead to a trusted root"
	}
	return "the chain does not verify: " + strings.TrimPrefix(err.Error(), "x509: ")
}
