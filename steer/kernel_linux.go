//go:build linux

package steer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/tlsalpn/tlsalpn/procnet"
)

// Offsets into struct bpf_sk_lookup (include/uapi/linux/bpf.h).
const (
	offFamily    = 8
	offProtocol  = 12
	offLocalIP4  = 40
	offLocalIP6  = 44
	offLocalPort = 60 // host byte order
)

const skPass = 1

// kernel is the BPF side: the sk_lookup program, its link to this
// network namespace, the one-entry sockmap with the backend's listening
// socket, the one-entry array that says whether to steer, and the one
// that counts the connections steered.
type kernel struct {
	sockets *ebpf.Map // SOCKMAP, key 0: the backend's listening socket
	state   *ebpf.Map // ARRAY, key 0: 1 steer, 0 held
	count   *ebpf.Map // ARRAY, key 0: connections handed to the backend's socket
	prog    *ebpf.Program

	mu   sync.Mutex
	link link.Link // nil once detached
}

func unsupported(what string, err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOSYS) ||
		errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("steer: %s: %w (needs Linux 5.9+ and CAP_BPF with CAP_NET_ADMIN): %w", what, ErrUnsupported, err)
	}
	return fmt.Errorf("steer: %s: %w", what, err)
}

func loadKernel(front netip.AddrPort) (*kernel, error) {
	k := &kernel{}
	var err error
	k.sockets, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "tlsalpn_backend", Type: ebpf.SockMap, KeySize: 4, ValueSize: 8, MaxEntries: 1,
	})
	if err != nil {
		return nil, unsupported("creating sockmap", err)
	}
	k.state, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "tlsalpn_steer", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1,
	})
	if err != nil {
		k.close()
		return nil, unsupported("creating state map", err)
	}
	k.count, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "tlsalpn_steered", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1,
	})
	if err != nil {
		k.close()
		return nil, unsupported("creating counter map", err)
	}
	k.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "tlsalpn_steer",
		Type:         ebpf.SkLookup,
		AttachType:   ebpf.AttachSkLookup,
		Instructions: program(front, k.state.FD(), k.sockets.FD(), k.count.FD()),
		License:      "GPL",
	})
	if err != nil {
		k.close()
		return nil, unsupported("loading sk_lookup program", err)
	}
	ns, err := os.Open("/proc/self/ns/net")
	if err != nil {
		k.close()
		return nil, unsupported("opening this network namespace", err)
	}
	defer ns.Close()
	k.link, err = link.AttachNetNs(int(ns.Fd()), k.prog)
	if err != nil {
		k.close()
		return nil, unsupported("attaching sk_lookup program", err)
	}
	return k, nil
}

// program returns, in BPF assembly:
//
//	if protocol != TCP || local_port != front.port || !address matches: pass
//	if !state[0]: pass
//	sk = sockets[0]; if !sk: pass
//	r = bpf_sk_assign(ctx, sk, 0); bpf_sk_release(sk)
//	if r == 0: count[0] += 1 (atomically)
//	pass
//
// Every path passes: a connection the program does not place (held, no
// backend socket, or the assignment refused, e.g. an IPv6 connection for
// an IPv4-only backend) takes the kernel's normal lookup to the front
// door's own listener. Nothing is ever dropped.
func program(front netip.AddrPort, stateFD, socketsFD, countFD int) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, offProtocol, asm.Word),
		asm.JNE.Imm(asm.R2, unix.IPPROTO_TCP, "pass"),
		asm.LoadMem(asm.R2, asm.R6, offLocalPort, asm.Word),
		asm.JNE.Imm(asm.R2, int32(front.Port()), "pass"),
	}
	a := front.Addr().Unmap()
	switch {
	case a.Is6() && a.IsUnspecified():
		// Go's ":443": both families, any local address.
	case a.Is4() && a.IsUnspecified():
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.R6, offFamily, asm.Word),
			asm.JNE.Imm(asm.R2, unix.AF_INET, "pass"))
	case a.Is4():
		b := a.As4()
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.R6, offFamily, asm.Word),
			asm.JNE.Imm(asm.R2, unix.AF_INET, "pass"),
			asm.LoadMem(asm.R2, asm.R6, offLocalIP4, asm.Word),
			asm.LoadImm(asm.R3, int64(binary.NativeEndian.Uint32(b[:])), asm.DWord),
			asm.JNE.Reg(asm.R2, asm.R3, "pass"))
	default:
		b := a.As16()
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.R6, offFamily, asm.Word),
			asm.JNE.Imm(asm.R2, unix.AF_INET6, "pass"))
		for i := 0; i < 16; i += 4 {
			insns = append(insns,
				asm.LoadMem(asm.R2, asm.R6, int16(offLocalIP6+i), asm.Word),
				asm.LoadImm(asm.R3, int64(binary.NativeEndian.Uint32(b[i:i+4])), asm.DWord),
				asm.JNE.Reg(asm.R2, asm.R3, "pass"))
		}
	}
	insns = append(insns,
		// state[0]
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, stateFD),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R2, asm.R0, 0, asm.Word),
		asm.JEq.Imm(asm.R2, 0, "pass"),
		// sockets[0], a reference the program must release
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, socketsFD),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnSkAssign.Call(),
		asm.Mov.Reg(asm.R8, asm.R0),
		asm.Mov.Reg(asm.R1, asm.R7),
		asm.FnSkRelease.Call(),
		// count[0] += 1 when the backend's socket took it
		asm.JNE.Imm(asm.R8, 0, "pass"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, countFD),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
	)
	return insns
}

// grab takes the listening socket a connection to backend would reach
// from the process holding it, and puts it in the sockmap. The map does
// not keep the socket open: the descriptor taken is closed here, and the
// kernel removes the socket from the map when its owner closes it.
func (k *kernel) grab(procRoot string, backend netip.AddrPort) (procnet.Listener, error) {
	ls, err := procnet.ListenersOn(procRoot, backend)
	if err != nil {
		return procnet.Listener{}, fmt.Errorf("%w: %w", ErrNoBackend, err)
	}
	if len(ls) == 0 {
		return procnet.Listener{}, fmt.Errorf("%w: nothing listens on %v", ErrNoBackend, backend)
	}
	var errs []error
	for _, l := range ls {
		if err := k.take(l); err != nil {
			errs = append(errs, err)
			continue
		}
		return l, nil
	}
	return procnet.Listener{}, fmt.Errorf("%w: %w", ErrNoBackend, errors.Join(errs...))
}

func (k *kernel) take(l procnet.Listener) error {
	if l.PID == 0 {
		return fmt.Errorf("%s: its owner is not visible here (uid %d; run as root)", l.Address, l.UID)
	}
	pidfd, err := unix.PidfdOpen(l.PID, 0)
	if err != nil {
		return fmt.Errorf("%s: pidfd_open(%d): %w", l.Address, l.PID, err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, l.FD, 0)
	if err != nil {
		hint := ""
		if errors.Is(err, unix.EPERM) {
			hint = " (taking another process's socket needs root or CAP_SYS_PTRACE)"
		}
		return fmt.Errorf("%s: pidfd_getfd(pid %d, fd %d): %w%s", l.Address, l.PID, l.FD, err, hint)
	}
	defer unix.Close(fd)
	// The fd number may have been reused since /proc was read.
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("%s: fstat: %w", l.Address, err)
	}
	if st.Ino != l.Inode {
		return fmt.Errorf("%s: pid %d's fd %d is no longer the listening socket", l.Address, l.PID, l.FD)
	}
	if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc != 1 {
		return fmt.Errorf("%s: pid %d's fd %d is not listening", l.Address, l.PID, l.FD)
	}
	if proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err == nil && proto == unix.IPPROTO_MPTCP {
		// A sockmap takes only TCP sockets.
		return fmt.Errorf("%s: pid %d listens with Multipath TCP, which cannot be steered (a Go 1.24+ server does by default; GODEBUG=multipathtcp=0 turns it off)", l.Address, l.PID)
	}
	if err := k.sockets.Update(uint32(0), uint64(fd), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("%s: adding to sockmap: %w", l.Address, err)
	}
	return nil
}

// steered returns how many connections the program handed to the
// backend's socket; 0 if the count cannot be read.
func (k *kernel) steered() uint64 {
	var n uint64
	if k.count == nil || k.count.Lookup(uint32(0), &n) != nil {
		return 0
	}
	return n
}

// present reports whether the sockmap holds a socket.
func (k *kernel) present() bool {
	var cookie uint64
	return k.sockets.Lookup(uint32(0), &cookie) == nil
}

func (k *kernel) setSteering(on bool) error {
	v := uint32(0)
	if on {
		v = 1
	}
	if err := k.state.Update(uint32(0), v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("setting steering %v: %w", on, err)
	}
	return nil
}

// detach removes the program from the namespace.
func (k *kernel) detach() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.link == nil {
		return nil
	}
	err := k.link.Close()
	k.link = nil
	return err
}

func (k *kernel) close() error {
	err := k.detach()
	if k.prog != nil {
		err = errors.Join(err, k.prog.Close())
	}
	for _, m := range []*ebpf.Map{k.sockets, k.state, k.count} {
		if m != nil {
			err = errors.Join(err, m.Close())
		}
	}
	return err
}
