package etcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/tlsalpn/tlsalpn/storage"
)

// newSession grants a lease of SessionTTL (bounded like any request) and keeps it alive until
// the Store closes or the session is closed. The lease is granted here rather than by
// concurrency.NewSession, whose grant would wait without bound on an unreachable etcd.
func (s *Store) newSession(ctx context.Context, what string) (*concurrency.Session, error) {
	ttl := int64((s.cfg.SessionTTL + time.Second - 1) / time.Second)
	var id clientv3.LeaseID
	err := s.do(ctx, func(ctx context.Context) error {
		r, err := s.cli.Grant(ctx, ttl)
		if err != nil {
			return err
		}
		id = r.ID
		return nil
	}, func(err error) error { return fmt.Errorf("storage/etcd: %s: grant a lease: %w", what, err) })
	if err != nil {
		return nil, err
	}
	sess, err := concurrency.NewSession(s.cli, concurrency.WithLease(id), concurrency.WithTTL(int(ttl)), concurrency.WithContext(s.ctx))
	if err != nil {
		return nil, fmt.Errorf("storage/etcd: %s: keep the lease alive: %w", what, withKind(err))
	}
	return sess, nil
}

// Lock implements storage.Storage with etcd's lease-backed mutex (package concurrency): each
// Lock has a session of its own, kept alive while held; if the holder dies or loses etcd for
// longer than SessionTTL, the lease expires and the lock frees itself. A holder that lost its
// lease that way is told only in the log: what keeps a stale holder from doing harm is
// PutIfVersion, not the lock.
//
// Lock names live under PREFIX/.locks/, escaped so that the lock "a" does not wait for "a/b".
// Waiting for the lock is bounded only by ctx.
func (s *Store) Lock(ctx context.Context, name string) (func() error, error) {
	if err := storage.ValidateLockName(name); err != nil {
		return nil, err
	}
	sess, err := s.newSession(ctx, "lock "+name)
	if err != nil {
		return nil, err
	}
	m := concurrency.NewMutex(sess, s.root+locksDir+"/"+url.PathEscape(name))
	if err := m.Lock(ctx); err != nil {
		sess.Close()
		return nil, opError("lock", name, err)
	}
	s.lockMu.Lock()
	if s.lockSessions == nil { // closed meanwhile
		s.lockMu.Unlock()
		sess.Close()
		return nil, fmt.Errorf("storage/etcd: lock %q: store closed", name)
	}
	s.lockSessions[sess] = struct{}{}
	s.lockMu.Unlock()
	released := make(chan struct{})
	go func() {
		select {
		case <-released:
		case <-sess.Done():
			select {
			case <-released:
			default:
				if s.closing.Load() {
					return
				}
				s.log.Warn("storage/etcd: lock lost: its lease expired (etcd unreachable for longer than the session TTL?)",
					"lock", name, "ttl", s.cfg.SessionTTL)
			}
		}
	}()
	var once sync.Once
	var uerr error
	return func() error {
		once.Do(func() {
			close(released)
			s.lockMu.Lock()
			delete(s.lockSessions, sess)
			s.lockMu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
			defer cancel()
			if err := m.Unlock(ctx); err != nil {
				uerr = opError("unlock", name, err)
			}
			// Revoking the lease frees the lock even if the Unlock above failed.
			if err := sess.Close(); err != nil && uerr == nil {
				uerr = opError("unlock", name, err)
			}
		})
		return uerr
	}, nil
}

// ephemeral is the Store's one session for ephemeral keys.
type ephemeral struct {
	mu     sync.Mutex           // held while a session is made: PutEphemerals wait for it
	sess   *concurrency.Session // nil until the first PutEphemeral, and after a loss
	closed bool

	// doneMu guards done alone, so that SessionDone never waits for a session being made
	// (mu, then doneMu, when both are taken).
	doneMu sync.Mutex
	done   chan struct{} // closed when sess is lost (or the Store closes); then replaced
}

func (e *ephemeral) close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	sess := e.sess
	e.closed = true
	if sess == nil {
		e.doneMu.Lock()
		close(e.done) // no session to lose: say so now
		e.doneMu.Unlock()
	}
	e.mu.Unlock()
	if sess != nil {
		sess.Close() // revokes the lease: the keys go now, not after the TTL; lost closes done
	}
}

// lost ends the current session: its done channel closes and the next one gets a new channel.
// e.mu must be held.
func (s *Store) lost() {
	if !s.eph.closed {
		s.log.Warn("storage/etcd: ephemeral session lost: its keys are gone from etcd", "lease", fmt.Sprintf("%x", s.eph.sess.Lease()))
	}
	s.eph.sess = nil
	s.eph.doneMu.Lock()
	close(s.eph.done)
	if !s.eph.closed {
		s.eph.done = make(chan struct{})
	}
	s.eph.doneMu.Unlock()
}

// PutEphemeral implements storage.Ephemeral. The Store has one session (a lease of SessionTTL,
// kept alive) for its ephemeral keys, made by the first PutEphemeral; every key put here is
// attached to it. When the lease is lost (etcd unreachable for longer than the TTL), etcd
// deletes those keys and SessionDone's channel closes; the next PutEphemeral makes a new
// session, and the caller must put its keys again. Close revokes the lease, so the keys
// disappear at once rather than after the TTL. The value is sealed when the Store has an
// encryption key (ephemeral values include challenge keys), plain otherwise.
func (s *Store) PutEphemeral(ctx context.Context, key string, value []byte) error {
	mode := os.FileMode(0o644)
	if s.sealer != nil {
		mode = 0o600
	}
	return s.put(ctx, "put ephemeral", key, value, mode, -1, func(ctx context.Context) (clientv3.LeaseID, error) {
		sess, err := s.session(ctx)
		if err != nil {
			return 0, err
		}
		return sess.Lease(), nil
	})
}

// session returns the live ephemeral session, making one if there is none.
func (s *Store) session(ctx context.Context) (*concurrency.Session, error) {
	s.eph.mu.Lock()
	defer s.eph.mu.Unlock()
	if s.eph.closed {
		return nil, errors.New("store closed")
	}
	if s.eph.sess != nil {
		select {
		case <-s.eph.sess.Done():
			s.lost() // before its watcher below got to it
		default:
			return s.eph.sess, nil
		}
	}
	sess, err := s.newSession(ctx, "ephemeral session")
	if err != nil {
		return nil, err
	}
	s.eph.sess = sess
	s.wg.Go(func() {
		<-sess.Done()
		s.eph.mu.Lock()
		defer s.eph.mu.Unlock()
		if s.eph.sess == sess {
			s.lost()
		}
	})
	return sess, nil
}

// SessionDone implements storage.Ephemeral: the returned channel closes when the current
// session (or, before the first PutEphemeral, the one it will make) is lost or the Store closes.
func (s *Store) SessionDone() <-chan struct{} {
	s.eph.doneMu.Lock()
	defer s.eph.doneMu.Unlock()
	return s.eph.done
}
