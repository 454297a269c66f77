package issuer

// Chains: picking the one asked for, parsing them, and checking that the
// leaf is the one ordered.

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/challenge"
)

func identifierValues(ids []challenge.Identifier) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.Value
	}
	return out
}

// pickChain parses the offered chains and returns the preferred one: the
// first whose topmost certificate's issuer common name is preferred, else
// the CA's default (the first).
func pickChain(chains []acme.Certificate, preferred string) (acme.Certificate, []*x509.Certificate, error) {
	if len(chains) == 0 {
		return acme.Certificate{}, nil, errors.New("the CA returned no certificate chain")
	}
	var (
		first      []*x509.Certificate
		firstChain acme.Certificate
	)
	for i, c := range chains {
		certs, err := ParseChainPEM(c.ChainPEM)
		if err != nil {
			if i == 0 {
				return acme.Certificate{}, nil, fmt.Errorf("parsing chain from %s: %w", c.URL, err)
			}
			continue
		}
		if i == 0 {
			first, firstChain = certs, c
		}
		if preferred == "" {
			break
		}
		top := certs[len(certs)-1]
		if top.Issuer.CommonName == preferred || top.Subject.CommonName == preferred {
			return c, certs, nil
		}
	}
	return firstChain, first, nil
}

// ParseChainPEM parses every CERTIFICATE block in data, leaf first.
func ParseChainPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate in PEM data")
	}
	return certs, nil
}

// checkLeaf makes sure the CA issued what was asked for, before anything is
// written where a server would load it.
func checkLeaf(leaf *x509.Certificate, key crypto.Signer, names []string) error {
	if !publicKeysEqual(leaf.PublicKey, key.Public()) {
		return errors.New("issued certificate does not match our private key")
	}
	for _, n := range names {
		if err := leaf.VerifyHostname(n); err != nil {
			return fmt.Errorf("issued certificate does not cover %s: %w", n, err)
		}
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}
