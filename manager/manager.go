// Package manager decides what to obtain and renew and when, keeps what was
// obtained in storage, and deploys it.
//
// Renewal timing follows the CA first: when it offers ACME Renewal
// Information (RFC 9773), a uniformly random moment inside its suggested
// window, chosen once per window; otherwise when a third of the lifetime
// remains (half for certificates under ten days). A renewal that fails
// leaves the current certificate and its deployment untouched.
//
// Each certificate's record says what was last deployed to its outputs. A
// deployment that failed (files not written, a hook that failed, HAProxy
// refusing) is tried again with the stored certificate by the keeper's next
// looks and by "tlsalpn renew", without a new order, so the server does not
// keep the previous certificate until it expires.
package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/deploy"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage"
)

// Issuer is what the manager needs of an ACME issuer.
type Issuer interface {
	Obtain(ctx context.Context, req issuer.Request) (*issuer.Result, error)
	RenewalInfo(ctx context.Context, leaf *x509.Certificate) (acme.RenewalInfo, error)
	Revoke(ctx context.Context, leaf *x509.Certificate, reason int) error
}

// IssuerFunc returns the issuer for a certificate's spec: its CA, account
// and validation listener.
type IssuerFunc func(ctx context.Context, spec Spec) (Issuer, error)

// Manager manages certificates in one storage.
type Manager struct {
	store     storage.Storage
	issuerFor IssuerFunc
	logger    *slog.Logger
	now       func() time.Time

	// migrateMu guards migrated: the layout of older versions is moved
	// once per Manager, on first use.
	migrateMu sync.Mutex
	migrated  bool
}

// New returns a Manager. logger may be nil.
func New(store storage.Storage, issuerFor IssuerFunc, logger *slog.Logger) *Manager {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{store: store, issuerFor: issuerFor, logger: logger, now: time.Now}
}

// certLockName is the storage lock held by whoever writes a certificate's
// record or files: renewals, deployments, the renewal information stored
// in its record, reconfiguration and deletion.
func certLockName(id string) string {
	return "cert-" + id
}

// Obtain orders a certificate for spec, stores it and deploys it. replaces,
// when not nil, is the certificate being renewed (sent as ARI "replaces").
// Nothing is stored or deployed unless the whole order succeeded, and the
// output directory is checked before the CA is asked for anything.
//
// A renewal is decided before the certificate's lock is taken, so another
// process (a cron "tlsalpn renew" beside "tlsalpn serve") may have renewed
// it meanwhile. Then nothing is ordered: Obtain returns the stored, newer
// record, deployed to spec's outputs unless the other process's deployment
// there succeeded.
//
// When the certificate is stored but its deployment fails, Obtain returns
// the record with the error. The failure is recorded: the keeper's next
// looks, and the next "tlsalpn renew", deploy it again without a new order.
func (m *Manager) Obtain(ctx context.Context, spec Spec, replaces *x509.Certificate) (*Record, error) {
	if len(spec.Names) == 0 {
		return nil, errors.New("no names to obtain a certificate for")
	}
	// Names are kept in canonical form: the first one names the storage
	// directory, and Find and the CA compare them byte for byte.
	ids := make([]challenge.Identifier, len(spec.Names))
	names := make([]string, len(spec.Names))
	for i, n := range spec.Names {
		id, err := challenge.ParseIdentifier(n)
		if err != nil {
			return nil, err
		}
		ids[i], names[i] = id, id.Value
	}
	spec.Names = names
	if spec.CertName != "" {
		if err := ValidateCertName(spec.CertName); err != nil {
			return nil, err
		}
	}
	if err := m.migrate(ctx); err != nil {
		return nil, err
	}
	id := spec.ID()
	if spec.Out != "" {
		if err := deploy.CheckWritable(spec.Out); err != nil {
			return nil, fmt.Errorf("not ordering a certificate for %s: %w", id, err)
		}
	}
	unlock, err := m.store.Lock(ctx, certLockName(id))
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", id, err)
	}
	defer unlock()
	if replaces != nil {
		// A missing or damaged record is replaced by the new order.
		if cur, err := m.loadRecord(ctx, id); err == nil && cur.Serial != serialHex(replaces) {
			m.logger.Info("not renewing: another process renewed the certificate meanwhile",
				"name", id, "replaced_serial", serialHex(replaces), "serial", cur.Serial)
			if cur.deployedTo(spec) {
				return cur, nil
			}
			return m.deployLocked(ctx, cur, spec)
		}
	}

	iss, err := m.issuerFor(ctx, spec)
	if err != nil {
		return nil, err
	}
	res, err := iss.Obtain(ctx, issuer.Request{
		Lineage:        id,
		Identifiers:    ids,
		KeyType:        spec.KeyType,
		Profile:        spec.Profile,
		PreferredChain: spec.PreferredChain,
		Replaces:       replaces,
	})
	if err != nil {
		return nil, err
	}
	spec.Profile = res.Profile // pin what was chosen, so renewals keep it
	rec := &Record{Spec: spec, URL: res.URL, Account: res.Account, ObtainedAt: m.now().UTC()}
	fillFromLeaf(rec, res.Leaf)
	if replaces != nil {
		rec.Replaced, _ = acme.ARIUniqueIdentifier(replaces)
	}
	if prev, err := m.loadRecord(ctx, id); err == nil {
		// The deployment history belongs to the certificate name, not
		// to one certificate: deployedTo compares serials.
		rec.Deployed = prev.Deployed
	}
	if err := m.save(ctx, rec, res.ChainPEM, res.KeyPEM); err != nil {
		return nil, err
	}
	if err := res.Done(ctx); err != nil { // stored: the issuer's order journal may forget it
		m.logger.Warn("certificate stored, but its order journal entry was not removed", "name", id, "error", err)
	}
	// A failed deployment is recorded: the certificate is safely stored,
	// and the keeper or "tlsalpn renew" deploys it again without a new
	// order.
	return m.deployLocked(ctx, rec, spec)
}

// keepVersions is how many certificate versions a record keeps: the
// current one and the one before it, so that a bad renewal can still be
// looked at or put back by hand.
const keepVersions = 2

// save stores a new version of rec's certificate: key and chain go into a
// version directory of their own, and only then is the record, the
// switch, pointed at it. Whatever fails before the switch leaves the
// previous record, and the pair it names, as they were. The caller holds
// the certificate's lock.
func (m *Manager) save(ctx context.Context, rec *Record, chainPEM, keyPEM []byte) error {
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
	if err := m.saveRecord(ctx, rec); err != nil {
		return err
	}
	m.pruneVersions(ctx, rec)
	return nil
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

func (m *Manager) saveRecord(ctx context.Context, rec *Record) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := m.store.Put(ctx, storage.LineageMetaKey(rec.Name()), data, 0o644); err != nil {
		return fmt.Errorf("storing the record of %s: %w", rec.Name(), err)
	}
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
// unreadable one a *DamagedError.
func (m *Manager) loadRecord(ctx context.Context, id string) (*Record, error) {
	key := storage.LineageMetaKey(id)
	meta, err := m.store.Get(ctx, key)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, fmt.Errorf("no certificate named %s: %w", id, err)
	}
	if err != nil {
		return nil, damaged(id, key, err)
	}
	rec := &Record{}
	if err := json.Unmarshal(meta, rec); err != nil {
		return nil, damaged(id, key, err)
	}
	if rec.Name() != id {
		return nil, damaged(id, key, fmt.Errorf("the record is for %q", rec.Name()))
	}
	return rec, nil
}

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

func damaged(id, key string, err error) error {
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
			// before its switch. Nothing was ever deployed from it.
			m.logger.Debug("certificate versions without a record", "name", id)
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

// Find returns the stored certificates whose names include name.
//
// Find returns the stored certificates whose names include name; damaged
// ones are not among them.
func (m *Manager) Find(ctx context.Context, name string) ([]*Stored, error) {
	all, _, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	if id, err := challenge.ParseIdentifier(name); err == nil {
		name = id.Value
	} else if n := challenge.NormalizeServerName(name); n != "" {
		name = n
	}
	var out []*Stored
	for _, s := range all {
		for _, n := range s.Names {
			if n == name {
				out = append(out, s)
				break
			}
		}
	}
	return out, nil
}

// Deploy deploys the stored certificate for rec's CA and name to rec's
// outputs, whether or not they have it already, and records the outcome in
// the stored record, under the certificate's lock. See deployLocked.
func (m *Manager) Deploy(ctx context.Context, rec *Record) error {
	if !rec.hasOutputs() {
		return nil
	}
	unlock, err := m.store.Lock(ctx, certLockName(rec.Name()))
	if err != nil {
		return fmt.Errorf("locking %s to deploy it: %w", rec.Name(), err)
	}
	defer unlock()
	cur, err := m.loadRecord(ctx, rec.Name())
	if err != nil {
		return err
	}
	_, err = m.deployLocked(ctx, cur, rec.Spec)
	return err
}

// deployPending deploys the stored certificate to spec's outputs unless
// its record, read again under the certificate's lock, says they have it
// already (another process may have deployed it meanwhile) or that it was
// revoked. It reports whether it tried, and returns the record as it was
// before and the deployment's error.
func (m *Manager) deployPending(ctx context.Context, spec Spec) (tried bool, before *Record, err error) {
	unlock, err := m.store.Lock(ctx, certLockName(spec.ID()))
	if err != nil {
		return false, nil, fmt.Errorf("locking %s to deploy it: %w", spec.ID(), err)
	}
	defer unlock()
	cur, err := m.loadRecord(ctx, spec.ID())
	if err != nil {
		return false, nil, err
	}
	if !cur.Revoked.IsZero() || cur.Retired != nil || cur.deployedTo(spec) {
		return false, cur, nil
	}
	_, err = m.deployLocked(ctx, cur, spec)
	return true, cur, err
}

// deployLocked deploys the stored certificate, whose record cur is, to
// spec's outputs, and records the outcome in the stored record: on success
// the serial and the outputs, which become the record's own (renewals
// deploy there from then on); on failure the error. The certificate itself
// is never touched. The caller holds the certificate's lock. It returns the
// record as stored after, or cur if the outcome could not be recorded (a
// warning says so: a success is then repeated, a failure retried, later).
func (m *Manager) deployLocked(ctx context.Context, cur *Record, spec Spec) (*Record, error) {
	if !spec.hasOutputs() {
		return cur, nil
	}
	target := *cur
	target.setOutputs(spec)
	derr := m.deployFiles(ctx, &target)
	rec, err := m.recordDeploy(ctx, cur, spec, derr)
	if err != nil {
		attrs := []any{"name", cur.Name(), "serial", cur.Serial, "error", err}
		if derr != nil { // a nil error would log as deploy_error=<nil>
			attrs = append(attrs, "deploy_error", derr)
		}
		m.logger.Warn("deployment outcome not recorded", attrs...)
		return cur, derr
	}
	return rec, derr
}

// maxDeployError bounds the error stored in a record: enough to tell what
// failed, not a hook's whole output.
const maxDeployError = 512

// recordDeploy stores derr, the outcome of deploying cur's certificate to
// spec's outputs, in the stored record, read again: it is changed only if
// it still holds the certificate that was deployed. The caller holds the
// certificate's lock.
func (m *Manager) recordDeploy(ctx context.Context, cur *Record, spec Spec, derr error) (*Record, error) {
	rec, err := m.loadRecord(ctx, cur.Name())
	if err != nil {
		return nil, fmt.Errorf("re-reading %s to record its deployment: %w", cur.Name(), err)
	}
	if rec.Serial != cur.Serial {
		m.logger.Debug("deployment not recorded: the certificate was replaced meanwhile",
			"name", cur.Name(), "serial", cur.Serial, "stored_serial", rec.Serial)
		return rec, nil
	}
	now := m.now().UTC()
	var d DeployState
	if rec.Deployed != nil {
		d = *rec.Deployed
	}
	if derr != nil {
		d.Error, d.ErrorAt = shorten(derr.Error(), maxDeployError), now
	} else {
		d = DeployState{Serial: rec.Serial, At: now, Out: spec.Out, DeployHook: spec.DeployHook,
			HAProxySocket: spec.HAProxySocket, HAProxyCert: spec.HAProxyCert}
		rec.setOutputs(spec)
	}
	rec.Deployed = &d
	if err := m.saveRecord(ctx, rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// shorten cuts s to at most n bytes, on a character boundary, marking the
// cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const more = "…"
	i := max(n-len(more), 0)
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + more
}

// deployFiles writes rec's stored certificate to its output directory,
// updates HAProxy through its runtime API, and runs its hook, as
// configured; with none of them it does nothing.
func (m *Manager) deployFiles(ctx context.Context, rec *Record) error {
	if !rec.hasOutputs() {
		return nil
	}
	s, err := m.loadVersion(ctx, rec)
	if err != nil {
		return err
	}
	files, err := filesFor(s)
	if err != nil {
		return err
	}
	var paths deploy.Paths
	if rec.Out != "" {
		if paths, err = deploy.Write(rec.Out, files); err != nil {
			return fmt.Errorf("deploying %s: %w", rec.Name(), err)
		}
		m.logger.Info("certificate files written", "name", rec.Name(), "dir", paths.Dir)
	}
	if rec.HAProxyCert != "" {
		bundle := append(append([]byte{}, files.FullChain...), files.Key...)
		h := deploy.HAProxy{Socket: rec.HAProxySocket}
		if err := h.Deploy(ctx, rec.HAProxyCert, bundle); err != nil {
			return fmt.Errorf("deploying %s to HAProxy: %w", rec.Name(), err)
		}
		m.logger.Info("certificate live in HAProxy without reload", "name", rec.Name(), "crt", rec.HAProxyCert)
	}
	if rec.DeployHook == "" {
		return nil
	}
	res, err := deploy.Hook{Command: rec.DeployHook, Timeout: rec.HookTimeout}.Run(ctx, deploy.Env(paths, rec.Names))
	if err != nil {
		return fmt.Errorf("deploying %s: %w", rec.Name(), err)
	}
	m.logger.Info("deploy hook ran", "name", rec.Name(), "hook", rec.DeployHook, "output", strings.TrimSpace(string(res.Output)))
	return nil
}

func filesFor(s *Stored) (deploy.Files, error) {
	var leaf, chain []byte
	for i, c := range s.Chain {
		b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		if i == 0 {
			leaf = b
		} else {
			chain = append(chain, b...)
		}
	}
	return deploy.Files{Cert: leaf, Chain: chain, FullChain: append(append([]byte{}, leaf...), chain...), Key: s.KeyPEM}, nil
}

// Decision says whether a certificate is due for renewal and why.
type Decision struct {
	Due    bool
	At     time.Time // when it becomes due (past when Due)
	Reason string
	// Revoked means the certificate was revoked: it is never renewed, and
	// a new one must be issued for its names.
	Revoked bool
}

// Due decides whether s should be renewed now. It asks the CA for renewal
// information when the stored window is missing, belongs to an older
// certificate, or the CA's Retry-After has passed; the answer is stored,
// unless the stored certificate was renewed meanwhile.
func (m *Manager) Due(ctx context.Context, iss Issuer, s *Stored) Decision {
	now := m.now()
	if r := s.Retired; r != nil {
		return Decision{Reason: fmt.Sprintf("retired: %s took over %s", r.By, r.Out)}
	}
	if !s.Revoked.IsZero() {
		return Decision{Reason: "revoked", Revoked: true}
	}
	if iss != nil {
		m.refreshARI(ctx, iss, s, now)
	}
	if a := s.ARI; a != nil && !a.Unavailable && a.CertSerial == s.Serial && !a.Start.IsZero() {
		if !now.Before(a.Selected) {
			return Decision{Due: true, At: a.Selected, Reason: fmt.Sprintf("inside the CA's renewal window (%s – %s)",
				a.Start.Format(time.RFC3339), a.End.Format(time.RFC3339))}
		}
		return Decision{At: a.Selected, Reason: "the CA's renewal window starts " + a.Start.Format(time.RFC3339)}
	}
	at := FallbackRenewAt(s.NotBefore, s.NotAfter)
	if !now.Before(at) {
		return Decision{Due: true, At: at, Reason: fmt.Sprintf("%s of validity left", s.Remaining(now).Round(time.Minute))}
	}
	return Decision{At: at, Reason: "due when a third of its lifetime remains"}
}

// ariRecheck is how long renewal information is trusted when the CA gave
// no Retry-After, and how long to wait after failing to get it: the CA may
// move the window at any time (a mass revocation, say), so it must be
// asked again.
const ariRecheck = 6 * time.Hour

// refreshARI asks the CA for s's renewal information when it is due to be
// asked, and stores the answer in s's record. s.ARI is set to the answer
// even when it is not stored.
func (m *Manager) refreshARI(ctx context.Context, iss Issuer, s *Stored, now time.Time) {
	a := s.ARI
	if a != nil && a.CertSerial == s.Serial {
		next := a.RetryAfter
		if next.IsZero() || a.Unavailable {
			next = a.CheckedAt.Add(ariRecheck)
		}
		if now.Before(next) {
			return
		}
	}
	// The CA is asked without the certificate's lock: the answer may take
	// seconds, and a renewal must not wait for it.
	ri, err := iss.RenewalInfo(ctx, s.Chain[0])
	next := &ARIState{CheckedAt: now.UTC(), CertSerial: s.Serial}
	switch {
	case err != nil:
		next.Unavailable = true
		if !errors.Is(err, issuer.ErrNoARI) {
			next.ErrorMessage = err.Error()
			m.logger.Warn("renewal info unavailable; using the lifetime rule", "name", s.Name(), "error", err)
		}
	default:
		next.Start, next.End = ri.SuggestedWindow.Start.UTC(), ri.SuggestedWindow.End.UTC()
		next.Explanation = ri.ExplanationURL
		if ri.RetryAfter != nil {
			next.RetryAfter = ri.RetryAfter.UTC()
		}
	}
	stored, err := m.storeARI(ctx, s, next, now)
	if err != nil {
		m.logger.Warn("renewal info not stored", "name", s.Name(), "error", err)
	}
	if stored == nil {
		// Not stored, but still the truth about s's certificate.
		keepSelected(next, a, now)
		stored = next
	}
	s.ARI = stored
}

// storeARI writes next, the renewal information just fetched for s's
// certificate, into the stored record under the certificate's lock, and
// returns what it wrote. The record is read again under the lock: another
// process may have renewed the certificate while the CA was being asked,
// and writing s's older record back would lose the new certificate's. The
// answer is then for a certificate no longer stored, so it is dropped (nil,
// nil): the next refresh asks about the new one.
func (m *Manager) storeARI(ctx context.Context, s *Stored, next *ARIState, now time.Time) (*ARIState, error) {
	unlock, err := m.store.Lock(ctx, certLockName(s.Name()))
	if err != nil {
		return nil, fmt.Errorf("locking %s to store its renewal info: %w", s.Name(), err)
	}
	defer unlock()
	rec, err := m.loadRecord(ctx, s.Name())
	if err != nil {
		return nil, fmt.Errorf("re-reading %s to store its renewal info: %w", s.Name(), err)
	}
	if rec.Serial != next.CertSerial {
		m.logger.Debug("renewal info dropped: the certificate was replaced while the CA was asked",
			"name", s.Name(), "serial", next.CertSerial, "stored_serial", rec.Serial)
		return nil, nil
	}
	// Another process may have stored an answer meanwhile; its selected
	// time is the one to keep.
	ari := *next
	keepSelected(&ari, rec.ARI, now)
	rec.ARI = &ari
	if err := m.saveRecord(ctx, rec); err != nil {
		return nil, err
	}
	return &ari, nil
}

// keepSelected sets next.Selected: the time already chosen in prev while the
// window is unchanged for the same certificate, so that polling does not
// reroll the dice (RFC 9773 §4.2), else a new one in the window.
func keepSelected(next, prev *ARIState, now time.Time) {
	if next.Unavailable {
		return
	}
	if prev != nil && !prev.Unavailable && prev.CertSerial == next.CertSerial && prev.Start.Equal(next.Start) && prev.End.Equal(next.End) {
		next.Selected = prev.Selected
		return
	}
	next.Selected = pickInWindow(next.Start, next.End, now)
}

// pickInWindow selects a uniformly random time in [start, end); a window
// already in the past means "now" (the CA wants it replaced, e.g. after a
// revocation).
func pickInWindow(start, end, now time.Time) time.Time {
	if !end.After(now) {
		return now
	}
	if start.Before(now) {
		start = now
	}
	span := end.Sub(start)
	if span <= 0 {
		return start
	}
	return start.Add(time.Duration(rand.Int64N(int64(span))))
}

// RenewResult is the outcome of renewing one certificate.
type RenewResult struct {
	Name     string   // certificate name
	Names    []string // the names it covers
	Decision Decision
	Renewed  *Record // nil when not renewed
	// Redeployed is set when the certificate was not due but was deployed
	// again, because its last deployment failed (LastDeployError says
	// how) or none was recorded. Err says whether this one failed.
	Redeployed      bool
	LastDeployError string
	// ByOther is set with Renewed when another process (serve's keeper,
	// another cron run) had renewed the certificate already: nothing was
	// ordered here.
	ByOther bool
	Err     error
}

// Renew renews every stored certificate that is due, or all of them with
// force. Each certificate keeps its CA, profile, key type, output and hook,
// and names the old certificate as the one it replaces. A certificate not
// due whose last deployment failed, or was never recorded, is deployed
// again instead.
//
// A damaged certificate is a failed result (its Err a *DamagedError): it
// cannot be renewed until it is repaired or deleted, and saying nothing
// would let it expire. A retired certificate is left alone.
func (m *Manager) Renew(ctx context.Context, force bool) ([]RenewResult, error) {
	return m.RenewWith(ctx, RenewOptions{Force: force})
}

// RenewOptions tune RenewWith.
type RenewOptions struct {
	// Force renews every certificate, due or not.
	Force bool
	// Elsewhere, if set, is asked first about each certificate to be
	// renewed now. When it reports handled, another process that owns the
	// certificate (a running "tlsalpn serve", which holds the port the CA
	// validates on) renewed it, and rec and err are its outcome: nothing
	// is ordered here.
	Elsewhere func(ctx context.Context, s *Stored, d Decision) (rec *Record, handled bool, err error)
}

// RenewWith is Renew, tuned by opts.
func (m *Manager) RenewWith(ctx context.Context, opts RenewOptions) ([]RenewResult, error) {
	force := opts.Force
	all, bad, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	var results []RenewResult
	for _, d := range bad {
		results = append(results, RenewResult{Name: d.Name, Err: d})
	}
	for _, s := range all {
		r := RenewResult{Name: s.Name(), Names: s.Names}
		if s.Retired != nil {
			r.Decision = m.Due(ctx, nil, s)
			results = append(results, r)
			continue
		}
		iss, err := m.issuerFor(ctx, s.Spec)
		if err != nil {
			r.Err = err
			results = append(results, r)
			continue
		}
		r.Decision = m.Due(ctx, iss, s)
		if force && s.Revoked.IsZero() {
			r.Decision.Due, r.Decision.Reason = true, "forced"
		}
		if !r.Decision.Due {
			if s.Revoked.IsZero() && !s.deployedTo(s.Spec) {
				var before *Record
				r.Redeployed, before, r.Err = m.deployPending(ctx, s.Spec)
				if before != nil && before.Deployed != nil {
					r.LastDeployError = before.Deployed.Error
				}
				if r.Redeployed && r.Err == nil {
					m.logger.Info("stored certificate deployed", "names", s.Names, "serial", s.Serial,
						"reason", "not due, but its last deployment failed or was never recorded", "previous_error", r.LastDeployError)
				}
			}
			results = append(results, r)
			continue
		}
		if opts.Elsewhere != nil {
			var handled bool
			if r.Renewed, handled, r.Err = opts.Elsewhere(ctx, s, r.Decision); handled {
				results = append(results, r)
				continue
			}
		}
		m.logger.Info("renewing", "name", s.Name(), "reason", r.Decision.Reason)
		// An order placed here is stored after this moment; a record
		// stored before it was another process's renewal.
		before := m.now()
		r.Renewed, r.Err = m.Obtain(ctx, s.Spec, s.Chain[0])
		r.ByOther = r.Renewed != nil && r.Renewed.Serial != s.Serial && r.Renewed.ObtainedAt.Before(before)
		results = append(results, r)
	}
	return results, nil
}

// Revoke revokes the stored certificate and marks it so renew leaves it.
//
// The CA is asked without the certificate's lock; the mark is written under
// it, into the record read again: a renewal may have replaced the
// certificate meanwhile. Then the revoked certificate is already out of
// storage, and the newer record is left as it is (a warning says so); s is
// marked either way.
func (m *Manager) Revoke(ctx context.Context, s *Stored, reason int) error {
	iss, err := m.issuerFor(ctx, s.Spec)
	if err != nil {
		return err
	}
	if err := iss.Revoke(ctx, s.Chain[0], reason); err != nil {
		return err
	}
	s.Revoked = m.now().UTC()
	unlock, err := m.store.Lock(ctx, certLockName(s.Name()))
	if err != nil {
		return fmt.Errorf("%s (serial %s) was revoked but not marked so in storage: locking it: %w", s.Name(), s.Serial, err)
	}
	defer unlock()
	rec, err := m.loadRecord(ctx, s.Name())
	if err != nil {
		return fmt.Errorf("%s (serial %s) was revoked but not marked so in storage: re-reading it: %w", s.Name(), s.Serial, err)
	}
	if rec.Serial != s.Serial {
		m.logger.Warn("certificate revoked after a renewal replaced it; the stored certificate is the newer one and is not revoked",
			"name", s.Name(), "revoked_serial", s.Serial, "stored_serial", rec.Serial)
		return nil
	}
	rec.Revoked = s.Revoked
	if err := m.saveRecord(ctx, rec); err != nil {
		return fmt.Errorf("%s (serial %s) was revoked but not marked so: %w", s.Name(), s.Serial, err)
	}
	return nil
}
