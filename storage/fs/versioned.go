package fs

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"

	"github.com/tlsalpn/tlsalpn/storage"
)

var _ storage.Versioned = (*FS)(nil)

// versionLockPrefix is the namespace of the locks PutIfVersion takes, one
// per key, so that two compare-and-swaps of one key cannot both pass the
// comparison before either writes.
const versionLockPrefix = "versioned"

// GetVersion implements storage.Versioned. The version is drawn from the
// file that holds the value (inode, modification time and size), read
// from the very file the value is read from, so the two always belong
// together. Every Put renames a new file into place, whose inode differs
// from the one it replaces, so every Put changes the version; the
// modification time (in nanoseconds) keeps an inode reused later from
// bringing an old version back.
func (f *FS) GetVersion(ctx context.Context, key string) ([]byte, int64, error) {
	if err := storage.ValidateKey(key); err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("storage/fs: get %q: %w", key, err)
	}
	file, err := os.Open(f.Path(key))
	if err != nil {
		if isNotExist(err) {
			return nil, 0, fmt.Errorf("storage/fs: get %q: %w: %w", key, storage.ErrNotExist, err)
		}
		return nil, 0, fmt.Errorf("storage/fs: get %q: %w", key, err)
	}
	defer file.Close()
	fi, err := file.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("storage/fs: get %q: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("storage/fs: get %q: %w: %s is not a regular file", key, storage.ErrNotExist, f.Path(key))
	}
	value, err := io.ReadAll(file)
	if err != nil {
		return nil, 0, fmt.Errorf("storage/fs: get %q: %w", key, err)
	}
	return value, versionOf(fi), nil
}

// PutIfVersion implements storage.Versioned: under a lock of its own for
// key, it compares the version of the file in place with version and
// Puts only if they match. It excludes other PutIfVersion calls on the
// key (in any process), not a plain Put, which never waits.
func (f *FS) PutIfVersion(ctx context.Context, key string, value []byte, mode os.FileMode, version int64) error {
	if err := storage.ValidateKey(key); err != nil {
		return err
	}
	unlock, err := f.Lock(ctx, versionLockPrefix+"/"+key)
	if err != nil {
		return fmt.Errorf("storage/fs: put %q if version %d: %w", key, version, err)
	}
	defer unlock()
	var cur int64
	fi, err := os.Stat(f.Path(key))
	switch {
	case err == nil && fi.Mode().IsRegular():
		cur = versionOf(fi)
	case err == nil:
		return fmt.Errorf("storage/fs: put %q: %s is not a regular file", key, f.Path(key))
	case !isNotExist(err):
		return fmt.Errorf("storage/fs: put %q if version %d: %w", key, version, err)
	}
	if cur != version {
		return fmt.Errorf("storage/fs: put %q: version %d, not %d: %w", key, cur, version, storage.ErrModified)
	}
	return f.Put(ctx, key, value, mode)
}

// versionOf is the version of the file fi describes: a hash of its
// inode, modification time and size, positive (0 means "no such key").
func versionOf(fi os.FileInfo) int64 {
	var b [24]byte
	binary.LittleEndian.PutUint64(b[0:], inode(fi))
	binary.LittleEndian.PutUint64(b[8:], uint64(fi.ModTime().UnixNano()))
	binary.LittleEndian.PutUint64(b[16:], uint64(fi.Size()))
	h := fnv.New64a()
	h.Write(b[:])
	v := int64(h.Sum64() >> 1)
	if v == 0 {
		v = 1
	}
	return v
}
