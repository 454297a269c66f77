package manager

// Renewal: when a certificate is due (ARI first), renewing what is due,
// and revoking.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/issuer"
)

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
	var next *ARIState
	switch {
	case err != nil:
		next = &ARIState{CheckedAt: now.UTC(), CertSerial: s.Serial, Unavailable: true}
		if !errors.Is(err, issuer.ErrNoARI) {
			next.ErrorMessage = err.Error()
			m.logger.Warn("renewal info unavailable; using the lifetime rule", "name", s.Name(), "error", err)
		}
	default:
		next = ariState(ri, s.Serial, now)
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

// ariState is the state to store for ri, the CA's renewal information for
// the certificate with serial, received at now; its Selected time is
// still to be chosen (keepSelected).
func ariState(ri acme.RenewalInfo, serial string, now time.Time) *ARIState {
	a := &ARIState{CheckedAt: now.UTC(), CertSerial: serial,
		Start: ri.SuggestedWindow.Start.UTC(), End: ri.SuggestedWindow.End.UTC(), Explanation: ri.ExplanationURL}
	if ri.RetryAfter != nil {
		a.RetryAfter = ri.RetryAfter.UTC()
	}
	return a
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
			if s.Revoked.IsZero() && !s.deployedOn(m.node, s.Spec) {
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
