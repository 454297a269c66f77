// Package procnet reads the TCP sockets listening on this host, and the
// processes holding them, from procfs. Linux only in practice; elsewhere
// the files are missing and Listeners says so.
//
// Addresses are read from procRoot/net/tcp and procRoot/net/tcp6 and
// unmapped: a socket in tcp6 bound to an IPv4-mapped address
// (::ffff:192.0.2.1) is reported as the IPv4 address (192.0.2.1), because
// that is what it accepts connections on: IPv4 ones only.
package procnet

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Listener is a TCP socket in LISTEN state on this host, with the process
// that holds it when /proc tells (another user's process needs root).
type Listener struct {
	Address string `json:"address"` // ip:port it is bound to: Local.String()
	Inode   uint64 `json:"inode"`
	UID     int    `json:"uid"`
	PID     int    `json:"pid,omitempty"`
	Process string `json:"process,omitempty"` // /proc/PID/comm

	// Local is Address parsed, IPv4-mapped addresses unmapped. JSON has
	// Address, which says the same.
	Local netip.AddrPort `json:"-"`
	// FD is the descriptor number, in process PID's fd table, that refers
	// to the socket (the name of the /proc/PID/fd/N symlink); 0 when PID
	// is 0. With pidfd_getfd(2) it lets a process take the socket over.
	FD int `json:"-"`
}

// Owner names the process holding the socket for people: "nginx (pid
// 812)", or "an unknown process (uid 33)" when /proc does not say.
func (l Listener) Owner() string {
	if l.Process != "" {
		return fmt.Sprintf("%s (pid %d)", l.Process, l.PID)
	}
	return fmt.Sprintf("an unknown process (uid %d)", l.UID)
}

// String is the socket and its owner: "127.0.0.1:8443 held by nginx (pid 812)".
func (l Listener) String() string { return l.Address + " held by " + l.Owner() }

// Listeners returns the TCP sockets listening on port, from
// procRoot/net/tcp and procRoot/net/tcp6 ("" means "/proc"), each with the
// process holding it, found through the procRoot/PID/fd symlinks
// "socket:[INODE]". Processes whose fd directory cannot be read (another
// user's, without root) are left out: their sockets have no PID. When a
// socket is in several processes' fd tables (inherited across fork), the
// first process found is reported.
func Listeners(procRoot string, port int) ([]Listener, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	out, err := readTables(procRoot, port)
	if err != nil || len(out) == 0 {
		return nil, err
	}
	setOwners(procRoot, out)
	return out, nil
}

// ListenersOn returns the LISTEN sockets that a TCP connection to ap would
// be accepted by, as Listeners finds them: those on ap's port bound to
// ap's address exactly, then those bound to the unspecified address of its
// family (0.0.0.0 or ::), then, for an IPv4 ap, those bound to ::, which
// take IPv4 too unless IPV6_V6ONLY is set, which /proc does not show. The
// kernel hands a connection to the most specific of these; the first
// Listener is that one unless the :: ones are IPv6-only.
//
// ap is compared as procnet reads addresses: an IPv4-mapped ap is taken as
// its IPv4 address (a connection to it is an IPv4 one), and a zone is
// ignored, since /proc does not show the interface a socket is bound to.
func ListenersOn(procRoot string, ap netip.AddrPort) ([]Listener, error) {
	if !ap.IsValid() {
		return nil, fmt.Errorf("listeners on %v: not an address and port", ap)
	}
	if procRoot == "" {
		procRoot = "/proc"
	}
	all, err := readTables(procRoot, int(ap.Port()))
	if err != nil || len(all) == 0 {
		return nil, err
	}
	a := ap.Addr().Unmap().WithZone("")
	wildcard := netip.IPv6Unspecified()
	if a.Is4() {
		wildcard = netip.IPv4Unspecified()
	}
	var exact, family, any6 []Listener
	for _, l := range all {
		switch la := l.Local.Addr(); {
		case la == a:
			exact = append(exact, l)
		case la == wildcard:
			family = append(family, l)
		case a.Is4() && la == netip.IPv6Unspecified():
			any6 = append(any6, l)
		}
	}
	out := append(append(exact, family...), any6...)
	if len(out) == 0 {
		return nil, nil
	}
	setOwners(procRoot, out)
	return out, nil
}

// readTables reads the LISTEN sockets on port from both tables, without
// their owners.
func readTables(procRoot string, port int) ([]Listener, error) {
	var out []Listener
	found := false
	for _, f := range []string{"tcp", "tcp6"} {
		ls, err := parseProcNet(filepath.Join(procRoot, "net", f), port)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6, or no IPv4
		}
		if err != nil {
			return nil, err
		}
		found = true
		out = append(out, ls...)
	}
	if !found {
		return nil, fmt.Errorf("neither %s nor %s exists: is procfs mounted (Linux only)?",
			filepath.Join(procRoot, "net", "tcp"), filepath.Join(procRoot, "net", "tcp6"))
	}
	return out, nil
}

// setOwners fills in PID, FD and Process of the Listeners whose owner is
// found.
func setOwners(procRoot string, ls []Listener) {
	owners := socketOwners(procRoot, ls)
	for i := range ls {
		if o, ok := owners[ls[i].Inode]; ok {
			ls[i].PID, ls[i].FD = o.pid, o.fd
			if b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(o.pid), "comm")); err == nil {
				ls[i].Process = strings.TrimSpace(string(b))
			}
		}
	}
}

// tcpListen is the state TCP_LISTEN in /proc/net/tcp.
const tcpListen = "0A"

// parseProcNet reads the LISTEN sockets on port from one /proc/net/tcp{,6}
// file, whose columns are: sl local_address rem_address st tx_queue:rx_queue
// tr:tm->when retrnsmt uid timeout inode ...
func parseProcNet(file string, port int) ([]Listener, error) {
	fh, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	var out []Listener
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != tcpListen {
			continue
		}
		ap, err := parseProcAddr(fields[1])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		if int(ap.Port()) != port {
			continue
		}
		uid, _ := strconv.Atoi(fields[7])
		inode, _ := strconv.ParseUint(fields[9], 10, 64)
		out = append(out, Listener{Address: ap.String(), Local: ap, UID: uid, Inode: inode})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	return out, nil
}

// parseProcAddr parses "0100007F:01BB" or the 32-digit IPv6 form. The
// kernel prints the address as 32-bit words in host byte order, each with
// %08X, and the port in network order. IPv4-mapped addresses are unmapped.
func parseProcAddr(s string) (netip.AddrPort, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok || (len(hexAddr) != 8 && len(hexAddr) != 32) {
		return netip.AddrPort{}, fmt.Errorf("bad socket address %q", s)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in %q", s)
	}
	raw := make([]byte, len(hexAddr)/2)
	for i := 0; i < len(hexAddr); i += 8 {
		w, err := strconv.ParseUint(hexAddr[i:i+8], 16, 32)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("bad address in %q", s)
		}
		binary.NativeEndian.PutUint32(raw[i/2:], uint32(w))
	}
	a, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
}

// owner is where a socket was found: process pid's descriptor fd.
type owner struct{ pid, fd int }

// socketOwners maps the inodes of ls to the first process, and descriptor
// in it, found holding them.
func socketOwners(procRoot string, ls []Listener) map[uint64]owner {
	want := map[string]uint64{}
	for _, l := range ls {
		if l.Inode != 0 {
			want["socket:["+strconv.FormatUint(l.Inode, 10)+"]"] = l.Inode
		}
	}
	owners := map[uint64]owner{}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return owners
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		fdDir := filepath.Join(procRoot, e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue // gone, or another user's
		}
		for _, fd := range fds {
			n, err := strconv.Atoi(fd.Name())
			if err != nil {
				continue
			}
			target, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			if inode, ok := want[target]; ok {
				if _, dup := owners[inode]; !dup {
					owners[inode] = owner{pid: pid, fd: n}
				}
			}
		}
		if len(owners) == len(want) {
			break
		}
	}
	return owners
}
