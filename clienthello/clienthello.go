// Package clienthello reads a TLS ClientHello from a connection without
// losing it, and parses the fields a TLS-terminating or TLS-passthrough
// front end routes on: the server name (SNI), the offered application
// protocols (ALPN) and the offered versions.
//
// It sits on the path of every connection that "tlsalpn serve" accepts, in
// front of both the acme-tls/1 responder and the byte-for-byte splice to a
// backend, so it never reads past the end of the ClientHello, keeps every
// byte it read for replay (Info.Raw, Peek), bounds what it reads (MaxBytes),
// and allocates little: Parse of a typical hello makes two allocations.
//
// The package is pure: it does no I/O other than reading from the
// io.Reader or net.Conn it is handed (and, in AwaitRecord, peeking at the
// socket's receive queue without consuming it), and has no mutable state.
// It is the only code in tlsalpn that reads a ClientHello ahead of the
// handler it goes to: package proxy uses AwaitRecord, Read and Replay.
//
// Parsing follows RFC 8446 section 4.1.2 (and RFC 5246 for hellos without
// extensions), RFC 6066 section 3 (server_name) and RFC 7301 section 3.1
// (ALPN), as strictly as Go's crypto/tls does, so that a hello this package
// accepts is one a TLS server can be expected to accept too, and a hello it
// refuses is one that would fail there anyway.
package clienthello

import (
	"errors"
	"fmt"
	"strings"
)

// Sizes from the TLS record and handshake layers.
const (
	recordHeaderLen    = 5     // ContentType, ProtocolVersion, uint16 length
	handshakeHeaderLen = 4     // HandshakeType, uint24 length
	maxRecordLen       = 16384 // RFC 8446 5.1: TLSPlaintext.length MUST NOT exceed 2^14

	recordTypeHandshake  = 0x16
	handshakeClientHello = 0x01
	extServerName        = 0
	extALPN              = 16
	extSupportedVersions = 43
	extEncryptedHello    = 0xfe0d
	serverNameTypeHost   = 0
	maxSessionIDLen      = 32
)

// MaxHandshakeLen is the largest ClientHello body accepted: the value of the
// uint24 length in the handshake header. 16 KiB is far above what browsers
// send (about 2 KiB with post-quantum key shares) and is what one TLS record
// can carry, so a larger hello is a sign of abuse rather than of a client.
const MaxHandshakeLen = 16384

// MaxBytes is the most that Read and Peek ever consume from a connection:
// a ClientHello of the largest accepted size (a 4-byte handshake header plus
// MaxHandshakeLen bytes) and the 5-byte headers of up to 64 TLS records,
// 4 + 16384 + 64*5 = 16708 bytes. A hello of the largest size can thus be
// fragmented into as many as 64 records, a smaller one into as many as fit.
// Reading stops with ErrTooLarge before a record that would cross the bound.
const MaxBytes = 4 + MaxHandshakeLen + 64*5

// Errors returned, wrapped with context, by Parse, Read and Peek. Test for
// them with errors.Is. A failure to read from the connection for another
// reason (a deadline, a reset) is returned wrapped as it is instead.
var (
	// ErrNotTLS: the first byte is not that of a TLS handshake record.
	ErrNotTLS = errors.New("not a TLS handshake")
	// ErrPlainHTTP refines ErrNotTLS (errors.Is matches both): the first
	// bytes are those of an HTTP/1 request line or the HTTP/2 preface,
	// typically a client that was told http:// for a TLS port.
	ErrPlainHTTP = fmt.Errorf("%w: looks like plain HTTP", ErrNotTLS)
	// ErrTruncated: the data or the connection ended before the whole
	// ClientHello.
	ErrTruncated = errors.New("truncated")
	// ErrTooLarge: the hello announces a body over MaxHandshakeLen, a
	// record over 16 KiB, or records that would take more than MaxBytes.
	ErrTooLarge = errors.New("too large")
	// ErrMalformed: the hello violates its encoding: inconsistent lengths,
	// duplicate extensions, a bad server_name, ALPN or supported_versions
	// extension, bytes after the extensions or after the hello in its last
	// record, or another record type interleaved with its records.
	ErrMalformed = errors.New("malformed")
	// ErrNotClientHello: a TLS handshake record, but its message is not a
	// ClientHello.
	ErrNotClientHello = errors.New("handshake message is not a ClientHello")
	// ErrUnsupportedVersion: a record or legacy_version whose major version
	// is not 3 (SSL 3.0 through TLS 1.3 all use 0x03xx), including the
	// SSL 2.0-compatible hello, which no current server accepts.
	ErrUnsupportedVersion = errors.New("unsupported protocol version")
)

// Info is what a ClientHello says about where the connection wants to go.
// Treat it as read-only: its slices may share memory with each other and,
// for Parse, with the caller's data.
type Info struct {
	// ServerName is the host_name from the server_name extension exactly as
	// sent: not lowercased, not stripped of a trailing dot, not checked to
	// be a valid host name. "" if the client sent none.
	ServerName string
	// ALPN lists the protocols offered, in the client's order; nil if the
	// hello has no ALPN extension. Never contains an empty name.
	ALPN []string
	// Versions is the supported_versions extension as sent, GREASE values
	// included (see IsGREASE); nil if absent, as from clients that predate
	// TLS 1.3 (Go's crypto/tls sends it even when limited to TLS 1.2).
	Versions []uint16
	// LegacyVersion is the hello's legacy_version: 0x0303 for TLS 1.2 and
	// for TLS 1.3 (which then lists 0x0304 in Versions).
	LegacyVersion uint16
	// ECH reports an encrypted_client_hello extension. ServerName is then
	// the public name of the outer hello, not the name the client wants.
	ECH bool
	// Raw holds every byte consumed, record headers included, in order: the
	// records that make up the ClientHello, or after an error from Read or
	// Peek, whatever was read before it. Replaying Raw and then the rest of
	// the connection gives the next handler the stream untouched.
	Raw []byte

	// Inline storage so that the common hello needs no allocation beyond
	// the Info itself and one string: at most 4 protocols and 8 versions.
	alpn     [4]string
	versions [8]uint16
	scratch  [recordHeaderLen]byte // Read's first record header
}

// MaxVersion is the highest TLS version the client offers: the largest
// non-GREASE entry of Versions if present, else LegacyVersion.
func (i *Info) MaxVersion() uint16 {
	var v uint16
	for _, x := range i.Versions {
		if x > v && !IsGREASE(x) {
			v = x
		}
	}
	if v == 0 {
		return i.LegacyVersion
	}
	return v
}

// IsGREASE reports whether v is one of the reserved values of RFC 8701
// (0x0a0a, 0x1a1a, ..., 0xfafa) that clients sprinkle into versions, cipher
// suites and extensions to keep servers tolerant of unknown values.
func IsGREASE(v uint16) bool {
	return v&0x0f0f == 0x0a0a && v>>8 == v&0xff
}

// Parse parses a complete ClientHello from data, the bytes of one or more
// TLS records, record headers included, as they came off the wire. Bytes
// after the record that completes the ClientHello are ignored; Info.Raw is
// the prefix of data that held the hello (it shares data's memory).
func Parse(data []byte) (*Info, error) {
	info := new(Info)
	if err := parse(info, data); err != nil {
		return nil, fmt.Errorf("parsing ClientHello: %w", err)
	}
	return info, nil
}

func parse(info *Info, data []byte) error {
	var a assembler
	off := 0
	for {
		if err := a.room(); err != nil {
			return err
		}
		rest := data[off:]
		if len(rest) < recordHeaderLen {
			if len(rest) > 0 {
				if err := a.checkType(rest); err != nil {
					return err
				}
			}
			return truncated(len(data))
		}
		n, err := a.header(rest[:recordHeaderLen])
		if err != nil {
			return err
		}
		if len(rest) < recordHeaderLen+n {
			return truncated(len(data))
		}
		done, err := a.body(rest[recordHeaderLen : recordHeaderLen+n])
		if err != nil {
			return err
		}
		off += recordHeaderLen + n
		if done {
			break
		}
	}
	info.Raw = data[:off:off]
	return info.parseMessage(a.message(info.Raw))
}

func truncated(have int) error {
	return fmt.Errorf("%w after %d bytes", ErrTruncated, have)
}

// assembler follows the records that carry a ClientHello, checking each
// header and fragment as it comes, so that Read knows before each read
// whether and how much more to read. It keeps no pointer into the data, so
// that Read may move its buffer.
type assembler struct {
	consumed int // record bytes accepted so far, headers included
	records  int // record headers accepted so far
	got      int // handshake bytes seen so far
	msgLen   int // handshake message length with its header; 0 until known
	hdr      [handshakeHeaderLen]byte
}

// checkType checks the first bytes (at least one) of a record header.
func (a *assembler) checkType(h []byte) error {
	if h[0] == recordTypeHandshake {
		return nil
	}
	if a.records > 0 {
		return fmt.Errorf("%w: record of content type %d inside the ClientHello", ErrMalformed, h[0])
	}
	// SSL 2.0 record: 2-byte length with the top bit set, then message
	// type 1 (CLIENT-HELLO).
	if h[0]&0x80 != 0 && len(h) >= 3 && h[2] == handshakeClientHello {
		return fmt.Errorf("%w: SSL 2.0-compatible ClientHello", ErrUnsupportedVersion)
	}
	if looksLikeHTTP(h) {
		return fmt.Errorf("%w (starts %q; a client speaking http:// to a TLS port?)", ErrPlainHTTP, h)
	}
	return fmt.Errorf("%w: first byte 0x%02x, want 0x16", ErrNotTLS, h[0])
}

// room reports ErrTooLarge if not even a 1-byte record fits in MaxBytes
// any more, so that Read does not read the header of a record it would
// refuse.
func (a *assembler) room() error {
	if a.consumed+recordHeaderLen+1 > MaxBytes {
		return fmt.Errorf("%w: records take more than %d bytes", ErrTooLarge, MaxBytes)
	}
	return nil
}

// header checks the 5-byte header of the next record and returns the length
// of its body.
func (a *assembler) header(h []byte) (int, error) {
	if err := a.checkType(h); err != nil {
		return 0, err
	}
	if h[1] != 3 {
		return 0, fmt.Errorf("%w: record version 0x%02x%02x", ErrUnsupportedVersion, h[1], h[2])
	}
	n := int(h[3])<<8 | int(h[4])
	switch {
	case n == 0:
		return 0, fmt.Errorf("%w: empty handshake record", ErrMalformed)
	case n > maxRecordLen:
		return 0, fmt.Errorf("%w: record of %d bytes, limit %d", ErrTooLarge, n, maxRecordLen)
	case a.msgLen != 0 && n > a.msgLen-a.got:
		return 0, fmt.Errorf("%w: record runs %d byte(s) past the end of the ClientHello", ErrMalformed, n-(a.msgLen-a.got))
	case a.consumed+recordHeaderLen+n > MaxBytes:
		return 0, fmt.Errorf("%w: records take more than %d bytes", ErrTooLarge, MaxBytes)
	}
	a.consumed += recordHeaderLen + n
	a.records++
	return n, nil
}

// body takes the body of the record whose header was accepted last and
// reports whether the ClientHello is now complete.
func (a *assembler) body(b []byte) (done bool, err error) {
	if a.got == 0 && b[0] != handshakeClientHello {
		return false, fmt.Errorf("%w: handshake type %d", ErrNotClientHello, b[0])
	}
	if a.msgLen == 0 {
		k := copy(a.hdr[a.got:], b)
		if a.got+k == handshakeHeaderLen {
			n := int(a.hdr[1])<<16 | int(a.hdr[2])<<8 | int(a.hdr[3])
			if n > MaxHandshakeLen {
				return false, fmt.Errorf("%w: ClientHello of %d bytes, limit %d", ErrTooLarge, n, MaxHandshakeLen)
			}
			a.msgLen = handshakeHeaderLen + n
		}
	}
	a.got += len(b)
	if a.msgLen != 0 && a.got > a.msgLen {
		return false, fmt.Errorf("%w: record runs %d byte(s) past the end of the ClientHello", ErrMalformed, a.got-a.msgLen)
	}
	return a.msgLen != 0 && a.got == a.msgLen, nil
}

// message returns the complete handshake message from raw, the records
// accepted. One record (the rule) costs nothing; fragments are joined.
func (a *assembler) message(raw []byte) []byte {
	if a.records == 1 {
		return raw[recordHeaderLen:]
	}
	msg := make([]byte, 0, a.msgLen)
	for len(raw) > 0 {
		n := int(raw[3])<<8 | int(raw[4])
		msg = append(msg, raw[recordHeaderLen:recordHeaderLen+n]...)
		raw = raw[recordHeaderLen+n:]
	}
	return msg
}

// httpPrefixes are the starts of HTTP/1 request lines and of the HTTP/2
// connection preface, as far as 5 bytes show them.
var httpPrefixes = [...]string{"GET ", "HEAD ", "POST ", "PUT ", "DELET", "OPTIO", "CONNE", "PATCH", "TRACE", "PRI *"}

func looksLikeHTTP(h []byte) bool {
	if len(h) < 3 {
		return false
	}
	for _, p := range httpPrefixes {
		if n := min(len(h), len(p)); string(h[:n]) == p[:n] {
			return true
		}
	}
	return false
}

// parseMessage parses a ClientHello handshake message, header included,
// whose type and length the assembler has checked (RFC 8446 4.1.2):
//
//	ProtocolVersion legacy_version;
//	Random random;                                   32 bytes
//	opaque legacy_session_id<0..32>;
//	CipherSuite cipher_suites<2..2^16-2>;
//	opaque legacy_compression_methods<1..2^8-1>;
//	Extension extensions<8..2^16-1>;                 absent before TLS 1.3
func (info *Info) parseMessage(msg []byte) error {
	b := msg[handshakeHeaderLen:]
	if len(b) < 2+32+1 {
		return fmt.Errorf("%w: ClientHello body of %d bytes", ErrMalformed, len(b))
	}
	info.LegacyVersion = be16(b)
	if b[0] != 3 {
		return fmt.Errorf("%w: legacy_version 0x%04x", ErrUnsupportedVersion, info.LegacyVersion)
	}
	b = b[2+32:]

	n := int(b[0])
	b = b[1:]
	if n > maxSessionIDLen || n > len(b) {
		return fmt.Errorf("%w: session ID of %d bytes", ErrMalformed, n)
	}
	b = b[n:]

	if len(b) < 2 {
		return fmt.Errorf("%w: no cipher suites", ErrMalformed)
	}
	n = int(be16(b))
	b = b[2:]
	if n < 2 || n%2 != 0 || n > len(b) {
		return fmt.Errorf("%w: cipher suites of %d bytes", ErrMalformed, n)
	}
	b = b[n:]

	if len(b) < 1 || b[0] == 0 || int(b[0]) > len(b)-1 {
		return fmt.Errorf("%w: bad compression methods", ErrMalformed)
	}
	b = b[1+int(b[0]):]

	if len(b) == 0 {
		return nil // no extensions: TLS 1.2 or earlier
	}
	if len(b) < 2 {
		return fmt.Errorf("%w: %d stray byte(s) after the compression methods", ErrMalformed, len(b))
	}
	n = int(be16(b))
	b = b[2:]
	if n != len(b) {
		return fmt.Errorf("%w: extensions of %d bytes where %d remain", ErrMalformed, n, len(b))
	}
	return info.parseExtensions(b)
}

func (info *Info) parseExtensions(b []byte) error {
	var (
		seen                        extSet
		sni, alpn, vers             []byte
		haveSNI, haveALPN, haveVers bool
	)
	for len(b) > 0 {
		if len(b) < 4 {
			return fmt.Errorf("%w: %d stray byte(s) in the extensions", ErrMalformed, len(b))
		}
		typ, n := be16(b), int(be16(b[2:]))
		b = b[4:]
		if n > len(b) {
			return fmt.Errorf("%w: extension %d of %d bytes where %d remain", ErrMalformed, typ, n, len(b))
		}
		data := b[:n]
		b = b[n:]
		if seen.add(typ) {
			return fmt.Errorf("%w: duplicate extension %d", ErrMalformed, typ)
		}
		switch typ {
		case extServerName:
			sni, haveSNI = data, true
		case extALPN:
			alpn, haveALPN = data, true
		case extSupportedVersions:
			vers, haveVers = data, true
		case extEncryptedHello:
			info.ECH = true
		}
	}

	var host []byte
	if haveSNI {
		var err error
		if host, err = parseServerName(sni); err != nil {
			return err
		}
	}
	if haveVers {
		if err := info.parseVersions(vers); err != nil {
			return err
		}
	}
	if !haveALPN {
		if len(host) > 0 {
			info.ServerName = string(host)
		}
		return nil
	}
	return info.parseALPN(alpn, host)
}

// parseServerName returns the host_name of a server_name extension
// (RFC 6066 section 3), nil if it lists only names of other types.
//
//	struct { NameType name_type; opaque HostName<1..2^16-1>; } ServerName;
//	struct { ServerName server_name_list<1..2^16-1> } ServerNameList;
//
// Every name is read as a uint16-prefixed opaque, as crypto/tls does; a
// list with two host_names is refused, as RFC 6066 requires.
func parseServerName(d []byte) ([]byte, error) {
	if len(d) < 2 || int(be16(d)) != len(d)-2 || len(d) == 2 {
		return nil, fmt.Errorf("%w: bad server_name list length", ErrMalformed)
	}
	d = d[2:]
	var host []byte
	for len(d) > 0 {
		if len(d) < 3 {
			return nil, fmt.Errorf("%w: server_name entry cut short", ErrMalformed)
		}
		typ, n := d[0], int(be16(d[1:]))
		d = d[3:]
		if n == 0 || n > len(d) {
			return nil, fmt.Errorf("%w: server name of %d bytes where %d remain", ErrMalformed, n, len(d))
		}
		if typ == serverNameTypeHost {
			if host != nil {
				return nil, fmt.Errorf("%w: two host_name entries in server_name", ErrMalformed)
			}
			host = d[:n]
		}
		d = d[n:]
	}
	return host, nil
}

// parseVersions parses supported_versions as a client sends it:
// ProtocolVersion versions<2..254>.
func (info *Info) parseVersions(d []byte) error {
	if len(d) < 1 || int(d[0]) != len(d)-1 || d[0] < 2 || d[0]%2 != 0 {
		return fmt.Errorf("%w: bad supported_versions length", ErrMalformed)
	}
	d = d[1:]
	n := len(d) / 2
	if n <= len(info.versions) {
		info.Versions = info.versions[:n:n]
	} else {
		info.Versions = make([]uint16, n)
	}
	for i := range info.Versions {
		info.Versions[i] = be16(d[2*i:])
	}
	return nil
}

// parseALPN parses the ALPN extension (RFC 7301 section 3.1) and sets ALPN
// and ServerName, which it copies out of the hello together with every
// protocol name that is not a well-known constant, into one string:
//
//	opaque ProtocolName<1..2^8-1>;
//	struct { ProtocolName protocol_name_list<2..2^16-1> } ProtocolNameList;
func (info *Info) parseALPN(d []byte, host []byte) error {
	if len(d) < 2 || int(be16(d)) != len(d)-2 || len(d) == 2 {
		return fmt.Errorf("%w: bad ALPN list length", ErrMalformed)
	}
	d = d[2:]
	count, copied := 0, len(host)
	for rest := d; len(rest) > 0; {
		n := int(rest[0])
		if n == 0 || n > len(rest)-1 {
			return fmt.Errorf("%w: ALPN protocol name of %d bytes where %d remain", ErrMalformed, n, len(rest)-1)
		}
		if _, ok := wellKnownProtocol(rest[1 : 1+n]); !ok {
			copied += n
		}
		count++
		rest = rest[1+n:]
	}

	var s string
	if copied > 0 {
		var sb strings.Builder
		sb.Grow(copied)
		sb.Write(host)
		for rest := d; len(rest) > 0; rest = rest[1+int(rest[0]):] {
			if p := rest[1 : 1+int(rest[0])]; !isWellKnown(p) {
				sb.Write(p)
			}
		}
		s = sb.String()
	}
	info.ServerName = s[:len(host)]

	if count <= len(info.alpn) {
		info.ALPN = info.alpn[:count:count]
	} else {
		info.ALPN = make([]string, count)
	}
	off := len(host)
	for i, rest := 0, d; len(rest) > 0; i++ {
		p := rest[1 : 1+int(rest[0])]
		if w, ok := wellKnownProtocol(p); ok {
			info.ALPN[i] = w
		} else {
			info.ALPN[i] = s[off : off+len(p)]
			off += len(p)
		}
		rest = rest[1+len(p):]
	}
	return nil
}

// wellKnownProtocol returns p as a constant if it is a common ALPN protocol
// ID, so that the usual lists cost no allocation. (The compiler turns the
// switch on string(p) into comparisons that do not allocate.)
func wellKnownProtocol(p []byte) (string, bool) {
	switch string(p) {
	case "h2":
		return "h2", true
	case "http/1.1":
		return "http/1.1", true
	case "acme-tls/1":
		return "acme-tls/1", true
	case "http/1.0":
		return "http/1.0", true
	case "h3":
		return "h3", true
	}
	return "", false
}

func isWellKnown(p []byte) bool {
	_, ok := wellKnownProtocol(p)
	return ok
}

func be16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }

// extSet finds duplicate extension types in linear time without allocating
// for ordinary hellos: a bitmap for the IANA range below 256, a short list
// for the rest (GREASE, ECH, renegotiation_info...), a map beyond that.
type extSet struct {
	low  [4]uint64
	high [16]uint16
	n    int
	more map[uint16]struct{}
}

// add records t and reports whether it was already there.
func (s *extSet) add(t uint16) bool {
	if t < 256 {
		w, bit := &s.low[t>>6], uint64(1)<<(t&63)
		dup := *w&bit != 0
		*w |= bit
		return dup
	}
	for _, h := range s.high[:s.n] {
		if h == t {
			return true
		}
	}
	if s.n < len(s.high) {
		s.high[s.n] = t
		s.n++
		return false
	}
	if _, dup := s.more[t]; dup {
		return true
	}
	if s.more == nil {
		s.more = make(map[uint16]struct{})
	}
	s.more[t] = struct{}{}
	return false
}
