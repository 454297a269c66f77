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
//
// In a cluster several managers, one per node, share one storage. Each
// node keeps every certificate in its cache and deploys it to its own
// outputs (WithNode), but orders only the certificates it owns
// (KeepOptions.Owns), unless one is so close to expiring that its owner
// has evidently failed (KeepOptions.OwnerGrace). A certificate is ordered
// under its storage lock, held from before the order until its record is
// stored; and the record, the switch, is written by compare-and-swap where
// the storage offers it (storage.Versioned), so that a node that lost its
// lock while it ordered never puts an older certificate back over a newer
// one (SupersededError).
package manager

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

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

	// node is the cluster node this manager deploys on (WithNode); ""
	// on one host.
	node string

	// migrateMu guards migrated: the layout of older versions is moved
	// once per Manager, on first use.
	migrateMu sync.Mutex
	migrated  bool
}

// New returns a Manager. logger may be nil.
func New(store storage.Storage, issuerFor IssuerFunc, logger *slog.Logger, opts ...Option) *Manager {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Manager{store: store, issuerFor: issuerFor, logger: logger, now: time.Now}
	for _, o := range opts {
		o(m)
	}
	return m
}

// Option tunes a Manager.
type Option func(*Manager)

// WithNode makes the manager deploy as the cluster node id: whether a
// certificate is deployed, and what became of deploying it, is recorded
// for each node (Record.DeployedOn) rather than once, since every node
// has outputs of its own; and a node does not change the outputs the
// record names for the command line. A certificate another node stored is
// then deployed here by the keeper's next look (serve wakes it when
// storage changes). Without it (id ""), deployments are recorded as on one
// host, which is what "tlsalpn renew" reads.
func WithNode(id string) Option {
	return func(m *Manager) { m.node = id }
}

// certLockName is the storage lock held by whoever writes a certificate's
// record or files: renewals, deployments, the renewal information stored
// in its record, reconfiguration and deletion.
func certLockName(id string) string {
	return "cert-" + id
}

// canonicalNames parses names as identifiers. Names are kept in
// canonical form: the first one names a certificate by default, and Find,
// Issue and the CA compare them byte for byte.
func canonicalNames(names []string) ([]challenge.Identifier, []string, error) {
	if len(names) == 0 {
		return nil, nil, errors.New("no names to obtain a certificate for")
	}
	ids := make([]challenge.Identifier, len(names))
	out := make([]string, len(names))
	for i, n := range names {
		id, err := challenge.ParseIdentifier(n)
		if err != nil {
			return nil, nil, err
		}
		ids[i], out[i] = id, id.Value
	}
	return ids, out, nil
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
	return m.obtain(ctx, spec, replaces, obtainHow{})
}

// obtainHow says how obtain runs.
type obtainHow struct {
	// ifMissing: for a keeper that found the certificate missing
	// (obtainMissing).
	ifMissing bool
	// keepARI stores the CA's renewal window that came with the
	// certificate (acmez fetches it with the chain) in the record. The
	// keeper looks at the certificate again a second after obtaining it,
	// and would otherwise ask the CA for that same window: one request per
	// certificate, a thousand at once when serve starts with a thousand
	// missing. The commands (issue, renew) store none, as before: their
	// next run, hours later, asks the CA, and so sees at once a window the
	// CA has moved meanwhile (after a mass revocation, say).
	keepARI bool
}

// renewKept is Obtain for the keeper: see obtainHow.keepARI.
func (m *Manager) renewKept(ctx context.Context, spec Spec, replaces *x509.Certificate) (*Record, error) {
	return m.obtain(ctx, spec, replaces, obtainHow{keepARI: true})
}

// obtainMissing is Obtain for a keeper that found spec's certificate
// missing (or revoked, or stored for other names): decided, like a
// renewal, before the lock is taken. When, under the lock, a certificate
// for spec is stored after all (another node of a cluster, or another
// process, obtained it meanwhile: before a node registers what it keeps,
// every node may try), nothing is ordered; the stored record is returned,
// deployed to spec's outputs.
func (m *Manager) obtainMissing(ctx context.Context, spec Spec) (*Record, error) {
	return m.obtain(ctx, spec, nil, obtainHow{ifMissing: true, keepARI: true})
}

// intact reports whether the certificate and key rec names can be read
// and match: a damaged one is not kept, but replaced by a new order.
func (m *Manager) intact(ctx context.Context, rec *Record) bool {
	_, err := m.loadVersion(ctx, rec)
	return err == nil
}

func (m *Manager) obtain(ctx context.Context, spec Spec, replaces *x509.Certificate, how obtainHow) (*Record, error) {
	ids, names, err := canonicalNames(spec.Names)
	if err != nil {
		return nil, err
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
	// The record as it is before ordering: the new one replaces exactly
	// this (see save), whatever happens while the CA is asked.
	prev, prevVer, prevErr := m.readRecord(ctx, id)
	if replaces != nil && prevErr == nil && prev.Serial != serialHex(replaces) {
		// A missing or damaged record is replaced by the new order.
		m.logger.Info("not renewing: another process renewed the certificate meanwhile",
			"name", id, "replaced_serial", serialHex(replaces), "serial", prev.Serial)
		if prev.deployedOn(m.node, spec) {
			return prev, nil
		}
		return m.deployLocked(ctx, prev, spec)
	}
	if how.ifMissing && prevErr == nil && prev.Serial != "" && sameNames(prev.Names, names) && prev.CA == spec.CA &&
		prev.Revoked.IsZero() && prev.Retired == nil && m.now().Before(prev.NotAfter) && m.intact(ctx, prev) {
		m.logger.Info("not ordering: another process obtained the certificate meanwhile", "name", id, "serial", prev.Serial)
		if prev.deployedOn(m.node, spec) {
			return prev, nil
		}
		return m.deployLocked(ctx, prev, spec)
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
	if !how.keepARI {
		res.RenewalInfo = nil
	}
	return m.keepObtained(ctx, spec, res, replaces, prev, prevVer, prevErr)
}

// keepObtained stores and deploys what an order obtained for spec, unless a newer
// certificate was stored meanwhile by another process (then that one is
// kept, and deployed here if it is not yet). prev, prevVer and prevErr
// are the record as it was read before ordering.
func (m *Manager) keepObtained(ctx context.Context, spec Spec, res *issuer.Result, replaces *x509.Certificate, prev *Record, prevVer int64, prevErr error) (*Record, error) {
	id := spec.ID()
	spec.Profile = res.Profile // pin what was chosen, so renewals keep it
	now := m.now()
	rec := &Record{Spec: spec, URL: res.URL, Account: res.Account, ObtainedAt: now.UTC(), ver: prevVer}
	fillFromLeaf(rec, res.Leaf)
	if res.RenewalInfo != nil {
		// The CA's window came with the certificate (obtainHow.keepARI).
		rec.ARI = ariState(*res.RenewalInfo, rec.Serial, now)
		keepSelected(rec.ARI, nil, now)
	}
	if replaces != nil {
		rec.Replaced, _ = acme.ARIUniqueIdentifier(replaces)
	}
	var base *Record
	if prevErr == nil {
		// The deployment history belongs to the certificate name, not
		// to one certificate: deployedTo compares serials.
		rec.Deployed, rec.DeployedOn = prev.Deployed, prev.DeployedOn
		base = prev
	}
	if err := m.save(ctx, rec, base, res.ChainPEM, res.KeyPEM); err != nil {
		var se *SupersededError
		if !errors.As(err, &se) {
			return nil, err
		}
		// Dropped, not stored: the order journal may forget it too, or
		// a later Obtain would resume it and store the older certificate.
		if derr := res.Done(ctx); derr != nil {
			m.logger.Warn("order journal entry of a dropped certificate not removed", "name", id, "error", derr)
		}
		m.logger.Warn("certificate obtained but not stored: a newer one was stored meanwhile by another process; keeping that one",
			"name", id, "dropped_serial", se.Serial, "serial", se.Stored.Serial, "error", err)
		if se.Stored.deployedOn(m.node, spec) {
			return se.Stored, nil
		}
		return m.deployLocked(ctx, se.Stored, spec)
	}
	if err := res.Done(ctx); err != nil { // stored: the issuer's order journal may forget it
		m.logger.Warn("certificate stored, but its order journal entry was not removed", "name", id, "error", err)
	}
	// A failed deployment is recorded: the certificate is safely stored,
	// and the keeper or "tlsalpn renew" deploys it again without a new
	// order.
	return m.deployLocked(ctx, rec, spec)
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
