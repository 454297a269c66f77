package challenge

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Fixed OIDs of the challenge certificate. Never mutated.
var (
	oidECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECPublicKey     = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidP256            = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
)

// Validity of a challenge certificate. A CA checks none of it; the hour of
// back-dating absorbs clock skew for any validator that does, and a week
// outlives any authorization that is still pending.
const (
	backdate = time.Hour
	lifetime = 7 * 24 * time.Hour
)

// Build returns a self-signed TLS-ALPN-01 validation certificate for id and
// the key authorization keyAuth, ready to serve on an acme-tls/1 handshake.
//
// The certificate has an empty subject (so, per RFC 5280, a critical SAN),
// exactly one SAN entry (the dNSName id.Value, or one iPAddress of 4 or 16
// bytes), the critical acmeIdentifier extension holding the DER OCTET STRING
// of SHA-256(keyAuth), and no other extensions. It is signed with a fresh
// P-256 key using ECDSA-SHA256, has a random 126-bit serial, and is valid from
// an hour ago for a week. Leaf is set.
//
// A DNS identifier must already be canonical (see ParseIdentifier): the CA
// compares the SAN with its identifier byte for byte, so a certificate for a
// non-canonical name could never pass. Wildcards give ErrWildcard.
//
// The DER is assembled directly rather than through x509.CreateCertificate,
// which re-verifies its own signature and so costs about twice as much; the
// result is parsed back with x509.ParseCertificate for Leaf, which also
// checks that the encoding is sound.
func Build(id Identifier, keyAuth string) (*tls.Certificate, error) {
	return BuildFromHash(id, KeyAuthorizationHash(keyAuth))
}

// BuildFromHash is Build given SHA-256(keyAuth) instead of keyAuth: what
// ualpn's socket protocol carries (uacme passes its hooks the digest, not
// the key authorization).
func BuildFromHash(id Identifier, sum [32]byte) (*tls.Certificate, error) {
	san, err := sanValue(id)
	if err != nil {
		return nil, err
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("challenge: generating key for %s: %w", id.Value, err)
	}
	point, err := key.PublicKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("challenge: encoding key for %s: %w", id.Value, err)
	}

	var serial [16]byte
	rand.Read(serial[:]) // never fails (crypto/rand, Go 1.24+)
	// Positive and minimally encoded: top bit clear, next bit set.
	serial[0] = serial[0]&0x7f | 0x40

	now := time.Now().UTC().Truncate(time.Second)

	b := cryptobyte.NewBuilder(make([]byte, 0, 640))
	b.AddASN1(cbasn1.SEQUENCE, func(tbs *cryptobyte.Builder) {
		tbs.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(v *cryptobyte.Builder) {
			v.AddASN1Int64(2) // v3
		})
		tbs.AddASN1(cbasn1.INTEGER, func(s *cryptobyte.Builder) { s.AddBytes(serial[:]) })
		addSigAlg(tbs)
		tbs.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {}) // issuer: empty
		tbs.AddASN1(cbasn1.SEQUENCE, func(v *cryptobyte.Builder) {
			addTime(v, now.Add(-backdate))
			addTime(v, now.Add(lifetime))
		})
		tbs.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {}) // subject: empty
		tbs.AddASN1(cbasn1.SEQUENCE, func(spki *cryptobyte.Builder) {
			spki.AddASN1(cbasn1.SEQUENCE, func(alg *cryptobyte.Builder) {
				alg.AddASN1ObjectIdentifier(oidECPublicKey)
				alg.AddASN1ObjectIdentifier(oidP256)
			})
			spki.AddASN1BitString(point)
		})
		tbs.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(e *cryptobyte.Builder) {
			e.AddASN1(cbasn1.SEQUENCE, func(exts *cryptobyte.Builder) {
				addExtension(exts, oidSubjectAltName, san)
				addExtension(exts, oidACMEIdentifier, func(v *cryptobyte.Builder) {
					v.AddASN1OctetString(sum[:])
				})
			})
		})
	})
	tbs, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("challenge: encoding certificate for %s: %w", id.Value, err)
	}
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("challenge: signing certificate for %s: %w", id.Value, err)
	}

	c := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(sig)+32))
	c.AddASN1(cbasn1.SEQUENCE, func(cert *cryptobyte.Builder) {
		cert.AddBytes(tbs)
		addSigAlg(cert)
		cert.AddASN1BitString(sig)
	})
	der, err := c.Bytes()
	if err != nil {
		return nil, fmt.Errorf("challenge: encoding certificate for %s: %w", id.Value, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("challenge: parsing built certificate for %s: %w", id.Value, err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// sanValue checks id and returns a builder for the contents of its one-entry
// SAN extension value: SEQUENCE { [2] dNSName } or SEQUENCE { [7] iPAddress }.
// These are exactly the bytes Boulder's checkExpectedSAN expects.
func sanValue(id Identifier) (cryptobyte.BuilderContinuation, error) {
	switch id.Type {
	case DNS:
		if strings.HasPrefix(id.Value, "*.") {
			return nil, fmt.Errorf("%w: %q", ErrWildcard, id.Value)
		}
		if n := NormalizeServerName(id.Value); n == "" || n != id.Value {
			return nil, fmt.Errorf("challenge: DNS identifier %q is not a canonical (lower-case A-label, no trailing dot) host name; use ParseIdentifier", id.Value)
		}
		return func(v *cryptobyte.Builder) {
			v.AddASN1(cbasn1.SEQUENCE, func(s *cryptobyte.Builder) {
				s.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(n *cryptobyte.Builder) {
					n.AddBytes([]byte(id.Value))
				})
			})
		}, nil
	case IP:
		addr, err := netip.ParseAddr(id.Value)
		if err != nil {
			return nil, fmt.Errorf("challenge: IP identifier %q: %w", id.Value, err)
		}
		if addr.Zone() != "" {
			return nil, fmt.Errorf("challenge: IP identifier %q has a zone", id.Value)
		}
		// Not unmapped: like Boulder, encode the address as the identifier
		// spells it (4 bytes for IPv4, 16 for IPv6 including IPv4-mapped).
		ip := addr.AsSlice()
		return func(v *cryptobyte.Builder) {
			v.AddASN1(cbasn1.SEQUENCE, func(s *cryptobyte.Builder) {
				s.AddASN1(cbasn1.Tag(7).ContextSpecific(), func(n *cryptobyte.Builder) {
					n.AddBytes(ip)
				})
			})
		}, nil
	}
	return nil, fmt.Errorf("challenge: identifier type %q for %q is not dns or ip", id.Type, id.Value)
}

// addExtension adds a critical Extension: SEQUENCE { OID, TRUE, OCTET STRING }.
// Both extensions Build emits are critical: acmeIdentifier because RFC 8737
// §3 says so, the SAN because the subject is empty (RFC 5280 §4.2.1.6).
func addExtension(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, value cryptobyte.BuilderContinuation) {
	b.AddASN1(cbasn1.SEQUENCE, func(e *cryptobyte.Builder) {
		e.AddASN1ObjectIdentifier(oid)
		e.AddASN1Boolean(true)
		e.AddASN1(cbasn1.OCTET_STRING, value)
	})
}

// addSigAlg adds the AlgorithmIdentifier for ecdsa-with-SHA256, which has no
// parameters (RFC 5758 §3.2).
func addSigAlg(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(a *cryptobyte.Builder) {
		a.AddASN1ObjectIdentifier(oidECDSAWithSHA256)
	})
}

// addTime adds t as UTCTime, or GeneralizedTime from 2050 on (RFC 5280
// §4.1.2.5).
func addTime(b *cryptobyte.Builder, t time.Time) {
	if t.Year() < 2050 {
		b.AddASN1UTCTime(t)
	} else {
		b.AddASN1GeneralizedTime(t)
	}
}
