package manager

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// importPair is a certificate for names and its key, as another client
// would have obtained it (self-signed: Import asks nothing of a CA).
func importPair(t *testing.T, serial int64, names ...string) (chainPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(60 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

// TestImport: a certificate and key from another client become a lineage
// that Load and List read back like an obtained one, with its key type
// taken from the key; a name stored already is an *ExistsError until
// forced; a pair that does not match, or a certificate that does not cover
// the names, is refused and stores nothing.
func TestImport(t *testing.T) {
	ctx := context.Background()
	chain, key := importPair(t, 0x1001, "a.example", "b.example")
	_, otherKey := importPair(t, 0x1002, "a.example")
	chain2, key2 := importPair(t, 0x1003, "a.example", "b.example")
	spec := Spec{CertName: "site", Names: []string{"a.example", "b.example"}, CA: "https://ca.example/dir", Email: "ops@example.com"}
	tests := []struct {
		name       string
		chain, key []byte
		names      []string
		force      bool
		wantErr    string // "" for success
		exists     bool   // want an *ExistsError
		wantSerial string // stored after
	}{
		{name: "new", chain: chain, key: key, wantSerial: "1001"},
		{name: "again", chain: chain2, key: key2, exists: true, wantErr: "stored already", wantSerial: "1001"},
		{name: "again, forced", chain: chain2, key: key2, force: true, wantSerial: "1003"},
		{name: "key of another certificate", chain: chain, key: otherKey, force: true, wantErr: "do not belong together", wantSerial: "1003"},
		{name: "a name not covered", chain: chain, key: key, names: []string{"a.example", "c.example"}, force: true, wantErr: "does not cover [c.example]", wantSerial: "1003"},
	}
	st, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := New(st, nil, nil)
	for _, tt := range tests {
		s := spec
		if tt.names != nil {
			s.Names = tt.names
		}
		rec, err := m.Import(ctx, s, tt.chain, tt.key, tt.force)
		var ee *ExistsError
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: error %v, want one saying %q", tt.name, err, tt.wantErr)
		case tt.exists != errors.As(err, &ee):
			t.Errorf("%s: error %v: *ExistsError %v, want %v", tt.name, err, !tt.exists, tt.exists)
		case err == nil && (rec.KeyType != issuer.EC384 || rec.ID() != "site"):
			t.Errorf("%s: record %+v: want certificate name site, key type ec384 (from the key)", tt.name, rec)
		}
		got, err := m.Load(ctx, "site")
		if err != nil {
			t.Fatalf("%s: loading the import: %v", tt.name, err)
		}
		if got.Serial != tt.wantSerial || got.CA != spec.CA || got.Email != spec.Email || got.Account != "" {
			t.Errorf("%s: stored %+v; want serial %s from %s for %s", tt.name, got.Record, tt.wantSerial, spec.CA, spec.Email)
		}
	}
	all, bad, err := m.List(ctx)
	if err != nil || len(all) != 1 || len(bad) != 0 {
		t.Errorf("List after imports: %d stored, %v damaged, %v; want the one", len(all), bad, err)
	}
}
