package main

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/responder"
)

type fakeResolver map[string][]netip.Addr // "ip4 name" -> addrs

func (f fakeResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	if a, ok := f[network+" "+host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// TestPreflightLocalListener: the preflight passes for a correct challenge
// and stops a wrong one with the CA's own words, before any CA is asked.
func TestPreflightLocalListener(t *testing.T) {
	ctx := context.Background()
	r := responder.New()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go r.Serve(sctx, ln)

	id, _ := challenge.ParseIdentifier("preflight.example")
	good := "token.thumbprint"
	cert, _ := challenge.Build(id, good)
	r.Publish(ctx, challenge.ServerName(id), cert)
	p := newPreflight(ln.Addr().String())
	p.resolver = fakeResolver{}
	if err := p.Preflight(ctx, id, good); err != nil {
		t.Fatalf("correct challenge: %v", err)
	}
	err = p.Preflight(ctx, id, "token.other-thumbprint")
	if err == nil || !strings.Contains(err.Error(), "acmeValidationV1 extension value") || !strings.Contains(err.Error(), "local listener") {
		t.Fatalf("wrong key authorization: %v", err)
	}
	r.Unpublish(ctx, challenge.ServerName(id))
	if err := p.Preflight(ctx, id, good); err == nil {
		t.Fatal("nothing published, yet the preflight passed")
	}
}

func TestPreflightResolvesHere(t *testing.T) {
	here := netip.MustParseAddr("192.0.2.10")
	p := &preflight{
		resolver: fakeResolver{
			"ip4 here.example": {here}, "ip4 elsewhere.example": {netip.MustParseAddr("198.51.100.7")},
			"ip4 loop.example": {netip.MustParseAddr("127.0.0.1")},
		},
		localAddrs: func() ([]netip.Addr, error) { return []netip.Addr{here, netip.MustParseAddr("127.0.0.1")}, nil },
	}
	for name, want := range map[string]bool{"here.example": true, "elsewhere.example": false, "loop.example": false, "missing.example": false} {
		id, _ := challenge.ParseIdentifier(name)
		if got, _ := p.resolvesHere(context.Background(), id); got != want {
			t.Errorf("%s: resolvesHere = %v, want %v", name, got, want)
		}
	}
	ipid, _ := challenge.ParseIdentifier("192.0.2.10")
	if got, _ := p.resolvesHere(context.Background(), ipid); !got {
		t.Error("an IP identifier of this host is not seen as here")
	}
}

func TestPreflightLocalTarget(t *testing.T) {
	for listen, want := range map[string]string{
		":443": "127.0.0.1:443", "0.0.0.0:8443": "127.0.0.1:8443", "[::]:443": "[::1]:443", "127.0.0.5:5001": "127.0.0.5:5001",
	} {
		p := newPreflight(listen)
		a, port, err := p.localTarget()
		if err != nil || netip.AddrPortFrom(a, uint16(port)).String() != want {
			t.Errorf("%s: %v:%d %v, want %s", listen, a, port, err, want)
		}
	}
	if _, _, err := newPreflight("nonsense").localTarget(); err == nil {
		t.Error("a listen address without a port was accepted")
	}
}
