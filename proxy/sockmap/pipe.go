//go:build linux

package sockmap

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// errUnexpectedData reports bytes that reached user space on a forwarded
// socket: the kernel did not redirect them, so their order relative to
// what it did redirect is lost.
var errUnexpectedData = errors.New("sockmap: bytes reached user space on a forwarded socket")

// Pipe forwards client↔backend in the kernel until both directions end,
// either side fails, or nothing moves for idle (0: no limit), then closes
// both. It is the in-kernel twin of proxy's pipe, called at the same
// point: after the caller wrote everything it writes to backend, before
// anyone read backend.
//
// handled is false when f is nil or the pair was refused with nothing
// changed (see Add); the caller then copies in user space, and still owns
// both connections. When handled is true both are closed on return, and
// err says why forwarding ended early (nil after both ends half-closed).
func Pipe(f *Forwarder, client, backend *net.TCPConn, idle time.Duration) (handled bool, err error) {
	if f == nil {
		return false, nil
	}
	p, err := f.Add(client, backend)
	if errors.Is(err, ErrRefused) {
		return false, err
	}
	if err == nil {
		err = p.Wait(idle)
	}
	client.Close()
	backend.Close()
	return true, err
}

// Wait waits until both directions have ended (each end's EOF passed on
// as a half-close once everything before it was delivered), either socket
// fails or is closed, or nothing moves for idle (0: no limit). On a
// failure or idle timeout it closes both connections. It always takes the
// pair out of the maps before it returns.
func (p *Pair) Wait(idle time.Duration) error {
	defer p.Remove()
	closeBoth := func() {
		p.client.Close()
		p.backend.Close()
	}
	errc := make(chan error, 2)
	go func() { errc <- p.half(p.client, p.crc, &p.c, p.backend, p.brc, &p.b, idle) }()
	go func() { errc <- p.half(p.backend, p.brc, &p.b, p.client, p.crc, &p.c, idle) }()

	var tick <-chan time.Time
	if idle > 0 {
		// Checking four times per idle period closes a silent pair
		// between idle and 1.25×idle after its last byte.
		t := time.NewTicker(max(idle/4, time.Millisecond))
		defer t.Stop()
		tick = t.C
	}
	var (
		first    error
		lastSeen uint64
		lastMove = time.Now()
	)
	for pending := 2; pending > 0; {
		select {
		case err := <-errc:
			pending--
			if err != nil && first == nil {
				first = err
				closeBoth()
			}
		case now := <-tick:
			if first != nil {
				continue
			}
			moved, err := p.progress()
			switch {
			case err != nil:
				first = err
				closeBoth()
			case moved != lastSeen:
				lastSeen, lastMove = moved, now
			case now.Sub(lastMove) >= idle:
				first = fmt.Errorf("sockmap: nothing moved for %v: %w", idle, os.ErrDeadlineExceeded)
				closeBoth()
			}
		}
	}
	return first
}

// progress is a number that changes whenever a byte is received or
// acknowledged on either socket.
func (p *Pair) progress() (uint64, error) {
	var sum uint64
	for _, rc := range []syscall.RawConn{p.crc, p.brc} {
		var ierr error
		err := rc.Control(func(fd uintptr) {
			var info *unix.TCPInfo
			info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
			if ierr == nil {
				sum += info.Bytes_received + info.Bytes_acked
			}
		})
		if err = errors.Join(err, ierr); err != nil {
			return 0, fmt.Errorf("sockmap: reading TCP_INFO: %w", err)
		}
	}
	return sum, nil
}

// half waits for src's end of stream, waits until the kernel has queued
// on dst every byte it took from src, then half-closes dst.
func (p *Pair) half(src *net.TCPConn, srcRC syscall.RawConn, s *sockState, dst *net.TCPConn, dstRC syscall.RawConn, d *sockState, idle time.Duration) error {
	// A read on a hooked socket first hands what is queued to the
	// verdict program, so this also forwards bytes that arrived before
	// the socket was hooked. It returns only at EOF or an error.
	var b [1]byte
	n, err := src.Read(b[:])
	if n > 0 {
		return errUnexpectedData
	}
	if !errors.Is(err, io.EOF) {
		return err
	}
	// tcpi_bytes_received now counts every byte of the stream plus one
	// for the FIN.
	var received uint64
	var ierr error
	if err := srcRC.Control(func(fd uintptr) {
		var info *unix.TCPInfo
		if info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); ierr == nil {
			received = info.Bytes_received
		}
	}); err != nil || ierr != nil {
		return fmt.Errorf("sockmap: reading TCP_INFO after EOF: %w", errors.Join(err, ierr))
	}
	want := received - 1 - s.consumed
	// The kernel's redirected bytes wait in dst's psock queue until a
	// worker moves them to dst's send queue; a FIN sent before that would
	// cut them off, and removing dst from the map would drop them.
	limit := idle
	if limit <= 0 {
		limit = time.Minute
	}
	var (
		last     uint64
		lastMove = time.Now()
		sleep    = 20 * time.Microsecond
	)
	for {
		var got uint64
		var werr error
		if err := dstRC.Control(func(fd uintptr) {
			var w uint64
			if w, werr = writtenBytes(int(fd)); werr == nil {
				got = w - d.written
			}
		}); err != nil || werr != nil {
			return fmt.Errorf("sockmap: reading send counters: %w", errors.Join(err, werr))
		}
		if got == want {
			break
		}
		if got > want {
			return fmt.Errorf("sockmap: %d bytes queued to the peer but only %d received", got, want)
		}
		if got != last {
			last, lastMove = got, time.Now()
		} else if time.Since(lastMove) > limit {
			return fmt.Errorf("sockmap: %d of %d bytes reached the peer before EOF: %w", got, want, os.ErrDeadlineExceeded)
		}
		time.Sleep(sleep)
		sleep = min(2*sleep, 10*time.Millisecond)
	}
	if err := dst.CloseWrite(); err != nil {
		return fmt.Errorf("sockmap: passing half-close on: %w", err)
	}
	return nil
}
