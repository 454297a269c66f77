package democa

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// dnsStub is the resolver Pebble's VA asks for the address of each name it
// validates. It answers A and AAAA for every name, from per-name overrides or
// the defaults, and nothing else. It serves UDP and TCP on one port: Pebble
// queries over TCP, most other clients over UDP.
type dnsStub struct {
	log  *slog.Logger
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	mu        sync.RWMutex
	v4, v6    netip.Addr // zero: no default answer of that type
	overrides map[string][]netip.Addr
}

// dnsTTL is the TTL of every answer: zero, because answers may change
// (SetDNS) and no one should cache them.
const dnsTTL = 0

// bindAttempts bounds the search for a port free on both UDP and TCP.
const bindAttempts = 20

func startDNS(ctx context.Context, log *slog.Logger, v4, v6 netip.Addr, overrides map[string][]netip.Addr) (*dnsStub, error) {
	s := &dnsStub{
		log:       log,
		v4:        v4.Unmap(),
		v6:        v6,
		overrides: make(map[string][]netip.Addr, len(overrides)),
	}
	if !s.v4.IsValid() {
		s.v4 = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	for name, addrs := range overrides {
		s.set(name, addrs)
	}

	pc, ln, err := listenUDPAndTCP()
	if err != nil {
		return nil, fmt.Errorf("democa: starting the DNS stub: %w", err)
	}
	s.addr = ln.Addr().String()
	s.udp = &dns.Server{PacketConn: pc, Handler: s}
	s.tcp = &dns.Server{Listener: ln, Handler: s}

	// ShutdownContext fails on a server that has not started yet, so wait
	// for both to be serving before handing the stub out.
	started := make(chan struct{}, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				log.Debug("democa: DNS server stopped", "addr", s.addr, "err", err)
			}
		}()
	}
	for range 2 {
		select {
		case <-started:
		case <-ctx.Done():
			// A server that has not started yet would keep its socket;
			// closing the sockets makes ActivateAndServe return either way.
			pc.Close()
			ln.Close()
			return nil, fmt.Errorf("democa: starting the DNS stub: %w", ctx.Err())
		}
	}
	return s, nil
}

// listenUDPAndTCP binds a UDP socket on a kernel-chosen loopback port and a
// TCP listener on the same port, retrying if the TCP port is taken.
func listenUDPAndTCP() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range bindAttempts {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("no port free on both UDP and TCP after %d attempts: %w", bindAttempts, lastErr)
}

// normalizeName turns a query or configured name into the map key form: lower
// case, no trailing dot.
func normalizeName(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

func (s *dnsStub) set(name string, addrs []netip.Addr) {
	unmapped := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if a.IsValid() {
			unmapped = append(unmapped, a.Unmap())
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.overrides[normalizeName(name)] = unmapped
}

func (s *dnsStub) reset(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.overrides, normalizeName(name))
}

// lookup returns the addresses for name and whether the name exists.
func (s *dnsStub) lookup(name string) ([]netip.Addr, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if addrs, ok := s.overrides[normalizeName(name)]; ok {
		return addrs, len(addrs) > 0
	}
	var addrs []netip.Addr
	for _, a := range []netip.Addr{s.v4, s.v6} {
		if a.IsValid() {
			addrs = append(addrs, a)
		}
	}
	return addrs, true
}

// ServeDNS implements dns.Handler.
func (s *dnsStub) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	for _, q := range req.Question {
		addrs, exists := s.lookup(q.Name)
		if !exists {
			resp.Rcode = dns.RcodeNameError
			continue
		}
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: dnsTTL, Rrtype: q.Qtype}
		for _, a := range addrs {
			switch {
			case q.Qtype == dns.TypeA && a.Is4():
				resp.Answer = append(resp.Answer, &dns.A{Hdr: hdr, A: a.AsSlice()})
			case q.Qtype == dns.TypeAAAA && a.Is6():
				resp.Answer = append(resp.Answer, &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()})
			}
		}
	}
	s.log.Debug("democa: DNS query", "question", questionString(req), "answers", len(resp.Answer), "rcode", dns.RcodeToString[resp.Rcode])
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("democa: writing DNS answer", "err", err)
	}
}

func questionString(m *dns.Msg) string {
	if len(m.Question) == 0 {
		return ""
	}
	q := m.Question[0]
	return q.Name + " " + dns.TypeToString[q.Qtype]
}

func (s *dnsStub) shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if err := srv.ShutdownContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("democa: shutting down the DNS stub on %s: %w", s.addr, err))
		}
	}
	return errors.Join(errs...)
}
