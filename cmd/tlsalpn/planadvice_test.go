package main

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tlsalpn/tlsalpn/plan"
)

// TestPlanAdvice: plan's decisions in this command's words: the commands
// with their flags, why, what to fix first, and the notes.
func TestPlanAdvice(t *testing.T) {
	here := []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	direct := func(name string) *plan.NameFinding {
		return &plan.NameFinding{Name: name, Front: plan.FrontDirect, Here: here}
	}
	host := plan.Host{Addresses: here, TLSPort: plan.PortState{Port: 443, Free: true}, HTTPPort: plan.PortState{Port: 80, Free: true}}
	tests := []struct {
		name  string
		plan  *plan.Plan
		email string
		// substrings, each of some line of the part
		summary                      string
		why, before, commands, notes []string
		noNotes                      []string // substrings no note may have
	}{
		{
			name: "issue",
			plan: &plan.Plan{Names: []*plan.NameFinding{direct("example.com")}, Host: host, Recommendation: plan.Recommendation{
				Method: plan.TLSALPN01, Way: plan.WayIssue, Names: []string{"example.com"}, Port: 443}},
			summary:  "TLS-ALPN-01 with tlsalpn issue: port 443 is free and the names resolve to this host",
			commands: []string{"tlsalpn issue -d example.com --email YOU@EXAMPLE.ORG --agree-tos", "systemctl enable --now tlsalpn-renew.timer"},
			notes:    []string{"run tlsalpn plan again with --listen-test (as root)", "run tlsalpn issue as root, as the timer runs tlsalpn renew"},
		},
		{
			name: "issue, intercepted, listen test failed",
			plan: &plan.Plan{ListenTest: true, Host: host, Names: []*plan.NameFinding{{Name: "example.com", Front: plan.FrontDirect, Here: here,
				Outside:    &plan.Outside{Address: "192.0.2.10:443", ALPN: plan.ALPNRefused},
				ListenTest: plan.ProbeResult{Ran: true, Detail: "refused", Fix: "open the port"}}},
				Recommendation: plan.Recommendation{Method: plan.TLSALPN01, Way: plan.WayIssue, Names: []string{"example.com"}, Port: 443,
					Intercepted: []string{"example.com"}, Before: []string{"example.com AAAA 2001:db8::5 is not this host"}}},
			email:    "ops@example.com",
			commands: []string{"tlsalpn issue -d example.com --email ops@example.com --agree-tos"},
			before: []string{"example.com AAAA 2001:db8::5 is not this host",
				"example.com: something answers TLS at 192.0.2.10:443 although no process here listens on port 443: a DNAT rule",
				"example.com: the listen test failed: refused; fix: open the port"},
			noNotes: []string{"--listen-test"},
		},
		{
			name: "IP identifier",
			plan: &plan.Plan{Names: []*plan.NameFinding{direct("192.0.2.10")}, Host: host, Recommendation: plan.Recommendation{
				Method: plan.TLSALPN01, Way: plan.WayIssue, Names: []string{"192.0.2.10"}, Port: 443}},
			commands: []string{"tlsalpn issue -d 192.0.2.10 "},
		},
		{
			name: "serve in front of nginx",
			plan: &plan.Plan{Names: []*plan.NameFinding{direct("example.com")}, Host: host, Recommendation: plan.Recommendation{
				Method: plan.TLSALPN01, Way: plan.WayServe, Names: []string{"example.com"}, Port: 8443 + 1,
				Server: &plan.WebServer{Process: "nginx", Holder: "nginx (pid 812)", Backend: plan.Backend, Out: "/etc/nginx/tls/example.com", Hook: "systemctl reload nginx",
					ProxyProtocol: `in nginx: "listen 127.0.0.1:8443 ssl proxy_protocol;"`}}},
			summary: "TLS-ALPN-01 with tlsalpn serve in front of nginx: move nginx to 127.0.0.1:8443",
			why:     []string{"port 8444 is held by nginx (pid 812): tlsalpn issue cannot bind it, and nginx does not answer acme-tls/1"},
			commands: []string{"move nginx from :8444 to 127.0.0.1:8443 (config below) and reload it",
				"tlsalpn serve --listen :8444 --backend 127.0.0.1:8443 -d example.com --email YOU@EXAMPLE.ORG --agree-tos --out /etc/nginx/tls/example.com --deploy-hook 'systemctl reload nginx'"},
			notes: []string{
				"between validations tlsalpn serve hands each new connection straight to nginx's own socket on 127.0.0.1:8443 (steering: Linux 5.9 or later, tlsalpn serve run as root), so nginx sees clients' real addresses",
				`add --send-proxy 2 to the tlsalpn serve command and enable the PROXY protocol in nginx: "listen 127.0.0.1:8443 ssl proxy_protocol;"; this turns steering off`,
			},
			noNotes: []string{"IPv6 clients are always relayed", "drop --send-proxy", "HAProxy", "Caddy"},
		},
		{
			name: "serve in front of haproxy, IPv6 here",
			plan: &plan.Plan{Names: []*plan.NameFinding{direct("example.com")}, Host: host, Recommendation: plan.Recommendation{
				Method: plan.TLSALPN01, Way: plan.WayServe, Names: []string{"example.com"}, Port: 443,
				Server: &plan.WebServer{Process: "haproxy", Holder: "haproxy (pid 9)", Backend: plan.Backend, Out: "/etc/haproxy/tls/example.com", Hook: "systemctl reload haproxy", IPv6: true}}},
			notes: []string{"IPv6 clients are always relayed", "to update HAProxy without a reload, use tlsalpn serve --config with its runtime API"},
		},
		{
			name: "serve in front of an unknown server",
			plan: &plan.Plan{Names: []*plan.NameFinding{direct("example.com")}, Host: host, Recommendation: plan.Recommendation{
				Method: plan.TLSALPN01, Way: plan.WayServe, Names: []string{"example.com"}, Port: 443,
				Server: &plan.WebServer{Holder: "pid 7", Backend: plan.Backend, Out: "/etc/ssl/tlsalpn/example.com", Hook: "systemctl reload SERVICE"}}},
			summary: "TLS-ALPN-01 with tlsalpn serve in front of the server holding the port",
			notes:   []string{"straight to the server's own socket"},
		},
		{
			name: "serving",
			plan: &plan.Plan{Names: []*plan.NameFinding{direct("example.com")}, Host: host, Recommendation: plan.Recommendation{
				Method: plan.TLSALPN01, Way: plan.WayServing, Names: []string{"example.com", "www.example.com"}, Port: 443,
				Server: &plan.WebServer{Process: "tlsalpn", Holder: "tlsalpn (pid 5)"}}},
			summary:  "TLS-ALPN-01: tlsalpn already holds port 443",
			commands: []string{"tlsalpn check example.com www.example.com"},
		},
		{
			name: "HTTP-01 through a CDN",
			plan: &plan.Plan{ListenTest: true, Host: host, Names: []*plan.NameFinding{{Name: "example.com", Front: plan.FrontCDN, FrontEvidence: "refuses acme-tls/1: a CDN"}},
				Recommendation: plan.Recommendation{Method: plan.HTTP01, Way: plan.WayHTTP01, Names: []string{"example.com"}, Blocked: []string{"example.com"}, Port: 80}},
			why:      []string{"example.com: refuses acme-tls/1: a CDN; the CA's acme-tls/1 handshake never reaches this host", "port 80 is free here"},
			commands: []string{"certbot certonly --standalone -d example.com --email YOU@EXAMPLE.ORG --agree-tos"},
		},
		{
			name: "DNS-01, records elsewhere",
			plan: &plan.Plan{Host: host, Names: []*plan.NameFinding{{Name: "example.com", Front: plan.FrontElsewhere, FrontEvidence: "the name resolves to 198.51.100.9, not this host"}},
				Recommendation: plan.Recommendation{Method: plan.DNS01, Way: plan.WayDNS01, Names: []string{"example.com"}, Blocked: []string{"example.com"}}},
			why:      []string{"example.com: the name resolves to 198.51.100.9, not this host; the CA would connect there, not here"},
			commands: []string{"certbot certonly --dns-PROVIDER"},
			notes: []string{"HTTP-01 may work if what is in front forwards port 80 here: run tlsalpn plan again with --listen-test",
				"example.com: to use TLS-ALPN-01 instead, point its A (and AAAA) record at this host (192.0.2.10), then run tlsalpn plan again",
				"tlsalpn does not do DNS-01"},
		},
		{
			name: "wildcard",
			plan: &plan.Plan{Host: host, Names: []*plan.NameFinding{{Name: "*.example.com", Wildcard: true}, direct("example.com")},
				Recommendation: plan.Recommendation{Method: plan.DNS01, Way: plan.WayDNS01, Names: []string{"*.example.com", "example.com"}, Wildcards: []string{"*.example.com"},
					Alternative: &plan.Recommendation{Method: plan.TLSALPN01, Way: plan.WayIssue, Names: []string{"example.com"}, Port: 443}}},
			why:      []string{"*.example.com is a wildcard: RFC 8737 §3 forbids TLS-ALPN-01 for wildcards"},
			commands: []string{"-d '*.example.com' -d example.com"},
			notes:    []string{"or keep the wildcard alone on DNS-01 and get example.com in a separate certificate with TLS-ALPN-01: tlsalpn issue -d example.com --email"},
			noNotes:  []string{"HTTP-01 may work"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			adv := advise(tc.plan, tc.email)
			t.Logf("%+v", adv)
			if !strings.HasPrefix(adv.Summary, tc.summary) {
				t.Errorf("summary %q, want %q…", adv.Summary, tc.summary)
			}
			for _, part := range []struct {
				name       string
				got, wants []string
			}{{"why", adv.Why, tc.why}, {"before", adv.Before, tc.before}, {"commands", adv.Commands, tc.commands}, {"notes", adv.Notes, tc.notes}} {
				for _, w := range part.wants {
					if !slices.ContainsFunc(part.got, func(s string) bool { return strings.Contains(s, w) }) {
						t.Errorf("%s lack %q:\n%q", part.name, w, part.got)
					}
				}
			}
			for _, bad := range tc.noNotes {
				if slices.ContainsFunc(adv.Notes, func(s string) bool { return strings.Contains(s, bad) }) {
					t.Errorf("a note has %q:\n%q", bad, adv.Notes)
				}
			}
			if tc.plan.Recommendation.Way == plan.WayServe {
				for _, c := range adv.Commands {
					if strings.Contains(c, "--send-proxy") {
						t.Errorf("command %q uses the PROXY protocol, which turns steering off", c)
					}
				}
			}
		})
	}
}
