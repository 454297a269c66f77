package importer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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

// selfSigned is a certificate for names, and its key, in PEM.
func selfSigned(t *testing.T, key crypto.Signer, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

// TestACMEShRSAAndECCSideBySide: acme.sh keeps NAME/ (RSA) and NAME_ecc/
// for one name; both are taken, as NAME and NAME_ecc, with their key
// types, the account of their Le_API and no hook when nothing was
// installed.
func TestACMEShRSAAndECCSideBySide(t *testing.T) {
	home := t.TempDir()
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ak, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	akd, _ := x509.MarshalECPrivateKey(ak)
	const api = "https://acme.example.net/directory"
	files := map[string][]byte{
		"ca/acme.example.net/directory/ca.conf":     []byte("ACCOUNT_URL='https://acme.example.net/acct/9'\n"),
		"ca/acme.example.net/directory/account.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: akd}),
		"account.conf": []byte("ACCOUNT_EMAIL='me@example.com'\n"),
	}
	for dir, key := range map[string]crypto.Signer{"example.com": rk, "example.com_ecc": ek} {
		c, k := selfSigned(t, key, "example.com")
		files[dir+"/example.com.conf"] = []byte("Le_Domain='example.com'\nLe_Alt='no'\nLe_API='" + api + "'\n")
		files[dir+"/fullchain.cer"], files[dir+"/example.com.key"] = c, k
	}
	for p, data := range files {
		p = filepath.Join(home, p)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	src, err := ACMESh(home)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range src.Certificates {
		got[c.CertName] = string(c.KeyType) + " " + c.CA + " " + c.Email + " hook=" + c.DeployHook
	}
	want := map[string]string{
		"example.com":     "rsa2048 " + api + " me@example.com hook=",
		"example.com_ecc": "ec256 " + api + " me@example.com hook=",
	}
	if len(got) != 2 || got["example.com"] != want["example.com"] || got["example.com_ecc"] != want["example.com_ecc"] {
		t.Errorf("certificates %v; want %v", got, want)
	}
	if len(src.Accounts) != 1 || src.Accounts[0].Location != "https://acme.example.net/acct/9" || !src.Accounts[0].Key.Public().(*ecdsa.PublicKey).Equal(ak.Public()) {
		t.Errorf("accounts %+v; want the one of ca/acme.example.net/directory", src.Accounts)
	}
}

// TestTraefikRefusals: acme.json files that cannot be taken whole are
// refused with the reason.
func TestTraefikRefusals(t *testing.T) {
	tests := []struct{ name, json, want string }{
		{"v1", `{"Account":{"Email":"a@example.com"},"DomainsCertificate":{"Certs":[]}}`, "Traefik v1"},
		{"no certificates", `{"le":{"Account":null,"Certificates":null}}`, "no certificates"},
		{"certificates without an account", `{"le":{"Certificates":[{"domain":{"main":"a.example"}}]}}`, "no registered account"},
		{"not JSON", `acme`, "not Traefik's acme.json"},
	}
	for _, tt := range tests {
		f := filepath.Join(t.TempDir(), "acme.json")
		if err := os.WriteFile(f, []byte(tt.json), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Traefik(f, Options{})
		var re *RefusedError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v; want a *RefusedError saying %q", tt.name, err, tt.want)
		}
	}
}
