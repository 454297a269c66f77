package etcd

import (
	"context"
	"fmt"
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
