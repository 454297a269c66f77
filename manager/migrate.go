package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"

	"github.com/tlsalpn/tlsalpn/storage"
)

// migrate moves records of the layout before certificate names
// (certificates/<ca>/<first name>/) to lineages/<name>/, once per Manager.
// Each is written in the new layout first and removed from the old one
// only then, so a crash in between leaves it in both, and the next run
// finishes (a certificate already moved is recognised by its serial).
//
// Two records of the old layout with the same first name (two CAs) become
// two certificate names: the newer keeps the name, the older gets a
// numbered one (NAME-0001). Since at most one certificate may feed an
// output directory, an older one whose output the newer one also fed is
// retired: kept, listed, no longer renewed.
func (m *Manager) migrate(ctx context.Context) error {
	m.migrateMu.Lock()
	defer m.migrateMu.Unlock()
	if m.migrated {
		return nil
	}
	keys, err := m.store.List(ctx, storage.CertificatesPrefix, true)
	if err != nil && !errors.Is(err, storage.ErrNotExist) {
		return fmt.Errorf("looking for certificates stored by an older version: %w", err)
	}
	var metas []string
	for _, k := range keys {
		if path.Base(k) == storage.MetaFile {
			metas = append(metas, k)
		}
	}
	if len(metas) > 0 {
		unlock, err := m.store.Lock(ctx, "migrate-lineages")
		if err != nil {
			return fmt.Errorf("locking storage to migrate certificates stored by an older version: %w", err)
		}
		err = m.migrateLegacy(ctx, metas)
		unlock()
		if err != nil {
			return err
		}
	}
	m.migrated = true
	return nil
}

type legacy struct {
	key   string // meta.json
	rec   *Record
	chain []byte
	key2  []byte
}

func (m *Manager) migrateLegacy(ctx context.Context, metas []string) error {
	var found []legacy
	for _, k := range metas {
		l, err := m.readLegacy(ctx, k)
		if err != nil {
			// Left in place: legacyLeft reports it as damaged.
			m.logger.Warn("certificate stored by an older version is damaged; not migrated", "key", k, "error", err)
			continue
		}
		found = append(found, l)
	}
	// Newest first: it keeps the name and its output directory.
	sort.SliceStable(found, func(i, j int) bool { return found[i].rec.ObtainedAt.After(found[j].rec.ObtainedAt) })
	outs := map[string]string{} // output directory -> certificate name feeding it
	for _, l := range found {
		rec := l.rec
		id, done, err := m.legacyID(ctx, rec)
		if err != nil {
			return err
		}
		if !done {
			if id != rec.Names[0] {
				rec.CertName = id
			}
			if by, ok := outs[rec.Out]; ok && rec.Out != "" {
				rec.Retired = &Retirement{At: m.now().UTC(), By: by, Out: rec.Out}
				m.logger.Warn("two stored certificates fed one output directory; the older is kept, marked retired, and no longer renewed",
					"out", rec.Out, "kept", by, "retired", id, "retired_ca", rec.CA)
			}
			if err := m.save(ctx, rec, nil, l.chain, l.key2); err != nil {
				return fmt.Errorf("migrating %s: %w", l.key, err)
			}
			m.logger.Info("certificate moved to the current storage layout", "name", id, "from", path.Dir(l.key))
		}
		if rec.Retired == nil && rec.Out != "" {
			if _, ok := outs[rec.Out]; !ok {
				outs[rec.Out] = id
			}
		}
		dir := path.Dir(l.key)
		for _, f := range []string{storage.MetaFile, storage.CertFile, storage.KeyFile} {
			if err := m.store.Delete(ctx, path.Join(dir, f)); err != nil {
				return fmt.Errorf("removing %s after migrating it: %w", dir, err)
			}
		}
	}
	return nil
}

// legacyID picks the certificate name for a record of the old layout: its
// first name, or NAME-0001… when that is taken by another certificate. done
// is true when the certificate was migrated already (a crash after writing
// the new layout, before removing the old).
func (m *Manager) legacyID(ctx context.Context, rec *Record) (id string, done bool, err error) {
	base := rec.Names[0]
	for i := 0; i < 1000; i++ {
		id = base
		if i > 0 {
			id = base + "-" + fmt.Sprintf("%04d", i)
		}
		cur, err := m.loadRecord(ctx, id)
		if errors.Is(err, storage.ErrNotExist) {
			return id, false, nil
		}
		if err == nil && cur.Serial == rec.Serial && cur.CA == rec.CA {
			if rec.Retired == nil {
				rec.Retired = cur.Retired
			}
			return id, true, nil
		}
	}
	return "", false, fmt.Errorf("migrating %s: no free certificate name", base)
}

func (m *Manager) readLegacy(ctx context.Context, metaKey string) (legacy, error) {
	l := legacy{key: metaKey}
	data, err := m.store.Get(ctx, metaKey)
	if err != nil {
		return l, err
	}
	l.rec = &Record{}
	if err := json.Unmarshal(data, l.rec); err != nil {
		return l, err
	}
	if len(l.rec.Names) == 0 {
		return l, errors.New("the record has no names")
	}
	dir := path.Dir(metaKey)
	if l.chain, err = m.store.Get(ctx, path.Join(dir, storage.CertFile)); err != nil {
		return l, err
	}
	if l.key2, err = m.store.Get(ctx, path.Join(dir, storage.KeyFile)); err != nil {
		return l, err
	}
	return l, checkPair(l.chain, l.key2, l.rec.Serial)
}

// legacyLeft reports what migration could not move: records of the old
// layout that are damaged, so that they are as loud as damaged current
// ones.
func (m *Manager) legacyLeft(ctx context.Context) []*DamagedError {
	keys, err := m.store.List(ctx, storage.CertificatesPrefix, true)
	if errors.Is(err, storage.ErrNotExist) {
		return nil
	}
	if err != nil {
		// What cannot be listed cannot be known to be empty.
		return []*DamagedError{{Name: storage.CertificatesPrefix, Key: storage.CertificatesPrefix, Err: err}}
	}
	var bad []*DamagedError
	for _, k := range keys {
		if path.Base(k) != storage.MetaFile {
			continue
		}
		_, err := m.readLegacy(ctx, k)
		if err == nil {
			err = errors.New("not migrated")
		}
		bad = append(bad, &DamagedError{Name: path.Base(path.Dir(k)), Key: k, Err: err})
	}
	return bad
}

// certNameMax bounds a certificate name: it names a storage directory and
// the default output directory.
const certNameMax = 255

// ValidateCertName reports whether name can be a certificate name: one
// path segment of letters, digits, '.', '-', '_' and ':' (IPv6 addresses
// name certificates too), not starting with a dot.
func ValidateCertName(name string) error {
	if name == "" || len(name) > certNameMax {
		return fmt.Errorf("certificate name %q: must have 1 to %d characters", name, certNameMax)
	}
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_', c == ':':
		default:
			return fmt.Errorf("certificate name %q: %s is not allowed (letters, digits, '.', '-', '_' and ':')", name, strconv.QuoteRune(c))
		}
	}
	if name[0] == '.' {
		return fmt.Errorf("certificate name %q: must not start with a dot", name)
	}
	return nil
}
