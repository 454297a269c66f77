package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/responder"
)

func TestSmokePassthroughAndACME(t *testing.T) {
	// A TLS backend that echoes.
	id, _ := challenge.ParseIdentifier("backend.example")
	bcert, err := challenge.Build(id, "x.y")
	if err != nil {
		t.Fatal(err)
	}
	bln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer bln.Close()
	go func() {
		for {
			c, err := bln.Accept()
			if err != nil {
				return
			}
			go func() {
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*bcert}, NextProtos: []string{"h2", "acme-tls/1"}})
				io.Copy(tc, tc)
				tc.Close()
			}()
		}
	}()
	r := responder.New()
	cid, _ := challenge.ParseIdentifier("example.com")
	ccert, _ := challenge.Build(cid, "tok.thumb")
	r.Publish(context.Background(), "example.com", ccert)
	s, err := New(Config{Routes: []Route{{Names: []string{"*"}, Backend: bln.Addr().String()}}}, r, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go s.Serve(context.Background(), ln)
	defer s.Shutdown(context.Background())

	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, ServerName: "example.com", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ConnectionState().PeerCertificates[0].DNSNames[0]; got != "backend.example" {
		t.Fatalf("h2 client got %s", got)
	}
	c.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	c.Close()
	c, err = tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, ServerName: "example.com", NextProtos: []string{"acme-tls/1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := challenge.Verify(c.ConnectionState().PeerCertificates[0], cid, "tok.thumb"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c, err = tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, ServerName: "other.example", NextProtos: []string{"acme-tls/1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ConnectionState().PeerCertificates[0].DNSNames[0]; got != "backend.example" {
		t.Fatalf("acme-tls/1 for a non-pending name got %s, want the backend", got)
	}
	c.Close()
}
