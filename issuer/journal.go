package issuer

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/storage"
)

// The order journal lives under storage.OrdersPrefix:
// orders/<ca>/<request id>/{order.json,key.pem} (storage.OrderDir). An entry is written right
// after the CA created an order, before anything is finalised, and removed
// when the caller has stored the certificate (Result.Done). A certificate
// the CA issued is therefore never thrown away by a crash, a CA error after
// finalisation or a failed save: the next Obtain for the same request
// resumes the order and downloads it, instead of ordering another one
// (Let's Encrypt allows five duplicate certificates a week).

// journalMaxAge is how long an entry that no Obtain came back for is kept:
// far beyond an order's life at the CA (a week at Let's Encrypt), so an
// entry this old is one whose request is never made again (the names or
// key type changed), and its key is better not left lying around.
const journalMaxAge = 30 * 24 * time.Hour

// probeMaxAge is how old a writability probe must be for pruneJournal to
// remove it: the probe lives for milliseconds, so one this old was left by
// a process that was killed.
const probeMaxAge = 15 * time.Minute

// probeSize is what the writability probe writes: about what a certificate
// and its key take, so that a file system with a few bytes left fails it.
const probeSize = 16 << 10

// journalEntry is order.json: what is needed to resume an order. The
// certificate key is beside it in key.pem (0600).
type journalEntry struct {
	Order       string            `json:"order"`   // order URL at the CA
	Account     string            `json:"account"` // account URL that created it
	Directory   string            `json:"directory"`
	Identifiers []acme.Identifier `json:"identifiers"`
	Profile     string            `json:"profile,omitempty"`
	KeyType     KeyType           `json:"key_type,omitempty"`
	Created     time.Time         `json:"created"`
}

// journal is one request's place in the order journal.
type journal struct {
	store  storage.Storage
	prefix string // orders/<ca>/<id>
	lock   string // storage lock held while the entry's order is driven
}

// journalFor returns the journal place of req: one per CA, account email,
// set of identifiers, key type, profile and lineage, so that a rerun of the
// same request finds it and nothing else does.
func (iss *Issuer) journalFor(req Request, profile string) journal {
	ids := make([]string, len(req.Identifiers))
	for i, id := range req.Identifiers {
		ids[i] = string(id.Type) + ":" + id.Value
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	h := sha256.New()
	fmt.Fprintf(h, "email=%q\nids=%q\nkeytype=%q\nprofile=%q\nlineage=%q\n",
		iss.cfg.Email, strings.Join(ids, ","), keyTypeName(req.KeyType), profile, req.Lineage)
	if req.Key != nil {
		// A caller-supplied key must be the one certified: an entry made
		// with another key is not this request's.
		if der, err := x509.MarshalPKIXPublicKey(req.Key.Public()); err == nil {
			h.Write(der)
		}
	}
	id := hex.EncodeToString(h.Sum(nil)[:16])
	return journal{
		store:  iss.cfg.Storage,
		prefix: storage.OrderDir(iss.cfg.Directory, id),
		lock:   storage.OrderLockName(iss.cfg.Directory, id),
	}
}

func keyTypeName(kt KeyType) KeyType {
	if kt == "" {
		return EC256
	}
	return kt
}

// load returns the journaled order and its key, or storage.ErrNotExist.
// A damaged entry is removed and reported as absent: it cannot be resumed,
// and keeping it would fail every later order.
func (j journal) load(ctx context.Context) (journalEntry, crypto.Signer, error) {
	data, err := j.store.Get(ctx, path.Join(j.prefix, storage.OrderFile))
	if err != nil {
		return journalEntry{}, nil, err
	}
	var e journalEntry
	if err := json.Unmarshal(data, &e); err != nil || e.Order == "" {
		return journalEntry{}, nil, fmt.Errorf("order journal %s is damaged (%v): %w", j.prefix, err, errJournalDamaged)
	}
	keyPEM, err := j.store.Get(ctx, path.Join(j.prefix, storage.KeyFile))
	if err != nil {
		if errors.Is(err, storage.ErrNotExist) {
			return e, nil, fmt.Errorf("order journal %s has no key: %w", j.prefix, errJournalDamaged)
		}
		return e, nil, err
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return e, nil, fmt.Errorf("order journal %s: %v: %w", j.prefix, err, errJournalDamaged)
	}
	return e, key, nil
}

var errJournalDamaged = errors.New("damaged order journal entry")

// save records an order and its certificate key. The key goes first: an
// order.json without its key could not be finalised or used.
func (j journal) save(ctx context.Context, e journalEntry, key crypto.Signer) error {
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	if err := j.store.Put(ctx, path.Join(j.prefix, storage.KeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("journaling the key of order %s: %w", e.Order, err)
	}
	data, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	if err := j.store.Put(ctx, path.Join(j.prefix, storage.OrderFile), data, 0o600); err != nil {
		return fmt.Errorf("journaling order %s: %w", e.Order, err)
	}
	return nil
}

// remove deletes the entry, order.json first: a key without its order is
// never resumed, and is overwritten by the next entry.
func (j journal) remove(ctx context.Context) error {
	for _, name := range []string{storage.OrderFile, storage.KeyFile} {
		if err := j.store.Delete(ctx, path.Join(j.prefix, name)); err != nil {
			return fmt.Errorf("removing order journal %s: %w", j.prefix, err)
		}
	}
	return nil
}

// pruneJournal removes the entries of this CA that are older than
// journalMaxAge. It is tidying, not correctness: failures are logged.
func (iss *Issuer) pruneJournal(ctx context.Context) {
	prefix := storage.OrdersDir(iss.cfg.Directory)
	children, err := iss.cfg.Storage.List(ctx, prefix, false)
	if err != nil {
		iss.logger.Warn("listing the order journal", "prefix", prefix, "error", err)
		return
	}
	cutoff := time.Now().Add(-journalMaxAge)
	for _, child := range children {
		if strings.HasPrefix(path.Base(child), storage.ProbePrefix) {
			// A writability probe that a killed process left.
			if info, err := iss.cfg.Storage.Stat(ctx, child); err == nil && time.Since(info.Modified) > probeMaxAge {
				if err := iss.cfg.Storage.Delete(ctx, child); err != nil {
					iss.logger.Warn("removing a stale storage probe", "key", child, "error", err)
				}
			}
			continue
		}
		newest, found := time.Time{}, false
		for _, name := range []string{storage.OrderFile, storage.KeyFile} {
			info, err := iss.cfg.Storage.Stat(ctx, path.Join(child, name))
			if err != nil {
				continue
			}
			found = true
			if info.Modified.After(newest) {
				newest = info.Modified
			}
		}
		if !found || newest.After(cutoff) {
			continue
		}
		j := journal{store: iss.cfg.Storage, prefix: child}
		if err := j.remove(ctx); err != nil {
			iss.logger.Warn("removing an abandoned order journal entry", "entry", child, "error", err)
			continue
		}
		iss.logger.Info("removed an order journal entry no run came back for", "entry", child, "written", newest)
	}
}

// checkWritable makes sure storage accepts a write, before the CA is asked
// for anything: a certificate ordered into a read-only or full storage
// would be issued and lost.
func (iss *Issuer) checkWritable(ctx context.Context, label string) error {
	var rnd [8]byte
	rand.Read(rnd[:])
	key := storage.ProbeKey(iss.cfg.Directory, hex.EncodeToString(rnd[:]))
	err := iss.cfg.Storage.Put(ctx, key, make([]byte, probeSize), 0o600)
	if err == nil {
		err = iss.cfg.Storage.Delete(ctx, key)
	}
	if err != nil {
		return fmt.Errorf("not ordering a certificate for %s: storage %s does not accept writes, so a certificate would be issued and lost: %w",
			label, storageName(iss.cfg.Storage), err)
	}
	return nil
}

// storageName names a storage in messages: its directory when it has one.
func storageName(s storage.Storage) string {
	if r, ok := s.(interface{ Root() string }); ok {
		return r.Root()
	}
	return fmt.Sprintf("%T", s)
}
