package challenge

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// IdentifierType is an ACME identifier type (RFC 8555 §9.7.7).
type IdentifierType string

// The identifier types TLS-ALPN-01 can validate: domain names (RFC 8737) and
// IP addresses (RFC 8738).
const (
	DNS IdentifierType = "dns"
	IP  IdentifierType = "ip"
)

// Identifier is an ACME identifier. Values made by ParseIdentifier are in the
// canonical form CAs use and compare byte for byte: a lower-case A-label name
// without trailing dot, or an IP address in its RFC 5952 textual form.
type Identifier struct {
	Type  IdentifierType
	Value string
}

// ErrWildcard is returned by ParseIdentifier (and Build) for a wildcard name.
// RFC 8737 §3 forbids TLS-ALPN-01 for wildcards: the CA cannot tell which
// names a wildcard covers by connecting to one of them.
var ErrWildcard = errors.New("challenge: TLS-ALPN-01 cannot validate wildcard names (RFC 8737 §3); use the DNS-01 challenge for them")

// maxSNILen bounds the input NormalizeServerName is willing to run through
// IDNA. A valid A-label name is at most 253 bytes; UTS #46 mapping may delete
// ignorable code points, so allow generous slack, but never unbounded work.
const maxSNILen = 1024

// ParseIdentifier turns user input such as "Example.COM.", "bücher.de",
// "192.0.2.1" or "2001:db8::1" into a canonical Identifier.
//
// IP addresses become IP identifiers in RFC 5952 form; an IPv4-mapped IPv6
// address becomes the IPv4 address it maps (that is what ends up in a SAN
// anyway), and zones are refused. Names are lower-cased, lose one trailing
// dot, are converted to A-labels with the IDNA Lookup profile, and must then
// be a valid host name: LDH labels of 1-63 bytes with no leading or trailing
// hyphen, at most 253 bytes in all, and a last label that is not all digits.
// A wildcard gives an error wrapping ErrWildcard.
func ParseIdentifier(s string) (Identifier, error) {
	in := s
	s = strings.TrimSpace(s)
	if s == "" {
		return Identifier{}, errors.New("challenge: empty identifier")
	}
	if strings.HasPrefix(s, "*.") || s == "*" {
		return Identifier{}, fmt.Errorf("%w: %q", ErrWildcard, in)
	}
	ipText := s
	if len(ipText) > 2 && ipText[0] == '[' && ipText[len(ipText)-1] == ']' {
		ipText = ipText[1 : len(ipText)-1]
	}
	if addr, err := netip.ParseAddr(ipText); err == nil {
		if addr.Zone() != "" {
			return Identifier{}, fmt.Errorf("challenge: invalid identifier %q: IP address with a zone cannot be validated by a CA", in)
		}
		addr = addr.Unmap()
		if why := unreachableIP(addr); why != "" {
			return Identifier{}, fmt.Errorf("challenge: invalid identifier %q: %s", in, why)
		}
		return Identifier{Type: IP, Value: addr.String()}, nil
	} else if ipText != s || strings.Contains(s, ":") {
		return Identifier{}, fmt.Errorf("challenge: invalid identifier %q: %w", in, err)
	}

	name, err := hostname(s)
	if err != nil {
		return Identifier{}, fmt.Errorf("challenge: invalid identifier: %w", err)
	}
	return Identifier{Type: DNS, Value: name}, nil
}

// unreachableIP says why no CA could ever connect to addr to validate it,
// or returns "" when one could. The unspecified address means "every
// address" to a listener, broadcast and multicast address groups, and a
// link-local address names a different host on every link: a certificate
// for any of them would be a mistake, so they are refused before an order
// burns an authorization. Loopback and private addresses stay allowed: a
// private CA on the same host or network can validate them.
func unreachableIP(addr netip.Addr) string {
	switch {
	case addr.IsUnspecified():
		return "the unspecified address means every address of a host, not one a CA can connect to; give this host's public address"
	case addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address is not a host a CA can connect to; give this host's public address"
	case addr.IsMulticast():
		return "a multicast address is a group, not a host a CA can connect to; give this host's public address"
	case addr.IsLinkLocalUnicast():
		return "a link-local address is only meaningful on one network link, so no CA can reach it; give this host's public address"
	}
	return ""
}

// NormalizeServerName returns sni as a responder should look it up: lower
// case, without one trailing dot, in A-label form. It returns "" when sni is
// not a valid host name (including over-long input, control bytes and bad
// punycode), so callers can treat "" as "no such challenge".
//
// It runs on every handshake, so input that is already canonical (lower-case
// LDH labels with no IDNA label) is returned without allocating.
func NormalizeServerName(sni string) string {
	if len(sni) > maxSNILen {
		return ""
	}
	sni = strings.TrimSuffix(sni, ".")
	if isCanonicalASCII(sni) {
		return sni
	}
	// x/net/idna maps invalid UTF-8 to U+FFFD and encodes that; refuse it.
	if !utf8.ValidString(sni) {
		return ""
	}
	a, err := idna.Lookup.ToASCII(sni)
	if err != nil || hostnameProblem(a) != "" {
		return ""
	}
	return a
}

// isCanonicalASCII reports whether s is a valid host name that IDNA
// processing would leave unchanged: only [a-z0-9-.], valid label lengths, no
// hyphen at either end of a label, and no "--" in label positions 3-4 (such
// labels, including "xn--" A-labels, need IDNA validation).
func isCanonicalASCII(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) {
			c := s[i]
			if ('a' <= c && c <= 'z') || ('0' <= c && c <= '9') || c == '-' {
				continue
			}
			if c != '.' {
				return false
			}
		}
		n := i - start
		if n == 0 || n > 63 || s[start] == '-' || s[i-1] == '-' {
			return false
		}
		if n >= 4 && s[start+2] == '-' && s[start+3] == '-' {
			return false
		}
		start = i + 1
	}
	return true
}

// A HostnameError says why Name is not a host name, in the one set of
// words every check of a name uses (ParseIdentifier, CheckHostname, and
// through them the configuration and the proxy's routes).
type HostnameError struct {
	Name    string // as given
	Problem string // the words that follow the name: "has an empty label ..."
}

func (e *HostnameError) Error() string {
	if len(e.Name) > 64 {
		return fmt.Sprintf("%.40q... %s", e.Name, e.Problem)
	}
	return fmt.Sprintf("%q %s", e.Name, e.Problem)
}

// CheckHostname reports whether name is a host name a CA can validate:
// after lower-casing, dropping one trailing dot and IDNA (the Lookup
// profile), LDH labels of 1 to 63 bytes, at most 253 bytes in all, and a
// last label that is not all digits (that would be neither a name nor an
// IP address). Its error is a *HostnameError. Wildcards and IP addresses
// are not host names; callers that accept them look for them first.
func CheckHostname(name string) error {
	_, err := hostname(name)
	return err
}

// hostname returns in as a canonical A-label name, or why it is not one.
func hostname(in string) (string, error) {
	name := strings.TrimSuffix(in, ".")
	if len(name) > maxSNILen {
		return "", &HostnameError{in, "is longer than 253 bytes, the limit for a DNS name"}
	}
	if !isCanonicalASCII(name) {
		lower := strings.ToLower(name)
		if isASCII(lower) {
			// IDNA would refuse these too, in words about code points.
			if p := hostnameProblem(lower); p != "" {
				return "", &HostnameError{in, p}
			}
		}
		if !utf8.ValidString(name) {
			return "", &HostnameError{in, "is not valid UTF-8"}
		}
		a, err := idna.Lookup.ToASCII(name)
		if err != nil {
			return "", &HostnameError{in, fmt.Sprintf("is not a valid internationalized name (%v)", err)}
		}
		name = a
	}
	if p := hostnameProblem(name); p != "" {
		return "", &HostnameError{in, p}
	}
	last := name[strings.LastIndexByte(name, '.')+1:]
	if strings.Trim(last, "0123456789") == "" {
		return "", &HostnameError{in, "ends in a label of all digits, so it is neither a host name nor an IP address"}
	}
	return name, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// hostnameProblem returns why s, a lower-case ASCII name (the output of
// IDNA ToASCII), is not a valid host name, or "" if it is. The words
// follow the name in a message.
func hostnameProblem(s string) string {
	if s == "" {
		return "is empty"
	}
	if len(s) > 253 {
		return "is longer than 253 bytes, the limit for a DNS name"
	}
	for label := range strings.SplitSeq(s, ".") {
		switch {
		case label == "":
			return "has an empty label (two dots in a row, or a leading dot)"
		case len(label) > 63:
			return "has a label longer than 63 bytes, the DNS limit"
		}
		for i := 0; i < len(label); i++ {
			switch c := label[i]; {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-':
			case c == '_':
				return "has an underscore, which CAs refuse in host names"
			default:
				return fmt.Sprintf("has %q, which is not allowed in a host name: use letters, digits, hyphens and dots", string(rune(c)))
			}
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return "has a label that starts or ends with a hyphen"
		}
	}
	return ""
}

// ServerName returns the SNI a CA sends when validating id: the name itself
// for DNS identifiers, and for IP identifiers the reverse-mapping name of
// RFC 8738 §6 ("1.2.0.192.in-addr.arpa", or the ip6.arpa nibble form),
// without a trailing dot (Go's TLS stack strips the dot Boulder's
// dns.ReverseAddr adds). It returns "" for an IP identifier that does not
// parse or an unknown type.
func ServerName(id Identifier) string {
	switch id.Type {
	case DNS:
		return id.Value
	case IP:
		addr, err := netip.ParseAddr(id.Value)
		if err != nil || addr.Zone() != "" {
			return ""
		}
		addr = addr.Unmap()
		if addr.Is4() {
			b := addr.As4()
			return fmt.Sprintf("%d.%d.%d.%d.in-addr.arpa", b[3], b[2], b[1], b[0])
		}
		const hex = "0123456789abcdef"
		b := addr.As16()
		out := make([]byte, 0, 64+len("ip6.arpa"))
		for i := len(b) - 1; i >= 0; i-- {
			out = append(out, hex[b[i]&0x0f], '.', hex[b[i]>>4], '.')
		}
		return string(append(out, "ip6.arpa"...))
	}
	return ""
}
