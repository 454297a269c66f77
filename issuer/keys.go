package issuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// KeyType names the algorithm of a certificate's private key.
type KeyType string

// The key types a certificate can have. EC256 is the default: it is what
// every current CA and client handles, and its handshakes are the cheapest.
const (
	EC256   KeyType = "ec256"
	EC384   KeyType = "ec384"
	RSA2048 KeyType = "rsa2048"
	RSA3072 KeyType = "rsa3072"
	RSA4096 KeyType = "rsa4096"
)

// KeyTypes lists the accepted key types, in the order --help shows them.
func KeyTypes() []KeyType { return []KeyType{EC256, EC384, RSA2048, RSA3072, RSA4096} }

// ParseKeyType accepts a key type name, case-insensitively; "" means EC256.
func ParseKeyType(s string) (KeyType, error) {
	if s == "" {
		return EC256, nil
	}
	kt := KeyType(strings.ToLower(s))
	for _, k := range KeyTypes() {
		if k == kt {
			return k, nil
		}
	}
	return "", &UnknownKeyTypeError{Value: s}
}

// UnknownKeyTypeError is ParseKeyType's error for a name that is none of
// KeyTypes, typed so that a caller (a config file's validator) can say
// where the value was and suggest the nearest one.
type UnknownKeyTypeError struct {
	Value string // as given
}

func (e *UnknownKeyTypeError) Error() string {
	return fmt.Sprintf("unknown key type %q: use one of ec256, ec384, rsa2048, rsa3072, rsa4096", e.Value)
}

// valid reports whether kt is one of KeyTypes, or "" (EC256).
func (kt KeyType) valid() bool {
	return kt == "" || slices.Contains(KeyTypes(), kt)
}

// Generate makes a fresh private key of type kt.
func (kt KeyType) Generate() (crypto.Signer, error) {
	switch kt {
	case EC256, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case EC384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case RSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case RSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case RSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	return nil, fmt.Errorf("generating key: unknown key type %q", kt)
}

// EncodeKeyPEM encodes key as a PKCS #8 "PRIVATE KEY" PEM block, which
// nginx, HAProxy, Apache and Go all read.
func EncodeKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM reads the first private key in PEM data: PKCS #8, SEC 1 (EC) or
// PKCS #1 (RSA), so that keys written by other clients can be taken over.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("parsing private key: no PEM private key block found")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("parsing %s: %T cannot sign", block.Type, key)
		}
		return signer, nil
	}
}

// KeyTypeOf reports the KeyType of an existing key, or "" if it is none of them.
func KeyTypeOf(key crypto.PublicKey) KeyType {
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return EC256
		case elliptic.P384():
			return EC384
		}
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return RSA2048
		case 3072:
			return RSA3072
		case 4096:
			return RSA4096
		}
	}
	return ""
}
