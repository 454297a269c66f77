// Package challenge implements the certificate side of the ACME TLS-ALPN-01
// challenge (RFC 8737) for DNS and IP identifiers (RFC 8738) in one place:
// identifiers and the SNI a CA sends for them, the key authorization, the
// self-signed validation certificate, and Verify, which applies the checks
// Let's Encrypt's Boulder makes on that certificate, with Boulder's words.
//
// The package is pure: it does no network or file I/O, so the responder, the
// issuer and the outside-in checker can all share it and it can be fuzzed and
// benchmarked alone.
package challenge

import "encoding/asn1"

// ALPNProto is the ALPN protocol ID a CA offers, alone, when it validates a
// TLS-ALPN-01 challenge (RFC 8737 §6.2).
const ALPNProto = "acme-tls/1"

// oidACMEIdentifier is id-pe-acmeIdentifier, 1.3.6.1.5.5.7.1.31
// (RFC 8737 §6.1). Never mutated; OIDACMEIdentifier hands out copies.
var oidACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// oidSubjectAltName is id-ce-subjectAltName, 2.5.29.17 (RFC 5280 §4.2.1.6).
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// OIDACMEIdentifier returns the OID of the acmeIdentifier extension,
// 1.3.6.1.5.5.7.1.31. The obsolete draft OID 1.3.6.1.5.5.7.1.30.1 is not
// accepted by any current CA and is never used or honoured by this package.
// The result is a fresh copy that the caller may modify.
func OIDACMEIdentifier() asn1.ObjectIdentifier {
	return append(asn1.ObjectIdentifier(nil), oidACMEIdentifier...)
}
