package fs

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tlsalpn/tlsalpn/storage"
)

// fileState is what Watch compares between scans. The inode changes on every Put (which renames
// a new file into place), so even a rewrite with the same size within the timestamp granularity
// is seen.
type fileState struct {
	size  int64
	mtime time.Time
	ino   uint64
}

// Watch implements storage.Storage by polling: the prefix is scanned once before Watch returns
// and then every poll interval, and the differences are sent in key order. A scan that fails is
// logged and skipped. The channel is closed when ctx ends; a receiver that falls behind delays
// the next scan, so changes coalesce instead of piling up.
func (f *FS) Watch(ctx context.Context, prefix string) (<-chan storage.Event, error) {
	if err := storage.ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	prev, err := f.scan(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("storage/fs: watch %q: %w", prefix, err)
	}
	ch := make(chan storage.Event)
	go func() {
		defer close(ch)
		t := time.NewTicker(f.poll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			cur, err := f.scan(ctx, prefix)
			if err != nil {
				if ctx.Err() == nil {
					f.log.Warn("storage/fs: watch scan failed", "prefix", prefix, "err", err)
				}
				continue
			}
			for _, ev := range diff(prev, cur) {
				select {
				case ch <- ev:
				case <-ctx.Done():
					return
				}
			}
			prev = cur
		}
	}()
	return ch, nil
}

func (f *FS) scan(ctx context.Context, prefix string) (map[string]fileState, error) {
	m := make(map[string]fileState)
	err := f.walk(ctx, prefix, func(key string, fi os.FileInfo) error {
		m[key] = fileState{size: fi.Size(), mtime: fi.ModTime(), ino: inode(fi)}
		return nil
	})
	return m, err
}

// diff returns the events that turn prev into cur, sorted by key.
func diff(prev, cur map[string]fileState) []storage.Event {
	var evs []storage.Event
	for k, c := range cur {
		if p, ok := prev[k]; !ok || p.size != c.size || !p.mtime.Equal(c.mtime) || p.ino != c.ino {
			evs = append(evs, storage.Event{Key: k})
		}
	}
	for k := range prev {
		if _, ok := cur[k]; !ok {
			evs = append(evs, storage.Event{Key: k, Deleted: true})
		}
	}
	slices.SortFunc(evs, func(a, b storage.Event) int { return strings.Compare(a.Key, b.Key) })
	return evs
}
