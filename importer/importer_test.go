package importer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func b64(i *big.Int) string { return base64.RawURLEncoding.EncodeToString(i.Bytes()) }

// TestParseJWK: certbot's account keys, RSA (its default) and EC, read
// back as the same keys; damaged ones are errors.
func TestParseJWK(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaJWK, _ := json.Marshal(map[string]string{"kty": "RSA", "n": b64(rk.N), "e": b64(big.NewInt(int64(rk.E))), "d": b64(rk.D),
		"p": b64(rk.Primes[0]), "q": b64(rk.Primes[1]), "dp": b64(rk.Precomputed.Dp), "dq": b64(rk.Precomputed.Dq), "qi": b64(rk.Precomputed.Qinv)})
	ecJWK, _ := json.Marshal(map[string]string{"kty": "EC", "crv": "P-384", "x": b64(ek.X), "y": b64(ek.Y), "d": b64(ek.D)})
	noD, _ := json.Marshal(map[string]string{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"})
	tests := []struct {
		name string
		jwk  []byte
		want crypto.PublicKey // nil: an error
	}{
		{"RSA", rsaJWK, rk.Public()},
		{"EC P-384", ecJWK, ek.Public()},
		{"EC without d", noD, nil},
		{"oct", []byte(`{"kty":"oct","k":"AA"}`), nil},
		{"not JSON", []byte(`-----BEGIN`), nil},
	}
	for _, tt := range tests {
		got, err := parseJWK(tt.jwk)
		switch {
		case tt.want == nil && err == nil:
			t.Errorf("%s: no error", tt.name)
		case tt.want != nil && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.want != nil && !got.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tt.want):
			t.Errorf("%s: another key", tt.name)
		}
	}
}

// TestReadShellConf: acme.sh's KEY='value' lines, with its quoting and its
// base64 encoding of commands (_setopt / __ACME_BASE64__).
func TestReadShellConf(t *testing.T) {
	reload := `systemctl reload nginx && echo "it's done"`
	conf := "Le_Domain='example.com'\nLe_Alt='no'\n#Le_Webroot='x'\nexport ACCOUNT_EMAIL=\"a@example.com\"\n" +
		"Le_ReloadCmd='__ACME_BASE64__START_" + base64.StdEncoding.EncodeToString([]byte(reload)) + "__ACME_BASE64__END_'\n" +
		`Le_Quoted='it'\''s'` + "\nBare=value\n"
	p := filepath.Join(t.TempDir(), "x.conf")
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readShellConf(p)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"Le_Domain": "example.com", "Le_Alt": "no", "ACCOUNT_EMAIL": "a@example.com",
		"Le_ReloadCmd": reload, "Le_Quoted": "it's", "Bare": "value", "Le_Webroot": ""} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if err := os.WriteFile(p, []byte("Le_Domain='unterminated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readShellConf(p); err == nil || !strings.Contains(err.Error(), "x.conf:1") {
		t.Errorf("unterminated quote: %v; want an error naming the line", err)
	}
}
