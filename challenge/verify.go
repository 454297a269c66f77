package challenge

import (
	"bytes"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// Rules Verify enforces. A failed Verify returns a *VerifyError whose Rule is
// one of these, so errors.Is(err, ErrNotSelfSigned) and the like work.
var (
	ErrNotSelfSigned        = errors.New("challenge: certificate is not self-signed")
	ErrDuplicateExtension   = errors.New("challenge: certificate has an extension more than once")
	ErrMissingExtension     = errors.New("challenge: certificate lacks the SAN or acmeIdentifier extension")
	ErrWrongIdentifierCount = errors.New("challenge: certificate SAN does not hold exactly one entry of the identifier's type")
	ErrIdentifierMismatch   = errors.New("challenge: certificate SAN entry is not the identifier")
	ErrSANBytes             = errors.New("challenge: certificate SAN extension is not the exact expected encoding")
	ErrNotCritical          = errors.New("challenge: acmeIdentifier extension is not critical")
	ErrMalformedValue       = errors.New("challenge: acmeIdentifier extension value is not a DER OCTET STRING of 32 bytes")
	ErrWrongHash            = errors.New("challenge: acmeIdentifier extension holds the wrong key authorization hash")
	// ErrNoExtension mirrors Boulder's last check. Because the extension
	// check before it already requires acmeIdentifier, Verify can only
	// return it if that order ever changes; it is kept for completeness.
	ErrNoExtension = errors.New("challenge: certificate has no acmeIdentifier extension")
)

// ErrIdentifierType is returned (wrapped, not as a *VerifyError) when Verify
// is given an identifier that is neither dns nor ip. Boulder refuses such an
// authorization as malformed before connecting.
var ErrIdentifierType = errors.New("Identifier type for TLS-ALPN-01 challenge was not DNS or IP")

// Messages Boulder (va/tlsalpn.go) gives for failures that happen before the
// certificate is examined, for use by an outside-in checker. Both are
// "unauthorized" problems, without the CAMessage prefix.
const (
	CAMessageNoCerts = "No certs presented for tls-alpn-01 challenge"
	CAMessageNoALPN  = `Cannot negotiate ALPN protocol "acme-tls/1" for tls-alpn-01 challenge`
)

// VerifyError is a certificate that a CA would refuse. Rule is the sentinel
// (ErrNotSelfSigned, ...) and Detail is the sentence Boulder puts in its
// problem document, byte for byte; Error returns Detail.
type VerifyError struct {
	Rule   error
	Detail string
}

func (e *VerifyError) Error() string { return e.Detail }
func (e *VerifyError) Unwrap() error { return e.Rule }

// CAMessage returns the full problem detail Boulder's badCertErr produces
// for this failure when it asked for id at addr (an "ip:port", as from
// net.JoinHostPort):
//
//	Incorrect validation certificate for tls-alpn-01 challenge. Requested <id> from <addr>. <Detail>
func (e *VerifyError) CAMessage(id Identifier, addr string) string {
	return "Incorrect validation certificate for tls-alpn-01 challenge. Requested " +
		id.Value + " from " + addr + ". " + e.Detail
}

func verifyErr(rule error, detail string) error { return &VerifyError{Rule: rule, Detail: detail} }

// Verify checks leaf, the first certificate a responder presented, as a
// TLS-ALPN-01 validation certificate for id and keyAuth, applying every check
// Boulder's validateTLSALPN01 (va/tlsalpn.go) makes on the certificate, in the
// same order and with the same words:
//
//  1. self-signed: the signature verifies with the certificate's own key
//     (x509.Certificate.CheckSignature, not CheckSignatureFrom, which would
//     also demand a CA basic constraint) and RawSubject equals RawIssuer;
//  2. checkAcceptableExtensions: no extension OID appears twice, and
//     acmeIdentifier and subjectAltName are present (other extensions are
//     allowed, RFC 8737 §3);
//  3. checkExpectedSAN: for dns exactly one dNSName, no iPAddress, equal
//     ignoring case; for ip exactly one iPAddress, no dNSName, equal; then
//     the raw SAN extension value must be exactly SEQUENCE { [2] id } or
//     SEQUENCE { [7] ip } (so a case difference fails here);
//  4. the acmeIdentifier extension (1.3.6.1.5.5.7.1.31 only; the obsolete
//     1.3.6.1.5.5.7.1.30.1 never counts) is critical, its value is a DER
//     OCTET STRING of exactly 32 bytes with nothing after it, and equals
//     SHA-256(keyAuth), compared in constant time.
//
// id is used as given, as the CA uses the identifier of its authorization.
// A refused certificate gives a *VerifyError; other errors are about the
// arguments.
func Verify(leaf *x509.Certificate, id Identifier, keyAuth string) error {
	v, err := validationValue("Verify", leaf, id)
	if err != nil {
		return err
	}
	// Boulder: "Verify key authorization in acmeValidation extension".
	h := KeyAuthorizationHash(keyAuth)
	if subtle.ConstantTimeCompare(h[:], v) != 1 {
		return verifyErr(ErrWrongHash, fmt.Sprintf(
			"Received certificate with acmeValidationV1 extension value %s but expected %s.",
			hex.EncodeToString(v), hex.EncodeToString(h[:])))
	}
	return nil
}

// validationValue applies every rule of Verify but the hash comparison, in
// the CA's order, and returns the acmeIdentifier extension's 32 bytes. It
// is Verify's and VerifyStructure's one copy of those rules, so that both
// refuse a certificate for the same reasons and in the same words; fn
// names the caller in the errors about the arguments.
func validationValue(fn string, leaf *x509.Certificate, id Identifier) ([]byte, error) {
	if leaf == nil {
		return nil, fmt.Errorf("challenge: %s: nil certificate", fn)
	}
	if id.Type != DNS && id.Type != IP {
		return nil, fmt.Errorf("challenge: %s %q: %w", fn, id.Value, ErrIdentifierType)
	}

	// Boulder: "The certificate must be self-signed."
	if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil ||
		!bytes.Equal(leaf.RawSubject, leaf.RawIssuer) {
		return nil, verifyErr(ErrNotSelfSigned, "Received certificate which is not self-signed.")
	}

	// Boulder: checkAcceptableExtensions, with acmeIdentifier checked first.
	if msg, rule := checkAcceptableExtensions(leaf.Extensions); rule != nil {
		return nil, verifyErr(rule, fmt.Sprintf("Received certificate with unexpected extensions: %q", msg))
	}

	// Boulder: checkExpectedSAN.
	if msg, rule := checkExpectedSAN(leaf, id); rule != nil {
		names := strings.Join(certAltNames(leaf), ", ")
		return nil, verifyErr(rule, fmt.Sprintf("Received certificate with unexpected identifiers (%q): %q", names, msg))
	}

	for _, ext := range leaf.Extensions {
		if !oidACMEIdentifier.Equal(ext.Id) {
			continue
		}
		if !ext.Critical {
			return nil, verifyErr(ErrNotCritical, "Received certificate with acmeValidationV1 extension that is not Critical.")
		}
		var v []byte
		rest, err := asn1.Unmarshal(ext.Value, &v)
		if err != nil || len(rest) > 0 || len(v) != 32 {
			return nil, verifyErr(ErrMalformedValue, "Received certificate with malformed acmeValidationV1 extension value.")
		}
		return v, nil
	}
	return nil, verifyErr(ErrNoExtension, "Received certificate with no acmeValidationV1 extension.")
}

// checkAcceptableExtensions mirrors Boulder's function of the same name: no
// OID twice, then acmeIdentifier and subjectAltName (in that order) present.
// It returns Boulder's inner message and the rule broken.
func checkAcceptableExtensions(exts []pkix.Extension) (msg string, rule error) {
	// Quadratic, without allocating, for the handful of extensions real
	// certificates have; a map beyond that keeps hostile input linear.
	if len(exts) <= 16 {
		for i := 1; i < len(exts); i++ {
			for j := 0; j < i; j++ {
				if exts[i].Id.Equal(exts[j].Id) {
					return fmt.Sprintf("Extension OID %s seen twice", exts[i].Id), ErrDuplicateExtension
				}
			}
		}
	} else {
		seen := make(map[string]bool, len(exts))
		for _, ext := range exts {
			s := ext.Id.String()
			if seen[s] {
				return fmt.Sprintf("Extension OID %s seen twice", s), ErrDuplicateExtension
			}
			seen[s] = true
		}
	}
	for _, required := range [...]asn1.ObjectIdentifier{oidACMEIdentifier, oidSubjectAltName} {
		if !slices.ContainsFunc(exts, func(e pkix.Extension) bool { return e.Id.Equal(required) }) {
			return fmt.Sprintf("Required extension OID %s is not present", required), ErrMissingExtension
		}
	}
	return "", nil
}

// checkExpectedSAN mirrors Boulder's function of the same name. It returns
// Boulder's inner message and the rule broken.
func checkExpectedSAN(cert *x509.Certificate, id Identifier) (msg string, rule error) {
	var tag int
	var content []byte
	switch id.Type {
	case DNS:
		if len(cert.DNSNames) != 1 || len(cert.IPAddresses) != 0 {
			return "wrong number of identifiers", ErrWrongIdentifierCount
		}
		if !strings.EqualFold(cert.DNSNames[0], id.Value) {
			return "identifier does not match expected identifier", ErrIdentifierMismatch
		}
		tag, content = 2, []byte(id.Value)
	case IP:
		if len(cert.IPAddresses) != 1 || len(cert.DNSNames) != 0 {
			return "wrong number of identifiers", ErrWrongIdentifierCount
		}
		if !cert.IPAddresses[0].Equal(net.ParseIP(id.Value)) {
			return "identifier does not match expected identifier", ErrIdentifierMismatch
		}
		addr, err := netip.ParseAddr(id.Value)
		if err != nil {
			return "parsing IP address identifier: " + err.Error(), ErrIdentifierMismatch
		}
		// Like Boulder, netip's binary form: 4 bytes for IPv4, 16 for IPv6.
		content, _ = addr.MarshalBinary()
		tag = 7
	}
	want, err := asn1.Marshal([]asn1.RawValue{{Tag: tag, Class: asn1.ClassContextSpecific, Bytes: content}})
	if err != nil {
		return "composing SAN extension: " + err.Error(), ErrSANBytes
	}
	for _, ext := range cert.Extensions {
		if oidSubjectAltName.Equal(ext.Id) && !bytes.Equal(ext.Value, want) {
			return "SAN extension does not match expected bytes", ErrSANBytes
		}
	}
	return "", nil
}

// certAltNames mirrors Boulder's: the subject CN and every SAN entry,
// lower-cased, de-duplicated and sorted, for error messages.
func certAltNames(cert *x509.Certificate) []string {
	var names []string
	if cert.Subject.CommonName != "" {
		names = append(names, cert.Subject.CommonName)
	}
	names = append(names, cert.DNSNames...)
	names = append(names, cert.EmailAddresses...)
	for _, ip := range cert.IPAddresses {
		names = append(names, ip.String())
	}
	for _, u := range cert.URIs {
		names = append(names, u.String())
	}
	for i, n := range names {
		names[i] = strings.ToLower(n)
	}
	slices.Sort(names)
	return slices.Compact(names)
}
