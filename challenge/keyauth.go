package challenge

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
)

// Thumbprint returns the RFC 7638 JWK thumbprint of pub (SHA-256,
// base64url without padding), as used in an ACME key authorization
// (RFC 8555 §8.1). pub may be an *ecdsa.PublicKey on P-256, P-384 or P-521,
// an *rsa.PublicKey, or an ed25519.PublicKey (RFC 8037 "OKP" key). For
// convenience a private key (anything with a Public method) is accepted too,
// and its public half is used.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	if k, ok := pub.(interface{ Public() crypto.PublicKey }); ok {
		pub = k.Public()
	}
	b64 := base64.RawURLEncoding.EncodeToString
	var jwk string
	// The members are in lexicographic order with no white space, as
	// RFC 7638 §3.2 requires.
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		var crv string
		switch k.Curve {
		case elliptic.P256():
			crv = "P-256"
		case elliptic.P384():
			crv = "P-384"
		case elliptic.P521():
			crv = "P-521"
		default:
			return "", errors.New("challenge: JWK thumbprint: unsupported ECDSA curve")
		}
		// Bytes gives the uncompressed point 04 || X || Y with each
		// coordinate padded to the field size, as RFC 7518 §6.2.1.2 wants.
		pt, err := k.Bytes()
		if err != nil {
			return "", fmt.Errorf("challenge: JWK thumbprint: %w", err)
		}
		n := (len(pt) - 1) / 2
		jwk = `{"crv":"` + crv + `","kty":"EC","x":"` + b64(pt[1:1+n]) + `","y":"` + b64(pt[1+n:]) + `"}`
	case *rsa.PublicKey:
		if k.N == nil || k.E <= 0 {
			return "", errors.New("challenge: JWK thumbprint: invalid RSA public key")
		}
		e := big.NewInt(int64(k.E)).Bytes()
		jwk = `{"e":"` + b64(e) + `","kty":"RSA","n":"` + b64(k.N.Bytes()) + `"}`
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", errors.New("challenge: JWK thumbprint: invalid Ed25519 public key length")
		}
		jwk = `{"crv":"Ed25519","kty":"OKP","x":"` + b64(k) + `"}`
	default:
		return "", fmt.Errorf("challenge: JWK thumbprint: unsupported key type %T", pub)
	}
	sum := sha256.Sum256([]byte(jwk))
	return b64(sum[:]), nil
}

// KeyAuthorization returns the key authorization for token and the ACME
// account key: token + "." + Thumbprint(accountKey) (RFC 8555 §8.1).
func KeyAuthorization(token string, accountKey crypto.PublicKey) (string, error) {
	if token == "" {
		return "", errors.New("challenge: key authorization: empty token")
	}
	tp, err := Thumbprint(accountKey)
	if err != nil {
		return "", err
	}
	return token + "." + tp, nil
}

// KeyAuthorizationHash returns SHA-256(keyAuth), the value carried in the
// acmeIdentifier extension (RFC 8737 §3).
func KeyAuthorizationHash(keyAuth string) [32]byte {
	return sha256.Sum256([]byte(keyAuth))
}
