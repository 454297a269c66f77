// Package etcd implements storage.Storage (and storage.Versioned and storage.Ephemeral) on
// etcd, with etcd's own client, for cluster mode: several tlsalpn nodes sharing one state.
//
// # Keys
//
// Everything lives under Config.Prefix (default "tlsalpn"):
//
//	PREFIX/<key>                    a storage key, exactly as storage's layout names it
//	PREFIX/.locks/<escaped name>/…  lock waiters and holders (package concurrency's mutex)
//	PREFIX/.encryption-check        the encryption key check value (see Open)
//
// Storage keys never have a segment that begins with a dot, so the backend's own names cannot
// collide with them. Prefixes follow storage's path semantics (List and Watch of "a/b" cover
// "a/b" and "a/b/…", not "a/bc"), and, as on a file system, a key cannot also be a prefix of
// other keys: Put refuses "a/b/c" when "a/b" is a key and the other way round (checked in the
// same transaction as the write).
//
// Prefixes of different installations must not nest ("tlsalpn" and "tlsalpn/prod"): the outer
// one would see the inner one's keys as its own.
//
// # Values
//
// Each value carries a small header: a format tag, the time of the Put by the writer's clock
// (etcd keeps no modification times; this is Stat's Modified), the mode given to Put (see
// Store.Mode), and, for private values, the encryption key id. Stat's Size is the size of the
// value given to Put.
//
// # Encryption at rest
//
// A value put with a private mode (no group or other permission bits; 0 means 0600) is sealed
// with AES-256-GCM under Config.EncryptionKey: a random nonce per value, and the header and the
// storage key as additional data, so that a sealed value cannot be moved to another key or
// have its time changed unnoticed. The header holds the key id (first 8 bytes of the key's
// SHA-256), so a value sealed under another key is told apart from a damaged one. Without an
// encryption key, private values can be neither stored nor read (ErrNoEncryptionKey); public
// ones can. A reader of etcd or of its snapshots learns no private key.
//
// # Timeouts and faults
//
// Every call whose context has no deadline is bounded by Config.RequestTimeout (default 10 s),
// and each attempt by 3 s: attempts that fail because a leader was lost or a member went away
// are made again within that bound, so losing one member of three costs a second or two, not
// an error. Errors name the operation and the key and wrap one of ErrUnavailable, ErrTooLarge,
// ErrQuota, ErrAuth, ErrNoEncryptionKey, ErrWrongKey or ErrCorrupt, as well as etcd's own error.
// Lock waits as long as its context lets it (waiting for a lock is not a fault).
//
// # What etcd must be given
//
// tlsalpn never compacts etcd's history: run etcd with automatic compaction (for example
// --auto-compaction-mode=periodic --auto-compaction-retention=1h), or every renewal, lock and
// node heartbeat stays in the history until the quota (--quota-backend-bytes, 2 GiB by
// default) is reached and etcd refuses writes (ErrQuota). A watch that falls behind a
// compaction resynchronizes by itself (see Store.Watch). Values are a few KiB; etcd's default
// --max-request-bytes (1.5 MiB) is ample.
package etcd
