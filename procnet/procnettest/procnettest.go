// Package procnettest writes fake procfs trees, as package procnet reads
// them, for tests of code that asks who listens on a port: the tree is a
// temporary directory to pass as procRoot.
package procnettest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Socket states as /proc/net/tcp prints them.
const (
	Listen      = "0A" // TCP_LISTEN
	Established = "01" // TCP_ESTABLISHED
)

// Socket is one line of a fake /proc/net/tcp or /proc/net/tcp6.
type Socket struct {
	Addr  string // local ip:port, as netip.ParseAddrPort takes it
	State string // Listen, Established, ...
	UID   int
	Inode uint64
}

// Process is one fake /proc/PID: its comm and its fd table, each entry a
// symlink "socket:[INODE]" named after the descriptor number. Descriptor
// 0 is a symlink to /dev/null unless FDs says otherwise.
type Process struct {
	Comm string
	FDs  map[int]uint64 // descriptor number -> socket inode
}

// Proc is a fake procfs: net/tcp, net/tcp6 and the processes.
type Proc struct {
	TCP, TCP6 []Socket
	Procs     map[int]Process // by PID
	NoTCP6    bool            // leave net/tcp6 out, as on a host without IPv6
}

// Write builds p in a new temporary directory of t and returns its path.
// It also writes a directory "self", which is not a PID, as /proc has.
func (p Proc) Write(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "net"), 0o755))
	table := func(name string, socks []Socket) {
		var b strings.Builder
		b.WriteString("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
		for i, s := range socks {
			ap, err := netip.ParseAddrPort(s.Addr)
			must(err)
			remote := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
			if ap.Addr().Is6() {
				remote = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
			}
			fmt.Fprintf(&b, "%4d: %s %s %s 00000000:00000000 00:00000000 00000000 %5d        0 %d 1 0000000000000000 100 0 0 10 0\n",
				i, Hex(ap), Hex(remote), s.State, s.UID, s.Inode)
		}
		must(os.WriteFile(filepath.Join(root, "net", name), []byte(b.String()), 0o644))
	}
	table("tcp", p.TCP)
	if !p.NoTCP6 {
		table("tcp6", p.TCP6)
	}
	for pid, proc := range p.Procs {
		dir := filepath.Join(root, strconv.Itoa(pid))
		must(os.MkdirAll(filepath.Join(dir, "fd"), 0o755))
		must(os.WriteFile(filepath.Join(dir, "comm"), []byte(proc.Comm+"\n"), 0o644))
		if _, ok := proc.FDs[0]; !ok {
			must(os.Symlink("/dev/null", filepath.Join(dir, "fd", "0")))
		}
		for fd, ino := range proc.FDs {
			must(os.Symlink(fmt.Sprintf("socket:[%d]", ino), filepath.Join(dir, "fd", strconv.Itoa(fd))))
		}
	}
	must(os.MkdirAll(filepath.Join(root, "self"), 0o755)) // not a pid: skipped
	return root
}

// Hex writes ap as the kernel does in /proc/net/tcp{,6}: the address as
// 32-bit words in host byte order, each %08X (8 digits for IPv4, 32 for
// IPv6, IPv4-mapped included), then ":" and the port as %04X.
func Hex(ap netip.AddrPort) string {
	raw := ap.Addr().AsSlice()
	var b strings.Builder
	for i := 0; i < len(raw); i += 4 {
		fmt.Fprintf(&b, "%08X", binary.NativeEndian.Uint32(raw[i:]))
	}
	return fmt.Sprintf("%s:%04X", b.String(), ap.Port())
}
