package etcd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/storage"
	"github.com/tlsalpn/tlsalpn/storage/storagetest"
)

// testKey is a fixed encryption key for tests.
var testKey = []byte("0123456789abcdef0123456789abcdef")

// open opens a Store on c under prefix, closed when the test ends.
func open(t testing.TB, c *etcdtest.Cluster, prefix string, mod ...func(*Config)) *Store {
	t.Helper()
	cfg := Config{Endpoints: c.Endpoints(), Prefix: prefix, EncryptionKey: testKey, SessionTTL: 2 * time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance runs storage's conformance suite on a three-member cluster, each case under
// a prefix of its own.
func TestConformance(t *testing.T) {
	c := etcdtest.Start(t, 3)
	var n atomic.Int32
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		return open(t, c, fmt.Sprintf("conformance/%d", n.Add(1)))
	})
}

func clientv3WithPrefix() clientv3.OpOption { return clientv3.WithPrefix() }

// TestGetAll: GetAll returns exactly the keys covered by the prefix, across pages, with their
// values opened.
func TestGetAll(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := open(t, c, "getall")
	ctx := t.Context()
	const n = getAllPage*2 + 34
	want := map[string][]byte{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				k := fmt.Sprintf("g/%04d/key.pem", i)
				v := []byte(k + " value")
				mode := os.FileMode(0o600)
				if i%2 == 0 {
					mode = 0o644
				}
				if err := s.Put(ctx, k, v, mode); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				want[k] = v
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, k := range []string{"g-x", "g.x/a", "h/a"} {
		if err := s.Put(ctx, k, []byte("outside"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.GetAll(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("GetAll = %d values, want %d", len(got), len(want))
	}
	for k, v := range want {
		if !bytes.Equal(got[k], v) {
			t.Errorf("GetAll[%q] = %q, want %q", k, got[k], v)
		}
	}
	if got, err := s.GetAll(ctx, "missing"); err != nil || len(got) != 0 {
		t.Errorf("GetAll of an empty prefix = %v, %v", got, err)
	}
	nokey := open(t, c, "getall", func(cfg *Config) { cfg.EncryptionKey = nil })
	if _, err := nokey.GetAll(ctx, "g"); !errors.Is(err, ErrNoEncryptionKey) || !strings.Contains(err.Error(), "key.pem") {
		t.Errorf("GetAll of sealed values without a key = %v, want ErrNoEncryptionKey naming a key", err)
	}
}
