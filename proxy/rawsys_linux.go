package proxy

import (
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The event loops' system calls, made without telling the runtime that the
// goroutine enters one (RawSyscall). Every socket of a loop is
// non-blocking, so each call returns at once. Told, the runtime's monitor
// finds the loop's P in a system call at nearly every look, keeps looking
// every 20 µs (strace under keep-alive load: 2,800 nanosleeps a second)
// and hands the P to another thread, which the loop must wake to get it
// back: under new connections, a quarter more context switches than
// HAProxy's, spread over four threads. Only the loop's long wait is told
// (see relayLoop.wait), so that an idle loop gives its P back.
//
// Socket addresses are IPv4 and IPv6 only (the loops take TCP listeners
// and dial addresses, never Unix sockets). An IPv6 zone is not kept:
// naming it would take a system call more per connection, and a route's
// source ranges and a PROXY header have no use for it.

// readNow and writeNow are recvfrom and sendto, as HAProxy's are, not read
// and write: the socket calls skip the file layer's checks and
// notifications, and MSG_NOSIGNAL spares a signal per write to a
// connection already reset.
func readNow(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func writeNow(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
		unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawAccept4 accepts a connection, non-blocking and close-on-exec, and
// gives its peer's address.
func rawAccept4(fd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	l := uint32(unsafe.Sizeof(rsa))
	nfd, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&l)),
		syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(nfd), rawAddrPort(&rsa), nil
}

// rawGetsockname is the local address of a socket.
func rawGetsockname(fd int) (netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	l := uint32(unsafe.Sizeof(rsa))
	_, _, e := syscall.RawSyscall(syscall.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&l)))
	if e != 0 {
		return netip.AddrPort{}, e
	}
	return rawAddrPort(&rsa), nil
}

// rawAddrPort reads an IPv4 or IPv6 socket address; anything else is the
// zero AddrPort.
func rawAddrPort(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), networkPort(sa.Port))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), networkPort(sa.Port))
	}
	return netip.AddrPort{}
}

// networkPort is a port as a socket address holds it: in network order
// in memory, whatever the machine's.
func networkPort(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// rawSocket makes a non-blocking, close-on-exec TCP socket for ap's family.
func rawSocket(ap netip.AddrPort) (int, error) {
	family := unix.AF_INET6
	if ap.Addr().Is4() {
		family = unix.AF_INET
	}
	fd, _, e := syscall.RawSyscall(syscall.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// rawConnect starts connecting a socket from rawSocket to ap; a
// non-blocking socket answers EINPROGRESS.
func rawConnect(fd int, ap netip.AddrPort) error {
	var (
		ptr unsafe.Pointer
		l   uintptr
		sa4 unix.RawSockaddrInet4
		sa6 unix.RawSockaddrInet6
	)
	if ap.Addr().Is4() {
		sa4.Family = unix.AF_INET
		sa4.Port = networkPort(ap.Port())
		sa4.Addr = ap.Addr().As4()
		ptr, l = unsafe.Pointer(&sa4), unsafe.Sizeof(sa4)
	} else {
		sa6.Family = unix.AF_INET6
		sa6.Port = networkPort(ap.Port())
		sa6.Addr = ap.Addr().As16()
		ptr, l = unsafe.Pointer(&sa6), unsafe.Sizeof(sa6)
	}
	_, _, e := syscall.RawSyscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(ptr), l)
	if e != 0 {
		return e
	}
	return nil
}

func rawSetsockoptInt(fd, level, opt, value int) error {
	v := int32(value)
	_, _, e := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), 4, 0)
	if e != 0 {
		return e
	}
	return nil
}

func rawGetsockoptInt(fd, level, opt int) (int, error) {
	var v int32
	l := uint32(4)
	_, _, e := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return int(v), nil
}

func rawEpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func rawShutdown(fd, how int) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0)
	if e != 0 {
		return e
	}
	return nil
}

// rawClose closes a socket of the loop. Without SO_LINGER, which the loop
// never sets, close does not wait.
func rawClose(fd int) {
	syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)
}
