package storage_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tlsalpn/tlsalpn/storage"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// state is a small storage's worth of the layout, with each key's mode as issuer and manager
// write it, and keys that are not durable state.
var state = []struct {
	key  string
	mode os.FileMode
}{
	{"accounts/ca/ops@example.com/account.json", 0o600},
	{"accounts/ca/ops@example.com/key.pem", 0o600},
	{"lineages/example.com/meta.json", 0o644},
	{"lineages/example.com/20260101T000000Z/cert.pem", 0o644},
	{"lineages/example.com/20260101T000000Z/key.pem", 0o600},
	{"orders/ca/req1/order.json", 0o600},
	{"orders/ca/req1/key.pem", 0o600},
	{"certificates/ca/old.example/cert.pem", 0o644},
}

func newFS(t *testing.T) (*fs.FS, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir
}

func fill(t *testing.T, s storage.Storage) {
	t.Helper()
	ctx := context.Background()
	for i, k := range state {
		if err := s.Put(ctx, k.key, []byte{byte(i), '\n', 0, 0xff}, k.mode); err != nil {
			t.Fatal(err)
		}
	}
	// Not durable state: a serve's lease, a probe.
	for _, k := range []string{"serve/host.json", "orders/ca/probe-abc"} {
		if err := s.Put(ctx, k, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func modeOf(s *fs.FS) func(context.Context, string) (os.FileMode, error) {
	return func(_ context.Context, key string) (os.FileMode, error) {
		fi, err := os.Stat(s.Path(key))
		if err != nil {
			return 0, err
		}
		return fi.Mode().Perm(), nil
	}
}

func TestCopy(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name     string
		useModes bool // SrcMode from the files, else ModeByLayout
	}{
		{"modes from the source", true},
		{"modes by layout", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src, _ := newFS(t)
			dst, _ := newFS(t)
			fill(t, src)
			opts := storage.CopyOptions{DstMode: modeOf(dst)}
			if tt.useModes {
				opts.SrcMode = modeOf(src)
			}
			res, err := storage.Copy(ctx, dst, src, opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.Total() != len(state) || res.Private != 5 {
				t.Errorf("copied %d keys, %d private; want %d, 5", res.Total(), res.Private, len(state))
			}
			if res.Skipped["serve"] != 1 {
				t.Errorf("skipped %v, want serve: 1", res.Skipped)
			}
			for _, k := range state {
				want, _ := src.Get(ctx, k.key)
				got, err := dst.Get(ctx, k.key)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s: %q, %v; want %q", k.key, got, err, want)
				}
				if m, _ := modeOf(dst)(ctx, k.key); m != k.mode {
					t.Errorf("%s: mode %#o, want %#o", k.key, m, k.mode)
				}
			}
			for _, k := range []string{"serve/host.json", "orders/ca/probe-abc"} {
				if _, err := dst.Get(ctx, k); !errors.Is(err, storage.ErrNotExist) {
					t.Errorf("%s was copied (%v): it is not durable state", k, err)
				}
			}
		})
	}
}

// TestCopyRefusesNonEmpty: a destination with state is refused, and nothing is written;
// with Overwrite it ends up holding exactly the source's state.
func TestCopyRefusesNonEmpty(t *testing.T) {
	ctx := context.Background()
	src, _ := newFS(t)
	dst, _ := newFS(t)
	fill(t, src)
	extra := "lineages/other.example/meta.json"
	if err := dst.Put(ctx, extra, []byte("theirs"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := storage.Copy(ctx, dst, src, storage.CopyOptions{})
	if !errors.Is(err, storage.ErrDestinationNotEmpty) {
		t.Fatalf("Copy into a storage with state: %v, want ErrDestinationNotEmpty", err)
	}
	if keys, _ := dst.List(ctx, "", true); len(keys) != 1 {
		t.Fatalf("refused, but the destination now holds %q", keys)
	}
	res, err := storage.Copy(ctx, dst, src, storage.CopyOptions{Overwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 1 {
		t.Errorf("removed %d, want 1", res.Removed)
	}
	if _, err := dst.Get(ctx, extra); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("%s, which the source does not have, is still there: %v", extra, err)
	}
}

// changing is a storage/fs whose first Get of one key lets a concurrent writer (a serve still
// running on the source) replace another key: the situation Copy's final check is for.
type changing struct {
	*fs.FS
	trigger, victim string
	once            sync.Once
}

func (c *changing) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := c.FS.Get(ctx, key)
	if key == c.trigger {
		c.once.Do(func() { err = errors.Join(err, c.FS.Put(ctx, c.victim, []byte("renewed meanwhile"), 0o644)) })
	}
	return v, err
}

// TestCopySourceChanged: a source written to during the copy fails it, naming the key.
func TestCopySourceChanged(t *testing.T) {
	ctx := context.Background()
	src, _ := newFS(t)
	dst, _ := newFS(t)
	fill(t, src)
	// The record is copied last, so the certificate changes after it was copied.
	victim := "lineages/example.com/20260101T000000Z/cert.pem"
	c := &changing{FS: src, trigger: "lineages/example.com/meta.json", victim: victim}
	_, err := storage.Copy(ctx, dst, c, storage.CopyOptions{})
	if !errors.Is(err, storage.ErrCopyMismatch) {
		t.Fatalf("Copy of a source that changed: %v, want ErrCopyMismatch", err)
	}
	if !bytes.Contains([]byte(err.Error()), []byte(victim)) {
		t.Errorf("the error does not name %s: %v", victim, err)
	}
}
