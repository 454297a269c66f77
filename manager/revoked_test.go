package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
)

// TestKeepReplacesRevoked: serve's keeper, told to keep names certified,
// replaces a certificate that was revoked at once (a new one, not a
// renewal of the revoked one) and serves the new one, where tlsalpn renew
// leaves it alone (TestRevoke).
func TestKeepReplacesRevoked(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{}, nil)
	ctx := testContext(t)
	name := "revoked.keep.example.test"
	spec := e.spec("shortlived", name)
	if _, err := e.m.Obtain(ctx, spec, nil); err != nil {
		t.Fatal(err)
	}
	s, err := e.m.Load(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Revoke(ctx, s, 1); err != nil { // keyCompromise
		t.Fatal(err)
	}
	revoked := s.Serial

	cache := NewCache()
	kctx, cancel := context.WithCancel(ctx)
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		e.m.Keep(kctx, []Spec{spec}, KeepOptions{Cache: cache, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	}()
	defer func() {
		cancel()
		<-kept
	}()
	var rec *Record
	for range 250 {
		if rec, err = e.m.loadRecord(ctx, name); err == nil && rec.Serial != revoked {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || rec.Serial == revoked {
		t.Fatalf("the revoked certificate (serial %s) was not replaced: %+v, %v", revoked, rec, err)
	}
	if !rec.Revoked.IsZero() {
		t.Errorf("the new certificate is marked revoked: %+v", rec)
	}
	if rec.Replaced != "" {
		t.Errorf("the new certificate was ordered as a replacement (%q) of a revoked one; want a fresh order", rec.Replaced)
	}
	var served string
	for range 100 {
		if c, err := cache.GetCertificate(&tls.ClientHelloInfo{ServerName: name}); err == nil {
			if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil {
				served = fmt.Sprintf("%x", leaf.SerialNumber)
				if served == rec.Serial {
					return
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("the cache serves serial %s; want the new %s", served, rec.Serial)
}
