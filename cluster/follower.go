package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage"
)

// localPublishTimeout bounds the wait for the local responder to take a challenge (its pending
// hook turns steering to relay first).
const localPublishTimeout = 10 * time.Second

// Follower keeps the published challenges in one node's own responder: what storage says is
// pending, the responder holds, so that a validation handshake on this node is answered from
// memory. It acknowledges each challenge it loaded and marks it "served" when the responder
// served it.
type Follower struct {
	st     storage.Storage
	eph    storage.Ephemeral
	node   string
	local  issuer.Publisher
	logger *slog.Logger

	mu     sync.Mutex // serialises sync, withdraw and Resync
	loaded map[string]*loadedChallenge
	// retry holds the keys whose challenge could not be loaded for a reason that may pass (a
	// storage read failed, the responder's pending hook refused): tried again every
	// retryEvery while the challenge is published.
	retry map[string]bool
	wg    sync.WaitGroup
}

// retryEvery is how often a challenge that could not be loaded is tried again.
const retryEvery = time.Second

// loadedChallenge is a challenge this node's responder holds.
type loadedChallenge struct {
	key   string // its storage key
	sni   string // the server name it was published for
	id    string // published.ID
	leaf  string
	acked bool          // the acknowledgement is stored
	stop  chan struct{} // closed when withdrawn: ends its "served" relay
}

// Follow loads every challenge published in st into local and returns once it has (the
// catch-up: a node must not accept connections before). It watches first and lists second, so
// that nothing published in between is missed, and keeps following until ctx ends, when it
// withdraws from local what it loaded.
func Follow(ctx context.Context, st storage.Storage, node string, local issuer.Publisher, logger *slog.Logger) (*Follower, error) {
	eph, ok := st.(storage.Ephemeral)
	if !ok {
		return nil, ErrNotCluster
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &Follower{st: st, eph: eph, node: node, local: local, logger: logger, loaded: map[string]*loadedChallenge{}, retry: map[string]bool{}}
	events, err := f.catchUp(ctx)
	if err != nil {
		return nil, err
	}
	f.wg.Go(func() { f.run(ctx, events) })
	return f, nil
}

// Wait waits until the follower has stopped (its ctx ended) and withdrawn what it loaded.
func (f *Follower) Wait() { f.wg.Wait() }

// catchUp starts the watch, then loads what is published now and withdraws what no longer is.
func (f *Follower) catchUp(ctx context.Context) (<-chan storage.Event, error) {
	events, err := f.st.Watch(ctx, storage.ClusterChallengesPrefix)
	if err != nil {
		return nil, fmt.Errorf("cluster: following challenges: %w", err)
	}
	keys, err := f.st.List(ctx, storage.ClusterChallengesPrefix, true)
	if err != nil {
		return nil, fmt.Errorf("cluster: following challenges: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	present := map[string]bool{}
	for _, k := range keys {
		present[k] = true
		f.syncLocked(ctx, k)
	}
	for name, l := range f.loaded {
		if !present[l.key] {
			f.withdrawLocked(ctx, name)
		}
	}
	return events, nil
}

func (f *Follower) run(ctx context.Context, events <-chan storage.Event) {
	defer f.withdrawAll()
	backoff := 200 * time.Millisecond
	tick := time.NewTicker(retryEvery)
	defer tick.Stop()
	for {
	watching:
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					break watching
				}
				f.mu.Lock()
				f.syncLocked(ctx, ev.Key)
				f.mu.Unlock()
			case <-tick.C:
				f.mu.Lock()
				keys := make([]string, 0, len(f.retry))
				for k := range f.retry {
					keys = append(keys, k)
				}
				for _, k := range keys {
					f.syncLocked(ctx, k)
				}
				f.mu.Unlock()
			}
		}
		// The watch ended: ctx, or storage gave up on it. Start again, and list again, since
		// what changed meanwhile was not reported.
		for {
			if ctx.Err() != nil {
				return
			}
			var err error
			if events, err = f.catchUp(ctx); err == nil {
				backoff = 200 * time.Millisecond
				break
			}
			f.logger.Warn("cluster: following challenges again failed; the challenges loaded stay", "node", f.node, "error", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// Resync acknowledges again every challenge loaded: after the session was lost, its
// acknowledgements went with it. (What was published or withdrawn meanwhile the watch
// reports, resumed by the storage.)
func (f *Follower) Resync(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, l := range f.loaded {
		l.acked = false
		f.ackLocked(ctx, l.key, l)
	}
}

// syncLocked makes the local responder hold what key holds now: loads it, replaces an older
// challenge for the same name, or withdraws one deleted.
func (f *Follower) syncLocked(ctx context.Context, key string) {
	if path.Dir(key) != storage.ClusterChallengesPrefix {
		return
	}
	name := path.Base(key)
	delete(f.retry, key)
	b, err := f.st.Get(ctx, key)
	if errors.Is(err, storage.ErrNotExist) {
		f.withdrawLocked(ctx, name)
		return
	}
	if err != nil {
		f.logger.Error("cluster: reading a published challenge failed; this node cannot answer it until a retry succeeds", "node", f.node, "key", key, "error", err, "retry_in", retryEvery)
		f.retry[key] = true
		return
	}
	p, cert, err := decodePublished(b)
	if err != nil {
		f.logger.Error("cluster: a published challenge is unreadable; this node cannot answer it", "node", f.node, "key", key, "error", err)
		return
	}
	if cur := f.loaded[name]; cur != nil {
		if cur.id == p.ID {
			if !cur.acked {
				f.ackLocked(ctx, key, cur)
			}
			return
		}
		f.withdrawLocked(ctx, name)
	}
	pctx, cancel := context.WithTimeout(ctx, localPublishTimeout)
	seen, err := f.local.Publish(pctx, p.ServerName, cert)
	cancel()
	if err != nil {
		f.logger.Error("cluster: loading a published challenge into this node's responder failed; not acknowledged until a retry succeeds", "node", f.node, "server_name", p.ServerName, "error", err, "retry_in", retryEvery)
		f.retry[key] = true
		return
	}
	l := &loadedChallenge{key: key, sni: p.ServerName, id: p.ID, leaf: leafHash(cert), stop: make(chan struct{})}
	f.loaded[name] = l
	f.logger.Debug("cluster: challenge loaded", "node", f.node, "server_name", p.ServerName, "publisher", p.Publisher)
	f.ackLocked(ctx, key, l)
	f.wg.Go(func() { f.relayServed(ctx, name, l, seen) })
}

// ackLocked stores the acknowledgement of l, or marks key to be tried again.
func (f *Follower) ackLocked(ctx context.Context, key string, l *loadedChallenge) {
	if err := f.putAck(ctx, storage.ClusterAckKey(path.Base(key), f.node), ack{ID: l.id, Leaf: l.leaf}); err != nil {
		f.logger.Error("cluster: acknowledging a challenge failed; tried again until its publisher gives up waiting", "node", f.node, "server_name", l.sni, "error", err, "retry_in", retryEvery)
		f.retry[key] = true
		return
	}
	l.acked = true
}

// relayServed marks the challenge "served" in storage each time the responder served it, off
// the handshake's path.
func (f *Follower) relayServed(ctx context.Context, name string, l *loadedChallenge, seen <-chan struct{}) {
	n := 0
	for {
		select {
		case <-l.stop:
			return
		case <-ctx.Done():
			return
		case <-seen:
		}
		n++
		if err := f.putAck(ctx, storage.ClusterServedKey(name, f.node), ack{ID: l.id, Leaf: l.leaf, Served: n}); err != nil {
			f.logger.Warn("cluster: saying that this node served the CA failed; the issuer polls on its own timer", "node", f.node, "server_name", name, "error", err)
		}
	}
}

func (f *Follower) putAck(ctx context.Context, key string, a ack) error {
	a.At = time.Now().UTC()
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return f.eph.PutEphemeral(ctx, key, b)
}

func (f *Follower) withdrawLocked(ctx context.Context, name string) {
	l := f.loaded[name]
	if l == nil {
		return
	}
	delete(f.loaded, name)
	close(l.stop)
	if err := f.local.Unpublish(context.WithoutCancel(ctx), l.sni); err != nil {
		f.logger.Warn("cluster: withdrawing a challenge from this node's responder", "node", f.node, "server_name", name, "error", err)
	}
	f.logger.Debug("cluster: challenge withdrawn", "node", f.node, "server_name", name)
}

func (f *Follower) withdrawAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name := range f.loaded {
		f.withdrawLocked(context.Background(), name)
	}
}
