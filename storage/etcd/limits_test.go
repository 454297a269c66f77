package etcd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
)

// TestTLSAndAuth: TLS with a client certificate and etcd users; refusals are ErrAuth.
func TestTLSAndAuth(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, 3, etcdtest.WithTLS(), etcdtest.WithAuth("alice", "secret"))
	ca, cert, key := c.ClientTLS()
	withTLS := func(cfg *Config) { cfg.CAFile, cfg.CertFile, cfg.KeyFile = ca, cert, key }
	s := open(t, c, "tls", withTLS, func(cfg *Config) { cfg.Username, cfg.Password = "alice", "secret" })
	ctx := t.Context()
	if err := s.Put(ctx, "a/key.pem", []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, "a/key.pem"); err != nil || string(got) != "k" {
		t.Fatalf("Get over TLS with auth = %q, %v", got, err)
	}
	unlock, err := s.Lock(ctx, "l")
	if err != nil {
		t.Fatalf("Lock over TLS with auth: %v", err)
	}
	unlock()

	tests := []struct {
		name string
		cfg  func(*Config)
		want error
	}{
		{"wrong password", func(cfg *Config) { withTLS(cfg); cfg.Username, cfg.Password = "alice", "wrong" }, ErrAuth},
		{"unknown user", func(cfg *Config) { withTLS(cfg); cfg.Username, cfg.Password = "mallory", "secret" }, ErrAuth},
		{"no client certificate", func(cfg *Config) { cfg.CAFile = ca; cfg.Username, cfg.Password = "alice", "secret" }, ErrUnavailable},
		{"no CA", func(cfg *Config) {
			cfg.CertFile, cfg.KeyFile = cert, key
			cfg.Username, cfg.Password = "alice", "secret"
		}, ErrUnavailable},
		{"plaintext", func(cfg *Config) { cfg.Username, cfg.Password = "alice", "secret" }, ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{Endpoints: c.Endpoints(), Prefix: "tls", EncryptionKey: testKey, DialTimeout: time.Second, RequestTimeout: 3 * time.Second}
			tt.cfg(&cfg)
			start := time.Now()
			s, err := Open(t.Context(), cfg)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("Open = %v, want %v", err, tt.want)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("Open failed only after %v", d)
			}
			t.Logf("%v", err)
		})
	}
}

// TestTooLargeAndQuota: a value beyond --max-request-bytes, and writes beyond the quota, fail
// with clear errors naming the key, and what was stored stays readable.
func TestTooLargeAndQuota(t *testing.T) {
	c := etcdtest.Start(t, 3, etcdtest.WithMaxRequestBytes(256<<10), etcdtest.WithQuota(4<<20))
	s := open(t, c, "limits")
	ctx := t.Context()
	if err := s.Put(ctx, "big/cert.pem", []byte("small"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := s.Put(ctx, "big/cert.pem", bytes.Repeat([]byte("x"), 300<<10), 0o644)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "big/cert.pem") {
		t.Fatalf("Put beyond --max-request-bytes = %v, want ErrTooLarge naming the key", err)
	}
	if got, err := s.Get(ctx, "big/cert.pem"); err != nil || string(got) != "small" {
		t.Fatalf("after a refused Put, Get = %q, %v", got, err)
	}
	// Fill the database: every Put keeps the previous revision, so rewriting one key grows it.
	value := bytes.Repeat([]byte("q"), 200<<10)
	var qerr error
	for i := range 200 {
		if qerr = s.Put(ctx, fmt.Sprintf("fill/%d", i%10), value, 0o644); qerr != nil {
			break
		}
	}
	if !errors.Is(qerr, ErrQuota) || !strings.Contains(qerr.Error(), "fill/") {
		t.Fatalf("Puts beyond the quota = %v, want ErrQuota naming the key", qerr)
	}
	if got, err := s.Get(ctx, "big/cert.pem"); err != nil || string(got) != "small" {
		t.Errorf("with the quota exceeded, Get = %q, %v", got, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.Put(rctx, "more", []byte("x"), 0o644); !errors.Is(err, ErrQuota) {
		t.Errorf("a small Put with the alarm raised = %v, want ErrQuota", err)
	}
}
