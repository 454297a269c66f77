package check

import (
	"context"
	"crypto/tls"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// TestMonitor: Monitor judges only the handshake ordinary clients make,
// so a responder that refuses acme-tls/1 (no challenge pending) is fine;
// the handshake, certificate and expiry verdicts are separate, and an
// address given with Checker.Addresses is used for IP identifiers too.
func TestMonitor(t *testing.T) {
	root := newTestRoot(t)
	dnsID := challenge.Identifier{Type: challenge.DNS, Value: "monitor.test"}
	ipID := challenge.Identifier{Type: challenge.IP, Value: "192.0.2.10"}
	// A web server behind a responder with nothing pending: acme-tls/1
	// gets "no application protocol", everything else the production
	// certificate.
	noPending := func(prod *tls.Certificate) *tls.Config {
		return &tls.Config{
			NextProtos: []string{"h2", "http/1.1"},
			GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
				if slices.Equal(h.SupportedProtos, []string{challenge.ALPNProto}) {
					t.Error("monitoring made an acme-tls/1 handshake")
				}
				return prod, nil
			},
		}
	}
	fresh := newResponder(t, "127.0.0.1:0", noPending(root.leaf(t, dnsID, 60*24*time.Hour)))
	soon := newResponder(t, "127.0.0.1:0", noPending(root.leaf(t, dnsID, 5*24*time.Hour)))
	ipCert := newResponder(t, "127.0.0.1:0", noPending(root.leaf(t, ipID, 60*24*time.Hour)))
	closed := closedPort(t, "127.0.0.1:0")

	lo := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	tests := []struct {
		name    string
		id      challenge.Identifier
		port    int
		roots   bool
		status  Status
		expiry  Expiry
		handsOK bool
		certOK  bool
	}{
		{"fresh", dnsID, fresh.port(), true, StatusOK, ExpiryOK, true, true},
		{"expiring", dnsID, soon.port(), true, StatusExpiring, ExpiryExpiring, true, true},
		{"untrusted and expiring: both verdicts", dnsID, soon.port(), false, StatusCertificate, ExpiryExpiring, true, false},
		{"IP identifier at a given address", ipID, ipCert.port(), true, StatusOK, ExpiryOK, true, true},
		{"wrong name", challenge.Identifier{Type: challenge.DNS, Value: "other.test"}, fresh.port(), true, StatusCertificate, ExpiryOK, true, false},
		{"closed", dnsID, closed, true, StatusUnreachable, ExpiryUnknown, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Checker{Addresses: lo, ExpiringWithin: 30 * 24 * time.Hour, Timeout: 5 * time.Second}
			if tt.roots {
				c.Roots = root.pool
			}
			r := c.Monitor(context.Background(), Target{ID: tt.id, Port: tt.port})
			if r.Status != tt.status || len(r.Addresses) != 1 {
				t.Fatalf("status %s with %d addresses, want %s with 1: %+v", r.Status, len(r.Addresses), tt.status, r)
			}
			a := r.Addresses[0]
			if a.Expiry != tt.expiry || a.HandshakeOK != tt.handsOK || a.CertificateOK != tt.certOK || a.Status != tt.status {
				t.Errorf("address verdicts %+v; want expiry %s, handshake %v, certificate %v", a, tt.expiry, tt.handsOK, tt.certOK)
			}
			if (tt.status == StatusOK) != (a.Problem == "" && a.Fix == "") {
				t.Errorf("problem %q, fix %q for status %s", a.Problem, a.Fix, a.Status)
			}
			if !strings.Contains(r.Summary, a.Problem) {
				t.Errorf("summary %q does not carry the problem %q", r.Summary, a.Problem)
			}
		})
	}
}

func TestStatusWorst(t *testing.T) {
	order := []Status{StatusOK, StatusExpiring, StatusUnreachable, StatusCertificate}
	for i, a := range order {
		for j, b := range order {
			if got, want := a.Worst(b), order[max(i, j)]; got != want {
				t.Errorf("%s.Worst(%s) = %s, want %s", a, b, got, want)
			}
		}
	}
}

// TestMonitorResolve: a name without records is unreachable with the
// lookup's words; with an A and an AAAA record, every address gets its
// own verdicts and the name the worst of them.
func TestMonitorResolve(t *testing.T) {
	root := newTestRoot(t)
	id := challenge.Identifier{Type: challenge.DNS, Value: "monitor.test"}
	c := &Checker{Resolver: fakeResolver{}, Roots: root.pool, Timeout: 5 * time.Second}
	r := c.Monitor(context.Background(), Target{ID: id, Port: 443})
	if r.Status != StatusUnreachable || r.Resolve == nil || r.Resolve.Pass || len(r.Addresses) != 0 || !strings.Contains(r.Summary, "does not resolve") {
		t.Errorf("no records: %+v", r)
	}

	if !haveIPv6() {
		t.Skip("no IPv6 loopback here")
	}
	web := newResponder(t, "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*root.leaf(t, id, 60*24*time.Hour)}})
	c.Resolver = fakeResolver{v4: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, v6: []netip.Addr{netip.IPv6Loopback()}}
	r = c.Monitor(context.Background(), Target{ID: id, Port: web.port()}) // nothing on [::1] at that port
	if r.Status != StatusUnreachable || len(r.Addresses) != 2 {
		t.Fatalf("status %s, %d addresses: %+v", r.Status, len(r.Addresses), r)
	}
	v6, v4 := r.Addresses[0], r.Addresses[1]
	if v6.Address != "[::1]:"+strconv.Itoa(web.port()) || v6.Status != StatusUnreachable || v6.Expiry != ExpiryUnknown {
		t.Errorf("IPv6: %+v", v6)
	}
	if v4.Status != StatusOK || !v4.HandshakeOK || !v4.CertificateOK || v4.Expiry != ExpiryOK {
		t.Errorf("IPv4: %+v", v4)
	}
}
