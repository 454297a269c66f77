package issuer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRootPool checks that a CA root file is trusted when it holds a
// certificate and refused, with an error that says which, when it is
// missing or holds none: never a silent fall-back to the system roots.
func TestRootPool(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "root.pem")
	os.WriteFile(good, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, []byte("not PEM\n"), 0o600)

	tests := []struct {
		name    string
		file    string
		wantErr error
	}{
		{"a root", good, nil},
		{"no certificate", empty, ErrNoRootCertificate},
		{"missing", filepath.Join(dir, "missing.pem"), fs.ErrNotExist},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pool, err := RootPool(tc.file)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("RootPool = %v, want %v", err, tc.wantErr)
			}
			if err == nil {
				cert, _ := x509.ParseCertificate(der)
				if _, err := cert.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
					t.Errorf("the root in the file is not trusted: %v", err)
				}
			}
			if _, err := HTTPClient(tc.file); !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Errorf("HTTPClient = %v, want %v", err, tc.wantErr)
			}
		})
	}
}
