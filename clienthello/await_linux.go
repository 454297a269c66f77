//go:build linux

package clienthello

import (
	"encoding/binary"
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// AwaitRecord waits, holding no buffer of its own, until conn has its
// first TLS record whole in the kernel's receive queue (or the read
// deadline passes), consuming nothing: it peeks (MSG_PEEK) at the record
// header and asks the kernel how much is queued (SIOCINQ). A client that
// sends its ClientHello a byte at a time, as a slowloris does, then costs
// a server that calls AwaitRecord before Read no user-space memory until
// it has sent it: only the kernel's socket buffer, which it pays anyway.
// Anything that is not a TLS record header ends the wait at once, for Read
// to refuse. A nil error does not promise a record: the Read that follows
// sees whatever came (or the end of the stream).
//
// AwaitRecord sets no deadline: set a read deadline on conn first. A conn
// that is not a socket (no syscall.Conn) returns at once, as on systems
// other than Linux, where the Read that follows holds its buffer from the
// first byte.
func AwaitRecord(conn net.Conn) error {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var opErr error
	err = rc.Read(func(fd uintptr) bool {
		var hdr [5]byte
		n, _, err := unix.Recvfrom(int(fd), hdr[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			return false // wait for bytes
		case err != nil:
			opErr = err
			return true
		case n == 0:
			return true // end of stream: the reader reports it
		case hdr[0] != recordTypeHandshake:
			return true // not TLS: the reader refuses it
		case n < len(hdr):
			return peerDone(int(fd)) // the header is not all here yet
		}
		need := len(hdr) + int(binary.BigEndian.Uint16(hdr[3:5]))
		queued, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		if err != nil || queued >= need {
			return true
		}
		// The kernel wakes us only when more bytes arrive (or the
		// client goes), so an unfinished record waits without spinning.
		return peerDone(int(fd))
	})
	if err != nil {
		return err
	}
	return opErr
}

// peerDone reports whether the client has closed or reset its side: the
// bytes it left queued hide the end of the stream from a peek, and no
// more will come to finish the record.
func peerDone(fd int) bool {
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
	n, err := unix.Poll(pfd, 0)
	return err != nil || (n > 0 && pfd[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0)
}
