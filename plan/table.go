package plan

// The decision table: one row per question, answered per name.

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

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
	rows := []Row{wildcardRow(plan), dnsRow(plan)}
	rows = append(rows, portRows(plan)...)
	return append(rows, p.reachRow(plan), alpnRow(plan), frontRow(plan), httpRow(plan))
}

// wildcardRow says whether a wildcard rules out TLS-ALPN-01 and HTTP-01.
func wildcardRow(plan *Plan) Row {
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
	return wild
}

// dnsRow says whether the names' records point at this host.
func dnsRow(plan *Plan) Row {
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
	return dns
}

// portRows say who holds the TLS and HTTP ports here.
func portRows(plan *Plan) []Row {
	var rows []Row
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
	return rows
}

// reachRow says whether the TLS port is reachable through the names.
func (p *Planner) reachRow(plan *Plan) Row {
	tlsPort := p.tlsPort()
	return perName(fmt.Sprintf("port %d reachable?", tlsPort), plan.Names, func(f *NameFinding) (string, string) {
		switch {
		case f.ListenTest.Ran && f.ListenTest.Pass:
			return "yes", "the listen test connected through " + joinAddrs(f.Here)
		case f.Outside == nil:
			return "unknown", "no address to connect to"
		case f.Outside.ALPN == ALPNUnreachable && len(f.Here) > 0 && plan.Host.TLSPort.Free:
			return "nothing listens yet", f.Outside.Address + ": " + f.Outside.Detail + " (the port is free here; a client that answers the CA itself listens on it while validating)"
		case f.Outside.ALPN == ALPNUnreachable:
			return "no", f.Outside.Address + ": " + f.Outside.Detail
		}
		ev := f.Outside.Address + " answered TLS"
		if len(f.Outside.Skipped) > 0 {
			ev += "; not probed: " + joinAddrs(f.Outside.Skipped)
		}
		return "yes", ev
	})
}

// alpnRow says whether acme-tls/1 reaches a responder through the names.
func alpnRow(plan *Plan) Row {
	return perName("acme-tls/1 passes?", plan.Names, func(f *NameFinding) (string, string) {
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
				ev += fmt.Sprintf("; that is %s here, which does not answer the CA: a TLS-ALPN-01 responder in front of it does", plan.Host.TLSPort.Holder())
			}
			return "no", ev
		case ALPNUnreachable:
			return "not tested", f.ListenTest.Detail
		}
		return "unknown", f.Outside.Detail
	})
}

// frontRow says what stands between the CA and this host.
func frontRow(plan *Plan) Row {
	return perName("behind a proxy or CDN?", plan.Names, func(f *NameFinding) (string, string) {
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
	})
}

// httpRow says whether HTTP-01 reached a listener here.
func httpRow(plan *Plan) Row {
	return perName("HTTP-01 reachable?", plan.Names, func(f *NameFinding) (string, string) {
		switch {
		case f.HTTPTest.Ran && f.HTTPTest.Pass:
			return "yes", f.HTTPTest.Detail
		case f.HTTPTest.Ran:
			return "no", f.HTTPTest.Detail
		}
		return "not tested", f.HTTPTest.Detail
	})
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
