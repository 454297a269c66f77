package challenge

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"strings"
)

// VerifyStructure checks leaf as a TLS-ALPN-01 validation certificate for
// id without knowing the key authorization: every rule Verify applies but
// the hash comparison. It is what a responder checks before it serves a
// certificate another program made (an ACME client writing dehydrated's
// ALPNCERTDIR), so that a certificate the CA would refuse for its shape
// is reported here, with the CA's words, instead of at the CA. A refused
// certificate gives a *VerifyError.
func VerifyStructure(leaf *x509.Certificate, id Identifier) error {
	if leaf == nil {
		return fmt.Errorf("challenge: VerifyStructure: nil certificate")
	}
	if id.Type != DNS && id.Type != IP {
		return fmt.Errorf("challenge: VerifyStructure %q: %w", id.Value, ErrIdentifierType)
	}
	if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil ||
		!bytes.Equal(leaf.RawSubject, leaf.RawIssuer) {
		return verifyErr(ErrNotSelfSigned, "Received certificate which is not self-signed.")
	}
	if msg, rule := checkAcceptableExtensions(leaf.Extensions); rule != nil {
		return verifyErr(rule, fmt.Sprintf("Received certificate with unexpected extensions: %q", msg))
	}
	if msg, rule := checkExpectedSAN(leaf, id); rule != nil {
		names := strings.Join(certAltNames(leaf), ", ")
		return verifyErr(rule, fmt.Sprintf("Received certificate with unexpected identifiers (%q): %q", names, msg))
	}
	for _, ext := range leaf.Extensions {
		if !oidACMEIdentifier.Equal(ext.Id) {
			continue
		}
		if !ext.Critical {
			return verifyErr(ErrNotCritical, "Received certificate with acmeValidationV1 extension that is not Critical.")
		}
		var v []byte
		rest, err := asn1.Unmarshal(ext.Value, &v)
		if err != nil || len(rest) > 0 || len(v) != 32 {
			return verifyErr(ErrMalformedValue, "Received certificate with malformed acmeValidationV1 extension value.")
		}
		return nil
	}
	return verifyErr(ErrNoExtension, "Received certificate with no acmeValidationV1 extension.")
}
