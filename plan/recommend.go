package plan

// The recommendation: the one method to automate, with its commands and
// configuration.

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

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

// recommend picks the one method for all the names: DNS-01 as soon as one
// is a wildcard, with the others' own method as a note.
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

// recommendFor picks the method for names without wildcards.
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
		return p.blockedAdvice(plan, names, blocked, before)
	}
	// Every name reaches this host.
	if ps := plan.Host.TLSPort; !ps.Free {
		return p.serveAdvice(ps, names, before)
	}
	return p.issueAdvice(plan, names, before)
}

// blockedAdvice is for names whose TLS-ALPN-01 handshake cannot reach this
// host (a CDN, a proxy, records pointing elsewhere): HTTP-01 when a token
// was fetched through them, DNS-01 otherwise.
func (p *Planner) blockedAdvice(plan *Plan, names, blocked []*NameFinding, before []string) Recommendation {
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

// issueAdvice is for names that reach this host with the TLS port free:
// tlsalpn issue binds it only while the CA validates.
func (p *Planner) issueAdvice(plan *Plan, names []*NameFinding, before []string) Recommendation {
	ps := plan.Host.TLSPort
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
