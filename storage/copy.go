package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
)

// DurablePrefixes returns the top-level prefixes that hold tlsalpn's durable state: what Copy
// moves from one backend to another. Everything else under a backend's root belongs to a running
// process (a serve's lease, renewal requests, cluster registrations and challenges, writability
// probes) and would be wrong, or dangerous, anywhere else.
func DurablePrefixes() []string {
	return []string{AccountsPrefix, LineagesPrefix, OrdersPrefix, CertificatesPrefix}
}

// ErrDestinationNotEmpty is returned, wrapped, by Copy when the destination already holds
// durable state and CopyOptions.Overwrite is not set. Nothing was written.
var ErrDestinationNotEmpty = errors.New("storage: the destination already holds state")

// ErrCopyMismatch is returned, wrapped, by Copy when what it reads back from the destination,
// or from the source once more at the end, is not what it copied.
var ErrCopyMismatch = errors.New("storage: the copy does not match its source")

// CopyOptions adjust Copy.
type CopyOptions struct {
	// Overwrite lets Copy write into a destination that already holds durable state: keys
	// the source also has are replaced, and keys the source does not have are deleted, so
	// that the destination ends up holding exactly the source's state.
	Overwrite bool
	// SrcMode returns the permission bits of a key in the source, for backends that keep
	// them (storage/fs: the file's mode). nil: ModeByLayout.
	SrcMode func(ctx context.Context, key string) (os.FileMode, error)
	// DstMode returns the permission bits of a key in the destination, to verify that a
	// private value stayed private. nil: not checked (a backend without modes, such as
	// storage/etcd, has already refused to store a private value it cannot encrypt).
	DstMode func(ctx context.Context, key string) (os.FileMode, error)
}

// CopyResult says what Copy did.
type CopyResult struct {
	// Copied counts the keys written and verified, by top-level prefix (accounts, lineages,
	// orders, certificates).
	Copied map[string]int
	// Private counts, of those, the keys written with a private mode (0600): encrypted by an
	// etcd destination.
	Private int
	// Bytes is the total size of the values copied.
	Bytes int64
	// Removed counts the keys deleted from the destination because the source did not have
	// them (Overwrite only).
	Removed int
	// Skipped are the source's keys left out because they are not durable state (see
	// DurablePrefixes), grouped by top-level prefix with their count.
	Skipped map[string]int
}

// Total is the number of keys copied.
func (r CopyResult) Total() int {
	n := 0
	for _, c := range r.Copied {
		n += c
	}
	return n
}

// ModeByLayout is the permission a key gets when its source cannot say: certificates
// (CertFile) and certificate records (MetaFile) are public (0644); everything else, private
// keys, account records and journaled orders, is private (0600), as issuer and manager write
// them. When in doubt it says private: a public value stored as private costs nothing, the
// reverse leaks.
func ModeByLayout(key string) os.FileMode {
	switch path.Base(key) {
	case CertFile, MetaFile:
		return 0o644
	}
	return 0o600
}

// durableKeys lists the durable keys of s, and counts the others by top-level prefix.
func durableKeys(ctx context.Context, s Storage) (keys []string, other map[string]int, err error) {
	for _, p := range DurablePrefixes() {
		ks, err := s.List(ctx, p, true)
		if err != nil {
			return nil, nil, fmt.Errorf("listing %s: %w", p, err)
		}
		for _, k := range ks {
			if strings.HasPrefix(path.Base(k), ProbePrefix) && path.Dir(path.Dir(k)) == OrdersPrefix {
				continue // a writability probe of a running process
			}
			keys = append(keys, k)
		}
	}
	top, err := s.List(ctx, "", false)
	if err != nil {
		return nil, nil, fmt.Errorf("listing the top level: %w", err)
	}
	other = map[string]int{}
	for _, t := range top {
		if slices.Contains(DurablePrefixes(), t) {
			continue
		}
		ks, err := s.List(ctx, t, true)
		if err != nil {
			return nil, nil, fmt.Errorf("listing %s: %w", t, err)
		}
		if len(ks) > 0 {
			other[t] = len(ks)
		}
	}
	slices.SortStableFunc(keys, func(a, b string) int { return writeRank(a) - writeRank(b) })
	return keys, other, nil
}

// writeRank orders the writes of a copy as tlsalpn orders its own: private keys first, then
// the values that refer to them, and a certificate's record (MetaFile, "the switch") last, so
// that a copy cut short never holds a record whose certificate is missing.
func writeRank(key string) int {
	switch path.Base(key) {
	case KeyFile:
		return 0
	case MetaFile:
		return 2
	}
	return 1
}

// Copy copies the durable state of src (the keys under DurablePrefixes) to dst, keeping each
// value's privacy (see CopyOptions.SrcMode), and verifies it: each value is read back from dst
// and compared byte for byte, and once all are written the source is listed and read again, so
// that a source that changed during the copy (a serve still running on it) is an error, not a
// copy that silently misses a renewal.
//
// Copy takes no locks: the state of a whole storage is not guarded by any one lock, and the
// per-certificate locks would not cover accounts or the order journal. Copy a storage that
// nothing is writing to (serve stopped); the final check reports one that was.
//
// A destination that already holds durable state is refused (ErrDestinationNotEmpty) unless
// Overwrite is set. A mismatch is reported as ErrCopyMismatch naming the keys.
func Copy(ctx context.Context, dst, src Storage, opts CopyOptions) (CopyResult, error) {
	res := CopyResult{Copied: map[string]int{}}
	keys, other, err := durableKeys(ctx, src)
	if err != nil {
		return res, fmt.Errorf("reading the source: %w", err)
	}
	res.Skipped = other
	existing, _, err := durableKeys(ctx, dst)
	if err != nil {
		return res, fmt.Errorf("reading the destination: %w", err)
	}
	if len(existing) > 0 && !opts.Overwrite {
		return res, fmt.Errorf("%w: %d keys, such as %s", ErrDestinationNotEmpty, len(existing), existing[0])
	}
	srcMode := opts.SrcMode
	if srcMode == nil {
		srcMode = func(_ context.Context, key string) (os.FileMode, error) { return ModeByLayout(key), nil }
	}
	copied := make(map[string][]byte, len(keys))
	for _, k := range keys {
		v, err := src.Get(ctx, k)
		if err != nil {
			return res, fmt.Errorf("reading %s from the source: %w", k, err)
		}
		mode, err := srcMode(ctx, k)
		if err != nil {
			return res, fmt.Errorf("reading the mode of %s in the source: %w", k, err)
		}
		mode = mode.Perm()
		if mode&0o077 == 0 {
			mode = 0o600
		}
		if err := dst.Put(ctx, k, v, mode); err != nil {
			return res, fmt.Errorf("writing %s: %w", k, err)
		}
		back, err := dst.Get(ctx, k)
		if err != nil {
			return res, fmt.Errorf("reading %s back: %w", k, err)
		}
		if !bytes.Equal(back, v) {
			return res, fmt.Errorf("%w: %s reads back as %d bytes that differ from the %d written", ErrCopyMismatch, k, len(back), len(v))
		}
		if opts.DstMode != nil {
			got, err := opts.DstMode(ctx, k)
			if err != nil {
				return res, fmt.Errorf("reading the mode of %s in the destination: %w", k, err)
			}
			if mode == 0o600 && got.Perm()&0o077 != 0 {
				return res, fmt.Errorf("%w: %s is private in the source but %#o in the destination", ErrCopyMismatch, k, got.Perm())
			}
		}
		copied[k] = v
		res.Copied[topLevel(k)]++
		res.Bytes += int64(len(v))
		if mode == 0o600 {
			res.Private++
		}
	}
	for _, k := range existing {
		if _, ok := copied[k]; ok {
			continue
		}
		if err := dst.Delete(ctx, k); err != nil {
			return res, fmt.Errorf("deleting %s, which the source does not have: %w", k, err)
		}
		res.Removed++
	}
	if err := verifySource(ctx, src, copied); err != nil {
		return res, err
	}
	return res, nil
}

// verifySource reads the source's durable state again and compares it with what was copied.
func verifySource(ctx context.Context, src Storage, copied map[string][]byte) error {
	keys, _, err := durableKeys(ctx, src)
	if err != nil {
		return fmt.Errorf("reading the source again: %w", err)
	}
	var changed []string
	for _, k := range keys {
		v, ok := copied[k]
		if !ok {
			changed = append(changed, k+" (new)")
			continue
		}
		now, err := src.Get(ctx, k)
		switch {
		case errors.Is(err, ErrNotExist):
			changed = append(changed, k+" (gone)")
		case err != nil:
			return fmt.Errorf("reading %s from the source again: %w", k, err)
		case !bytes.Equal(now, v):
			changed = append(changed, k)
		}
		delete(copied, k)
	}
	for k := range copied {
		changed = append(changed, k+" (gone)")
	}
	if len(changed) == 0 {
		return nil
	}
	slices.Sort(changed)
	const show = 5
	more := ""
	if len(changed) > show {
		more = fmt.Sprintf(" and %d more", len(changed)-show)
		changed = changed[:show]
	}
	return fmt.Errorf("%w: the source changed while it was copied (is a serve still running on it?): %s%s",
		ErrCopyMismatch, strings.Join(changed, ", "), more)
}

func topLevel(key string) string {
	t, _, _ := strings.Cut(key, "/")
	return t
}
