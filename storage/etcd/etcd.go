package etcd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/tlsalpn/tlsalpn/storage"
)

const (
	// attemptTimeout bounds one attempt of a request. A request that a member forwarded to a
	// leader that then died waits for etcd's own timeout (5 s and more) before failing; cut
	// short, the next attempt reaches the new leader, elected within a second or two.
	attemptTimeout = 3 * time.Second
	// retryPause is the pause between attempts.
	retryPause = 100 * time.Millisecond
	// maxSendMsgSize lets the server, not the client, decide what is too large (its
	// --max-request-bytes), so that the limit is the cluster's one and the error its own.
	maxSendMsgSize = 64 << 20
	// reconnectMax is the longest pause between attempts to reconnect to a member.
	reconnectMax = time.Second
	// checkKey holds the encryption check value. A dot name: never a storage key.
	checkKey = ".encryption-check"
	// checkPlain is what the check value seals.
	checkPlain = "tlsalpn encryption check"
	// locksDir is where lock keys live. A dot name: never a storage key.
	locksDir = ".locks"
)

// Store is a storage.Storage on etcd, also storage.Versioned and storage.Ephemeral. It is safe
// for concurrent use.
type Store struct {
	cli    *clientv3.Client
	cfg    Config
	root   string // cfg.Prefix + "/"
	sealer *sealer
	log    *slog.Logger

	ctx    context.Context // ends at Close: sessions and watches stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	eph ephemeral

	closing      atomic.Bool // set by Close: sessions ending are no news then
	lockMu       sync.Mutex
	lockSessions map[*concurrency.Session]struct{} // of locks held, revoked by Close
}

var (
	_ storage.Storage   = (*Store)(nil)
	_ storage.Versioned = (*Store)(nil)
	_ storage.Ephemeral = (*Store)(nil)
)

// do runs fn until it succeeds, fails for good, or ctx (bounded by RequestTimeout if it has no
// deadline) ends; each attempt is bounded by attemptTimeout. wrap turns the last error into
// the returned one.
func (s *Store) do(ctx context.Context, fn func(context.Context) error, wrap func(error) error) error {
	parent := ctx
	if err := ctx.Err(); err != nil {
		return wrap(err) // not etcd's fault: say what it is
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
	}
	for {
		actx, acancel := context.WithTimeout(ctx, attemptTimeout)
		err := fn(actx)
		acancel()
		if err == nil {
			return nil
		}
		if perr := parent.Err(); perr != nil && errors.Is(perr, context.Canceled) {
			return wrap(perr)
		}
		if !retryable(err) {
			return wrap(withKind(err))
		}
		if ctx.Err() != nil {
			if _, ok := parent.Deadline(); ok {
				return wrap(fmt.Errorf("%w (no answer before the deadline): %w", ErrUnavailable, err))
			}
			return wrap(fmt.Errorf("%w (no answer within %v): %w", ErrUnavailable, s.cfg.RequestTimeout, err))
		}
		select {
		case <-ctx.Done():
		case <-time.After(retryPause):
		}
	}
}

// etcdKey returns the etcd key of a storage key.
func (s *Store) etcdKey(key string) string { return s.root + key }

// private reports whether mode asks for a sealed value.
func private(mode os.FileMode) bool { return mode&0o077 == 0 }

// encode returns value as stored under key with mode.
func (s *Store) encode(key string, value []byte, mode os.FileMode) ([]byte, error) {
	if mode&^os.ModePerm != 0 {
		return nil, fmt.Errorf("mode %v has bits other than permissions", mode)
	}
	now := time.Now()
	if mode == 0 {
		mode = 0o600
	}
	if !private(mode) {
		return encodePlain(value, now, mode), nil
	}
	if s.sealer == nil {
		return nil, fmt.Errorf("%w: mode %#o is private (give an encryption key to store private keys in etcd)", ErrNoEncryptionKey, mode)
	}
	return s.sealer.seal(key, value, now, mode)
}

// decodeValue returns the value stored under key as raw.
func (s *Store) decodeValue(key string, raw []byte) ([]byte, error) {
	d, err := decode(raw)
	if err != nil {
		return nil, err
	}
	if !d.sealed {
		return d.body, nil
	}
	if s.sealer == nil {
		return nil, fmt.Errorf("%w: the value is sealed with key id %x", ErrNoEncryptionKey, d.keyID)
	}
	return s.sealer.open(key, d)
}

// Get implements storage.Storage.
func (s *Store) Get(ctx context.Context, key string) ([]byte, error) {
	v, _, err := s.get(ctx, "get", key)
	return v, err
}

// GetVersion implements storage.Versioned: the version is the key's modification revision.
func (s *Store) GetVersion(ctx context.Context, key string) ([]byte, int64, error) {
	return s.get(ctx, "get", key)
}

func (s *Store) get(ctx context.Context, op, key string) ([]byte, int64, error) {
	if err := storage.ValidateKey(key); err != nil {
		return nil, 0, err
	}
	raw, rev, err := s.getRaw(ctx, op, key)
	if err != nil {
		return nil, 0, err
	}
	v, err := s.decodeValue(key, raw)
	if err != nil {
		return nil, 0, opError(op, key, err)
	}
	return v, rev, nil
}

// getRaw returns the value stored under key as etcd has it, and its modification revision.
func (s *Store) getRaw(ctx context.Context, op, key string) ([]byte, int64, error) {
	var raw []byte
	var rev int64
	err := s.do(ctx, func(ctx context.Context) error {
		r, err := s.cli.Get(ctx, s.etcdKey(key))
		if err != nil {
			return err
		}
		if len(r.Kvs) == 0 {
			return storage.ErrNotExist
		}
		raw, rev = r.Kvs[0].Value, r.Kvs[0].ModRevision
		return nil
	}, func(err error) error { return opError(op, key, err) })
	return raw, rev, err
}

// Stat implements storage.Storage. Modified is the time the writer's clock showed at Put (etcd
// keeps no times; the time travels in the value's header), and Size the size of the value as
// given to Put. Stat needs no encryption key.
func (s *Store) Stat(ctx context.Context, key string) (storage.KeyInfo, error) {
	if err := storage.ValidateKey(key); err != nil {
		return storage.KeyInfo{}, err
	}
	raw, _, err := s.getRaw(ctx, "stat", key)
	if err != nil {
		return storage.KeyInfo{}, err
	}
	d, err := decode(raw)
	if err != nil {
		return storage.KeyInfo{}, opError("stat", key, err)
	}
	return storage.KeyInfo{Key: key, Size: d.size, Modified: d.modified}, nil
}

// Mode returns the permission bits key was put with (0600 for a mode of 0; PutEphemeral puts
// 0600 with an encryption key, 0644 without). etcd has no file modes: the mode travels in the
// value's header, so that copying state from etcd back to a directory (tlsalpn storage copy)
// gives every file the mode it had. Mode needs no encryption key.
func (s *Store) Mode(ctx context.Context, key string) (os.FileMode, error) {
	if err := storage.ValidateKey(key); err != nil {
		return 0, err
	}
	raw, _, err := s.getRaw(ctx, "mode", key)
	if err != nil {
		return 0, err
	}
	d, err := decode(raw)
	if err != nil {
		return 0, opError("mode", key, err)
	}
	return d.mode, nil
}

// Put implements storage.Storage. A value with a private mode (no group or other bits, or 0)
// is sealed (see the package doc). Like a file system, etcd here refuses a key that has a key
// above it or keys below it ("a" and "a/b" cannot both be keys).
func (s *Store) Put(ctx context.Context, key string, value []byte, mode os.FileMode) error {
	return s.put(ctx, "put", key, value, mode, -1, nil)
}

// PutIfVersion implements storage.Versioned.
func (s *Store) PutIfVersion(ctx context.Context, key string, value []byte, mode os.FileMode, version int64) error {
	if version < 0 {
		return fmt.Errorf("storage/etcd: put %q: negative version %d", key, version)
	}
	return s.put(ctx, "put", key, value, mode, version, nil)
}

// errShape is the failure of a Put whose key has a key above it or keys below it.
var errShape = errors.New("a key above it or keys below it exist (a key cannot also be a prefix of other keys)")

// put stores value; version >= 0 makes it conditional on the key's modification revision;
// lease, when not nil, gives the lease the key is attached to (once known: it may change
// between attempts).
func (s *Store) put(ctx context.Context, op, key string, value []byte, mode os.FileMode, version int64, lease func(context.Context) (clientv3.LeaseID, error)) error {
	if err := storage.ValidateKey(key); err != nil {
		return err
	}
	stored, err := s.encode(key, value, mode)
	if err != nil {
		return opError(op, key, err)
	}
	ek := s.etcdKey(key)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(ek+"/"), "=", 0).WithPrefix()}
	for i := range len(key) {
		if key[i] == '/' {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.etcdKey(key[:i])), "=", 0))
		}
	}
	if version >= 0 {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(ek), "=", version))
	}
	ambiguous := false // an earlier attempt may have been applied
	return s.do(ctx, func(ctx context.Context) error {
		var opts []clientv3.OpOption
		if lease != nil {
			id, err := lease(ctx)
			if err != nil {
				return err
			}
			opts = append(opts, clientv3.WithLease(id))
		}
		r, err := s.cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(ek, string(stored), opts...)).Else(clientv3.OpGet(ek)).Commit()
		if err != nil {
			if retryable(err) {
				ambiguous = true
			}
			return err
		}
		if r.Succeeded {
			return nil
		}
		var cur []byte
		var curRev int64
		if kvs := r.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
			cur, curRev = kvs[0].Value, kvs[0].ModRevision
		}
		if ambiguous && bytes.Equal(cur, stored) {
			return nil // our own earlier attempt (every stored value is unique: time, nonce)
		}
		if version >= 0 && curRev != version {
			return fmt.Errorf("%w: version %d, now %d", storage.ErrModified, version, curRev)
		}
		return errShape
	}, func(err error) error { return opError(op, key, err) })
}

// Delete implements storage.Storage.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.ValidateKey(key); err != nil {
		return err
	}
	return s.do(ctx, func(ctx context.Context) error {
		_, err := s.cli.Delete(ctx, s.etcdKey(key))
		return err
	}, func(err error) error { return opError("delete", key, err) })
}

// rangeOf returns the etcd range [start, end) that holds the keys covered by prefix (and, for a
// non-empty prefix, keys that merely begin with it, such as prefix+"-x": filter with covered).
func (s *Store) rangeOf(prefix string) (start, end string) {
	start = s.root + prefix
	return start, clientv3.GetPrefixRangeEnd(start)
}

// relKey returns the storage key of an etcd key, and whether it is a storage key covered by
// prefix: not a name of this backend's own (.locks, .encryption-check, also those of a Store
// on a prefix nested in this one), not a neighbour that merely shares the prefix as a string.
func (s *Store) relKey(etcdKey []byte, prefix string) (string, bool) {
	k, ok := strings.CutPrefix(string(etcdKey), s.root)
	if !ok || !storage.HasPrefix(k, prefix) || storage.ValidateKey(k) != nil {
		return "", false
	}
	return k, true
}

// List implements storage.Storage.
func (s *Store) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if err := storage.ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	var keys []string
	err := s.do(ctx, func(ctx context.Context) error {
		keys = keys[:0]
		start, end := s.rangeOf(prefix)
		r, err := s.cli.Get(ctx, start, clientv3.WithRange(end), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		if err != nil {
			return err
		}
		for _, kv := range r.Kvs {
			if k, ok := s.relKey(kv.Key, prefix); ok {
				keys = append(keys, k)
			}
		}
		return nil
	}, func(err error) error { return opError("list", prefix, err) })
	if err != nil {
		return nil, err
	}
	if !recursive {
		keys = children(prefix, keys)
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil
}

// getAllPage is how many values GetAll reads per request: a few MiB at the sizes tlsalpn
// stores, well under what one response may carry.
const getAllPage = 500

// GetAll returns every key covered by prefix with its value, read in a few range requests
// (getAllPage values each) instead of one Get per key: a node catching up with 10,000
// certificates reads them in well under a second instead of ten. The values are those of one
// revision (the first page's), so they are consistent with each other. Sealed values are
// opened; one that cannot be (no key, damaged) fails the whole call, naming its key.
func (s *Store) GetAll(ctx context.Context, prefix string) (map[string][]byte, error) {
	if err := storage.ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	out := make(map[string][]byte)
	start, end := s.rangeOf(prefix)
	var rev int64
	for {
		var kvs []*mvccpb.KeyValue
		var more bool
		err := s.do(ctx, func(ctx context.Context) error {
			opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(getAllPage),
				clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
			if rev != 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			r, err := s.cli.Get(ctx, start, opts...)
			if err != nil {
				return err
			}
			if rev == 0 {
				rev = r.Header.Revision
			}
			kvs, more = r.Kvs, r.More
			return nil
		}, func(err error) error { return opError("get all", prefix, err) })
		if errors.Is(err, rpctypes.ErrCompacted) && ctx.Err() == nil {
			// The revision of the first page was compacted away meanwhile: start again.
			clear(out)
			start, _ = s.rangeOf(prefix)
			rev = 0
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, kv := range kvs {
			k, ok := s.relKey(kv.Key, prefix)
			if !ok {
				continue
			}
			v, err := s.decodeValue(k, kv.Value)
			if err != nil {
				return nil, opError("get all", k, err)
			}
			out[k] = v
		}
		if !more || len(kvs) == 0 {
			return out, nil
		}
		start = string(kvs[len(kvs)-1].Key) + "\x00"
	}
}

// children turns the keys covered by prefix into its immediate children.
func children(prefix string, keys []string) []string {
	out := keys[:0]
	for _, k := range keys {
		if k == prefix {
			out = append(out, k) // the prefix is itself a key
			continue
		}
		rest := k
		if prefix != "" {
			rest = k[len(prefix)+1:]
		}
		if seg, _, ok := strings.Cut(rest, "/"); ok {
			k = k[:len(k)-len(rest)] + seg
		}
		out = append(out, k)
	}
	return out
}
