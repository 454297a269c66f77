package plan

// The recommendation: the one method to automate and the way to, as data.
// Its words and commands name the commands and flags of the program that
// runs the plan, so that program says them (cmd/tlsalpn renders them).

import (
	"net/netip"
	"slices"
	"strconv"
)

// Way is how a method is to be automated on this host.
type Way string

const (
	// WayIssue: TLS-ALPN-01 by a client that binds the free TLS port only
	// while the CA validates, renewed by a timer (Config holds its units).
	WayIssue Way = "issue"
	// WayServe: TLS-ALPN-01 by a responder that takes the TLS port in front
	// of the web server holding it (Server), answers acme-tls/1 itself and
	// relays every other connection to the server, moved to Server.Backend.
	WayServe Way = "serve"
	// WayServing: TLS-ALPN-01 is answered already: a tlsalpn process holds
	// the TLS port. What is left is to check the names.
	WayServing Way = "serving"
	// WayHTTP01: HTTP-01 by a standalone client on the free HTTP port,
	// which a token served on it showed reaches this host.
	WayHTTP01 Way = "http-01-standalone"
	// WayDNS01: DNS-01 through the DNS provider's API, by a client with a
	// plugin for the provider.
	WayDNS01 Way = "dns-01-api"
)

// Recommendation is the one method to automate, the way to, and the facts
// it rests on, for the program running the plan to word and to turn into
// its commands. The findings behind it are in the Plan (Names, Host).
type Recommendation struct {
	Method Method `json:"method"`
	Way    Way    `json:"way"`
	// Names are the names it is for, in the order they were asked for.
	Names []string `json:"names"`
	// Wildcards are the names that make it DNS-01 (RFC 8737 §3 forbids
	// TLS-ALPN-01 for them).
	Wildcards []string `json:"wildcards,omitempty"`
	// Alternative is the recommendation for the names that are not
	// wildcards, in a certificate of their own, when there are both.
	Alternative *Recommendation `json:"alternative,omitempty"`
	// Blocked are the names whose acme-tls/1 handshake cannot reach this
	// host (their Front says why): the reason it is not TLS-ALPN-01.
	Blocked []string `json:"blocked,omitempty"`
	// Intercepted are the names at whose public address something answers
	// TLS although nothing here listens on the port: a DNAT rule or
	// another network namespace would take the CA's connection (WayIssue).
	Intercepted []string `json:"intercepted,omitempty"`
	// Before are fixes to make first (a stale record), in words.
	Before []string `json:"before,omitempty"`
	// Port is the port the way uses: the TLS port, or for WayHTTP01 the
	// HTTP port.
	Port int `json:"port"`
	// Server is the web server holding the TLS port (WayServe, and the
	// process for WayServing).
	Server *WebServer `json:"server,omitempty"`
	// Config are files to write: the renewal units (WayIssue), the web
	// server's new listening configuration (WayServe).
	Config []ConfigSnippet `json:"config,omitempty"`
}

// WebServer is a web server that holds the TLS port, and how it is moved
// behind a TLS-ALPN-01 responder that relays to it.
type WebServer struct {
	// Process is its process name (nginx, haproxy, apache2, httpd, caddy,
	// or any other); "" when unknown.
	Process string `json:"process,omitempty"`
	// Holder says who holds the port, for people (PortState.Holder).
	Holder string `json:"holder"`
	// Backend is where it is to listen instead, for the responder to relay
	// to: on loopback, without the PROXY protocol, so that connections can
	// be steered to its socket between validations.
	Backend string `json:"backend"`
	// Out is the directory its certificates are to be written to.
	Out string `json:"out"`
	// Hook is the shell command that has it load new certificates.
	Hook string `json:"hook"`
	// ProxyProtocol says where to enable the PROXY protocol in it, for
	// every client's address even during validations.
	ProxyProtocol string `json:"proxy_protocol"`
	// IPv6 reports whether some of the names have an IPv6 address here:
	// their clients are always relayed, the Backend being IPv4.
	IPv6 bool `json:"ipv6"`
}

// Backend is where a web server moved behind the responder listens.
const Backend = "127.0.0.1:8443"

// recommend picks the one method for all the names: DNS-01 as soon as one
// is a wildcard, with the others' own way as an alternative.
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
		rec := Recommendation{Method: DNS01, Way: WayDNS01, Names: names(plan.Names), Wildcards: names(wild)}
		if len(plain) > 0 {
			alt := p.recommendFor(plan, plain)
			rec.Alternative = &alt
		}
		return rec
	}
	return p.recommendFor(plan, plain)
}

// recommendFor picks the method for names without wildcards.
func (p *Planner) recommendFor(plan *Plan, found []*NameFinding) Recommendation {
	rec := Recommendation{Names: names(found)}
	var before []string
	for _, f := range found {
		before = append(before, f.RecordFixes...)
		switch f.Front {
		case FrontDirect, FrontForwarded:
		default:
			rec.Blocked = append(rec.Blocked, f.Name)
		}
	}
	rec.Before = before
	switch ps := plan.Host.TLSPort; {
	case len(rec.Blocked) > 0:
		// HTTP-01 when a token was fetched through every name; otherwise
		// DNS-01, which connects to nothing, so that wrong records do not
		// stop it and are not in the way.
		httpOK := plan.Host.HTTPPort.Free
		for _, f := range found {
			httpOK = httpOK && f.HTTPTest.Ran && f.HTTPTest.Pass
		}
		if httpOK {
			rec.Method, rec.Way, rec.Port = HTTP01, WayHTTP01, plan.Host.HTTPPort.Port
		} else {
			rec.Method, rec.Way, rec.Before = DNS01, WayDNS01, nil
		}
	case !ps.Free && ps.Process() == "tlsalpn":
		rec.Method, rec.Way, rec.Port = TLSALPN01, WayServing, ps.Port
		rec.Server = &WebServer{Process: ps.Process(), Holder: ps.Holder()}
	case !ps.Free:
		rec.Method, rec.Way, rec.Port = TLSALPN01, WayServe, ps.Port
		srv, config := serverFor(ps, found)
		rec.Server, rec.Config = &srv, []ConfigSnippet{config}
	default:
		rec.Method, rec.Way, rec.Port = TLSALPN01, WayIssue, ps.Port
		rec.Config = []ConfigSnippet{
			{Path: "/etc/systemd/system/tlsalpn-renew.service", Text: RenewServiceUnit},
			{Path: "/etc/systemd/system/tlsalpn-renew.timer", Text: RenewTimerUnit},
		}
		for _, f := range found {
			if f.Outside != nil && f.Outside.Address != "" && f.Outside.ALPN != ALPNUnreachable && !(f.ListenTest.Ran && f.ListenTest.Pass) {
				rec.Intercepted = append(rec.Intercepted, f.Name)
			}
		}
	}
	return rec
}

func names(found []*NameFinding) []string {
	s := make([]string, len(found))
	for i, f := range found {
		s[i] = f.Name
	}
	return s
}

// serverFor says how to move the web server holding the port ps behind the
// responder, for the names found (the first names its files), and its
// configuration there.
func serverFor(ps PortState, found []*NameFinding) (WebServer, ConfigSnippet) {
	proc, first, port := ps.Process(), found[0].Name, strconv.Itoa(ps.Port)
	srv := WebServer{Process: proc, Holder: ps.Holder(), Backend: Backend}
	srv.IPv6 = slices.ContainsFunc(found, func(f *NameFinding) bool {
		return slices.ContainsFunc(f.Here, func(a netip.Addr) bool { return a.Is6() && !a.Is4In6() })
	})
	var config ConfigSnippet
	switch proc {
	case "nginx":
		srv.Out, srv.Hook = "/etc/nginx/tls/"+first, "systemctl reload nginx"
		config = ConfigSnippet{Path: "/etc/nginx/sites-enabled/" + first, Text: "server {\n    listen 127.0.0.1:8443 ssl;   # was: listen " + port + " ssl; (and listen [::]:" + port + " ssl;)\n    ssl_certificate     /etc/nginx/tls/" + first + "/fullchain.pem;\n    ssl_certificate_key /etc/nginx/tls/" + first + "/key.pem;\n    ...\n}\n"}
		srv.ProxyProtocol = `in nginx: "listen 127.0.0.1:8443 ssl proxy_protocol;" with "set_real_ip_from 127.0.0.1;" and "real_ip_header proxy_protocol;"`
	case "haproxy":
		srv.Out, srv.Hook = "/etc/haproxy/tls/"+first, "cat \"$TLSALPN_FULLCHAIN\" \"$TLSALPN_KEY\" > /etc/haproxy/certs/"+first+".pem && systemctl reload haproxy"
		config = ConfigSnippet{Path: "/etc/haproxy/haproxy.cfg", Text: "frontend https\n    bind 127.0.0.1:8443 ssl crt /etc/haproxy/certs/" + first + ".pem   # was: bind :" + port + " ssl crt ...\n"}
		srv.ProxyProtocol = `in HAProxy: accept-proxy at the end of that bind line`
	case "apache2", "httpd":
		srv.Out, srv.Hook = "/etc/"+proc+"/tls/"+first, "systemctl reload "+proc
		config = ConfigSnippet{Path: "/etc/" + proc + "/sites-enabled/" + first + ".conf", Text: "Listen 127.0.0.1:8443 https   # was: Listen " + port + "\n<VirtualHost 127.0.0.1:8443>\n    ServerName " + first + "\n    SSLEngine on\n    SSLCertificateFile    /etc/" + proc + "/tls/" + first + "/fullchain.pem\n    SSLCertificateKeyFile /etc/" + proc + "/tls/" + first + "/key.pem\n</VirtualHost>\n"}
		srv.ProxyProtocol = `in Apache: "RemoteIPProxyProtocol On" in the VirtualHost (needs mod_remoteip: a2enmod remoteip)`
	case "caddy":
		srv.Out, srv.Hook = "/etc/caddy/tls/"+first, "systemctl reload caddy"
		config = ConfigSnippet{Path: "/etc/caddy/Caddyfile", Text: "{\n    https_port 8443\n    default_bind 127.0.0.1\n}\n" + first + " {\n    tls /etc/caddy/tls/" + first + "/fullchain.pem /etc/caddy/tls/" + first + "/key.pem\n    ...\n}\n"}
		srv.ProxyProtocol = `in Caddy's global options: "servers { listener_wrappers { proxy_protocol { allow 127.0.0.1/32 } tls } }"`
	default:
		name := proc
		if name == "" {
			name = "the server"
		}
		srv.Out, srv.Hook = "/etc/ssl/tlsalpn/"+first, "systemctl reload SERVICE"
		config = ConfigSnippet{Path: "(" + name + "'s configuration)", Text: "listen on 127.0.0.1:8443 with TLS instead of :" + port + "\ncertificate: /etc/ssl/tlsalpn/" + first + "/fullchain.pem\nkey:         /etc/ssl/tlsalpn/" + first + "/key.pem\n"}
		srv.ProxyProtocol = "in " + name + " for 127.0.0.1:8443 (version 2; if it cannot read it, keep the command as it is)"
	}
	return srv, config
}

// HostAddrs lists this host's addresses of one family as the plan would
// tell someone to point a record at them: the global ones when there are
// any, else all but loopback and link-local, else loopback.
func (h *Host) HostAddrs(v6 bool) string { return hostHas(h.Addresses, v6) }
