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
}

// New returns a Manager. logger may be nil.
func New(store storage.Storage, issuerFor IssuerFunc, logger *slog.Logger) *Manager {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{store: store, issuerFor: issuerFor, logger: logger, now: time.Now}
}

func certPrefix(ca, name string) string {
	return path.Join(storage.CertificatesPrefix, issuer.CAKey(ca), name)
}

// certLockName is the storage lock held by whoever writes a certificate's
// files: renewals, and the renewal information stored in its record.
func certLockName(ca, name string) string {
	return "cert-" + issuer.CAKey(ca) + "-" + name
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
	if spec.Out != "" {
		if err := deploy.CheckWritable(spec.Out); err != nil {
			return nil, fmt.Errorf("not ordering a certificate for %s: %w", spec.Names[0], err)
		}
	}
	unlock, err := m.store.Lock(ctx, certLockName(spec.CA, spec.Names[0]))
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", spec.Names[0], err)
	}
	defer unlock()
	if replaces != nil {
		// A missing or damaged record is replaced by the new order.
		if cur, err := m.loadRecord(ctx, spec.CA, spec.Names[0]); err == nil && cur.Serial != serialHex(replaces) {
			m.logger.Info("not renewing: another process renewed the certificate meanwhile",
				"name", spec.Names[0], "replaced_serial", serialHex(replaces), "serial", cur.Serial)
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
	if err := m.save(ctx, rec, res.ChainPEM, res.KeyPEM); err != nil {
		return nil, err
	}
	if err := res.Done(ctx); err != nil { // stored: the issuer's order journal may forget it
		m.logger.Warn("certificate stored, but its order journal entry was not removed", "name", spec.Names[0], "error", err)
	}
	// A failed deployment is recorded: the certificate is safely stored,
	// and the keeper or "tlsalpn renew" deploys it again without a new
	// order.
	return m.deployLocked(ctx, rec, spec)
}

// save stores key, chain and record. The record goes last: a record is the
// promise that the chain and key beside it are complete and match.
func (m *Manager) save(ctx context.Context, rec *Record, chainPEM, keyPEM []byte) error {
	prefix := certPrefix(rec.CA, rec.Name())
	if err := m.store.Put(ctx, path.Join(prefix, "key.pem"), keyPEM, 0o600); err != nil {
		return fmt.Errorf("storing key for %s: %w", rec.Name(), err)
	}
	if err := m.store.Put(ctx, path.Join(prefix, "cert.pem"), chainPEM, 0o644); err != nil {
		return fmt.Errorf("storing certificate for %s: %w", rec.Name(), err)
	}
	return m.saveRecord(ctx, rec)
}

func (m *Manager) saveRecord(ctx context.Context, rec *Record) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := m.store.Put(ctx, path.Join(certPrefix(rec.CA, rec.Name()), "meta.json"), data, 0o644); err != nil {
		return fmt.Errorf("storing metadata for %s: %w", rec.Name(), err)
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

// Load reads one stored certificate.
func (m *Manager) Load(ctx context.Context, ca, name string) (*Stored, error) {
	prefix := certPrefix(ca, name)
	rec, err := m.loadRecord(ctx, ca, name)
	if err != nil {
		return nil, err
	}
	s := &Stored{Record: *rec}
	if s.ChainPEM, err = m.store.Get(ctx, path.Join(prefix, "cert.pem")); err != nil {
		return nil, fmt.Errorf("loading %s: %w", name, err)
	}
	if s.KeyPEM, err = m.store.Get(ctx, path.Join(prefix, "key.pem")); err != nil {
		return nil, fmt.Errorf("loading %s: %w", name, err)
	}
	if s.Chain, err = issuer.ParseChainPEM(s.ChainPEM); err != nil {
		return nil, fmt.Errorf("loading %s: %w", name, err)
	}
	return s, nil
}

// loadRecord reads one certificate's record, without its chain and key.
func (m *Manager) loadRecord(ctx context.Context, ca, name string) (*Record, error) {
	meta, err := m.store.Get(ctx, path.Join(certPrefix(ca, name), "meta.json"))
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", name, err)
	}
	rec := &Record{}
	if err := json.Unmarshal(meta, rec); err != nil {
		return nil, fmt.Errorf("loading %s: metadata is damaged: %w", name, err)
	}
	return rec, nil
}

// List returns every stored record, sorted by name then CA. Damaged entries
// are reported through the logger and skipped, so one bad file cannot hide
// the others.
func (m *Manager) List(ctx context.Context) ([]*Stored, error) {
	keys, err := m.store.List(ctx, storage.CertificatesPrefix, true)
	if err != nil && !errors.Is(err, storage.ErrNotExist) {
		return nil, fmt.Errorf("listing certificates: %w", err)
	}
	var out []*Stored
	for _, k := range keys {
		if path.Base(k) != "meta.json" {
			continue
		}
		dir := path.Dir(k)
		data, err := m.store.Get(ctx, k)
		if err != nil {
			m.logger.Warn("skipping unreadable certificate record", "key", k, "error", err)
			continue
		}
		var rec Record
		if err := json.Unmarshal(data, &rec); err != nil {
			m.logger.Warn("skipping damaged certificate record", "key", k, "error", err)
			continue
		}
		s, err := m.Load(ctx, rec.CA, rec.Name())
		if err != nil || certPrefix(rec.CA, rec.Name()) != dir {
			m.logger.Warn("skipping incomplete certificate", "key", dir, "error", err)
			continue
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name() != out[j].Name() {
			return out[i].Name() < out[j].Name()
		}
		return out[i].CA < out[j].CA
	})
	return out, nil
}

// Find returns the stored certificates whose names include name.
func (m *Manager) Find(ctx context.Context, name string) ([]*Stored, error) {
	all, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	if id, err := challenge.ParseIdentifier(name); err == nil {
		name = id.Value
	} else {
		name = strings.ToLower(strings.TrimSuffix(name, "."))
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
	unlock, err := m.store.Lock(ctx, certLockName(rec.CA, rec.Name()))
	if err != nil {
		return fmt.Errorf("locking %s to deploy it: %w", rec.Name(), err)
	}
	defer unlock()
	cur, err := m.loadRecord(ctx, rec.CA, rec.Name())
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
	unlock, err := m.store.Lock(ctx, certLockName(spec.CA, spec.Names[0]))
	if err != nil {
		return false, nil, fmt.Errorf("locking %s to deploy it: %w", spec.Names[0], err)
	}
	defer unlock()
	cur, err := m.loadRecord(ctx, spec.CA, spec.Names[0])
	if err != nil {
		return false, nil, err
	}
	if !cur.Revoked.IsZero() || cur.deployedTo(spec) {
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
		m.logger.Warn("deployment outcome not recorded", "name", cur.Name(), "serial", cur.Serial,
			"deploy_error", derr, "error", err)
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
	rec, err := m.loadRecord(ctx, cur.CA, cur.Name())
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
	s, err := m.Load(ctx, rec.CA, rec.Name())
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
}

// Due decides whether s should be renewed now. It asks the CA for renewal
// information when the stored window is missing, belongs to an older
// certificate, or the CA's Retry-After has passed; the answer is stored,
// unless the stored certificate was renewed meanwhile.
func (m *Manager) Due(ctx context.Context, iss Issuer, s *Stored) Decision {
	now := m.now()
	if !s.Revoked.IsZero() {
		return Decision{Reason: "revoked; issue a new certificate with tlsalpn issue"}
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
	unlock, err := m.store.Lock(ctx, certLockName(s.CA, s.Name()))
	if err != nil {
		return nil, fmt.Errorf("locking %s to store its renewal info: %w", s.Name(), err)
	}
	defer unlock()
	rec, err := m.loadRecord(ctx, s.CA, s.Name())
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
	Name     string
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
func (m *Manager) Renew(ctx context.Context, force bool) ([]RenewResult, error) {
	all, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	var results []RenewResult
	for _, s := range all {
		r := RenewResult{Name: s.Name()}
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
	unlock, err := m.store.Lock(ctx, certLockName(s.CA, s.Name()))
	if err != nil {
		return fmt.Errorf("%s (serial %s) was revoked but not marked so in storage: locking it: %w", s.Name(), s.Serial, err)
	}
	defer unlock()
	rec, err := m.loadRecord(ctx, s.CA, s.Name())
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
