package etcd

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/storage"
)

// TestEncryption runs the encryption cases on one three-member cluster, each under a prefix
// of its own.
func TestEncryption(t *testing.T) {
	c := etcdtest.Start(t, 3)
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *etcdtest.Cluster)
	}{
		{"NoPrivateKeyInEtcd", testNoPrivateKeyInEtcd},
		{"SealedValueBoundToKey", testSealedValueBoundToKey},
		{"WithoutEncryptionKey", testWithoutEncryptionKey},
		{"WrongKeyRefused", testWrongKeyRefused},
		{"FirstOpensAgree", testFirstOpensAgree},
		{"Mode", testMode},
		{"NestedPrefixInternals", testNestedPrefixInternals},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, c) })
	}
}

// testNoPrivateKeyInEtcd stores private keys the ways tlsalpn does, then reads everything under
// the prefix straight from etcd: no PEM private key, no key's DER bytes, anywhere.
func testNoPrivateKeyInEtcd(t *testing.T, c *etcdtest.Cluster) {
	s := open(t, c, "secret")
	ctx := t.Context()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("public")})
	for _, p := range []struct {
		key  string
		mode os.FileMode
	}{
		{"accounts/ca/default/key.pem", 0o600},
		{"lineages/example.com/1/key.pem", 0},
		{"orders/ca/r1/key.pem", 0o400},
	} {
		if err := s.Put(ctx, p.key, keyPEM, p.mode); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, p.key); err != nil || !bytes.Equal(got, keyPEM) {
			t.Fatalf("Get(%q) = %q, %v", p.key, got, err)
		}
	}
	if err := s.Put(ctx, "lineages/example.com/1/cert.pem", certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.PutEphemeral(ctx, "cluster/challenges/example.com", keyPEM); err != nil {
		t.Fatal(err)
	}
	r, err := c.Client(t).Get(ctx, "secret/", clientv3WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	sawCert := false
	for _, kv := range r.Kvs {
		for _, secret := range [][]byte{[]byte("PRIVATE KEY"), der, der[len(der)-32:]} {
			if bytes.Contains(kv.Value, secret) {
				t.Errorf("etcd key %s holds private key material", kv.Key)
			}
		}
		sawCert = sawCert || bytes.Contains(kv.Value, []byte("BEGIN CERTIFICATE"))
	}
	if !sawCert || len(r.Kvs) < 6 {
		t.Errorf("read %d keys, certificate seen %v: the scan is not looking at the values", len(r.Kvs), sawCert)
	}
}

// testSealedValueBoundToKey: a sealed value copied to another key, or with its header altered,
// does not open.
func testSealedValueBoundToKey(t *testing.T, c *etcdtest.Cluster) {
	s := open(t, c, "bound")
	ctx := t.Context()
	if err := s.Put(ctx, "a/key.pem", []byte("secret a"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw := c.Client(t)
	r, err := raw.Get(ctx, "bound/a/key.pem")
	if err != nil || len(r.Kvs) != 1 {
		t.Fatal(r, err)
	}
	sealed := r.Kvs[0].Value
	tampered := bytes.Clone(sealed)
	tampered[len(magic)+1+7] ^= 1 // the modification time
	for key, value := range map[string][]byte{"b/key.pem": sealed, "a/key.pem": tampered} {
		if _, err := raw.Put(ctx, "bound/"+key, string(value)); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, key); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), key) {
			t.Errorf("Get(%q) of a moved or altered sealed value = %q, %v; want ErrCorrupt naming the key", key, got, err)
		}
	}
}

// testWithoutEncryptionKey: a Store without a key refuses private values, both ways, and
// handles public ones.
func testWithoutEncryptionKey(t *testing.T, c *etcdtest.Cluster) {
	sealed := open(t, c, "nokey")
	ctx := t.Context()
	if err := sealed.Put(ctx, "a/key.pem", []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, c, "nokey", func(cfg *Config) { cfg.EncryptionKey = nil })
	for _, mode := range []os.FileMode{0o600, 0, 0o400} {
		if err := s.Put(ctx, "b/key.pem", []byte("secret"), mode); !errors.Is(err, ErrNoEncryptionKey) || !strings.Contains(err.Error(), "b/key.pem") {
			t.Errorf("Put(mode %#o) without a key = %v, want ErrNoEncryptionKey naming the key", mode, err)
		}
	}
	if _, err := s.Get(ctx, "b/key.pem"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("a refused Put stored something: %v", err)
	}
	if _, err := s.Get(ctx, "a/key.pem"); !errors.Is(err, ErrNoEncryptionKey) {
		t.Errorf("Get of a sealed value without a key = %v, want ErrNoEncryptionKey", err)
	}
	if info, err := s.Stat(ctx, "a/key.pem"); err != nil || info.Size != int64(len("secret")) {
		t.Errorf("Stat of a sealed value without a key = %+v, %v", info, err)
	}
	if err := s.Put(ctx, "b/cert.pem", []byte("public"), 0o644); err != nil {
		t.Errorf("Put of a public value without a key: %v", err)
	}
}

// testWrongKeyRefused: Open with another key than the data's fails with ErrWrongKey, naming
// both key ids, and writes nothing.
func testWrongKeyRefused(t *testing.T, c *etcdtest.Cluster) {
	s := open(t, c, "wrong")
	if err := s.Put(t.Context(), "a/key.pem", []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw := c.Client(t)
	before, err := raw.Get(t.Context(), "wrong/", clientv3WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	other := bytes.Repeat([]byte{7}, 32)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = Open(ctx, Config{Endpoints: c.Endpoints(), Prefix: "wrong", EncryptionKey: other})
	if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), KeyID(testKey)) || !strings.Contains(err.Error(), KeyID(other)) {
		t.Fatalf("Open with another key = %v, want ErrWrongKey naming both key ids", err)
	}
	after, err := raw.Get(t.Context(), "wrong/", clientv3WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if after.Header.Revision != before.Header.Revision {
		t.Errorf("etcd revision went from %d to %d: a refused Open wrote something", before.Header.Revision, after.Header.Revision)
	}
	// Another prefix is another store: the same key can start afresh there.
	open(t, c, "other", func(cfg *Config) { cfg.EncryptionKey = other })
}

// testFirstOpensAgree: two nodes opening an empty prefix at once with different keys: one
// key wins, the other Open fails with ErrWrongKey.
func testFirstOpensAgree(t *testing.T, c *etcdtest.Cluster) {
	for round := range 5 {
		prefix := "race" + string(rune('a'+round))
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range errs {
			wg.Go(func() {
				s, err := Open(t.Context(), Config{Endpoints: c.Endpoints(), Prefix: prefix, EncryptionKey: bytes.Repeat([]byte{byte(i + 1)}, 32)})
				if err == nil {
					s.Close()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		wrong := 0
		for _, err := range errs {
			switch {
			case errors.Is(err, ErrWrongKey):
				wrong++
			case err != nil:
				t.Fatal(err)
			}
		}
		if wrong != 1 {
			t.Errorf("round %d: %d of 2 first Opens refused (%v), want exactly 1", round, wrong, errs)
		}
	}
}

func TestLoadKey(t *testing.T) {
	key := bytes.Repeat([]byte{0xa5}, 32)
	b64 := base64.StdEncoding.EncodeToString(key)
	tests := []struct {
		name    string
		content []byte
		ok      bool
	}{
		{"raw", key, true},
		{"raw with newlines inside", append(bytes.Repeat([]byte{'\n'}, 16), bytes.Repeat([]byte{1}, 16)...), true},
		{"base64", []byte(b64), true},
		{"base64 and newline", []byte(b64 + "\n"), true},
		{"base64 and CRLF", []byte(b64 + "\r\n"), true},
		{"31 bytes", key[:31], false},
		{"33 bytes", append(bytes.Clone(key), 1), false},
		{"base64 of 16 bytes", []byte(base64.StdEncoding.EncodeToString(key[:16]) + "\n"), false},
		{"hex", []byte(strings.Repeat("a5", 32)), false},
		{"empty", nil, false},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(p, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := LoadKey(p)
			if tt.ok {
				if err != nil || len(got) != 32 {
					t.Fatalf("LoadKey = %x, %v", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "head -c 32 /dev/urandom") || !strings.Contains(err.Error(), p) {
				t.Errorf("LoadKey = %x, %v; want an error naming the file and saying how to make a key", got, err)
			}
		})
	}
	if _, err := LoadKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("LoadKey of a missing file succeeded")
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		in        string
		endpoints []string
		prefix    string
		wantErr   string
	}{
		{in: "etcd://127.0.0.1:2379/tlsalpn", endpoints: []string{"127.0.0.1:2379"}, prefix: "tlsalpn"},
		{in: "etcd://a:1,b:2,[::1]:3/x/y", endpoints: []string{"a:1", "b:2", "[::1]:3"}, prefix: "x/y"},
		{in: "etcd://a:1", endpoints: []string{"a:1"}, prefix: ""},
		{in: "etcd://a:1/", endpoints: []string{"a:1"}, prefix: ""},
		{in: "http://a:1/x", wantErr: "not an etcd:// URL"},
		{in: "/var/lib/tlsalpn", wantErr: "not an etcd:// URL"},
		{in: "etcd:///x", wantErr: "no HOST:PORT"},
		{in: "etcd://a/x", wantErr: "not HOST:PORT"},
		{in: "etcd://a:0/x", wantErr: "1-65535"},
		{in: "etcd://a:http/x", wantErr: "1-65535"},
		{in: "etcd://a:1,,b:2/x", wantErr: "not HOST:PORT"},
		{in: "etcd://user:pw@a:1/x", wantErr: "not allowed"},
		{in: "etcd://a:1/x?y=z", wantErr: "not allowed"},
		{in: "etcd://a:1/../x", wantErr: "prefix"},
		{in: "etcd://a:1/x//y", wantErr: "prefix"},
		{in: "etcd://a:1/.hidden", wantErr: "prefix"},
	}
	for _, tt := range tests {
		cfg, err := ParseURL(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseURL(%q) = %+v, %v; want an error containing %q", tt.in, cfg, err, tt.wantErr)
			}
			continue
		}
		if err != nil || strings.Join(cfg.Endpoints, " ") != strings.Join(tt.endpoints, " ") || cfg.Prefix != tt.prefix {
			t.Errorf("ParseURL(%q) = %q %q, %v; want %q %q", tt.in, cfg.Endpoints, cfg.Prefix, err, tt.endpoints, tt.prefix)
		}
	}
}

// testMode: the mode given to Put comes back from Mode, sealed or not, with or without a key.
func testMode(t *testing.T, c *etcdtest.Cluster) {
	s := open(t, c, "mode")
	nokey := open(t, c, "mode", func(cfg *Config) { cfg.EncryptionKey = nil })
	ctx := t.Context()
	tests := []struct {
		put, want os.FileMode
	}{
		{0o600, 0o600}, {0, 0o600}, {0o400, 0o400}, {0o644, 0o644}, {0o640, 0o640}, {0o444, 0o444},
	}
	for i, tt := range tests {
		key := fmt.Sprintf("k/%d", i)
		if err := s.Put(ctx, key, []byte("v"), tt.put); err != nil {
			t.Fatal(err)
		}
		for _, st := range []*Store{s, nokey} {
			if got, err := st.Mode(ctx, key); err != nil || got != tt.want {
				t.Errorf("Put with mode %#o: Mode = %#o, %v; want %#o", tt.put, got, err, tt.want)
			}
		}
	}
	if _, err := s.Mode(ctx, "missing"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Mode of a missing key = %v, want ErrNotExist", err)
	}
}

// testNestedPrefixInternals: a Store on a prefix nested in another's does not show its own
// names (check value, locks) as keys of the outer one.
func testNestedPrefixInternals(t *testing.T, c *etcdtest.Cluster) {
	outer := open(t, c, "nest")
	inner := open(t, c, "nest/inner")
	ctx := t.Context()
	unlock, err := inner.Lock(ctx, "l")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if err := inner.Put(ctx, "a", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	keys, err := outer.List(ctx, "", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0] != "inner/a" {
		t.Errorf("outer List = %q, want only [inner/a]", keys)
	}
}
