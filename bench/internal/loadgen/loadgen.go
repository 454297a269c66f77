//go:build linux

// Package loadgen is what the hosting benchmark tools (bench/idleconns,
// bench/connload) share: a real ClientHello to send without finishing the
// handshake, client sockets spread over many loopback source addresses,
// and the descriptor limit raised to what a run needs.
package loadgen

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ClientHello returns the first TLS record crypto/tls sends for sni and
// alpn: a real ClientHello, which the front door routes like a browser's.
func ClientHello(sni string, alpn ...string) ([]byte, error) {
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		tls.Client(c, &tls.Config{ServerName: sni, NextProtos: alpn, InsecureSkipVerify: true}).Handshake()
		c.Close()
	}()
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(s, hdr); err != nil {
		return nil, fmt.Errorf("capturing a ClientHello for %s: %w", sni, err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(s, body); err != nil {
		return nil, fmt.Errorf("capturing a ClientHello for %s: %w", sni, err)
	}
	return append(hdr, body...), nil
}

// Sources returns k loopback source addresses from 127.0.0.2 on: one
// address can open only as many connections to one destination as the
// ephemeral port range has ports.
func Sources(k int) ([]netip.Addr, error) {
	if k < 1 || k > 250 {
		return nil, fmt.Errorf("%d source addresses: want 1 to 250 (127.0.0.2 to 127.0.0.251)", k)
	}
	out := make([]netip.Addr, k)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)})
	}
	return out, nil
}

// Dialer returns a dialer whose sockets are bound to src with the port
// left to connect (IP_BIND_ADDRESS_NO_PORT): a bind to port 0 would take
// a port for every destination at once and run out at ~28,000 per source.
func Dialer(src netip.Addr, timeout time.Duration) *net.Dialer {
	return &net.Dialer{
		Timeout:   timeout,
		LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)),
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
			return errors.Join(err, serr)
		},
	}
}

const ipBindAddressNoPort = 24 // linux/in.h IP_BIND_ADDRESS_NO_PORT

// EphemeralPorts is the size of the kernel's ephemeral port range: the
// connections one source address can have open to one destination.
func EphemeralPorts() (int, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, fmt.Errorf("reading the ephemeral port range: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, fmt.Errorf("ip_local_port_range: unexpected %q", b)
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || hi < lo {
		return 0, fmt.Errorf("ip_local_port_range: unexpected %q", b)
	}
	return hi - lo + 1, nil
}

// RaiseNoFile makes RLIMIT_NOFILE at least need, raising the hard limit
// when it must (that takes CAP_SYS_RESOURCE); the error names the limit
// and what stands in the way.
func RaiseNoFile(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("reading RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur >= need {
		return nil
	}
	want := syscall.Rlimit{Cur: need, Max: max(lim.Max, need)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return fmt.Errorf("this run needs %d file descriptors and RLIMIT_NOFILE is %d (hard %d); raising it: %w (the hard limit can be raised only with CAP_SYS_RESOURCE, up to fs.nr_open: run as root, or ulimit -Hn %d before starting)", need, lim.Cur, lim.Max, err, need)
	}
	return nil
}
