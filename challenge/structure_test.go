package challenge

import (
	"crypto/tls"
	"errors"
	"testing"
)

// TestVerifyStructure: a certificate Build made passes for its own
// identifier, whatever the key authorization, and fails for another with
// the CA's rule; BuildFromHash makes the certificate Build makes.
func TestVerifyStructure(t *testing.T) {
	id, _ := ParseIdentifier("example.com")
	const ka = "token.thumbprint"
	for _, build := range []func() (*tls.Certificate, error){
		func() (*tls.Certificate, error) { c, err := Build(id, ka); return c, err },
		func() (*tls.Certificate, error) { c, err := BuildFromHash(id, KeyAuthorizationHash(ka)); return c, err },
	} {
		c, err := build()
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyStructure(c.Leaf, id); err != nil {
			t.Errorf("VerifyStructure of its own identifier: %v", err)
		}
		if err := Verify(c.Leaf, id, ka); err != nil {
			t.Errorf("Verify: %v", err)
		}
		other, _ := ParseIdentifier("other.example")
		if err := VerifyStructure(c.Leaf, other); !errors.Is(err, ErrIdentifierMismatch) {
			t.Errorf("VerifyStructure for another name: %v; want ErrIdentifierMismatch", err)
		}
	}
}
