// Package storage defines where tlsalpn keeps its durable state: ACME accounts, private keys,
// certificates and their metadata, and the locks that keep two processes (or two cluster nodes)
// from ordering the same certificate at once.
//
// The interface is deliberately backend-neutral so that the same issuer and manager code runs on
// local files (package storage/fs) and on etcd. Keys are slash-separated relative paths such as
//
//	lineages/example.com/meta.json
//
// laid out as layout.go documents (every key tlsalpn uses is built there), and every backend must accept exactly the keys that ValidateKey accepts, so that state can be
// moved between backends without renaming anything.
//
// Prefixes, as taken by List and Watch, follow path semantics, not string semantics: the prefix
// "certificates/ca/example.com" covers that key itself and the keys below
// "certificates/ca/example.com/", but not "certificates/ca/example.com.au/...". The empty prefix
// covers every key. A key should not also be used as a prefix of other keys (a file system
// cannot hold both "a" and "a/b"); backends may reject such a Put.
package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// ErrNotExist is returned, possibly wrapped, by Get and Stat when a key does not exist.
// Test for it with errors.Is.
var ErrNotExist = errors.New("storage: key does not exist")

// ErrUnavailable is wrapped by the errors of a backend that could not reach its store (etcd
// unreachable, or without a quorum): nothing is known of the key, neither that it is missing nor
// that it is damaged, and the same request may succeed later. A keeper pauses on it rather
// than treating the certificate as missing.
var ErrUnavailable = errors.New("storage: unavailable")

// ErrWatchUnsupported is returned, possibly wrapped, by Watch on backends that cannot report
// changes. Callers should fall back to re-reading on their own schedule.
var ErrWatchUnsupported = errors.New("storage: watch not supported")

// Storage is the durable state of tlsalpn. Implementations must be safe for concurrent use by
// multiple goroutines, and Put must be atomic: a reader sees either the old or the new value,
// never a mixture, even across a crash.
type Storage interface {
	// Get returns the value stored under key, or an error wrapping ErrNotExist if there is none.
	Get(ctx context.Context, key string) ([]byte, error)

	// Put stores value under key, replacing any previous value atomically. mode is a hint for
	// backends that have permissions: 0600 for private keys, 0644 for public material. Zero
	// means 0600. Only permission bits are allowed.
	Put(ctx context.Context, key string, value []byte, mode os.FileMode) error

	// Delete removes key. Deleting a key that does not exist is not an error, and neither is
	// deleting a prefix that is not itself a key (nothing is removed then).
	Delete(ctx context.Context, key string) error

	// List returns, in byte order, the keys covered by prefix (see the package doc; "" is
	// everything). With recursive set it returns every key below prefix. Without it, it returns the
	// immediate children of prefix: keys, and prefixes that have at least one key below them
	// (without a trailing slash). A prefix with nothing below it yields an empty list, not an
	// error.
	List(ctx context.Context, prefix string, recursive bool) ([]string, error)

	// Stat describes key, or returns an error wrapping ErrNotExist if it is not a key (a prefix
	// that only has keys below it is not a key).
	Stat(ctx context.Context, key string) (KeyInfo, error)

	// Lock blocks until the lock called name is held or ctx ends; the returned func releases
	// it. Locks exclude other processes and other nodes of the same backend, not only other
	// goroutines, and are released automatically when the holding process dies. Lock names
	// follow the rules of ValidateKey and live in a namespace of their own.
	Lock(ctx context.Context, name string) (unlock func() error, err error)

	// Watch reports changes to the keys covered by prefix until ctx ends, then closes the
	// channel. Only changes after Watch returns are reported. Several changes to one key
	// between two observations may be reported as one Event. Backends that cannot watch
	// return an error wrapping ErrWatchUnsupported.
	Watch(ctx context.Context, prefix string) (<-chan Event, error)
}

// KeyInfo describes a stored value.
type KeyInfo struct {
	Key      string
	Size     int64
	Modified time.Time
}

// Event is one observed change. Deleted is false for both creation and modification.
type Event struct {
	Key     string
	Deleted bool
}

// ValidateKey reports whether key is a valid storage key. Keys are relative, slash-separated
// paths that cannot escape a backend's root: ValidateKey rejects the empty key, absolute keys,
// empty segments (so also a leading or trailing slash), segments that begin with a dot (which
// covers "." and "..", and leaves dot names to backends for temporary files), backslashes, NUL
// and other control characters, and keys under LocksPrefix.
func ValidateKey(key string) error {
	if err := validatePath(key); err != nil {
		return err
	}
	if key == LocksPrefix || strings.HasPrefix(key, LocksPrefix+"/") {
		return fmt.Errorf("storage: invalid key %q: %q is reserved for locks", key, LocksPrefix)
	}
	return nil
}

// ValidateLockName reports whether name is a valid name for Storage.Lock. The rules are those
// of ValidateKey, except that lock names have their own namespace, so no prefix is reserved.
func ValidateLockName(name string) error {
	return validatePath(name)
}

// ValidatePrefix reports whether prefix is valid for List and Watch: either "" (everything) or a
// valid key.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return ValidateKey(prefix)
}

func validatePath(key string) error {
	if key == "" {
		return errors.New("storage: invalid key: empty")
	}
	if key[0] == '/' {
		return fmt.Errorf("storage: invalid key %q: absolute", key)
	}
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c == '\\':
			return fmt.Errorf("storage: invalid key %q: contains a backslash", key)
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("storage: invalid key %q: contains control character %#02x", key, c)
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("storage: invalid key %q: empty path segment", key)
		case seg == "." || seg == "..":
			return fmt.Errorf("storage: invalid key %q: segment %q", key, seg)
		case seg[0] == '.':
			return fmt.Errorf("storage: invalid key %q: segment %q begins with a dot", key, seg)
		}
	}
	return nil
}

// HasPrefix reports whether key is covered by prefix in the path sense used by List and Watch:
// key equals prefix or lies below prefix + "/". Every key has the prefix "".
func HasPrefix(key, prefix string) bool {
	if prefix == "" {
		return true
	}
	return key == prefix || strings.HasPrefix(key, prefix+"/")
}

// ErrModified is returned, possibly wrapped, by Versioned.PutIfVersion when the key has changed
// since the version the caller read.
var ErrModified = errors.New("storage: key was modified since it was read")

// Versioned is implemented by backends that can replace a value only if nobody has written it
// since it was read (etcd: the key's modification revision). It is what keeps a stale cluster
// node, one that lost its lock while it was away, from overwriting a newer certificate: a lock
// alone cannot, because the holder may not know it no longer holds it.
type Versioned interface {
	// GetVersion is Get, and also returns the value's version: an opaque number that changes on
	// every Put of the key. A missing key is an error wrapping ErrNotExist.
	GetVersion(ctx context.Context, key string) (value []byte, version int64, err error)

	// PutIfVersion is Put, done only if the key's version is still version; version 0 means the
	// key must not exist. Otherwise it writes nothing and returns an error wrapping ErrModified.
	PutIfVersion(ctx context.Context, key string, value []byte, mode os.FileMode, version int64) error
}

// Ephemeral is implemented by backends that can hold keys for as long as this process lives
// (etcd: keys attached to the process's lease). Cluster nodes register themselves and publish
// challenges this way, so that what a dead node published disappears with it instead of
// lingering until somebody notices.
type Ephemeral interface {
	// PutEphemeral stores value under key until DeleteEphemeral, the end of the process, or the
	// loss of its session (the backend unreachable for longer than the session's TTL), whichever
	// comes first.
	PutEphemeral(ctx context.Context, key string, value []byte) error

	// SessionDone is closed when the session is lost: every key this process put with
	// PutEphemeral is gone then, and must be put again once the backend is back.
	SessionDone() <-chan struct{}
}
