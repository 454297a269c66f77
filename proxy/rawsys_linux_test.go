package proxy

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRawSockets checks the loops' own socket calls against the net
// package's view of the same connection, over IPv4 and IPv6: the
// addresses accept4 and getsockname give, byte order of ports included.
func TestRawSockets(t *testing.T) {
	for _, network := range []struct{ name, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(network.name, func(t *testing.T) {
			ln, err := net.Listen(network.name, network.addr)
			if err != nil {
				t.Skipf("no %s loopback here: %v", network.name, err)
			}
			defer ln.Close()
			to := ln.Addr().(*net.TCPAddr).AddrPort()

			fd, err := rawSocket(to)
			if err != nil {
				t.Fatal(err)
			}
			defer rawClose(fd)
			if err := rawSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
				t.Fatal(err)
			}
			if v, err := rawGetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v != 1 {
				t.Fatalf("TCP_NODELAY = %d, %v; want 1", v, err)
			}
			if err := rawConnect(fd, to); err != nil && err != unix.EINPROGRESS {
				t.Fatalf("connect to %v: %v", to, err)
			}
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			local, err := rawGetsockname(fd)
			if err != nil {
				t.Fatal(err)
			}
			if want := c.RemoteAddr().(*net.TCPAddr).AddrPort(); local != want {
				t.Errorf("getsockname = %v, the server sees %v", local, want)
			}

			// And accept4 on a listener of the net package's.
			lf, err := ln.(*net.TCPListener).File()
			if err != nil {
				t.Fatal(err)
			}
			defer lf.Close()
			client, err := net.Dial(network.name, to.String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			var nfd int
			var remote netip.AddrPort
			for range 500 {
				nfd, remote, err = rawAccept4(int(lf.Fd()))
				if err != unix.EAGAIN {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer rawClose(nfd)
			if want := client.LocalAddr().(*net.TCPAddr).AddrPort(); remote != want {
				t.Errorf("accept4 gives %v, the client is %v", remote, want)
			}
			if n, err := writeNow(nfd, []byte("x")); n != 1 || err != nil {
				t.Fatalf("sendto: %d, %v", n, err)
			}
			b := make([]byte, 1)
			client.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := client.Read(b); err != nil || b[0] != 'x' {
				t.Fatalf("read %q, %v", b, err)
			}
			if err := rawShutdown(nfd, unix.SHUT_WR); err != nil {
				t.Fatal(err)
			}
			if _, err := client.Read(b); err == nil {
				t.Fatal("no end of stream after shutdown")
			}
		})
	}
}
