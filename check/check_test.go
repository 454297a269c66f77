package check

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// caseEnv is what a responder in the matrix is built from.
type caseEnv struct {
	id      challenge.Identifier
	keyAuth string
	prod    *tls.Certificate // a valid production certificate for id
	root    *testRoot
}

type serverKind int

const (
	tlsServer serverKind = iota
	noServer
	plainHTTP
	silent
)

type server struct {
	kind serverKind
	conf *tls.Config
}

func tlsWith(conf *tls.Config) server { return server{kind: tlsServer, conf: conf} }

func goodExts(t testing.TB, e caseEnv) []pkix.Extension {
	return []pkix.Extension{sanExt(sanFor(t, e.id)), acmeExt(t, e.keyAuth)}
}

// challengeWith serves a validation certificate with exts (self-signed)
// on acme-tls/1 and the production certificate otherwise.
func challengeWith(t testing.TB, e caseEnv, exts []pkix.Extension) server {
	return tlsWith(acmeConfig(rawCert(t, mustKey(t), nil, exts), e.prod))
}

// matrixCase is one responder, good or broken in one way, and what check
// must say about it. In words, {ip} and {addr} stand for the address.
type matrixCase struct {
	name      string
	serve     func(t testing.TB, e caseEnv) server
	rule      Rule   // the rule that must fail; "" for none
	words     string // in the CAMessage (CA rules) or Detail and Fix (others)
	fixWords  string // in the Fix, when set
	remedy    Remedy // the Fix's kind, when rule is set
	verdict   Verdict
	caPass    bool // what the CA would conclude
	pebble    bool // Pebble's validator can express the case: it agrees on caPass
	timeout   time.Duration
	noKeyAuth bool // check without the key authorization: structure only
	ipID      bool // validate the loopback address itself as an IP identifier
}

func matrix() []matrixCase {
	return []matrixCase{
		{
			name:    "good",
			serve:   func(t testing.TB, e caseEnv) server { return challengeWith(t, e, goodExts(t, e)) },
			verdict: Pass, caPass: true, pebble: true,
		},
		{
			name:    "good IP identifier",
			serve:   func(t testing.TB, e caseEnv) server { return challengeWith(t, e, goodExts(t, e)) },
			verdict: Pass, caPass: true, ipID: true,
		},
		{
			name: "good, structure only",
			serve: func(t testing.TB, e caseEnv) server {
				// A wrong hash cannot be seen without the key authorization.
				return challengeWith(t, e, []pkix.Extension{sanExt(sanFor(t, e.id)), acmeExt(t, "other")})
			},
			verdict: Pass, caPass: true, noKeyAuth: true,
		},
		{
			name:  "no listener",
			serve: func(testing.TB, caseEnv) server { return server{kind: noServer} },
			rule:  RuleConnect, words: "{ip}: Connection refused", fixWords: "nothing listens on port", remedy: RemedyResponder,
			verdict: Fail, pebble: true,
		},
		{
			name:  "plain HTTP server",
			serve: func(testing.TB, caseEnv) server { return server{kind: plainHTTP} },
			rule:  RuleTLSHandshake, words: "{ip}: Server only speaks HTTP, not TLS", fixWords: "plain HTTP",
			verdict: Fail, pebble: true,
		},
		{
			name: "TLS 1.1 only",
			serve: func(t testing.TB, e caseEnv) server {
				s := challengeWith(t, e, goodExts(t, e))
				s.conf.MinVersion, s.conf.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
				return s
			},
			rule: RuleTLSHandshake, words: "{ip}: remote error: tls: protocol version not supported", fixWords: "TLS 1.2",
			verdict: Fail, pebble: true,
		},
		{
			name: "ALPN not negotiated",
			serve: func(t testing.TB, e caseEnv) server {
				// A proxy that ignores ALPN but (here) even has the right certificate.
				c := rawCert(t, mustKey(t), nil, goodExts(t, e))
				return tlsWith(&tls.Config{Certificates: []tls.Certificate{*c}})
			},
			rule: RuleALPN, words: challenge.CAMessageNoALPN, fixWords: "drops acme-tls/1",
			verdict: Fail, pebble: true,
		},
		{
			name: "alert: ALPN without acme-tls/1",
			serve: func(t testing.TB, e caseEnv) server {
				return tlsWith(&tls.Config{NextProtos: []string{"h2", "http/1.1"}, Certificates: []tls.Certificate{*e.prod}})
			},
			rule: RuleTLSHandshake, words: "{ip}: remote error: tls: no application protocol", fixWords: "without acme-tls/1", remedy: RemedyResponderInFront,
			verdict: Fail, pebble: true,
		},
		{
			name: "no certificate",
			serve: func(t testing.TB, e caseEnv) server {
				return tlsWith(acmeConfig(&tls.Certificate{PrivateKey: mustKey(t)}, e.prod))
			},
			rule: RuleCertificates, words: "{ip}: Error getting validation data", fixWords: "no certificate",
			verdict: Fail, pebble: true,
		},
		{
			name: "not self-signed",
			serve: func(t testing.TB, e caseEnv) server {
				return tlsWith(acmeConfig(rawCert(t, mustKey(t), mustKey(t), goodExts(t, e)), e.prod))
			},
			rule:    RuleSelfSigned,
			words:   "Incorrect validation certificate for tls-alpn-01 challenge. Requested {name} from {addr}. Received certificate which is not self-signed.",
			verdict: Fail, // Pebble does not check self-signedness
		},
		{
			name: "two SANs",
			serve: func(t testing.TB, e caseEnv) server {
				return challengeWith(t, e, []pkix.Extension{sanExt(sanFor(t, e.id, dnsGeneralName("other.test"))), acmeExt(t, e.keyAuth)})
			},
			rule: RuleSAN, words: `: "wrong number of identifiers"`, fixWords: "exactly one SAN entry",
			verdict: Fail, pebble: true,
		},
		{
			name: "upper-case SAN bytes",
			serve: func(t testing.TB, e caseEnv) server {
				upper := challenge.Identifier{Type: challenge.DNS, Value: strings.ToUpper(e.id.Value)}
				return challengeWith(t, e, []pkix.Extension{sanExt(sanFor(t, upper)), acmeExt(t, e.keyAuth)})
			},
			rule: RuleSAN, words: `"SAN extension does not match expected bytes"`, fixWords: "lower case",
			verdict: Fail, // Pebble compares with EqualFold and accepts it
		},
		{
			name: "extension not critical",
			serve: func(t testing.TB, e caseEnv) server {
				ext := acmeExt(t, e.keyAuth)
				ext.Critical = false
				return challengeWith(t, e, []pkix.Extension{sanExt(sanFor(t, e.id)), ext})
			},
			rule: RuleCritical, words: "Received certificate with acmeValidationV1 extension that is not Critical.", fixWords: "critical",
			verdict: Fail, pebble: true,
		},
		{
			name: "extension missing",
			serve: func(t testing.TB, e caseEnv) server {
				return challengeWith(t, e, []pkix.Extension{sanExt(sanFor(t, e.id))})
			},
			rule: RuleRequiredExtensions, words: `"Required extension OID 1.3.6.1.5.5.7.1.31 is not present"`, fixWords: "ordinary certificate",
			verdict: Fail, pebble: true,
		},
		{
			name: "bare 32 bytes",
			serve: func(t testing.TB, e caseEnv) server {
				h := sha256.Sum256([]byte(e.keyAuth))
				return challengeWith(t, e, []pkix.Extension{sanExt(sanFor(t, e.id)), {Id: challenge.OIDACMEIdentifier(), Critical: true, Value: h[:]}})
			},
			rule: RuleValue, words: "Received certificate with malformed acmeValidationV1 extension value.", fixWords: "OCTET STRING",
			verdict: Fail, pebble: true,
		},
		{
			name: "wrong hash",
			serve: func(t testing.TB, e caseEnv) server {
				return challengeWith(t, e, []pkix.Extension{sanExt(sanFor(t, e.id)), acmeExt(t, "other")})
			},
			rule: RuleKeyAuthorization, words: "Received certificate with acmeValidationV1 extension value ", fixWords: "another key authorization",
			verdict: Fail, pebble: true,
		},
		{
			name: "duplicate extension",
			serve: func(t testing.TB, e caseEnv) server {
				dup := pkix.Extension{Id: oidTest, Value: []byte{5, 0}}
				return challengeWith(t, e, append(goodExts(t, e), dup, dup))
			},
			// Go's parser refuses the certificate inside the handshake.
			rule: RuleUniqueExtensions, words: "{ip}: Error getting validation data", fixWords: "extension twice",
			verdict: Fail, pebble: true,
		},
		{
			name: "obsolete OID only",
			serve: func(t testing.TB, e caseEnv) server {
				ext := acmeExt(t, e.keyAuth)
				ext.Id = oidObsoleteTest
				return challengeWith(t, e, []pkix.Extension{sanExt(sanFor(t, e.id)), ext})
			},
			rule: RuleRequiredExtensions, words: `"Required extension OID 1.3.6.1.5.5.7.1.31 is not present"`, fixWords: "obsolete draft OID",
			verdict: Fail, pebble: true,
		},
		{
			name: "leak to h2 clients",
			serve: func(t testing.TB, e caseEnv) server {
				c := rawCert(t, mustKey(t), nil, goodExts(t, e))
				return tlsWith(&tls.Config{NextProtos: []string{challenge.ALPNProto, "h2", "http/1.1"}, Certificates: []tls.Certificate{*c}})
			},
			rule: RuleNoLeak, words: "ALPN h2", fixWords: "exactly acme-tls/1",
			verdict: Fail, caPass: true, pebble: true,
		},
		{
			name: "production certificate expiring in 10 days",
			serve: func(t testing.TB, e caseEnv) server {
				return tlsWith(acmeConfig(rawCert(t, mustKey(t), nil, goodExts(t, e)), e.root.leaf(t, e.id, 10*24*time.Hour)))
			},
			rule: RuleExpiry, words: "threshold 30d", fixWords: "renew now", remedy: RemedyRenew,
			verdict: Expiring, caPass: true, pebble: true,
		},
		{
			name: "production chain untrusted",
			serve: func(t testing.TB, e caseEnv) server {
				other := newTestRoot(t)
				return tlsWith(acmeConfig(rawCert(t, mustKey(t), nil, goodExts(t, e)), other.leaf(t, e.id, 60*24*time.Hour)))
			},
			rule: RuleProduction, words: "unknown authority", fixWords: "fullchain.pem", remedy: RemedyTrustRoot,
			verdict: Fail, caPass: true, pebble: true,
		},
		{
			name:  "handshake timeout",
			serve: func(testing.TB, caseEnv) server { return server{kind: silent} },
			rule:  RuleTLSHandshake, words: "{ip}: Timeout after connect (your server may be slow or overloaded)", fixWords: "did not finish the handshake",
			verdict: Fail, timeout: 300 * time.Millisecond,
		},
	}
}

// hostName turns a case name into a DNS name.
func hostName(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case 'a' <= r && r <= 'z', '0' <= r && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	return strings.TrimSuffix(b.String(), "-") + ".test"
}

// startServer starts s on host (an IP literal) and returns its port.
func startServer(t testing.TB, host string, s server) int {
	addr := net.JoinHostPort(host, "0")
	switch s.kind {
	case noServer:
		return closedPort(t, addr)
	case plainHTTP:
		return httpServer(t, addr)
	case silent:
		return silentServer(t, addr)
	}
	return newResponder(t, addr, s.conf).port()
}

func findResult(r *Report, rule Rule) (*Result, string) {
	for i := range r.Results {
		if r.Results[i].Rule == rule {
			return &r.Results[i], ""
		}
	}
	for _, a := range r.Addresses {
		for i := range a.Results {
			if a.Results[i].Rule == rule {
				return &a.Results[i], a.Address
			}
		}
	}
	return nil, ""
}

func families(t *testing.T) []string {
	if haveIPv6() {
		return []string{"127.0.0.1", "::1"}
	}
	t.Log("::1 unavailable: IPv6 cases skipped")
	return []string{"127.0.0.1"}
}

// TestCheckMatrix runs every responder of the matrix on 127.0.0.1 and ::1:
// each must produce its own verdict, failing rule and message.
func TestCheckMatrix(t *testing.T) {
	root := newTestRoot(t)
	for _, lo := range families(t) {
		for _, tc := range matrix() {
			t.Run(lo+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				loAddr := netip.MustParseAddr(lo)
				id := challenge.Identifier{Type: challenge.DNS, Value: hostName(tc.name)}
				if tc.ipID {
					id = challenge.Identifier{Type: challenge.IP, Value: lo}
				}
				e := caseEnv{id: id, keyAuth: "token-" + id.Value + ".thumbprint", root: root}
				e.prod = root.leaf(t, id, 60*24*time.Hour)
				port := startServer(t, lo, tc.serve(t, e))
				ap := netip.AddrPortFrom(loAddr, uint16(port)).String()

				timeout := tc.timeout
				if timeout == 0 {
					timeout = 5 * time.Second
				}
				c := &Checker{Addresses: []netip.Addr{loAddr}, Roots: root.pool, ExpiringWithin: 30 * 24 * time.Hour, Timeout: timeout}
				target := Target{ID: id, Port: port, KeyAuthorization: e.keyAuth}
				if tc.noKeyAuth {
					target.KeyAuthorization = ""
				}
				r := c.Check(t.Context(), target)
				js, _ := json.MarshalIndent(r, "", "  ")
				t.Logf("summary: %s", r.Summary)

				if r.Verdict != tc.verdict {
					t.Errorf("verdict %q, want %q\n%s", r.Verdict, tc.verdict, js)
				}
				if r.CA.Pass != tc.caPass {
					t.Errorf("CA pass %v, want %v: %s", r.CA.Pass, tc.caPass, r.CA.Summary)
				}
				if r.KeyAuthorizationChecked == tc.noKeyAuth {
					t.Errorf("KeyAuthorizationChecked = %v", r.KeyAuthorizationChecked)
				}
				if len(r.Addresses) != 1 || r.Addresses[0].Address != ap {
					t.Fatalf("addresses %+v, want one, %s", r.Addresses, ap)
				}
				if tc.rule == "" {
					for _, res := range r.Addresses[0].Results {
						if !res.Pass {
							t.Errorf("%s fails: %s %s\n%s", res.Rule, res.CAMessage, res.Detail, js)
						}
					}
					if !strings.Contains(r.Summary, "the CA would pass") {
						t.Errorf("summary %q", r.Summary)
					}
					return
				}
				res, _ := findResult(r, tc.rule)
				if res == nil || res.Pass {
					t.Fatalf("rule %s did not fail:\n%s", tc.rule, js)
				}
				words := strings.NewReplacer("{ip}", lo, "{addr}", ap, "{name}", id.Value).Replace(tc.words)
				got := res.Detail + " " + res.Fix
				if tc.rule.IsCARule() {
					got = res.CAMessage
					if lo == "127.0.0.1" && r.CA.Problem != res.CAMessage {
						t.Errorf("CA problem %q, want the rule's %q", r.CA.Problem, res.CAMessage)
					}
				}
				if !strings.Contains(got, words) {
					t.Errorf("%s: %q does not contain %q", tc.rule, got, words)
				}
				if res.Fix == "" || !strings.Contains(res.Fix, tc.fixWords) {
					t.Errorf("%s: fix %q does not contain %q", tc.rule, res.Fix, tc.fixWords)
				}
				if res.Remedy != tc.remedy {
					t.Errorf("%s: remedy %q, want %q", tc.rule, res.Remedy, tc.remedy)
				}
				if tc.rule.IsCARule() && tc.rule != RuleConnect && !tc.caPass {
					// The CA stops at its first failure: nothing after it.
					last := r.Addresses[0].Results
					for i, x := range last {
						if x.Rule == tc.rule && i+1 < len(last) && last[i+1].Rule.IsCARule() {
							t.Errorf("rule %s reported after the failing %s", last[i+1].Rule, tc.rule)
						}
					}
				}
			})
		}
	}
}

// fakeResolver answers every name with fixed addresses.
type fakeResolver struct{ v4, v6 []netip.Addr }

func (f fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	switch network {
	case "ip4":
		if len(f.v4) == 0 {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return f.v4, nil
	case "ip6":
		if len(f.v6) == 0 {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		return f.v6, nil
	}
	return nil, fmt.Errorf("unexpected network %q", network)
}

// TestCheckAddressOrder: the CA's IPv6-first order with fallback to IPv4
// only after a connection or handshake error, against a fake resolver.
func TestCheckAddressOrder(t *testing.T) {
	if !haveIPv6() {
		t.Skip("::1 unavailable")
	}
	v4, v6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	const name = "order.test"
	id := challenge.Identifier{Type: challenge.DNS, Value: name}
	root := newTestRoot(t)
	keyAuth := "token.thumbprint"
	good := acmeConfig(rawCert(t, mustKey(t), nil, goodExts(t, caseEnv{id: id, keyAuth: keyAuth})), root.leaf(t, id, 60*24*time.Hour))

	tests := []struct {
		name     string
		v4, v6   bool // which families get the good responder
		v6NoALPN bool // the IPv6 listener ignores ALPN instead
		res      fakeResolver
		verdict  Verdict
		caPass   bool
		tried    int
		problem  string
		summary  string
		v6Fix    string
	}{
		{
			name: "AAAA refuses while A answers", v4: true, res: fakeResolver{v4: []netip.Addr{v4}, v6: []netip.Addr{v6}},
			verdict: Fail, caPass: true, tried: 2,
			summary: "the CA would pass, but only by falling back: AAAA address [::1]:PORT fails (::1: Connection refused)",
			v6Fix:   "if the AAAA record is stale, remove it — the CA tries IPv6 first",
		},
		{
			name: "AAAA refuses, no A", res: fakeResolver{v6: []netip.Addr{v6}},
			verdict: Fail, tried: 1,
			problem: `Unable to contact "order.test" at "::1", no IPv4 addresses to try as fallback`,
			summary: "there is no A record to fall back to",
		},
		{
			name: "IPv6 host answers without ALPN: no fallback", v4: true, v6NoALPN: true, res: fakeResolver{v4: []netip.Addr{v4}, v6: []netip.Addr{v6}},
			verdict: Fail, tried: 1, problem: challenge.CAMessageNoALPN,
		},
		{
			name: "both answer", v4: true, v6: true, res: fakeResolver{v4: []netip.Addr{v4}, v6: []netip.Addr{v6}},
			verdict: Pass, caPass: true, tried: 1, summary: "the CA would pass at [::1]:PORT",
		},
		{
			name: "no records", res: fakeResolver{},
			verdict: Fail, problem: "DNS problem: NXDOMAIN looking up A for order.test",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// One port on both families: the v4 listener picks it, the v6
			// one (if any) takes the same.
			var port int
			if tt.v4 {
				port = newResponder(t, "127.0.0.1:0", good).port()
			} else {
				port = closedPort(t, "127.0.0.1:0")
			}
			switch {
			case tt.v6:
				newResponder(t, fmt.Sprintf("[::1]:%d", port), good)
			case tt.v6NoALPN:
				c := rawCert(t, mustKey(t), nil, goodExts(t, caseEnv{id: id, keyAuth: keyAuth}))
				newResponder(t, fmt.Sprintf("[::1]:%d", port), &tls.Config{Certificates: []tls.Certificate{*c}})
			}
			c := &Checker{Resolver: tt.res, Roots: root.pool, Timeout: 5 * time.Second}
			r := c.Check(t.Context(), Target{ID: id, Port: port, KeyAuthorization: keyAuth})
			js, _ := json.MarshalIndent(r, "", "  ")
			sub := strings.NewReplacer("PORT", fmt.Sprint(port))
			if r.Verdict != tt.verdict || r.CA.Pass != tt.caPass || len(r.CA.Tried) != tt.tried {
				t.Errorf("verdict %s, CA pass %v, tried %v; want %s, %v, %d\n%s", r.Verdict, r.CA.Pass, r.CA.Tried, tt.verdict, tt.caPass, tt.tried, js)
			}
			if tt.problem != "" && !strings.Contains(r.CA.Problem, tt.problem) {
				t.Errorf("CA problem %q, want %q", r.CA.Problem, tt.problem)
			}
			if tt.summary != "" && !strings.Contains(r.CA.Summary, sub.Replace(tt.summary)) {
				t.Errorf("CA summary %q, want %q", r.CA.Summary, sub.Replace(tt.summary))
			}
			if tt.v6Fix != "" {
				var res *Result
				for _, a := range r.Addresses {
					if a.Address == fmt.Sprintf("[::1]:%d", port) && len(a.Results) > 0 {
						res = &a.Results[0]
					}
				}
				if res == nil || res.Rule != RuleConnect || res.Pass || !strings.Contains(res.Fix, tt.v6Fix) {
					t.Errorf("[::1] result %+v, want a connect failure whose fix says %q", res, tt.v6Fix)
				}
			}
			if tt.tried > 0 && len(r.Addresses) != 2 && tt.res.v4 != nil {
				t.Errorf("%d addresses reported, want every address (2)", len(r.Addresses))
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in   string
		want Target
		err  bool
	}{
		{"Example.COM", Target{ID: challenge.Identifier{Type: challenge.DNS, Value: "example.com"}, Port: 443}, false},
		{"example.com:8443", Target{ID: challenge.Identifier{Type: challenge.DNS, Value: "example.com"}, Port: 8443}, false},
		{"192.0.2.1", Target{ID: challenge.Identifier{Type: challenge.IP, Value: "192.0.2.1"}, Port: 443}, false},
		{"192.0.2.1:5001", Target{ID: challenge.Identifier{Type: challenge.IP, Value: "192.0.2.1"}, Port: 5001}, false},
		{"2001:db8::1", Target{ID: challenge.Identifier{Type: challenge.IP, Value: "2001:db8::1"}, Port: 443}, false},
		{"[2001:db8::1]:444", Target{ID: challenge.Identifier{Type: challenge.IP, Value: "2001:db8::1"}, Port: 444}, false},
		{"example.com:0", Target{}, true},
		{"example.com:https", Target{}, true},
		{"*.example.com", Target{}, true},
		{"exa mple.com", Target{}, true},
	}
	for _, tt := range tests {
		got, err := ParseTarget(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseTarget(%q) = %+v, %v; want %+v, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

// fiftyNames serves 50 names from one loopback responder.
func fiftyNames(t testing.TB) (*Checker, []Target) {
	root := newTestRoot(t)
	r := newResponder(t, "127.0.0.1:0", nil)
	targets := make([]Target, 50)
	for i := range targets {
		id := challenge.Identifier{Type: challenge.DNS, Value: fmt.Sprintf("n%02d.test", i)}
		keyAuth := fmt.Sprintf("token%d.thumbprint", i)
		r.set(id.Value, acmeConfig(rawCert(t, mustKey(t), nil, goodExts(t, caseEnv{id: id, keyAuth: keyAuth})), root.leaf(t, id, 60*24*time.Hour)))
		targets[i] = Target{ID: id, Port: r.port(), KeyAuthorization: keyAuth}
	}
	return &Checker{Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Roots: root.pool, Timeout: 5 * time.Second}, targets
}

// TestCheckFiftyNames: CheckAll reports every one of 50 names, in order.
// How long it takes is BenchmarkCheck50's business.
func TestCheckFiftyNames(t *testing.T) {
	c, targets := fiftyNames(t)
	start := time.Now()
	reports := c.CheckAll(t.Context(), targets)
	t.Logf("50 names in %v", time.Since(start))
	if len(reports) != len(targets) {
		t.Fatalf("%d reports, want %d", len(reports), len(targets))
	}
	for i, r := range reports {
		if r == nil || r.Name != targets[i].ID.Value || r.Verdict != Pass {
			t.Errorf("report %d: %+v", i, r)
		}
	}
}

func BenchmarkCheck50(b *testing.B) {
	c, targets := fiftyNames(b)
	ctx := context.Background()
	for b.Loop() {
		for _, r := range c.CheckAll(ctx, targets) {
			if r.Verdict != Pass {
				b.Fatalf("%s: %s", r.Name, r.Summary)
			}
		}
	}
}
