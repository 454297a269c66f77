// Package fs implements storage.Storage on a local directory. It is the default backend of
// tlsalpn and needs nothing but a file system that supports rename(2) and flock(2) (any local
// Linux file system; flock over NFS is not reliable, so do not share a root over NFS).
//
// # On-disk layout
//
// A key maps to the file root/<key>, with slashes as directory separators. The keys tlsalpn uses
// are those of storage's layout (storage/layout.go: accounts/, lineages/, orders/ and the older
// certificates/); this backend adds:
//
//	root/                                   0700, tightened to 0700 by New if looser
//	                                        (default: DefaultRoot)
//	  locks/<name>.lock                     flock(2) files, see Lock
//	  locks/versioned/<key>.lock            taken by PutIfVersion, one per key
//
// Every directory tlsalpn creates is 0700 and every file has exactly the mode given to Put (0600
// when the mode is 0), regardless of umask.
//
// The root is tightened to 0700 rather than refused when it is group- or world-accessible: it
// holds private keys, it belongs to tlsalpn alone (servers read the copies that package deploy
// writes elsewhere), and a wider mode is far more often an accident of mkdir and umask than a
// choice. Existing subdirectories are left as they are.
//
// # Atomicity
//
// Put writes the value to a temporary file named ".tmp-*" in the target's directory, sets its
// mode, fsyncs it, renames it over the target and fsyncs the directory, so a crash leaves either
// the old or the new value and never a torn one. A failed Put removes its temporary file and
// leaves the old value in place. A crash can leave a temporary file behind; List and Watch
// ignore them (keys may not begin with a dot), and New deletes those older than 15 minutes
// (RemoveStaleTemp, WithStaleTempAge): a Put takes milliseconds, so a concurrent writer's
// temporary file is never that old.
//
// # Locks
//
// Lock takes an exclusive flock(2) on root/locks/<name>.lock. The kernel releases it when the
// holder's file descriptor is closed, including when the process dies, so a crashed tlsalpn
// never leaves a stale lock. Lock files are never deleted (deleting a flock file races with a
// waiter that has it open); they are empty apart from the holder's pid, written for humans.
// The descriptor is close-on-exec, so hooks run by the holder do not inherit the lock.
//
// # Compare-and-swap
//
// FS implements storage.Versioned: a key's version is a hash of its file's inode, modification
// time and size, which every Put changes (it renames a new file into place). PutIfVersion
// compares and writes under a lock of its own for the key, so that of several writers that read
// one version exactly one writes; a plain Put does not take that lock.
//
// # Watch
//
// Watch polls: it rescans the prefix every poll interval (WithPollInterval, default 2s) and
// reports keys that appeared, disappeared, or changed size, modification time or inode (every
// Put creates a new inode). It never returns storage.ErrWatchUnsupported.
package fs
