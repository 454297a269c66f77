//go:build linux

// Package sockmap forwards an established pair of TCP sockets inside the
// kernel with a BPF sockhash and an sk_skb verdict program, so that bytes
// go from one socket's receive queue to the other's send queue without a
// read(2) and a write(2) per message in user space.
//
// It is experimental. The kernel moves the bytes; user space only waits
// for end of stream or an error on either socket, makes sure everything
// the kernel redirected has reached the other socket before it passes a
// half-close on, and enforces the idle timeout by watching TCP_INFO
// counters, since it no longer sees the bytes.
//
// Two maps are used. peers maps a socket's cookie to the socket its bytes
// go to; it has no program, so a socket in it is only a redirect target.
// hooks holds the sockets whose received bytes the verdict program
// handles. A pair is entered into peers first and into hooks second, so
// that from the moment a socket is hooked its peer is already a target:
// no byte ever meets a missing entry, which the kernel would drop.
package sockmap

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// ErrUnsupported is wrapped by New's error when this process cannot use
// BPF sockmaps here (no privilege, kernel too old or built without them,
// system calls filtered); the caller then copies in user space.
var ErrUnsupported = errors.New("sockmap: in-kernel forwarding unsupported")

// ErrRefused is wrapped by Add's error when a pair cannot be forwarded
// in the kernel but nothing was changed, so the caller can still copy the
// pair in user space.
var ErrRefused = errors.New("sockmap: pair refused")

// MaxPairs is how many pairs one Forwarder can forward at once.
const MaxPairs = 1 << 16

// Forwarder owns the BPF maps and program. One serves any number of
// pairs (up to MaxPairs) from any goroutine.
type Forwarder struct {
	hooks *ebpf.Map
	peers *ebpf.Map
	prog  *ebpf.Program

	mu     sync.Mutex
	closed bool
}

// New loads the verdict program and creates the maps. Its error wraps
// ErrUnsupported when the kernel or the process's privileges do not allow
// it.
func New() (*Forwarder, error) {
	unsupported := func(what string, err error) error {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOSYS) ||
			errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("%s: %w: %w", what, ErrUnsupported, err)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	spec := func(name string) *ebpf.MapSpec {
		return &ebpf.MapSpec{
			Name:       name,
			Type:       ebpf.SockHash,
			KeySize:    8, // socket cookie
			ValueSize:  8, // fd in, cookie out
			MaxEntries: 2 * MaxPairs,
		}
	}
	peers, err := ebpf.NewMap(spec("tlsalpn_peers"))
	if err != nil {
		return nil, unsupported("creating sockhash", err)
	}
	hooks, err := ebpf.NewMap(spec("tlsalpn_hooks"))
	if err != nil {
		peers.Close()
		return nil, unsupported("creating sockhash", err)
	}
	// return sk_redirect_hash(skb, &peers, &cookie(skb), 0): egress of
	// the socket the cookie maps to, or drop if there is none (which the
	// ordering of map updates rules out).
	insns := asm.Instructions{
		// A FIN arrives as an skb without data. Redirected, it makes
		// the worker send zero bytes, which it takes for a broken pipe
		// (EPIPE on the peer, forwarding stopped). User space sees the
		// end of stream anyway and passes it on itself.
		asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // skb->len
		asm.JNE.Imm(asm.R2, 0, "data"),
		asm.Mov.Imm(asm.R0, 0), // SK_DROP
		asm.Return(),
		asm.Mov.Reg(asm.R6, asm.R1).WithSymbol("data"),
		asm.FnGetSocketCookie.Call(),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.LoadMapPtr(asm.R2, peers.FD()),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkRedirectHash.Call(),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "tlsalpn_fwd",
		Type:         ebpf.SkSKB,
		AttachType:   ebpf.AttachSkSKBVerdict,
		Instructions: insns,
		License:      "GPL",
	})
	if err != nil {
		peers.Close()
		hooks.Close()
		return nil, unsupported("loading sk_skb verdict program", err)
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target:  hooks.FD(),
		Program: prog,
		Attach:  ebpf.AttachSkSKBVerdict,
	}); err != nil {
		prog.Close()
		peers.Close()
		hooks.Close()
		return nil, unsupported("attaching sk_skb verdict program", err)
	}
	return &Forwarder{hooks: hooks, peers: peers, prog: prog}, nil
}

// Close detaches the program and frees the maps. Pairs still forwarded
// stop being forwarded (their sockets leave the maps); their Wait calls
// end only by their own events, so callers should close those first.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	err := link.RawDetachProgram(link.RawDetachProgramOptions{
		Target:  f.hooks.FD(),
		Program: f.prog,
		Attach:  ebpf.AttachSkSKBVerdict,
	})
	err = errors.Join(err, f.hooks.Close(), f.peers.Close(), f.prog.Close())
	if err != nil {
		return fmt.Errorf("closing sockmap forwarder: %w", err)
	}
	return nil
}

// entries counts the sockets in both maps: zero when no pair is
// forwarded.
func (f *Forwarder) entries() (int, error) {
	n := 0
	for _, m := range []*ebpf.Map{f.hooks, f.peers} {
		var key, next uint64
		var kp any // nil: first key
		for {
			err := m.NextKey(kp, &next)
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			if err != nil {
				return n, err
			}
			n++
			key = next
			kp = &key
			if n > 4*MaxPairs {
				return n, errors.New("sockmap: map iteration did not end")
			}
		}
	}
	return n, nil
}

// sockState is what Add reads of a socket before forwarding starts.
type sockState struct {
	cookie uint64
	// consumed is how many bytes (and SYN/FIN sequence numbers counted
	// in tcpi_bytes_received) user space had read before the socket was
	// hooked; everything received after is the kernel's to forward.
	consumed uint64
	// written is the count of bytes queued for sending (acked + still
	// in the send queue) before the peer's bytes started coming in.
	written uint64
}

func readState(fd int, wantEmpty bool) (sockState, error) {
	var s sockState
	var err error
	if s.cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE); err != nil {
		return s, fmt.Errorf("reading SO_COOKIE: %w", err)
	}
	// tcpi_bytes_received and FIONREAD are two reads; they are taken as a
	// consistent pair only when no byte arrived between them (nobody else
	// reads the socket now, so FIONREAD can only grow).
	for range 100 {
		q1, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		if err != nil {
			return s, fmt.Errorf("reading FIONREAD: %w", err)
		}
		if wantEmpty && q1 > 0 {
			// Part of an skb may have been read; the kernel would
			// forward the whole skb again.
			return s, fmt.Errorf("%w: %d bytes already queued", ErrRefused, q1)
		}
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return s, fmt.Errorf("reading TCP_INFO: %w", err)
		}
		q2, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		if err != nil {
			return s, fmt.Errorf("reading FIONREAD: %w", err)
		}
		if q1 != q2 {
			continue
		}
		s.consumed = info.Bytes_received - uint64(q1)
		s.written, err = writtenBytes(fd)
		return s, err
	}
	return s, fmt.Errorf("%w: receive queue kept growing", ErrRefused)
}

// writtenBytes is the number of bytes ever queued for sending on fd, up to
// a constant (acked bytes plus what is in the send queue). The two are
// read apart, so it retries until no ACK came in between.
func writtenBytes(fd int) (uint64, error) {
	for range 1000 {
		a, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return 0, fmt.Errorf("reading TCP_INFO: %w", err)
		}
		outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		if err != nil {
			return 0, fmt.Errorf("reading SIOCOUTQ: %w", err)
		}
		b, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return 0, fmt.Errorf("reading TCP_INFO: %w", err)
		}
		if a.Bytes_acked == b.Bytes_acked {
			return a.Bytes_acked + uint64(outq), nil
		}
	}
	return 0, errors.New("sockmap: send counters did not settle")
}

// Pair is a client and backend socket forwarded by the kernel.
type Pair struct {
	f               *Forwarder
	client, backend *net.TCPConn
	crc, brc        syscall.RawConn
	c, b            sockState

	removeOnce sync.Once
	removeErr  error
}

// Add starts forwarding between client and backend in the kernel. It must
// be called after everything user space writes to backend (a PROXY header,
// the replayed ClientHello) has been written, and before anything else
// reads either socket; backend must never have been read. Bytes the
// backend already sent are forwarded too, in order.
//
// An error wrapping ErrRefused means nothing changed: the client has bytes
// queued (possibly part of a segment user space read, which the kernel
// would send again), or a socket is no longer established. The caller
// then copies in user space. Any other error means the pair is in an
// unknown state and should be closed.
func (f *Forwarder) Add(client, backend *net.TCPConn) (*Pair, error) {
	p := &Pair{f: f, client: client, backend: backend}
	var err error
	if p.crc, err = client.SyscallConn(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	if p.brc, err = backend.SyscallConn(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	var addErr error
	cerr := p.crc.Control(func(cfd uintptr) {
		berr := p.brc.Control(func(bfd uintptr) {
			addErr = p.add(int(cfd), int(bfd))
		})
		if berr != nil {
			addErr = fmt.Errorf("%w: backend: %w", ErrRefused, berr)
		}
	})
	if cerr != nil {
		return nil, fmt.Errorf("%w: client: %w", ErrRefused, cerr)
	}
	if addErr != nil {
		return nil, addErr
	}
	return p, nil
}

func (p *Pair) add(cfd, bfd int) error {
	f := p.f
	var err error
	if p.c, err = readState(cfd, true); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if p.b, err = readState(bfd, false); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	undoPeers := func() {
		f.peers.Delete(p.c.cookie)
		f.peers.Delete(p.b.cookie)
	}
	// Targets first: a socket in peers only is not hooked, so nothing
	// moves yet and failure here leaves the pair as it was.
	if err := f.peers.Update(p.c.cookie, uint64(bfd), ebpf.UpdateNoExist); err != nil {
		return fmt.Errorf("%w: entering backend in peers: %w", ErrRefused, err)
	}
	if err := f.peers.Update(p.b.cookie, uint64(cfd), ebpf.UpdateNoExist); err != nil {
		undoPeers()
		return fmt.Errorf("%w: entering client in peers: %w", ErrRefused, err)
	}
	if err := f.hooks.Update(p.c.cookie, uint64(cfd), ebpf.UpdateNoExist); err != nil {
		undoPeers()
		return fmt.Errorf("%w: hooking client: %w", ErrRefused, err)
	}
	if err := f.hooks.Update(p.b.cookie, uint64(bfd), ebpf.UpdateNoExist); err != nil {
		// The client was hooked: bytes it received since went to the
		// backend's queue. Unhook, then see whether any did.
		f.hooks.Delete(p.c.cookie)
		undoPeers()
		if info, ierr := unix.GetsockoptTCPInfo(cfd, unix.IPPROTO_TCP, unix.TCP_INFO); ierr == nil && info.Bytes_received == p.c.consumed {
			return fmt.Errorf("%w: hooking backend: %w", ErrRefused, err)
		}
		return fmt.Errorf("sockmap: hooking backend after client bytes moved: %w", err)
	}
	return nil
}

// Remove takes both sockets out of the maps; the kernel stops forwarding
// and drops what it had redirected but not yet sent. It is safe to call
// more than once and after either socket was closed (closing a socket
// takes it out of the maps by itself).
func (p *Pair) Remove() error {
	p.removeOnce.Do(func() {
		var errs []error
		for _, del := range []struct {
			m   *ebpf.Map
			key uint64
		}{{p.f.hooks, p.c.cookie}, {p.f.hooks, p.b.cookie}, {p.f.peers, p.c.cookie}, {p.f.peers, p.b.cookie}} {
			if err := del.m.Delete(del.key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			p.removeErr = fmt.Errorf("removing pair from sockmap: %w", err)
		}
	})
	return p.removeErr
}
