package challenge

import "crypto/x509"

// VerifyStructure checks leaf as a TLS-ALPN-01 validation certificate for
// id without knowing the key authorization: every rule Verify applies but
// the hash comparison. It is what a responder checks before it serves a
// certificate another program made (an ACME client writing dehydrated's
// ALPNCERTDIR), so that a certificate the CA would refuse for its shape
// is reported here, with the CA's words, instead of at the CA. A refused
// certificate gives a *VerifyError.
func VerifyStructure(leaf *x509.Certificate, id Identifier) error {
	_, err := validationValue("VerifyStructure", leaf, id)
	return err
}
