package fs

import (
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/storage"
	"github.com/tlsalpn/tlsalpn/storage/storagetest"
)

// TestConformance runs the cases every backend must pass (storage/etcd runs them too).
func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		return newFS(t, WithPollInterval(10*time.Millisecond))
	})
}
