package manager

// Records: a certificate name's record (the switch) and its versions,
// written whole before the switch and checked on every load.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"time"

	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage"
)

// keepVersions is how many certificate versions a record keeps: the
// current one and the one before it, so that a bad renewal can still be
// looked at or put back by hand.
const keepVersions = 2

// save stores a new version of rec's certificate: key and chain go into a
// version directory of their own, and only then is the record, the
// switch, pointed at it. Whatever fails before the switch leaves the
// previous record, and the pair it names, as they were. The caller holds
// the certificate's lock.
//
// The switch is a compare-and-swap on backends that have one: it is
// written only over the record as it was read before ordering (rec's
// version; none when the certificate is new). A holder that lost its lock
// while it ordered (a cluster node cut off from etcd for longer than its
// lease) would otherwise put its certificate back over a newer one stored
// meanwhile. When the record changed, save reads it again: another
// certificate than base's (the record read before ordering; nil when there
// was none) was stored after this one was ordered, so it wins (a
// *SupersededError, and this version's files are removed); a change that
// left base's certificate (renewal information, a deployment outcome) is
// kept and the switch written over it.
func (m *Manager) save(ctx context.Context, rec, base *Record, chainPEM, keyPEM []byte) error {
	if err := checkPair(chainPEM, keyPEM, rec.Serial); err != nil {
		return fmt.Errorf("not storing the certificate for %s: %w", rec.Name(), err)
	}
	rec.Version = rec.Serial
	if err := m.store.Put(ctx, storage.LineageKey(rec.Name(), rec.Version, storage.KeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("storing the key for %s: %w", rec.Name(), err)
	}
	if err := m.store.Put(ctx, storage.LineageKey(rec.Name(), rec.Version, storage.CertFile), chainPEM, 0o644); err != nil {
		return fmt.Errorf("storing the certificate for %s: %w", rec.Name(), err)
	}
	for attempt := 0; ; attempt++ {
		err := m.saveRecord(ctx, rec)
		if err == nil {
			break
		}
		if !errors.Is(err, storage.ErrModified) || attempt == 2 {
			return err
		}
		stored, rerr := m.loadRecord(ctx, rec.Name())
		if rerr != nil {
			return errors.Join(err, rerr)
		}
		if stored.Serial != rec.Serial && (base == nil || stored.Serial != base.Serial) {
			m.removeVersion(ctx, rec)
			return &SupersededError{Name: rec.Name(), Serial: rec.Serial, Stored: stored}
		}
		m.logger.Warn("the record changed while the certificate was ordered, still for an older certificate; storing the new one over it",
			"name", rec.Name(), "serial", rec.Serial, "stored_serial", stored.Serial)
		rec.ver = stored.ver
		rec.Deployed, rec.DeployedOn, rec.Retired = stored.Deployed, stored.DeployedOn, stored.Retired
	}
	m.pruneVersions(ctx, rec)
	return nil
}

// SupersededError is a certificate obtained but not stored, because
// another process stored a newer one for the same certificate name while
// it was being ordered: its lock was lost meanwhile (in a cluster, the
// node was cut off for longer than its lease). The newer one stays in
// service; the one obtained is dropped.
type SupersededError struct {
	Name   string  // certificate name
	Serial string  // the certificate obtained and dropped
	Stored *Record // the newer record, kept
}

func (e *SupersededError) Error() string {
	return fmt.Sprintf("certificate %s serial %s not stored: serial %s, newer, was stored meanwhile by another process (this one's lock was lost while it ordered)",
		e.Name, e.Serial, e.Stored.Serial)
}

// Unwrap makes a SupersededError an ErrModified.
func (e *SupersededError) Unwrap() error { return storage.ErrModified }

// removeVersion deletes the files of rec's version, never switched to. A
// failure only leaves them to pruneVersions.
func (m *Manager) removeVersion(ctx context.Context, rec *Record) {
	for _, f := range []string{storage.KeyFile, storage.CertFile} {
		if err := m.store.Delete(ctx, storage.LineageKey(rec.Name(), rec.Version, f)); err != nil {
			m.logger.Debug("files of a certificate not stored were not removed", "name", rec.Name(), "version", rec.Version, "error", err)
		}
	}
}

// pruneVersions removes the versions of rec's certificate that are
// neither current nor among the keepVersions newest, and any version left
// half-written by a crash before its switch. Failing to prune loses
// nothing, so it is only logged.
func (m *Manager) pruneVersions(ctx context.Context, rec *Record) {
	keys, err := m.store.List(ctx, storage.LineageDir(rec.Name()), false)
	if err != nil {
		m.logger.Debug("old certificate versions not pruned", "name", rec.Name(), "error", err)
		return
	}
	type version struct {
		dir string
		mod time.Time
	}
	var old []version
	for _, k := range keys {
		if path.Base(k) == storage.MetaFile || path.Base(k) == rec.Version {
			continue
		}
		info, err := m.store.Stat(ctx, path.Join(k, storage.CertFile))
		if err != nil {
			// No certificate: half-written, never switched to.
			info.Modified = time.Time{}
		}
		old = append(old, version{k, info.Modified})
	}
	sort.Slice(old, func(i, j int) bool { return old[i].mod.After(old[j].mod) })
	for i, v := range old {
		if i < keepVersions-1 && !v.mod.IsZero() {
			continue
		}
		for _, f := range []string{storage.CertFile, storage.KeyFile} {
			if err := m.store.Delete(ctx, path.Join(v.dir, f)); err != nil {
				m.logger.Debug("old certificate version not pruned", "name", rec.Name(), "version", v.dir, "error", err)
			}
		}
	}
}

// checkPair reports whether key belongs to the first certificate of
// chain, and that certificate has serial (in hex) when serial is not
// empty: a record whose pair does not match must never be deployed.
func checkPair(chainPEM, keyPEM []byte, serial string) error {
	pair, err := tls.X509KeyPair(chainPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("key and certificate do not belong together: %w", err)
	}
	if serial != "" {
		if got := pair.Leaf.SerialNumber.Text(16); got != serial {
			return fmt.Errorf("the stored certificate has serial %s, the record says %s", got, serial)
		}
	}
	return nil
}

// unknownVersion is a record's version after it was saved: the backend
// does not say what the new one is, so the record must be read again
// before it is saved again.
const unknownVersion = -1

// saveRecord writes rec, the switch. On a backend that implements
// storage.Versioned, it is written only if the stored record is still the
// one rec was read from (rec's version: loadRecord sets it; 0 for a record
// that did not exist), else it fails wrapping storage.ErrModified: every
// writer of a record reads it under the certificate's lock first, so a
// record changed since was written by a holder of a lost lock, and is not
// to be overwritten blindly.
func (m *Manager) saveRecord(ctx context.Context, rec *Record) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	key := storage.LineageMetaKey(rec.Name())
	if vs, ok := m.store.(storage.Versioned); ok {
		if rec.ver == unknownVersion {
			return fmt.Errorf("storing the record of %s: it was saved before and not read again since", rec.Name())
		}
		err = vs.PutIfVersion(ctx, key, data, 0o644, rec.ver)
	} else {
		err = m.store.Put(ctx, key, data, 0o644)
	}
	if err != nil {
		return fmt.Errorf("storing the record of %s: %w", rec.Name(), err)
	}
	rec.ver = unknownVersion
	return nil
}

// Stored is a record with its certificate chain and key.
type Stored struct {
	Record
	Chain    []*x509.Certificate
	ChainPEM []byte
	KeyPEM   []byte
}

// Load reads one stored certificate by its certificate name, and checks
// that its key and certificate belong together and are the ones its
// record names.
func (m *Manager) Load(ctx context.Context, id string) (*Stored, error) {
	if err := m.migrate(ctx); err != nil {
		return nil, err
	}
	rec, err := m.loadRecord(ctx, id)
	if err != nil {
		return nil, err
	}
	return m.loadVersion(ctx, rec)
}

func (m *Manager) loadVersion(ctx context.Context, rec *Record) (*Stored, error) {
	id := rec.Name()
	if rec.Version == "" {
		return nil, &DamagedError{Name: id, Key: storage.LineageMetaKey(id), Err: errors.New("the record names no certificate version")}
	}
	vdir := storage.LineageVersionDir(id, rec.Version)
	certKey, keyKey := path.Join(vdir, storage.CertFile), path.Join(vdir, storage.KeyFile)
	s := &Stored{Record: *rec}
	var err error
	if s.ChainPEM, err = m.store.Get(ctx, certKey); err != nil {
		return nil, damaged(id, certKey, err)
	}
	if s.KeyPEM, err = m.store.Get(ctx, keyKey); err != nil {
		return nil, damaged(id, keyKey, err)
	}
	if s.Chain, err = issuer.ParseChainPEM(s.ChainPEM); err != nil {
		return nil, damaged(id, certKey, err)
	}
	if err := checkPair(s.ChainPEM, s.KeyPEM, rec.Serial); err != nil {
		return nil, damaged(id, vdir, err)
	}
	return s, nil
}

// loadRecord reads one certificate's record, without its chain and key.
// A missing record is an error wrapping storage.ErrNotExist; an
// unreadable one a *DamagedError. The record carries the version it was
// read at, for saveRecord.
func (m *Manager) loadRecord(ctx context.Context, id string) (*Record, error) {
	rec, _, err := m.readRecord(ctx, id)
	return rec, err
}

// readRecord is loadRecord, and also returns the version of the record's
// key whenever it was read, damaged or not (0 when it is missing, or the
// backend has no versions), so that a new record can replace a damaged one
// by compare-and-swap.
func (m *Manager) readRecord(ctx context.Context, id string) (*Record, int64, error) {
	key := storage.LineageMetaKey(id)
	var meta []byte
	var ver int64
	var err error
	if vs, ok := m.store.(storage.Versioned); ok {
		meta, ver, err = vs.GetVersion(ctx, key)
	} else {
		meta, err = m.store.Get(ctx, key)
	}
	if errors.Is(err, storage.ErrNotExist) {
		return nil, 0, fmt.Errorf("no certificate named %s: %w", id, err)
	}
	if err != nil {
		return nil, 0, damaged(id, key, err)
	}
	rec := &Record{}
	if err := json.Unmarshal(meta, rec); err != nil {
		return nil, ver, damaged(id, key, err)
	}
	if rec.Name() != id {
		return nil, ver, damaged(id, key, fmt.Errorf("the record is for %q", rec.Name()))
	}
	rec.ver = ver
	return rec, ver, nil
}

// errNoRecord is the damage of a certificate name whose versions are
// stored without the record that switches to one.
var errNoRecord = errors.New("certificate files are stored but the record naming the current one is missing")

// DamagedError is a stored certificate that cannot be used: its record
// is unreadable, or its key or certificate is missing, unreadable or does
// not match. It is never skipped in silence: list shows it, renew fails
// on it, and it is never deployed.
type DamagedError struct {
	Name string // certificate name
	Key  string // the storage key found damaged
	Err  error
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("stored certificate %s is damaged (%s): %v", e.Name, e.Key, e.Err)
}

func (e *DamagedError) Unwrap() error { return e.Err }

// damaged returns err, met reading key of the certificate id, as a
// DamagedError. An error of storage being unreachable (storage.ErrUnavailable) says
// nothing of the certificate: it is returned as such, not as damage,
// which would make a keeper order a new certificate.
func damaged(id, key string, err error) error {
	if errors.Is(err, storage.ErrUnavailable) {
		return fmt.Errorf("reading stored certificate %s (%s): %w", id, key, err)
	}
	return &DamagedError{Name: id, Key: key, Err: err}
}

// List returns every stored certificate, sorted by name, and every
// damaged one: one bad file hides neither the others nor itself.
func (m *Manager) List(ctx context.Context) ([]*Stored, []*DamagedError, error) {
	if err := m.migrate(ctx); err != nil {
		return nil, nil, err
	}
	ids, err := m.store.List(ctx, storage.LineagesPrefix, false)
	if err != nil && !errors.Is(err, storage.ErrNotExist) {
		return nil, nil, fmt.Errorf("listing certificates: %w", err)
	}
	var out []*Stored
	var bad []*DamagedError
	for _, k := range ids {
		id := path.Base(k)
		s, err := m.Load(ctx, id)
		var de *DamagedError
		switch {
		case errors.As(err, &de):
			bad = append(bad, de)
		case errors.Is(err, storage.ErrNotExist):
			// Versions without a record: a first order that crashed
			// before its switch (issuing it again completes it), or a
			// record removed by hand. Either way a certificate is not
			// being renewed, which must not pass unseen.
			bad = append(bad, &DamagedError{Name: id, Key: storage.LineageMetaKey(id), Err: errNoRecord})
		case err != nil:
			return nil, nil, err
		default:
			out = append(out, s)
		}
	}
	bad = append(bad, m.legacyLeft(ctx)...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, bad, nil
}
