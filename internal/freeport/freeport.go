// Package freeport picks TCP ports for tests that must name a port before
// anything binds it: a CA told where to validate, a configuration file, a
// command line.
//
// The usual trick, binding ":0" and closing, hands out a port from the
// kernel's ephemeral range, and the kernel goes on handing ports from that
// range to every outgoing connection and every ":0" listener of every
// process. On a machine where suites run side by side (etcd members, HAProxy,
// many clients) such a port is soon taken again, and the test that named it
// fails to bind. A port chosen at random below that range collides only with
// another pick like it.
package freeport

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Pick returns a port on 127.0.0.1 that was free a moment ago, below the
// ephemeral range where it can, else one the kernel chose.
func Pick(t testing.TB) int {
	t.Helper()
	hi := ephemeralLow() - 1
	lo := max(hi-12000, 1024)
	for range 200 {
		p := lo + rand.IntN(hi-lo+1)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		return p
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default where it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 2048 {
				return n
			}
		}
	}
	return 32768
}
