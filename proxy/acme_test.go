package proxy

import (
	"context"
	"testing"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/responder"
)

const keyAuth = "token.thumbprint"

// pendingResponder returns a responder with a challenge pending for name.
func pendingResponder(t testing.TB, name string) (*responder.Responder, challenge.Identifier) {
	t.Helper()
	id, err := challenge.ParseIdentifier(name)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := challenge.Build(id, keyAuth)
	if err != nil {
		t.Fatal(err)
	}
	r := responder.New()
	if _, err := r.Publish(context.Background(), challenge.ServerName(id), cert); err != nil {
		t.Fatal(err)
	}
	return r, id
}

// TestACME checks that only exactly-acme-tls/1 hellos for a pending name
// get the validation certificate, and that every other hello, including
// acme-tls/1 among other protocols and acme-tls/1 for a name that is not
// pending, reaches the backend.
func TestACME(t *testing.T) {
	r, id := pendingResponder(t, "example.com")
	be := startBackend(t, tlsEchoHandler(selfSigned(t, "backend.example")))
	p := startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, r, nil)

	tests := []struct {
		name      string
		sni       string
		alpn      []string
		challenge bool   // gets the validation certificate
		proto     string // else: the protocol the backend negotiates
	}{
		{"acme-tls/1 for the pending name", "example.com", []string{"acme-tls/1"}, true, ""},
		{"acme-tls/1, name in upper case", "EXAMPLE.COM", []string{"acme-tls/1"}, true, ""},
		{"h2", "example.com", []string{"h2"}, false, "h2"},
		{"http/1.1", "example.com", []string{"http/1.1"}, false, "http/1.1"},
		{"no ALPN", "example.com", nil, false, ""},
		{"h2 and acme-tls/1", "example.com", []string{"h2", "acme-tls/1"}, false, "h2"},
		{"acme-tls/1 and h2", "example.com", []string{"acme-tls/1", "h2"}, false, "h2"},
		{"acme-tls/1 twice", "example.com", []string{"acme-tls/1", "acme-tls/1"}, false, "acme-tls/1"},
		{"acme-tls/1 for a name not pending", "other.example", []string{"acme-tls/1"}, false, "acme-tls/1"},
		{"acme-tls/1 for a subdomain of the pending name", "a.example.com", []string{"acme-tls/1"}, false, "acme-tls/1"},
		{"acme-tls/1 without SNI", "", []string{"acme-tls/1"}, false, "acme-tls/1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := be.accepted.Load()
			c, err := tlsDial(p.addr, tt.sni, tt.alpn...)
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer c.Close()
			st := c.ConnectionState()
			leaf := st.PeerCertificates[0]
			if tt.challenge {
				if err := challenge.Verify(leaf, id, keyAuth); err != nil {
					t.Fatalf("validation certificate: %v", err)
				}
				if st.NegotiatedProtocol != "acme-tls/1" {
					t.Errorf("negotiated %q", st.NegotiatedProtocol)
				}
				if be.accepted.Load() != before {
					t.Error("the backend was dialled for a validation handshake")
				}
				return
			}
			if hasACMEIdentifier(leaf) {
				t.Fatal("a normal client got a certificate with the acmeIdentifier extension")
			}
			if leaf.DNSNames[0] != "backend.example" {
				t.Fatalf("got a certificate for %v, want the backend's", leaf.DNSNames)
			}
			if st.NegotiatedProtocol != tt.proto {
				t.Errorf("negotiated %q, want %q", st.NegotiatedProtocol, tt.proto)
			}
			if err := echoRoundTrip(c, "ping"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestACMEUnpublished checks that once a challenge is withdrawn its
// acme-tls/1 hellos go to the backend.
func TestACMEUnpublished(t *testing.T) {
	r, _ := pendingResponder(t, "example.com")
	be := startBackend(t, tlsEchoHandler(selfSigned(t, "backend.example")))
	p := startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, r, nil)
	r.Unpublish(context.Background(), "example.com")
	c, err := tlsDial(p.addr, "example.com", "acme-tls/1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if leaf := c.ConnectionState().PeerCertificates[0]; hasACMEIdentifier(leaf) {
		t.Fatal("validation certificate served after Unpublish")
	}
}

// TestACMEWithoutRoute checks that a validation handshake is answered even
// when no route would take the name, and that no responder means backend.
func TestACMEWithoutRoute(t *testing.T) {
	r, id := pendingResponder(t, "example.com")
	p := startProxy(t, Config{Routes: []Route{{Names: []string{"other.example"}, Backend: closedPort(t)}}}, r, nil)
	c, err := tlsDial(p.addr, "example.com", "acme-tls/1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := challenge.Verify(c.ConnectionState().PeerCertificates[0], id, keyAuth); err != nil {
		t.Fatal(err)
	}

	be := startBackend(t, tlsEchoHandler(selfSigned(t, "backend.example")))
	p = startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)
	c, err = tlsDial(p.addr, "example.com", "acme-tls/1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.ConnectionState().PeerCertificates[0].DNSNames[0] != "backend.example" {
		t.Fatal("without a responder, acme-tls/1 did not reach the backend")
	}
}
