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
	"sync"
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

// copyWorkers bounds the values copied at once: a copy to or from etcd is bound by round trips
// (and etcd batches concurrent writes into one commit), a copy between directories by fsync.
const copyWorkers = 8

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
// Values are copied several at a time, in three phases (private keys, then chains and the
// rest, then certificate records), so that a copy cut short never holds a record whose
// certificate is missing.
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
	if opts.SrcMode == nil {
		opts.SrcMode = func(_ context.Context, key string) (os.FileMode, error) { return ModeByLayout(key), nil }
	}
	values := make([][]byte, len(keys))
	private := make([]bool, len(keys))
	for lo := 0; lo < len(keys); {
		hi := lo + 1
		for hi < len(keys) && writeRank(keys[hi]) == writeRank(keys[lo]) {
			hi++
		}
		err := parallel(ctx, hi-lo, func(ctx context.Context, i int) error {
			v, priv, err := copyOne(ctx, dst, src, keys[lo+i], opts)
			values[lo+i], private[lo+i] = v, priv
			return err
		})
		// Count what this phase wrote and verified, even when part of it failed.
		for i := lo; i < hi; i++ {
			if values[i] == nil {
				continue
			}
			res.Copied[topLevel(keys[i])]++
			res.Bytes += int64(len(values[i]))
			if private[i] {
				res.Private++
			}
		}
		if err != nil {
			return res, err
		}
		lo = hi
	}
	copied := make(map[string][]byte, len(keys))
	for i, k := range keys {
		copied[k] = values[i]
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

// copyOne copies key and reads it back. It returns the value (nil unless it was written and
// verified) and whether it was written as private.
func copyOne(ctx context.Context, dst, src Storage, k string, opts CopyOptions) ([]byte, bool, error) {
	v, err := src.Get(ctx, k)
	if err != nil {
		return nil, false, fmt.Errorf("reading %s from the source: %w", k, err)
	}
	mode, err := opts.SrcMode(ctx, k)
	if err != nil {
		return nil, false, fmt.Errorf("reading the mode of %s in the source: %w", k, err)
	}
	mode = mode.Perm()
	if mode&0o077 == 0 {
		mode = 0o600
	}
	if err := dst.Put(ctx, k, v, mode); err != nil {
		return nil, false, fmt.Errorf("writing %s: %w", k, err)
	}
	back, err := dst.Get(ctx, k)
	if err != nil {
		return nil, false, fmt.Errorf("reading %s back: %w", k, err)
	}
	if !bytes.Equal(back, v) {
		return nil, false, fmt.Errorf("%w: %s reads back as %d bytes that differ from the %d written", ErrCopyMismatch, k, len(back), len(v))
	}
	if opts.DstMode != nil {
		got, err := opts.DstMode(ctx, k)
		if err != nil {
			return nil, false, fmt.Errorf("reading the mode of %s in the destination: %w", k, err)
		}
		if mode == 0o600 && got.Perm()&0o077 != 0 {
			return nil, false, fmt.Errorf("%w: %s is private in the source but %#o in the destination", ErrCopyMismatch, k, got.Perm())
		}
	}
	if v == nil {
		v = []byte{} // written: an empty value is not "not copied"
	}
	return v, mode == 0o600, nil
}

// parallel runs fn for 0..n-1 on at most copyWorkers goroutines, and returns the first error;
// after one, no new call starts.
func parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(copyWorkers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(ctx, i); err != nil {
					cancel(err)
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// verifySource reads the source's durable state again and compares it with what was copied.
func verifySource(ctx context.Context, src Storage, copied map[string][]byte) error {
	keys, _, err := durableKeys(ctx, src)
	if err != nil {
		return fmt.Errorf("reading the source again: %w", err)
	}
	verdict := make([]string, len(keys)) // "" unchanged, else how
	err = parallel(ctx, len(keys), func(ctx context.Context, i int) error {
		k := keys[i]
		v, ok := copied[k]
		if !ok {
			verdict[i] = k + " (new)"
			return nil
		}
		now, err := src.Get(ctx, k)
		switch {
		case errors.Is(err, ErrNotExist):
			verdict[i] = k + " (gone)"
		case err != nil:
			return fmt.Errorf("reading %s from the source again: %w", k, err)
		case !bytes.Equal(now, v):
			verdict[i] = k
		}
		return nil
	})
	if err != nil {
		return err
	}
	var changed []string
	for i, k := range keys {
		if verdict[i] != "" {
			changed = append(changed, verdict[i])
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
