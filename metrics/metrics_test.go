package metrics

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/proxy"
)

// TestPerConnectionCostsNoAllocation: what the front door calls for every
// connection (a route's Opened, Closed and Handshake, a refusal, an
// acme-tls/1 hello with nothing pending) allocates nothing: the counters
// are resolved when the configuration is compiled.
func TestPerConnectionCostsNoAllocation(t *testing.T) {
	m := New()
	ro := m.Route(proxy.Route{Names: []string{"example.com"}, Backend: "127.0.0.1:1", Mode: proxy.TerminateTCP})
	allocs := testing.AllocsPerRun(1000, func() {
		ro.Opened(proxy.Relayed)
		ro.Closed(proxy.Relayed, 517, 4096)
		ro.Opened(proxy.Terminated)
		ro.Handshake(3*time.Millisecond, nil)
		ro.Closed(proxy.Terminated, 517, 4096)
		m.Refused(proxy.RefusedHelloTimeout)
		m.Refused(proxy.RefusedLimit)
		m.ChallengeNotPending()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per connection's events, want 0", allocs)
	}
}

func TestFailureReason(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{acme.Problem{Type: "urn:ietf:params:acme:error:rateLimited"}, "rateLimited"},
		{fmt.Errorf("ordering example.com: %w", acme.Problem{Type: "urn:ietf:params:acme:error:badNonce"}), "badNonce"},
		{fmt.Errorf("ordering: %w", &acme.Problem{Type: "urn:ietf:params:acme:error:unauthorized"}), "unauthorized"},
		{acme.Problem{Type: "urn:example:made-up"}, "other"},
		{acme.Problem{Type: "urn:ietf:params:acme:error:a b"}, "other"},
		{fmt.Errorf("waiting: %w", context.DeadlineExceeded), "timeout"},
		{context.Canceled, "canceled"},
		{errors.New("disk full"), "other"},
	} {
		if got := FailureReason(c.err); got != c.want {
			t.Errorf("FailureReason(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestCheckAddr(t *testing.T) {
	for _, c := range []struct {
		addr     string
		token    bool
		loopback bool // refused for not being loopback
		bad      bool // refused for its form
	}{
		{"127.0.0.1:9443", false, false, false},
		{"127.3.4.5:9443", false, false, false},
		{"[::1]:9443", false, false, false},
		{"localhost:9443", false, false, false},
		{"0.0.0.0:9443", false, true, false},
		{":9443", false, true, false},
		{"[::]:9443", false, true, false},
		{"192.0.2.1:9443", false, true, false},
		{"example.com:9443", false, true, false},
		{"192.0.2.1:9443", true, false, false},
		{":9443", true, false, false},
		{"9443", false, false, true},
		{"127.0.0.1:", false, false, true},
	} {
		err := CheckAddr(c.addr, c.token)
		if got := errors.Is(err, ErrNotLoopback); got != c.loopback {
			t.Errorf("CheckAddr(%q, token %v) = %v; want not-loopback %v", c.addr, c.token, err, c.loopback)
		}
		if got := err != nil && !errors.Is(err, ErrNotLoopback); got != c.bad {
			t.Errorf("CheckAddr(%q, token %v) = %v; want bad form %v", c.addr, c.token, err, c.bad)
		}
	}
}
