package challenge

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"testing"

	"golang.org/x/crypto/acme"
)

func TestThumbprintMatchesXCryptoACME(t *testing.T) {
	var keys []crypto.Signer
	for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()} {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keys = append(keys, rk)
	for _, k := range keys {
		want, err := acme.JWKThumbprint(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range []crypto.PublicKey{k.Public(), k} {
			got, err := Thumbprint(in)
			if err != nil || got != want {
				t.Errorf("Thumbprint(%T) = %q, %v; want %q (x/crypto/acme)", in, got, err, want)
			}
		}
	}
}

func TestThumbprintEd25519RFC8037(t *testing.T) {
	// RFC 8037 Appendix A.3.
	x, err := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	if err != nil {
		t.Fatal(err)
	}
	const want = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
	if got, err := Thumbprint(ed25519.PublicKey(x)); err != nil || got != want {
		t.Errorf("Thumbprint(RFC 8037 key) = %q, %v; want %q", got, err, want)
	}
}

func TestThumbprintErrors(t *testing.T) {
	for _, in := range []crypto.PublicKey{nil, "key", ed25519.PublicKey{1, 2, 3}, &rsa.PublicKey{}} {
		if got, err := Thumbprint(in); err == nil {
			t.Errorf("Thumbprint(%#v) = %q, want an error", in, got)
		}
	}
}

func TestKeyAuthorization(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tp, _ := acme.JWKThumbprint(k.Public())
	got, err := KeyAuthorization("tok-en_1", k.Public())
	if err != nil || got != "tok-en_1."+tp {
		t.Errorf("KeyAuthorization = %q, %v; want %q", got, err, "tok-en_1."+tp)
	}
	if _, err := KeyAuthorization("", k.Public()); err == nil {
		t.Error("KeyAuthorization with empty token: want an error")
	}
	// The acmeIdentifier value is SHA-256 of the key authorization; check a
	// fixed vector, SHA-256("abc").
	h := KeyAuthorizationHash("abc")
	const want = "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
	if got := base64.RawURLEncoding.EncodeToString(h[:]); got != want {
		t.Errorf("KeyAuthorizationHash(abc) = %s, want %s", got, want)
	}
}
