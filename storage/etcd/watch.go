package etcd

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tlsalpn/tlsalpn/storage"
)

// watchRetryPause is the pause before a watch that ended is made again.
const watchRetryPause = 200 * time.Millisecond

// Watch implements storage.Storage with etcd's watch over the prefix, starting at the revision
// Watch read (so only later changes are reported). After a disconnect, the watch resumes from
// the revision after the last one seen: no change is missed and none is reported twice. If
// etcd compacted that revision away meanwhile, Watch logs it, lists the prefix and reports the
// differences from what it last knew (keys changed or created, keys deleted), then goes on.
// The channel closes when ctx ends or the Store closes.
//
// Watch keeps the keys under prefix and their revisions in memory, which is what makes the
// resynchronization exact.
func (s *Store) Watch(ctx context.Context, prefix string) (<-chan storage.Event, error) {
	if err := storage.ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	known, rev, err := s.snapshot(ctx, prefix)
	if err != nil {
		return nil, opError("watch", prefix, err)
	}
	ch := make(chan storage.Event, 64)
	s.wg.Go(func() {
		defer close(ch)
		w := &watcher{s: s, prefix: prefix, known: known, rev: rev, ch: ch}
		w.run(ctx)
	})
	return ch, nil
}

// snapshot returns the keys covered by prefix with their modification revisions, and the
// revision of the store they were read at.
func (s *Store) snapshot(ctx context.Context, prefix string) (map[string]int64, int64, error) {
	var known map[string]int64
	var rev int64
	err := s.do(ctx, func(ctx context.Context) error {
		start, end := s.rangeOf(prefix)
		r, err := s.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithKeysOnly())
		if err != nil {
			return err
		}
		known = make(map[string]int64, len(r.Kvs))
		for _, kv := range r.Kvs {
			if k, ok := s.relKey(kv.Key, prefix); ok {
				known[k] = kv.ModRevision
			}
		}
		rev = r.Header.Revision
		return nil
	}, func(err error) error { return err })
	return known, rev, err
}

type watcher struct {
	s      *Store
	prefix string
	known  map[string]int64
	rev    int64 // every change up to rev has been reported
	ch     chan<- storage.Event
}

func (w *watcher) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-w.s.ctx.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	start, end := w.s.rangeOf(w.prefix)
	for ctx.Err() == nil {
		// WithRequireLeader: a member cut off from the quorum ends the watch, instead of
		// keeping it open and silent; it is then made again on a member that has a leader.
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := w.s.cli.Watch(wctx, start, clientv3.WithRange(end), clientv3.WithRev(w.rev+1),
			clientv3.WithProgressNotify())
		w.consume(ctx, wch)
		wcancel()
		select {
		case <-ctx.Done():
		case <-time.After(watchRetryPause):
		}
	}
}

// consume reports the events of one watch until it ends.
func (w *watcher) consume(ctx context.Context, wch clientv3.WatchChan) {
	for resp := range wch {
		if resp.CompactRevision != 0 {
			w.s.log.Warn("storage/etcd: watch fell behind a compaction; listing to resynchronize",
				"prefix", w.prefix, "last_seen_revision", w.rev, "compacted_revision", resp.CompactRevision)
			w.resync(ctx)
			return
		}
		if err := resp.Err(); err != nil {
			w.s.log.Debug("storage/etcd: watch ended; resuming", "prefix", w.prefix, "revision", w.rev+1, "error", err)
			return
		}
		if resp.IsProgressNotify() {
			w.rev = max(w.rev, resp.Header.Revision)
			continue
		}
		// Several events can share one revision (a transaction, a lease's keys deleted at its
		// expiry): compare with the revision reached before this response, not the last event.
		seen := w.rev
		for _, ev := range resp.Events {
			if ev.Kv.ModRevision <= seen {
				continue // already reported (a resumed watch never sends these; be sure)
			}
			w.rev = max(w.rev, ev.Kv.ModRevision)
			k, ok := w.s.relKey(ev.Kv.Key, w.prefix)
			if !ok {
				continue
			}
			deleted := ev.Type == clientv3.EventTypeDelete
			if deleted {
				delete(w.known, k)
			} else {
				w.known[k] = ev.Kv.ModRevision
			}
			if !w.send(ctx, storage.Event{Key: k, Deleted: deleted}) {
				return
			}
		}
	}
}

// resync lists the prefix and reports what differs from the known keys.
func (w *watcher) resync(ctx context.Context) {
	now, rev, err := w.s.snapshot(ctx, w.prefix)
	if err != nil {
		w.s.log.Warn("storage/etcd: watch resynchronization failed; retrying", "prefix", w.prefix, "error", err)
		return
	}
	for k, r := range now {
		if w.known[k] != r && !w.send(ctx, storage.Event{Key: k}) {
			return
		}
	}
	for k := range w.known {
		if _, ok := now[k]; !ok && !w.send(ctx, storage.Event{Key: k, Deleted: true}) {
			return
		}
	}
	w.known, w.rev = now, rev
}

func (w *watcher) send(ctx context.Context, ev storage.Event) bool {
	select {
	case w.ch <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}
