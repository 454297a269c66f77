package clienthello

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
)

// Read reads a ClientHello from r: exactly the records that carry it, which
// may be several (a fragmented hello) and may arrive in pieces of any size,
// and not one byte more, so that whatever the client sent after the hello
// (a ChangeCipherSpec, TLS 1.3 early data) is still in r. It never reads
// more than MaxBytes. Each record is read with two io.ReadFull calls, its
// header and its body, and checked before its body is read.
//
// Read always returns a non-nil *Info whose Raw holds every byte consumed;
// after an error that is all it holds, for a caller that wants to log the
// bytes or hand them, with the rest of the connection, to something else.
// Read sets no deadline: bound the wait on r yourself.
func Read(r io.Reader) (*Info, error) {
	info := new(Info)
	if err := read(r, info); err != nil {
		return info, fmt.Errorf("reading ClientHello: %w", err)
	}
	return info, nil
}

func read(r io.Reader, info *Info) error {
	var (
		a   assembler
		raw []byte
	)
	for {
		// The first header goes to the Info's scratch space, and the
		// buffer is then made to fit the first record, which for most
		// clients is the whole hello.
		if err := a.room(); err != nil {
			info.Raw = raw
			return err
		}
		first := raw == nil
		var h []byte
		if first {
			h = info.scratch[:]
		} else {
			raw = slices.Grow(raw, recordHeaderLen)
			h = raw[len(raw) : len(raw)+recordHeaderLen]
		}
		m, rerr := io.ReadFull(r, h)
		var (
			n    int
			herr error
		)
		if rerr == nil {
			n, herr = a.header(h)
		}
		if first {
			raw = append(make([]byte, 0, recordHeaderLen+n), h[:m]...)
		} else {
			raw = raw[:len(raw)+m]
		}
		if rerr != nil {
			info.Raw = raw
			if m > 0 {
				if err := a.checkType(h[:m]); err != nil {
					return err
				}
			}
			return readError(rerr, len(raw))
		}
		if herr != nil {
			info.Raw = raw
			return herr
		}

		start := len(raw)
		raw = slices.Grow(raw, n)
		m, err := io.ReadFull(r, raw[start:start+n])
		raw = raw[:start+m]
		if err != nil {
			info.Raw = raw
			return readError(err, len(raw))
		}
		done, err := a.body(raw[start:])
		if err != nil {
			info.Raw = raw
			return err
		}
		if done {
			break
		}
		if a.msgLen != 0 && a.records == 1 {
			// Fragmented: make room once for the rest of the message
			// and the fewest headers it needs.
			rest := a.msgLen - a.got
			raw = slices.Grow(raw, rest+recordHeaderLen*((rest+maxRecordLen-1)/maxRecordLen))
		}
	}
	info.Raw = raw
	return info.parseMessage(a.message(raw))
}

// readError turns the end of the stream into ErrTruncated and leaves other
// errors (deadlines, resets) as they are.
func readError(err error, have int) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return truncated(have)
	}
	return fmt.Errorf("after %d bytes: %w", have, err)
}

// Peek reads the ClientHello from conn with Read and returns it together
// with a *Conn that gives the next handler the connection as it came: its
// Read returns the bytes of Info.Raw first and then reads from conn, so
// tls.Server, a responder or io.Copy to a backend sees the stream untouched.
//
// Peek sets no deadline. Set a read deadline on conn before calling it, so
// that a client that sends nothing, or a byte a minute, is dropped; and
// clear it after, before handing the connection on.
//
// On error, Peek still returns the Info, whose Raw holds the bytes read,
// and a *Conn that replays them, for a caller that wants to answer, say,
// plain HTTP itself; most callers just close it.
func Peek(conn net.Conn) (*Info, net.Conn, error) {
	p := &peeked{Conn: Conn{Conn: conn}}
	err := read(conn, &p.info)
	p.pending = p.info.Raw
	if err != nil {
		return &p.info, &p.Conn, fmt.Errorf("reading ClientHello from %v: %w", conn.RemoteAddr(), err)
	}
	return &p.info, &p.Conn, nil
}

// peeked is what Peek allocates: the Info and the Conn in one allocation.
type peeked struct {
	Conn
	info Info
}

// Replay returns a *Conn that replays prefix and then reads on from conn,
// for a server that read the ClientHello itself (with Read, through a
// buffer of its own that may also have held a PROXY header) and must hand
// the connection on as it came: prefix is then Info.Raw and whatever the
// buffer held past it. remote, if not nil, is what RemoteAddr reports: the
// client a PROXY header named, rather than the balancer that connected.
func Replay(conn net.Conn, prefix []byte, remote net.Addr) *Conn {
	return &Conn{Conn: conn, pending: prefix, remote: remote}
}

// Conn is the connection returned by Peek and Replay: a net.Conn whose
// reads replay the bytes read before reading on from the socket.
//
// To keep a proxy's copy zero-copy, Conn implements io.WriterTo and
// io.ReaderFrom: io.Copy(backend, c) writes the replayed bytes to backend
// and then copies from the socket with splice(2) when both ends are TCP
// connections, and io.Copy(c, backend) splices in the other direction. A
// caller that needs the socket itself, to splice by other means, takes it
// from NetConn, and must first write out Info.Raw (or Buffered, if it has
// already read from c) to the peer: those bytes are no longer in the socket.
type Conn struct {
	net.Conn // the connection that was peeked

	remote  net.Addr // if not nil, what RemoteAddr reports (Replay)
	mu      sync.Mutex
	pending []byte // the part of the replayed bytes not yet returned by Read
}

// RemoteAddr is the client's address: the one given to Replay, if any, or
// the connection's.
func (c *Conn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// NetConn returns the underlying connection, a *net.TCPConn for a TCP
// listener's. Reading from it skips the bytes of Buffered.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Buffered returns the peeked bytes that have not yet been read from c: all
// of Info.Raw (or Replay's prefix) until the first Read, nil once they have
// been replayed.
func (c *Conn) Buffered() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending
}

// take removes and returns up to n pending bytes (all with n < 0).
func (c *Conn) take(n int) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n < 0 || n > len(c.pending) {
		n = len(c.pending)
	}
	b := c.pending[:n]
	c.pending = c.pending[n:]
	if len(c.pending) == 0 {
		c.pending = nil
	}
	return b
}

// Read returns the peeked bytes first, and then reads from the connection.
// It returns the replayed bytes alone rather than also reading from the
// socket in the same call, which could block a client waiting for an answer.
func (c *Conn) Read(p []byte) (int, error) {
	if b := c.take(len(p)); len(b) > 0 {
		return copy(p, b), nil
	}
	return c.Conn.Read(p)
}

// WriteTo writes the peeked bytes to w and then copies the connection to w
// until EOF, with splice(2) when both are TCP connections.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if b := c.take(-1); len(b) > 0 {
		m, err := w.Write(b)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	// io.Copy uses the socket's own WriteTo / w's ReadFrom: on Linux,
	// TCP to TCP is a splice.
	m, err := io.Copy(w, c.Conn)
	return n + m, err
}

// ReadFrom copies r to the connection until EOF, through the connection's
// own ReadFrom when it has one, so that TCP to TCP is a splice.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(c.Conn, r)
}

// CloseWrite shuts down the writing side of the connection, if it can
// (TCP and Unix connections can), as a proxy does when one direction ends.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("clienthello: %T has no CloseWrite", c.Conn)
}

// CloseRead shuts down the reading side of the connection, if it can.
func (c *Conn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return fmt.Errorf("clienthello: %T has no CloseRead", c.Conn)
}
