package manager

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tlsalpn/tlsalpn/deploy"
	"github.com/tlsalpn/tlsalpn/storage"
)

// A certificate name (Spec.CertName, or the first name) is a lineage: one
// certificate, renewed for ever, feeding at most one output directory.
// Issue is how the command line asks for one, and it follows the rules
// certbot's --cert-name and --expand users know:
//
//   - the same names (in any order) from the same CA again: nothing is
//     ordered; settings that differ (output, hook, key type, profile…) are
//     updated, and the certificate deployed to new outputs;
//   - other names or another CA for the output directory a certificate
//     feeds: the new one replaces it (same certificate name) or retires
//     it (another certificate name): one output, one lineage;
//   - other names or another CA under a certificate name that feeds
//     another output directory: refused (an IdentityClashError), since
//     either answer would silently stop something being renewed.

// IssueAction says what Issue did.
type IssueAction int

const (
	// Ordered: a certificate was obtained, stored and deployed.
	Ordered IssueAction = iota
	// Unchanged: the certificate name already had a valid certificate
	// for these names from this CA, and nothing differed.
	Unchanged
	// Reconfigured: as Unchanged, but settings were updated (Changed
	// says which) without an order.
	Reconfigured
)

// IssueOptions tune Issue.
type IssueOptions struct {
	// Force orders even when a valid certificate exists.
	Force bool
	// Defaults fills the settings a new (or replaced) certificate's spec
	// leaves empty; a stored one keeps its own.
	Defaults Spec
	// BeforeOrder, if set, is called just before a certificate is
	// ordered; its error stops the order (nothing is asked of the CA).
	BeforeOrder func(ctx context.Context, spec Spec) error
	// DefaultOut returns the output directory for a certificate name
	// when the spec has none and the certificate is new or replaced; nil
	// means none.
	DefaultOut func(certName string) string
}

// IssueResult is what Issue did.
type IssueResult struct {
	Action IssueAction
	Record *Record
	// Previous is the certificate name's record before, when it was
	// replaced by one for other names or another CA.
	Previous *Record
	// Changed names the settings updated without an order.
	Changed []string
	// Retired are the other certificate names that fed the same output
	// directory and were retired.
	Retired []*Record
}

// IdentityClashError refuses to reuse a certificate name for other names
// or another CA when it feeds another output directory.
type IdentityClashError struct {
	CertName string
	Existing *Record
	Out      string // the output directory asked for
}

func (e *IdentityClashError) Error() string {
	return fmt.Sprintf("certificate %s already covers %s from %s and writes to %s, not %s",
		e.CertName, strings.Join(e.Existing.Names, ", "), e.Existing.CA, orNone(e.Existing.Out), orNone(e.Out))
}

func orNone(s string) string {
	if s == "" {
		return "(no directory)"
	}
	return s
}

// Issue obtains, or keeps, the certificate spec asks for, under the rules
// above. Empty settings in spec (Out, DeployHook, KeyType, Profile,
// PreferredChain, Email, Listen, HAProxy) keep the existing certificate's.
//
// When the certificate is stored but its deployment fails, Issue returns
// the result with the error, as Obtain does.
func (m *Manager) Issue(ctx context.Context, spec Spec, opts IssueOptions) (*IssueResult, error) {
	p, err := m.planIssue(ctx, spec, opts)
	if err != nil {
		return nil, err
	}
	spec, cur, same, all, id := p.spec, p.cur, p.same, p.all, p.spec.ID()
	if !p.order {
		return m.reconfigureIssued(ctx, cur, spec)
	}
	var replaces *Stored
	if same && cur.Revoked.IsZero() {
		replaces = cur
	}
	res := &IssueResult{Action: Ordered}
	if cur != nil && !same {
		res.Previous = &cur.Record
	}
	var leaf *x509.Certificate
	if replaces != nil {
		leaf = replaces.Chain[0]
	}
	if opts.BeforeOrder != nil {
		if err := opts.BeforeOrder(ctx, spec); err != nil {
			return nil, err
		}
	}
	rec, err := m.Obtain(ctx, spec, leaf)
	res.Record = rec
	if rec == nil {
		return nil, err
	}
	// Stored: whoever fed the same output directory before stops.
	if spec.Out != "" {
		for _, s := range all {
			if s.ID() != id && s.Retired == nil && s.Out == spec.Out {
				if r, rerr := m.retire(ctx, s.ID(), id, spec.Out); rerr != nil {
					err = errors.Join(err, rerr)
				} else if r != nil {
					res.Retired = append(res.Retired, r)
				}
			}
		}
	}
	return res, err
}

// issuePlan is what Issue will do for a spec, decided from storage alone.
type issuePlan struct {
	spec  Spec    // with its certificate name and settings resolved
	cur   *Stored // the certificate stored under that name, if any
	same  bool    // cur is for the same names from the same CA
	order bool    // a certificate is to be ordered
	all   []*Stored
}

// WouldOrder reports whether Issue would order a certificate for spec, or
// find one valid already, reading storage only: a command can tell before
// it asks anything of the CA whether it will need the validation port.
func (m *Manager) WouldOrder(ctx context.Context, spec Spec, opts IssueOptions) (bool, error) {
	p, err := m.planIssue(ctx, spec, opts)
	if err != nil {
		return false, err
	}
	return p.order, nil
}

func (m *Manager) planIssue(ctx context.Context, spec Spec, opts IssueOptions) (*issuePlan, error) {
	_, names, err := canonicalNames(spec.Names)
	if err != nil {
		return nil, err
	}
	spec.Names = names
	all, bad, err := m.List(ctx)
	if err != nil {
		return nil, err
	}
	if spec.CertName == "" {
		// Same names, same CA, under whatever certificate name: that one.
		for _, s := range all {
			if s.Retired == nil && s.CA == spec.CA && sameNames(s.Names, spec.Names) {
				spec.CertName = s.ID()
				break
			}
		}
		if spec.CertName == spec.Names[0] {
			spec.CertName = ""
		}
	}
	if spec.CertName != "" {
		if err := ValidateCertName(spec.CertName); err != nil {
			return nil, err
		}
	}
	id := spec.ID()
	for _, d := range bad {
		// Versions without a record are a first order that did not
		// finish: ordering under the name again completes it.
		if d.Name == id && !errors.Is(d, errNoRecord) {
			return nil, d
		}
	}
	var cur *Stored
	for _, s := range all {
		if s.ID() == id {
			cur = s
		}
	}
	same := cur != nil && cur.Retired == nil && cur.CA == spec.CA && sameNames(cur.Names, spec.Names)
	if same {
		spec.keepUnset(cur.Spec)
	} else {
		if spec.Out == "" && opts.DefaultOut != nil {
			spec.Out = opts.DefaultOut(id)
		}
		spec.keepUnset(opts.Defaults)
	}
	if cur != nil && cur.Retired == nil && !same && cur.Out != spec.Out {
		return nil, &IdentityClashError{CertName: id, Existing: &cur.Record, Out: spec.Out}
	}
	valid := same && cur.Revoked.IsZero() && m.now().Before(cur.NotAfter)
	return &issuePlan{spec: spec, cur: cur, same: same, order: opts.Force || !valid, all: all}, nil
}

// keepUnset fills the settings s leaves empty from cur.
func (s *Spec) keepUnset(cur Spec) {
	if s.Out == "" {
		s.Out = cur.Out
	}
	if s.DeployHook == "" {
		s.DeployHook = cur.DeployHook
	}
	if s.HookTimeout == 0 {
		s.HookTimeout = cur.HookTimeout
	}
	if s.KeyType == "" {
		s.KeyType = cur.KeyType
	}
	if s.Profile == "" {
		s.Profile = cur.Profile
	}
	if s.PreferredChain == "" {
		s.PreferredChain = cur.PreferredChain
	}
	if s.Email == "" {
		s.Email = cur.Email
	}
	if s.Listen == "" {
		s.Listen = cur.Listen
	}
	if s.ValidationPort == 0 {
		s.ValidationPort = cur.ValidationPort
	}
	if s.CARoot == "" {
		s.CARoot = cur.CARoot
	}
	if s.HAProxySocket == "" && s.HAProxyCert == "" {
		s.HAProxySocket, s.HAProxyCert = cur.HAProxySocket, cur.HAProxyCert
	}
}

// settingsDiff names the settings in which b differs from a.
func settingsDiff(a, b Spec) []string {
	var d []string
	add := func(name string, differ bool) {
		if differ {
			d = append(d, name)
		}
	}
	add("out", a.Out != b.Out)
	add("deploy hook", a.DeployHook != b.DeployHook)
	add("hook timeout", a.HookTimeout != b.HookTimeout)
	add("key type", a.KeyType != b.KeyType)
	add("profile", a.Profile != b.Profile)
	add("preferred chain", a.PreferredChain != b.PreferredChain)
	add("email", a.Email != b.Email)
	add("listen", a.Listen != b.Listen)
	add("validation port", a.ValidationPort != b.ValidationPort)
	add("CA root", a.CARoot != b.CARoot)
	add("HAProxy", a.HAProxySocket != b.HAProxySocket || a.HAProxyCert != b.HAProxyCert)
	return d
}

// reconfigureIssued stores spec's settings in cur's record, without an
// order, and deploys the certificate where it is not yet.
func (m *Manager) reconfigureIssued(ctx context.Context, cur *Stored, spec Spec) (*IssueResult, error) {
	res := &IssueResult{Action: Unchanged, Record: &cur.Record}
	rec, changed, err := m.Reconfigure(ctx, cur.ID(), func(s *Spec) { *s = spec })
	if rec != nil {
		res.Record = rec
	}
	if len(changed) > 0 {
		res.Action, res.Changed = Reconfigured, changed
	}
	return res, err
}

// Reconfigure changes the settings of the certificate named id, as edit
// does to its spec, without ordering anything. Names, CA and certificate
// name cannot change this way (issue again for that). When the outputs
// changed, or the certificate is not deployed to them yet, it is deployed.
// It returns the record after, and the names of the settings changed.
func (m *Manager) Reconfigure(ctx context.Context, id string, edit func(*Spec)) (*Record, []string, error) {
	if err := m.migrate(ctx); err != nil {
		return nil, nil, err
	}
	unlock, err := m.store.Lock(ctx, certLockName(id))
	if err != nil {
		return nil, nil, fmt.Errorf("locking %s to change its settings: %w", id, err)
	}
	defer unlock()
	cur, err := m.loadRecord(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	next := cur.Spec
	edit(&next)
	next.Names, next.CA, next.CertName = cur.Names, cur.CA, cur.CertName
	if next.Out != "" && next.Out != cur.Out {
		if err := deploy.CheckWritable(next.Out); err != nil {
			return nil, nil, fmt.Errorf("changing the output of %s: %w", id, err)
		}
	}
	changed := settingsDiff(cur.Spec, next)
	rec := *cur
	if len(changed) > 0 {
		// Outputs change only through a deployment that succeeded
		// (deployLocked): until then the record keeps deploying where
		// it did, and says the new outputs failed.
		outs := rec.Spec
		rec.Spec = next
		rec.setOutputs(outs)
		if err := m.saveRecord(ctx, &rec); err != nil {
			return nil, nil, err
		}
		m.logger.Info("certificate settings changed", "name", id, "changed", strings.Join(changed, ", "))
	}
	if rec.Retired != nil || !rec.Revoked.IsZero() || rec.deployedOn(m.node, next) {
		return &rec, changed, nil
	}
	out, err := m.deployLocked(ctx, &rec, next)
	return out, changed, err
}

// retire marks the certificate named id as no longer renewed, because by
// took over its output directory out. It returns the record after, or nil
// when it was gone or retired meanwhile.
func (m *Manager) retire(ctx context.Context, id, by, out string) (*Record, error) {
	unlock, err := m.store.Lock(ctx, certLockName(id))
	if err != nil {
		return nil, fmt.Errorf("locking %s to retire it: %w", id, err)
	}
	defer unlock()
	rec, err := m.loadRecord(ctx, id)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if rec.Retired != nil || rec.Out != out {
		return nil, nil
	}
	rec.Retired = &Retirement{At: m.now().UTC(), By: by, Out: out}
	if err := m.saveRecord(ctx, rec); err != nil {
		return nil, fmt.Errorf("retiring %s: %w", id, err)
	}
	m.logger.Info("certificate retired: another one took over its output directory", "name", id, "by", by, "out", out)
	return rec, nil
}

// DeleteResult is what Delete removed.
type DeleteResult struct {
	Record *Record
	// RemovedFiles lists the deployed files removed, with removeFiles.
	RemovedFiles []string
}

// Delete stops managing the certificate named id: its record and stored
// versions are removed, so nothing renews it. Its deployed files stay
// where servers read them unless removeFiles is set. A damaged
// certificate can be deleted too: that is how it is cleared.
func (m *Manager) Delete(ctx context.Context, id string, removeFiles bool) (*DeleteResult, error) {
	if err := m.migrate(ctx); err != nil {
		return nil, err
	}
	unlock, err := m.store.Lock(ctx, certLockName(id))
	if err != nil {
		return nil, fmt.Errorf("locking %s to delete it: %w", id, err)
	}
	defer unlock()
	res := &DeleteResult{}
	rec, err := m.loadRecord(ctx, id)
	var de *DamagedError
	switch {
	case err == nil:
		res.Record = rec
	case errors.As(err, &de), errors.Is(err, storage.ErrNotExist):
		// Damaged, or versions without a record: deleted all the same.
	default:
		return nil, err
	}
	keys, err := m.store.List(ctx, storage.LineageDir(id), true)
	if err != nil {
		return nil, fmt.Errorf("deleting %s: %w", id, err)
	}
	// The record goes first: without it nothing renews or deploys the
	// versions, whatever happens to them after.
	for _, k := range append([]string{storage.LineageMetaKey(id)}, keys...) {
		if err := m.store.Delete(ctx, k); err != nil {
			return nil, fmt.Errorf("deleting %s (%s): %w", id, k, err)
		}
	}
	if removeFiles && rec != nil && rec.Out != "" && rec.Retired == nil {
		if res.RemovedFiles, err = deploy.Remove(rec.Out); err != nil {
			return res, fmt.Errorf("deleting %s: %w", id, err)
		}
	}
	return res, nil
}

// RenewsAround is when the stored certificate is expected to be renewed,
// without asking the CA: the selected moment in the CA's last window, or
// the lifetime rule. Zero for a revoked or retired certificate.
func (s *Stored) RenewsAround() time.Time {
	if !s.Revoked.IsZero() || s.Retired != nil {
		return time.Time{}
	}
	if a := s.ARI; a != nil && !a.Unavailable && a.CertSerial == s.Serial && !a.Selected.IsZero() {
		return a.Selected
	}
	return FallbackRenewAt(s.NotBefore, s.NotAfter)
}
