package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"

	proxyproto "github.com/pires/go-proxyproto"
)

// fromTrusted reports whether addr is inside one of the trusted networks.
func fromTrusted(addr net.Addr, trusted []netip.Prefix) bool {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok {
		return false
	}
	return trustedIP(ip, trusted)
}

// trustedIP is fromTrusted for an address as it is.
func trustedIP(ip netip.Addr, trusted []netip.Prefix) bool {
	ip = ip.Unmap()
	for _, p := range trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// readProxyHeader reads the PROXY v1 or v2 header a trusted load balancer
// sends. It returns the client address it carries (nil for a LOCAL header,
// a balancer's own health check) and the reader to continue from, whose
// buffer may hold the start of the ClientHello. A connection from a trusted
// address without a header is refused: a trusted balancer always sends one,
// so its absence means a misconfiguration that would log wrong addresses.
func readProxyHeader(br *bufio.Reader) (net.Addr, io.Reader, error) {
	hdr, err := proxyproto.Read(br)
	if err != nil {
		return nil, nil, fmt.Errorf("reading PROXY protocol header from a trusted address: %w", err)
	}
	if hdr.Command.IsLocal() {
		return nil, br, nil
	}
	return hdr.SourceAddr, br, nil
}

// writeProxyHeader sends a PROXY header of version (1 or 2) for a
// connection from client to local.
func writeProxyHeader(w io.Writer, version int, client, local net.Addr) error {
	hdr := proxyproto.HeaderProxyFromAddrs(byte(version), client, local)
	if hdr.Command.IsLocal() {
		return fmt.Errorf("cannot express %v → %v in a PROXY header", client, local)
	}
	_, err := hdr.WriteTo(w)
	return err
}

// dialBackend connects to route's backend for a connection from client to
// local and, when the route asks for it, sends the PROXY header first: the
// one way both passthrough and TCP termination reach a backend. Keep-alive
// probes are off, as on accepted connections (see Listen).
func dialBackend(route *Route, cfg *Config, client, local net.Addr) (net.Conn, error) {
	d := net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: -1}
	backend, err := d.Dial("tcp", route.Backend)
	if err != nil {
		return nil, fmt.Errorf("dialling backend %s: %w", route.Backend, err)
	}
	if route.SendProxy != 0 {
		if err := writeProxyHeader(backend, route.SendProxy, client, local); err != nil {
			backend.Close()
			return nil, fmt.Errorf("writing PROXY header to backend %s: %w", route.Backend, err)
		}
	}
	return backend, nil
}
