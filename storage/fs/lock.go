package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/storage"
)

// LockPath returns the file that Lock uses for name. It does not check that name is valid.
func (f *FS) LockPath(name string) string {
	return filepath.Join(f.root, storage.LocksPrefix, filepath.FromSlash(name)+lockSuffix)
}

// Lock implements storage.Storage with an exclusive lock (flock(2); LockFileEx on Windows) on
// root/locks/<name>.lock. While the
// lock is held by someone else it retries every 50ms until ctx ends; nothing is left running
// when it returns. Locks exclude goroutines of the same process as well, since each Lock opens
// its own file description. The returned unlock may be called more than once; only the first
// call does anything.
func (f *FS) Lock(ctx context.Context, name string) (func() error, error) {
	if err := storage.ValidateLockName(name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage/fs: lock %q: %w", name, context.Cause(ctx))
	}
	p := f.LockPath(name)
	var file *os.File
	var err error
	for range putAttempts {
		if err = f.mkdirs(filepath.Dir(p)); err != nil {
			return nil, fmt.Errorf("storage/fs: lock %q: %w", name, err)
		}
		// Go opens files close-on-exec, so hooks started by the holder do not inherit the lock.
		if file, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600); !errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("storage/fs: lock %q: open %s: %w", name, p, err)
	}
	for {
		ok, err := tryLock(file)
		if err != nil {
			file.Close()
			return nil, fmt.Errorf("storage/fs: lock %q: %s %s: %w", name, lockCall, p, err)
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			file.Close()
			return nil, fmt.Errorf("storage/fs: lock %q: waiting for %s: %w", name, p, context.Cause(ctx))
		case <-time.After(lockPollWait):
		}
	}
	// For people wondering who holds it; the lock is the file lock, not the content, so failures to
	// record this do not matter.
	if err := file.Truncate(0); err == nil {
		file.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	var once sync.Once
	return func() error {
		var err error
		once.Do(func() {
			err = unlock(file)
			if cerr := file.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				err = fmt.Errorf("storage/fs: unlock %q: %w", name, err)
			}
		})
		return err
	}, nil
}
