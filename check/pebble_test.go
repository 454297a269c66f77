package check

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/internal/democa"
)

// TestCheckAgreesWithPebble runs a real ACME order against the embedded
// Pebble for every matrix case Pebble's validator can express, with the
// responder built from the order's real key authorization, and asserts that
// check's conclusion about the CA matches Pebble's valid or invalid.
//
// Cases Pebble cannot express are left out: it does not check
// self-signedness or the raw SAN bytes (so "not self-signed" and "upper-case
// SAN bytes" pass there, unlike at Let's Encrypt), and it waits 15 s on a
// silent server. All cases share one Pebble per listener kind; the TLS ones
// share one responder that tells them apart by SNI.
func TestCheckAgreesWithPebble(t *testing.T) {
	// Subtests run in parallel after this function returns: no defer.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	root := newTestRoot(t)
	tlsResp := newResponder(t, "127.0.0.1:0", nil)
	cas := map[serverKind]*democa.CA{}
	ports := map[serverKind]int{
		tlsServer: tlsResp.port(),
		plainHTTP: httpServer(t, "127.0.0.1:0"),
		noServer:  closedPort(t, "127.0.0.1:0"),
	}
	for kind, port := range ports {
		ca, err := democa.Start(ctx, democa.Options{TLSPort: port, NoSleep: true, Strict: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ca.Close() })
		cas[kind] = ca
	}

	for _, tc := range matrix() {
		if !tc.pebble {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := challenge.Identifier{Type: challenge.DNS, Value: hostName(tc.name)}
			e := caseEnv{id: id, root: root, prod: root.leaf(t, id, 60*24*time.Hour)}
			// The server kind is known before the key authorization; build
			// it once with a placeholder to learn it.
			kind := tc.serve(t, e).kind
			ca := cas[kind]

			client := &acme.Client{Directory: ca.DirectoryURL(), HTTPClient: ca.HTTPClient(), PollInterval: 50 * time.Millisecond, PollTimeout: 15 * time.Second}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			acct, err := client.NewAccount(ctx, acme.Account{PrivateKey: key, TermsOfServiceAgreed: true})
			if err != nil {
				t.Fatalf("new account: %v", err)
			}
			order, err := client.NewOrder(ctx, acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: id.Value}}, Profile: "default"})
			if err != nil {
				t.Fatalf("new order: %v", err)
			}
			authz, err := client.GetAuthorization(ctx, acct, order.Authorizations[0])
			if err != nil {
				t.Fatalf("get authorization: %v", err)
			}
			i := slices.IndexFunc(authz.Challenges, func(c acme.Challenge) bool { return c.Type == acme.ChallengeTypeTLSALPN01 })
			if i < 0 {
				t.Fatalf("no tls-alpn-01 challenge in %+v", authz.Challenges)
			}
			chal := authz.Challenges[i]
			keyAuth, err := challenge.KeyAuthorization(chal.Token, key.Public())
			if err != nil {
				t.Fatal(err)
			}
			if keyAuth != chal.KeyAuthorization {
				t.Fatalf("key authorization %q, acmez says %q", keyAuth, chal.KeyAuthorization)
			}
			e.keyAuth = keyAuth
			if s := tc.serve(t, e); s.kind == tlsServer {
				tlsResp.set(id.Value, s.conf)
			}

			c := &Checker{Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Roots: root.pool, ExpiringWithin: 30 * 24 * time.Hour, Timeout: 5 * time.Second}
			r := c.Check(ctx, Target{ID: id, Port: ports[kind], KeyAuthorization: keyAuth})
			if r.CA.Pass != tc.caPass {
				t.Errorf("check: CA pass %v, the matrix says %v: %s", r.CA.Pass, tc.caPass, r.CA.Summary)
			}

			if _, err := client.InitiateChallenge(ctx, acct, chal); err != nil {
				t.Fatalf("initiate challenge: %v", err)
			}
			authz, err = client.PollAuthorization(ctx, acct, authz)
			if authz.Status != acme.StatusValid && authz.Status != acme.StatusInvalid {
				t.Fatalf("authorization %s after polling: %v", authz.Status, err)
			}
			pebbleValid := authz.Status == acme.StatusValid
			t.Logf("Pebble: %s (%v); check: %s", authz.Status, err, r.CA.Summary)
			if pebbleValid != r.CA.Pass {
				t.Errorf("Pebble says %s, check says CA pass = %v: %s", authz.Status, r.CA.Pass, r.CA.Summary)
			}
		})
	}
}
