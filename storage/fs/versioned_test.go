package fs

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tlsalpn/tlsalpn/storage"
)

// TestVersioned: a compare-and-swap writes only over the version it read,
// every Put changes the version (even one that writes the same bytes),
// and of writers racing from one version exactly one wins.
func TestVersioned(t *testing.T) {
	ctx := context.Background()
	const key = "lineages/a.example/meta.json"
	tests := []struct {
		name string
		// setup writes the key (or not) and returns the version to
		// put over; then, before the PutIfVersion, between runs in
		// between (another writer).
		setup   func(t *testing.T, f *FS) int64
		between func(t *testing.T, f *FS)
		wantErr error
	}{
		{name: "new key, version 0", setup: func(*testing.T, *FS) int64 { return 0 }},
		{name: "new key, a version", setup: func(*testing.T, *FS) int64 { return 12345 }, wantErr: storage.ErrModified},
		{name: "existing key, version 0", setup: func(t *testing.T, f *FS) int64 { put(key, "v1")(t, f); return 0 }, wantErr: storage.ErrModified},
		{name: "unchanged since read", setup: put(key, "v1")},
		{name: "rewritten since read", setup: put(key, "v1"), between: rewrite(key, "v2"), wantErr: storage.ErrModified},
		{name: "rewritten with the same bytes", setup: put(key, "v1"), between: rewrite(key, "v1"), wantErr: storage.ErrModified},
		{name: "deleted since read", setup: put(key, "v1"), between: func(t *testing.T, f *FS) {
			if err := f.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		}, wantErr: storage.ErrModified},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			ver := tt.setup(t, f)
			var before []byte
			if tt.between != nil {
				tt.between(t, f)
			}
			before, _ = f.Get(ctx, key)
			err = f.PutIfVersion(ctx, key, []byte("mine"), 0o644, ver)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("PutIfVersion = %v; want %v", err, tt.wantErr)
			}
			got, gerr := f.Get(ctx, key)
			switch {
			case tt.wantErr == nil && string(got) != "mine":
				t.Errorf("after PutIfVersion the key holds %q (%v); want %q", got, gerr, "mine")
			case tt.wantErr != nil && string(got) != string(before):
				t.Errorf("a refused PutIfVersion changed the key from %q to %q", before, got)
			}
			if tt.wantErr == nil {
				_, after, err := f.GetVersion(ctx, key)
				if err != nil || after == ver || after <= 0 {
					t.Errorf("version after the write %d (%v), before %d: want another, positive", after, err, ver)
				}
			}
		})
	}

	t.Run("missing", func(t *testing.T) {
		f, err := New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.GetVersion(ctx, key); !errors.Is(err, storage.ErrNotExist) {
			t.Errorf("GetVersion of a missing key = %v; want ErrNotExist", err)
		}
	})

	t.Run("racing writers", func(t *testing.T) {
		f, err := New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		ver := put(key, "start")(t, f)
		for round := range 3 {
			var won atomic.Int32
			var wg sync.WaitGroup
			for range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					err := f.PutIfVersion(ctx, key, []byte("round"), 0o644, ver)
					switch {
					case err == nil:
						won.Add(1)
					case !errors.Is(err, storage.ErrModified):
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if n := won.Load(); n != 1 {
				t.Fatalf("round %d: %d writers won from one version; want 1", round, n)
			}
			if _, ver, err = f.GetVersion(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func put(key, value string) func(*testing.T, *FS) int64 {
	return func(t *testing.T, f *FS) int64 {
		t.Helper()
		if err := f.Put(context.Background(), key, []byte(value), 0o644); err != nil {
			t.Fatal(err)
		}
		got, ver, err := f.GetVersion(context.Background(), key)
		if err != nil || string(got) != value || ver <= 0 {
			t.Fatalf("GetVersion = %q, %d, %v; want %q and a positive version", got, ver, err, value)
		}
		return ver
	}
}

func rewrite(key, value string) func(*testing.T, *FS) {
	return func(t *testing.T, f *FS) {
		t.Helper()
		if err := f.Put(context.Background(), key, []byte(value), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
