package plan

// The names: their records against this host's addresses, and what the
// outside sees on the TLS port.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/check"
)

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

// isNotFound reports whether err says the name has no such record, which
// is a finding, not a failure to look.
func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && (de.IsNotFound || de.Err == "no suitable address found")
}
