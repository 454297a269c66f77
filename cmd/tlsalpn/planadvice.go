package main

// The words of plan's recommendation: plan decides the method and the way,
// with the facts they rest on; this file says them as this program's
// commands and flags, and other programs' where the way is theirs.

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tlsalpn/tlsalpn/plan"
)

// planAdvice is a recommendation in words: what tlsalpn plan prints, and
// the "advice" of its JSON.
type planAdvice struct {
	Summary string   `json:"summary"`
	Why     []string `json:"why"`
	// Before are fixes to make first (a stale record, a DNAT rule).
	Before   []string             `json:"before,omitempty"`
	Commands []string             `json:"commands"`
	Config   []plan.ConfigSnippet `json:"config,omitempty"`
	Notes    []string             `json:"notes,omitempty"`
}

// adviser words the recommendations of one plan.
type adviser struct {
	p     *plan.Plan
	email string // for the commands; "" gives a placeholder
}

// advise words p's recommendation, with email in its commands.
func advise(p *plan.Plan, email string) planAdvice {
	a := adviser{p: p, email: email}
	return a.words(&p.Recommendation)
}

func (a adviser) words(rec *plan.Recommendation) planAdvice {
	var adv planAdvice
	switch rec.Way {
	case plan.WayDNS01:
		adv = a.dns01(rec)
	case plan.WayHTTP01:
		adv = a.http01(rec)
	case plan.WayIssue:
		adv = a.issue(rec)
	case plan.WayServing:
		adv = a.serving(rec)
	case plan.WayServe:
		adv = a.serve(rec)
	default:
		adv = planAdvice{Summary: fmt.Sprintf("%s (%s)", rec.Method, rec.Way)}
	}
	adv.Config = rec.Config
	return adv
}

// finding returns what the plan found for name.
func (a adviser) finding(name string) *plan.NameFinding {
	for _, f := range a.p.Names {
		if f.Name == name {
			return f
		}
	}
	return &plan.NameFinding{Name: name}
}

func (a adviser) emailArg() string {
	if a.email != "" {
		return shellQuote(a.email)
	}
	return "YOU@EXAMPLE.ORG"
}

// dFlags is the -d flags of names.
func dFlags(names []string) string {
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("-d " + shellQuote(n))
	}
	return b.String()
}

// blockedWhy says, for each name whose acme-tls/1 handshake cannot reach
// this host, what is in the way.
func (a adviser) blockedWhy(rec *plan.Recommendation) []string {
	var why []string
	for _, n := range rec.Blocked {
		f := a.finding(n)
		switch f.Front {
		case plan.FrontCDN:
			why = append(why, f.Name+": "+f.FrontEvidence+"; the CA's acme-tls/1 handshake never reaches this host")
		case plan.FrontProxy:
			why = append(why, f.Name+": "+f.FrontEvidence+"; the CA's acme-tls/1 handshake would be answered there, not here")
		case plan.FrontNoRecords:
			why = append(why, f.Name+": "+f.FrontEvidence+"; the CA has nowhere to connect")
		default:
			why = append(why, f.Name+": "+f.FrontEvidence+"; the CA would connect there, not here")
		}
	}
	return why
}

func (a adviser) dns01(rec *plan.Recommendation) planAdvice {
	adv := planAdvice{
		Summary: "DNS-01 through your DNS provider's API",
		Commands: []string{
			fmt.Sprintf("certbot certonly --dns-PROVIDER --dns-PROVIDER-credentials /etc/letsencrypt/PROVIDER.ini %s --email %s --agree-tos", dFlags(rec.Names), a.emailArg()),
		},
		Notes: []string{"tlsalpn does not do DNS-01: use a client with a plugin for your DNS provider (certbot's dns-* plugins, lego --dns, acme.sh --dns); renewal then needs no open port at all"},
	}
	if len(rec.Wildcards) > 0 {
		adv.Why = []string{fmt.Sprintf("%s is a wildcard: RFC 8737 §3 forbids TLS-ALPN-01 for wildcards (the CA cannot learn which names a wildcard covers by connecting to one), and HTTP-01 cannot validate them either; only DNS-01 can", strings.Join(rec.Wildcards, ", "))}
		if alt := rec.Alternative; alt != nil {
			altAdv := a.words(alt)
			adv.Notes = append(adv.Notes, fmt.Sprintf("or keep the wildcard alone on DNS-01 and get %s in a separate certificate with %s: %s", strings.Join(alt.Names, ", "), strings.ToUpper(string(alt.Method)), altAdv.Commands[0]))
		}
		return adv
	}
	adv.Why = a.blockedWhy(rec)
	host := &a.p.Host
	switch {
	case !host.HTTPPort.Free:
		adv.Notes = append(adv.Notes, fmt.Sprintf("HTTP-01 was not tested: port %d is held by %s here", host.HTTPPort.Port, host.HTTPPort.Holder()))
	case !a.p.ListenTest:
		adv.Notes = append(adv.Notes, "HTTP-01 may work if what is in front forwards port 80 here: run tlsalpn plan again with --listen-test (as root) to find out")
	default:
		adv.Notes = append(adv.Notes, "HTTP-01 was tested and does not reach this host (see the table)")
	}
	for _, n := range rec.Blocked {
		switch a.finding(n).Front {
		case plan.FrontCDN, plan.FrontProxy:
			adv.Notes = append(adv.Notes, n+": to use TLS-ALPN-01 instead, switch the CDN or proxy to DNS-only or TCP pass-through for this name, then run tlsalpn plan again")
		case plan.FrontElsewhere, plan.FrontNoRecords:
			adv.Notes = append(adv.Notes, fmt.Sprintf("%s: to use TLS-ALPN-01 instead, point its A (and AAAA) record at this host (%s), then run tlsalpn plan again", n, host.HostAddrs(false)))
		}
	}
	return adv
}

func (a adviser) http01(rec *plan.Recommendation) planAdvice {
	why := append(a.blockedWhy(rec), fmt.Sprintf("port %d is free here and a token served on it was fetched through the names' public addresses: HTTP-01 requests reach this host", rec.Port))
	return planAdvice{
		Summary: "HTTP-01 on port 80: TLS-ALPN-01 cannot reach this host, plain HTTP does",
		Why:     why,
		Before:  rec.Before,
		Commands: []string{
			fmt.Sprintf("certbot certonly --standalone %s --email %s --agree-tos", dFlags(rec.Names), a.emailArg()),
			"systemctl enable --now certbot-renew.timer   # or the certbot.timer your package installs",
		},
		Notes: []string{"HTTP-01 needs port 80 free at renewal time too (certbot --standalone binds it for a few seconds); lego --http does the same"},
	}
}

func (a adviser) issue(rec *plan.Recommendation) planAdvice {
	adv := planAdvice{
		Summary: fmt.Sprintf("TLS-ALPN-01 with tlsalpn issue: port %d is free and the names resolve to this host", rec.Port),
		Why: []string{
			fmt.Sprintf("port %d is free here: tlsalpn issue listens on it for the second the CA validates, then lets go", rec.Port),
			"every name resolves to this host: " + strings.Join(rec.Names, ", "),
		},
		Before: slices.Clone(rec.Before),
		Commands: []string{
			fmt.Sprintf("tlsalpn issue %s --email %s --agree-tos", dFlags(rec.Names), a.emailArg()),
			"systemctl daemon-reload && systemctl enable --now tlsalpn-renew.timer",
		},
		Notes: []string{
			fmt.Sprintf("tlsalpn renew binds port %d for a second at each renewal: if a web server will take the port later, use tlsalpn serve in front of it instead", rec.Port),
			"run tlsalpn issue as root, as the timer runs tlsalpn renew: both then use /var/lib/tlsalpn (a user's certificates are under their home, where the timer does not look)",
		},
	}
	for _, n := range rec.Names {
		f := a.finding(n)
		if slices.Contains(rec.Intercepted, n) {
			adv.Before = append(adv.Before, fmt.Sprintf("%s: something answers TLS at %s although no process here listens on port %d: a DNAT rule (docker -p, kube-proxy) or another network namespace takes the traffic; tlsalpn issue would listen but the CA would reach that instead: remove the rule, or run tlsalpn where the traffic lands", n, f.Outside.Address, rec.Port))
		}
		switch {
		case f.ListenTest.Ran && f.ListenTest.Pass:
			adv.Why = append(adv.Why, n+": the listen test answered a throwaway challenge through "+joinAddrs(f))
		case f.ListenTest.Ran:
			fix := n + ": the listen test failed: " + f.ListenTest.Detail
			if f.ListenTest.Fix != "" {
				fix += "; fix: " + f.ListenTest.Fix
			}
			adv.Before = append(adv.Before, fix)
		case !a.p.ListenTest:
			adv.Notes = append(adv.Notes, "acme-tls/1 was not tested end to end: run tlsalpn plan again with --listen-test (as root) to bind the port briefly and answer a throwaway challenge")
		default:
			note := n + ": acme-tls/1 was not tested end to end: " + strings.TrimPrefix(f.ListenTest.Detail, "not run: ")
			if f.ListenTest.Fix != "" {
				note += "; " + f.ListenTest.Fix
			}
			adv.Notes = append(adv.Notes, note)
		}
	}
	adv.Notes = slices.Compact(adv.Notes)
	return adv
}

func joinAddrs(f *plan.NameFinding) string {
	s := make([]string, len(f.Here))
	for i, a := range f.Here {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func (a adviser) serving(rec *plan.Recommendation) planAdvice {
	return planAdvice{
		Summary:  fmt.Sprintf("TLS-ALPN-01: tlsalpn already holds port %d", rec.Port),
		Why:      []string{fmt.Sprintf("port %d is held by %s: tlsalpn serve answers the CA there already", rec.Port, rec.Server.Holder)},
		Before:   rec.Before,
		Commands: []string{"tlsalpn check " + strings.Join(quoteAll(rec.Names), " ")},
		Notes:    []string{"add the names to the certificates: section of its configuration if they are not there, then send it SIGHUP"},
	}
}

func quoteAll(names []string) []string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = shellQuote(n)
	}
	return q
}

func (a adviser) serve(rec *plan.Recommendation) planAdvice {
	srv := rec.Server
	label := srv.Process
	if label == "" {
		label = "the server holding the port"
	}
	why := []string{
		fmt.Sprintf("port %d is held by %s: tlsalpn issue cannot bind it, and %s does not answer acme-tls/1", rec.Port, srv.Holder, label),
		fmt.Sprintf("tlsalpn serve takes port %d in front of %s: it answers the CA's acme-tls/1 handshakes itself and passes every other connection to %s untouched (pass-through, %s keeps terminating TLS)", rec.Port, label, label, label),
	}
	for _, n := range rec.Names {
		if f := a.finding(n); f.Front == plan.FrontForwarded {
			why = append(why, n+": "+f.FrontEvidence)
		}
	}
	adv := planAdvice{
		Summary: fmt.Sprintf("TLS-ALPN-01 with tlsalpn serve in front of %s: move %s to %s", label, label, srv.Backend),
		Why:     why,
		Before:  rec.Before,
		Commands: []string{
			fmt.Sprintf("move %s from :%d to %s (config below) and reload it", label, rec.Port, srv.Backend),
			fmt.Sprintf("tlsalpn serve --listen :%d --backend %s %s --email %s --agree-tos --out %s --deploy-hook %s",
				rec.Port, srv.Backend, dFlags(rec.Names), a.emailArg(), srv.Out, shellQuote(srv.Hook)),
		},
		Notes: []string{
			"run tlsalpn serve under systemd (Restart=always) so the port is never left unattended; tlsalpn serve --help shows the config-file form",
			steeringNote(srv),
			"for every client's exact address, even during validations: add --send-proxy 2 to the tlsalpn serve command and enable the PROXY protocol " + srv.ProxyProtocol + "; this turns steering off, so every connection is then relayed",
		},
	}
	switch srv.Process {
	case "haproxy":
		adv.Notes = append(adv.Notes, "to update HAProxy without a reload, use tlsalpn serve --config with its runtime API (see config/example-haproxy.yaml)")
	case "caddy":
		adv.Notes = append(adv.Notes, "Caddy can answer TLS-ALPN-01 itself: if it holds the port and manages its own certificates, you may not need tlsalpn at all")
	}
	return adv
}

// steeringNote says what the recommended tlsalpn serve does with clients'
// addresses: with one backend on this host and no PROXY protocol it steers,
// so the server sees them except during validations.
func steeringNote(srv *plan.WebServer) string {
	server := srv.Process
	if server == "" {
		server = "the server"
	}
	note := fmt.Sprintf("between validations tlsalpn serve hands each new connection straight to %s's own socket on %s (steering: Linux 5.9 or later, tlsalpn serve run as root), so %s sees clients' real addresses and nothing is relayed; during a validation's few seconds at each renewal, new connections are relayed and appear to come from 127.0.0.1", server, srv.Backend, server)
	if srv.IPv6 {
		note += "; IPv6 clients are always relayed, since the socket on 127.0.0.1 takes IPv4 only"
	}
	return note + "; without steering (not root, a kernel before 5.9) every connection is relayed and appears to come from 127.0.0.1"
}
