package procnet

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/tlsalpn/tlsalpn/procnet/procnettest"
)

func TestParseProcAddr(t *testing.T) {
	tests := []struct{ in, want string }{
		{"0.0.0.0:443", "0.0.0.0:443"},
		{"127.0.0.1:80", "127.0.0.1:80"},
		{"192.0.2.10:8443", "192.0.2.10:8443"},
		{"[::]:443", "[::]:443"},
		{"[::1]:443", "[::1]:443"},
		{"[2001:db8::7]:65535", "[2001:db8::7]:65535"},
		{"[::ffff:192.0.2.1]:443", "192.0.2.1:443"}, // as tcp6 shows a v4-mapped bind: unmapped
	}
	for _, tc := range tests {
		hex := procnettest.Hex(netip.MustParseAddrPort(tc.in))
		got, err := parseProcAddr(hex)
		if want := netip.MustParseAddrPort(tc.want); err != nil || got != want {
			t.Errorf("parseProcAddr(%s) = %v, %v; want %v", hex, got, err, want)
		}
	}
	for _, bad := range []string{"", "0100007F", "0100007F:XYZ", "01007F:01BB", "0100007G:01BB"} {
		if _, err := parseProcAddr(bad); err == nil {
			t.Errorf("parseProcAddr(%q) succeeded", bad)
		}
	}
}

// listener is what Listeners reports for a socket on s.
func listener(s string, inode uint64, uid, pid, fd int, process string) Listener {
	ap := netip.MustParseAddrPort(s)
	return Listener{Address: ap.String(), Local: ap, Inode: inode, UID: uid, PID: pid, FD: fd, Process: process}
}

func TestListenersFakeProc(t *testing.T) {
	fp := procnettest.Proc{
		TCP: []procnettest.Socket{
			{Addr: "0.0.0.0:443", State: procnettest.Listen, Inode: 111},
			{Addr: "127.0.0.1:80", State: procnettest.Listen, UID: 33, Inode: 222},
			{Addr: "192.0.2.10:443", State: procnettest.Established, Inode: 444}, // not a listener
			{Addr: "127.0.0.1:8080", State: procnettest.Listen, UID: 1000, Inode: 555},
		},
		TCP6: []procnettest.Socket{
			{Addr: "[::]:443", State: procnettest.Listen, Inode: 333},
			{Addr: "[::ffff:127.0.0.1]:8443", State: procnettest.Listen, Inode: 666},
		},
		Procs: map[int]procnettest.Process{
			812:  {Comm: "nginx", FDs: map[int]uint64{6: 111, 7: 333}},
			900:  {Comm: "sshd"},
			1234: {Comm: "haproxy", FDs: map[int]uint64{12: 555, 13: 666}},
			1235: {Comm: "haproxy", FDs: map[int]uint64{12: 555}}, // a child sharing it: pid 1234 is found first
		},
	}
	root := fp.Write(t)
	tests := []struct {
		port int
		want []Listener
	}{
		{443, []Listener{
			listener("0.0.0.0:443", 111, 0, 812, 6, "nginx"),
			listener("[::]:443", 333, 0, 812, 7, "nginx"),
		}},
		{80, []Listener{listener("127.0.0.1:80", 222, 33, 0, 0, "")}},
		{8080, []Listener{listener("127.0.0.1:8080", 555, 1000, 1234, 12, "haproxy")}},
		{8443, []Listener{listener("127.0.0.1:8443", 666, 0, 1234, 13, "haproxy")}},
		{22, nil},
	}
	for _, tc := range tests {
		got, err := Listeners(root, tc.port)
		if err != nil {
			t.Fatalf("port %d: %v", tc.port, err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("port %d: got %+v\nwant %+v", tc.port, got, tc.want)
		}
	}

	// Without IPv6 there is no tcp6: fine. Without either: an error.
	v4only := procnettest.Proc{TCP: fp.TCP, Procs: fp.Procs, NoTCP6: true}.Write(t)
	if got, err := Listeners(v4only, 443); err != nil || len(got) != 1 {
		t.Errorf("no tcp6: got %v, %v; want the IPv4 listener", got, err)
	}
	if _, err := Listeners(t.TempDir(), 443); err == nil || !strings.Contains(err.Error(), "is procfs mounted") {
		t.Errorf("no /proc/net at all: error %v", err)
	}
}

func TestListenersOn(t *testing.T) {
	l := procnettest.Listen
	fp := procnettest.Proc{
		TCP: []procnettest.Socket{
			{Addr: "192.0.2.10:443", State: l, Inode: 3},
			{Addr: "0.0.0.0:443", State: l, Inode: 1},
			{Addr: "127.0.0.1:443", State: l, Inode: 2},
			{Addr: "127.0.0.1:80", State: l, Inode: 4},
			{Addr: "127.0.0.1:443", State: procnettest.Established, Inode: 9},
		},
		TCP6: []procnettest.Socket{
			{Addr: "[::1]:443", State: l, Inode: 6},
			{Addr: "[::]:443", State: l, Inode: 5},
			{Addr: "[2001:db8::7]:443", State: l, Inode: 7},
			{Addr: "[::ffff:192.0.2.20]:443", State: l, Inode: 8},
		},
		Procs: map[int]procnettest.Process{
			812: {Comm: "nginx", FDs: map[int]uint64{6: 1, 7: 5}},
			900: {Comm: "haproxy", FDs: map[int]uint64{3: 2}},
		},
	}
	root := fp.Write(t)
	tests := []struct {
		name string
		ap   string
		want []uint64 // inodes, in order
	}{
		{"v4 exact, then 0.0.0.0, then ::", "127.0.0.1:443", []uint64{2, 1, 5}},
		{"v4 exact, other address", "192.0.2.10:443", []uint64{3, 1, 5}},
		{"v4 wildcards only", "192.0.2.99:443", []uint64{1, 5}},
		{"v4-mapped ap is IPv4", "[::ffff:127.0.0.1]:443", []uint64{2, 1, 5}},
		{"v4-mapped bind in tcp6 is IPv4", "192.0.2.20:443", []uint64{8, 1, 5}},
		{"v6 exact, then ::, not 0.0.0.0", "[::1]:443", []uint64{6, 5}},
		{"v6 wildcard only", "[2001:db8::8]:443", []uint64{5}},
		{"zone ignored", "[fe80::1%eth0]:443", []uint64{5}},
		{"other port", "127.0.0.1:8443", nil},
		{"other port, one listener", "127.0.0.1:80", []uint64{4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ListenersOn(root, netip.MustParseAddrPort(tc.ap))
			if err != nil {
				t.Fatal(err)
			}
			var inodes []uint64
			for _, l := range got {
				inodes = append(inodes, l.Inode)
			}
			if !slices.Equal(inodes, tc.want) {
				t.Errorf("ListenersOn(%s): inodes %v, want %v (%+v)", tc.ap, inodes, tc.want, got)
			}
		})
	}

	got, err := ListenersOn(root, netip.MustParseAddrPort("127.0.0.1:443"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Listener{
		listener("127.0.0.1:443", 2, 0, 900, 3, "haproxy"),
		listener("0.0.0.0:443", 1, 0, 812, 6, "nginx"),
		listener("[::]:443", 5, 0, 812, 7, "nginx"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}

	v4only := procnettest.Proc{TCP: fp.TCP, NoTCP6: true}.Write(t)
	if got, err := ListenersOn(v4only, netip.MustParseAddrPort("127.0.0.1:443")); err != nil || len(got) != 2 {
		t.Errorf("no tcp6: got %+v, %v; want 2", got, err)
	}
	if _, err := ListenersOn(t.TempDir(), netip.MustParseAddrPort("127.0.0.1:443")); err == nil {
		t.Error("no /proc/net at all: no error")
	}
	if _, err := ListenersOn(root, netip.AddrPort{}); err == nil {
		t.Error("zero AddrPort: no error")
	}
}

// listenSelf listens on addr (loopback) and returns what Listeners should
// report for it, but the inode: this process, and the descriptor number
// the listener really has (read through Control, as File would dup it).
func listenSelf(t *testing.T, network, addr string) Listener {
	t.Helper()
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp: not Linux")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		if network == "tcp6" {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		t.Fatal(err)
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	return Listener{Address: ap.String(), Local: ap, UID: os.Getuid(), PID: os.Getpid(), FD: fd, Process: strings.TrimSpace(string(comm))}
}

// TestListenersFindsItself: the real /proc shows this test process
// holding a loopback listener, by name and descriptor.
func TestListenersFindsItself(t *testing.T) {
	want := listenSelf(t, "tcp", "127.0.0.1:0")
	got, err := Listeners("", int(want.Local.Port()))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range got {
		if l.Inode == 0 {
			t.Errorf("no inode: %+v", l)
		}
		l.Inode = 0
		if l == want {
			return
		}
	}
	t.Fatalf("Listeners(%d) = %+v; want one like %+v", want.Local.Port(), got, want)
}

// TestListenersOnFindsItself: ListenersOn finds this process's loopback
// listener first for its own address, and not for another address.
func TestListenersOnFindsItself(t *testing.T) {
	tests := []struct{ network, addr, other string }{
		{"tcp4", "127.0.0.1:0", "127.0.0.2"},
		{"tcp6", "[::1]:0", "2001:db8::1"},
	}
	for _, tc := range tests {
		t.Run(tc.network, func(t *testing.T) {
			want := listenSelf(t, tc.network, tc.addr)
			got, err := ListenersOn("", want.Local)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 {
				t.Fatalf("ListenersOn(%s): none", want.Local)
			}
			first := got[0]
			first.Inode = 0
			if first != want {
				t.Fatalf("ListenersOn(%s) = %+v; want first one like %+v", want.Local, got, want)
			}
			other := netip.AddrPortFrom(netip.MustParseAddr(tc.other), want.Local.Port())
			others, err := ListenersOn("", other)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range others {
				if l.Inode == got[0].Inode {
					t.Errorf("ListenersOn(%s) has this process's listener on %s: %+v", other, want.Local, l)
				}
			}
		})
	}
}

func TestListenerString(t *testing.T) {
	for _, tc := range []struct {
		l          Listener
		owner, str string
	}{
		{Listener{Address: "127.0.0.1:8443", PID: 812, Process: "nginx"}, "nginx (pid 812)", "127.0.0.1:8443 held by nginx (pid 812)"},
		{Listener{Address: "[::1]:8443", UID: 33}, "an unknown process (uid 33)", "[::1]:8443 held by an unknown process (uid 33)"},
	} {
		if got := tc.l.Owner(); got != tc.owner {
			t.Errorf("Owner(%+v) = %q; want %q", tc.l, got, tc.owner)
		}
		if got := tc.l.String(); got != tc.str {
			t.Errorf("String(%+v) = %q; want %q", tc.l, got, tc.str)
		}
	}
}
