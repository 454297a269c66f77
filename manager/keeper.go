package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage"
)

// KeepOptions tune Keep. The zero value is sensible.
type KeepOptions struct {
	// Cache receives every certificate as it is loaded or renewed.
	Cache *Cache
	// OnRenewed, if set, is called after a certificate was obtained,
	// stored and deployed (or deployment failed, then err says so), or
	// found renewed by another process when about to renew it.
	OnRenewed func(rec *Record, err error)
	// OnAttempt, if set, is called after each order the keeper places,
	// with what made it (TriggerMissing, TriggerRevoked, TriggerDue or
	// TriggerEmergency) and Obtain's outcome: a record and no error when
	// obtained and deployed, a record and an error when only the
	// deployment failed, no record when the order failed. It lets a
	// caller count attempts and failures (package metrics) without the
	// keeper knowing who counts.
	OnAttempt func(spec Spec, trigger string, rec *Record, err error)
	// CheckEvery bounds how long the keeper sleeps between looks at a
	// certificate, so that a changed ARI window or a clock jump is noticed.
	CheckEvery time.Duration // default 6 h, the ARI polling interval
	// MinBackoff and MaxBackoff bound the wait after a failed attempt; it
	// doubles from one to the other, unless the CA's Retry-After says more.
	// Failed deployments back off the same way, on their own.
	MinBackoff, MaxBackoff time.Duration // default 1 min and 6 h
	// StorageRetry is how often a keeper whose storage is unreachable
	// (storage.ErrUnavailable: etcd away) looks again; its renewal is
	// paused meanwhile, and resumes at the first look that reads
	// storage, without the backoff of a failed order.
	StorageRetry time.Duration // default 5 s
	// Wake, if set, is called once for each spec as keeping starts. A
	// receive on the channel it returns makes that spec's keeper read the
	// stored certificate again now instead of sleeping on: "tlsalpn serve"
	// sends when storage says the record changed (a revoke, a renewal or a
	// deletion from the command line), so that the change takes effect in
	// seconds, not at the next planned look. A record found as it was at
	// the last look (same serial, same revocation) changes nothing: the
	// keeper sleeps on, so that its own writes (renewal info, a failed
	// deployment) do not cut its backoff short. A nil channel never wakes.
	Wake func(spec Spec) <-chan struct{}

	// Owns, if set, says whether this keeper orders the certificate
	// certID (a Spec.ID): in a cluster, renewals are spread over the live
	// nodes, each ordering only the certificates it owns (package cluster
	// decides, by rendezvous hashing over the live nodes). A keeper that
	// does not own a certificate still serves it (Cache), deploys it to
	// its own outputs when another node stored a new one, and takes over
	// as soon as it owns it. nil owns everything, as on one host. The
	// owner must be chosen among the nodes that keep certID: one that
	// does not keep it never orders it, and the others would wait for
	// OwnerGrace past its emergency.
	//
	// It is asked again at each look, and whenever OwnersChanged
	// delivers: a keeper that came to own a certificate (its owner died)
	// looks at it at once, instead of at its next planned look.
	Owns func(certID string) bool
	// OwnersChanged, if set, delivers when the answers of Owns may have
	// changed (the set of live nodes changed). Keep reads it until ctx
	// ends or it is closed.
	OwnersChanged <-chan struct{}
	// OwnerGrace is how long a keeper that does not own a certificate
	// leaves it to its owner when it needs a new one urgently: when its
	// emergency renewal (a twelfth of its lifetime, or a day, left) is
	// this late, or when it has been missing or revoked this long, any
	// node orders it. The owner should have renewed long before (at its
	// renewal window); if it has not, it is stuck (a partition that keeps
	// it registered, a CA that refuses its account) and waiting longer
	// risks the certificate expiring. The certificate's lock and the
	// check for a renewal made meanwhile keep the nodes that then try
	// from ordering it twice. Default 1 h.
	OwnerGrace time.Duration
}

// What made the keeper place an order (KeepOptions.OnAttempt).
const (
	TriggerMissing   = "missing"   // no certificate stored for the spec (or its names changed)
	TriggerRevoked   = "revoked"   // the stored one was revoked
	TriggerDue       = "due"       // its renewal time came (ARI window or lifetime)
	TriggerEmergency = "emergency" // so little lifetime left that the schedule is ignored
)

// Keep obtains every spec's certificate if it is missing (or its names
// changed), then renews each on schedule until ctx ends: ARI first, else
// the lifetime rule, with jitter; failures back off exponentially and
// honour the CA's Retry-After; an emergency renewal ignores the schedule
// when little lifetime is left. The certificate in service stays in the
// cache whatever fails.
//
// A stored certificate that its record says is not deployed to the spec's
// outputs (its deployment failed, or none was recorded, or the outputs
// changed) is deployed again, with its own backoff, and no new order. Keep
// returns when ctx ends.
func (m *Manager) Keep(ctx context.Context, specs []Spec, opts KeepOptions) {
	if opts.CheckEvery <= 0 {
		opts.CheckEvery = 6 * time.Hour
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Minute
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 6 * time.Hour
	}
	if opts.OwnerGrace <= 0 {
		opts.OwnerGrace = time.Hour
	}
	if opts.StorageRetry <= 0 {
		opts.StorageRetry = 5 * time.Second
	}
	var owners *broadcast
	if opts.OwnersChanged != nil {
		owners = newBroadcast()
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case _, ok := <-opts.OwnersChanged:
					if !ok {
						return
					}
					owners.fire()
				}
			}
		}()
	}
	var wg sync.WaitGroup
	for _, spec := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.keepOne(ctx, spec, opts, owners)
		}()
	}
	wg.Wait()
}

// LoadIntoCache puts the stored certificate for spec into cache, if there
// is one whose names and CA still match spec and that was not retired. It
// reports whether it did.
func (m *Manager) LoadIntoCache(ctx context.Context, spec Spec, cache *Cache) (*Stored, bool) {
	s, ok, _ := m.loadIntoCache(ctx, spec, cache)
	return s, ok
}

// loadIntoCache is LoadIntoCache, and also returns the error of loading
// the stored certificate, if any.
func (m *Manager) loadIntoCache(ctx context.Context, spec Spec, cache *Cache) (*Stored, bool, error) {
	s, err := m.Load(ctx, spec.ID())
	if err != nil {
		var de *DamagedError
		if errors.As(err, &de) && !errors.Is(err, storage.ErrUnavailable) && ctx.Err() == nil {
			m.logger.Error("stored certificate is damaged; obtaining a new one", "name", spec.ID(), "error", err)
		}
		return nil, false, err
	}
	if !sameNames(s.Names, spec.Names) || s.CA != spec.CA || s.Retired != nil {
		return s, false, nil
	}
	if cache != nil {
		if cert, err := tls.X509KeyPair(s.ChainPEM, s.KeyPEM); err == nil {
			cache.Put(s.Names, &cert)
		} else {
			m.logger.Error("stored certificate unusable", "name", spec.Names[0], "error", err)
			return s, false, nil
		}
	}
	return s, true, nil
}

func (m *Manager) keepOne(ctx context.Context, spec Spec, opts KeepOptions, owners *broadcast) {
	k := &keeping{spec: spec, opts: opts, backoff: opts.MinBackoff, deployBackoff: opts.MinBackoff}
	var wake <-chan struct{}
	if opts.Wake != nil {
		wake = opts.Wake(spec)
	}
	name := spec.Names[0]
	// paused is set while storage is unreachable (etcd away): nothing
	// is known of the certificate then, so nothing is ordered.
	var paused bool
	for {
		// Taken before ownership is asked, so that a change between the
		// two is not missed.
		ownersChanged := owners.wait()
		owned := opts.Owns == nil || opts.Owns(spec.ID())
		s, ok, lerr := m.loadIntoCache(ctx, spec, opts.Cache)
		if errors.Is(lerr, storage.ErrUnavailable) {
			// Not missing, not damaged: unknown. Ordering now would
			// fail on the lock anyway, and backing off as after a
			// failed order would delay the renewal long after storage
			// returns. The certificate in service stays in the cache.
			if !paused {
				m.logger.Warn("storage unreachable: renewal paused; the certificate in service stays; resuming on its own when storage answers",
					"name", name, "retry_every", opts.StorageRetry, "error", lerr)
				paused = true
			}
			if !m.sleep(ctx, spec, opts.StorageRetry+jitter(opts.StorageRetry), nil, recordStamp{}, ownership{changed: ownersChanged, owned: owned, owns: opts.Owns, owners: owners}) {
				return
			}
			continue
		}
		if paused {
			m.logger.Info("storage answers again: renewal resumed", "name", name)
			paused = false
		}
		var seen recordStamp
		if ok {
			seen = stampOf(&s.Record, true)
		}
		if ok && s.Revoked.IsZero() {
			k.needSince = time.Time{}
		} else if k.needSince.IsZero() {
			k.needSince = m.now()
		}
		var wait time.Duration
		var got *Record // what an attempt stored
		if !ok || !s.Revoked.IsZero() {
			wait, got = m.replace(ctx, k, s, ok, owned)
		} else {
			wait, got = m.renewIfDue(ctx, k, s, owned)
		}
		if got != nil {
			// Stored by this keeper: not a change to look at again.
			seen = stampOf(got, sameNames(got.Names, spec.Names))
		}
		if !m.sleep(ctx, spec, wait, wake, seen, ownership{changed: ownersChanged, owned: owned, owns: opts.Owns, owners: owners}) {
			return
		}
	}
}

// keeping is what one certificate's keeper carries from one look to the
// next.
type keeping struct {
	spec                   Spec
	opts                   KeepOptions
	backoff, deployBackoff time.Duration
	// needSince is when this keeper, not the owner, first found the
	// certificate missing or revoked, for OwnerGrace.
	needSince time.Time
}

// replace obtains the certificate of a keeper whose stored one is missing
// or for other names (found is false) or revoked, once it is this node's
// to obtain, and says how long to sleep then.
func (m *Manager) replace(ctx context.Context, k *keeping, s *Stored, found, owned bool) (time.Duration, *Record) {
	name, opts := k.spec.Names[0], k.opts
	if !owned {
		if takeOver := k.needSince.Add(opts.OwnerGrace); m.now().Before(takeOver) {
			wait := min(m.until(takeOver), opts.CheckEvery)
			m.logger.Debug("certificate missing or revoked; left to the node that owns it", "name", name,
				"taken_over_in", wait.Round(time.Second))
			return wait, nil
		}
		m.logger.Warn("obtaining a certificate another node owns: it has been missing or revoked for longer than the grace given to its owner",
			"name", name, "grace", opts.OwnerGrace)
	}
	if !found {
		// Missing, or the names changed: obtain now.
		return m.attempt(ctx, k.spec, nil, TriggerMissing, opts, &k.backoff, &k.deployBackoff)
	}
	// Serving a revoked certificate fails every client that checks; the
	// configuration asks for these names to be served, so a new
	// certificate (new key, no "replaces") is obtained now. tlsalpn
	// renew, which has no such instruction, leaves a revoked certificate
	// alone.
	m.logger.Warn("certificate was revoked; obtaining a new one for the configured names", "name", name, "serial", s.Serial)
	return m.attempt(ctx, k.spec, nil, TriggerRevoked, opts, &k.backoff, &k.deployBackoff)
}

// renewIfDue renews the stored certificate s when it is due (or in an
// emergency) and this node's to renew, deploys it where a deployment is
// pending, and says how long to sleep then.
func (m *Manager) renewIfDue(ctx context.Context, k *keeping, s *Stored, owned bool) (time.Duration, *Record) {
	name, spec, opts := k.spec.Names[0], k.spec, k.opts
	iss, err := m.issuerFor(ctx, s.Spec)
	if err != nil {
		m.logger.Error("cannot renew", "name", name, "error", err)
		return m.deployIfPending(ctx, spec, s, opts, &k.deployBackoff, opts.MaxBackoff), nil
	}
	var d Decision
	if owned {
		d = m.Due(ctx, iss, s)
	} else {
		// The owner asks the CA for renewal information and stores it;
		// this keeper only reads what is stored.
		d = m.Due(ctx, nil, s)
	}
	urgent := emergency(s, m.now())
	if !owned && (d.Due || urgent) {
		// An emergency renewal is the owner's for OwnerGrace, then
		// anyone's.
		if takeOver := emergencyAt(s).Add(opts.OwnerGrace); m.now().Before(takeOver) {
			wait := min(max(m.until(takeOver), time.Second), opts.CheckEvery)
			m.logger.Debug("certificate due; left to the node that owns it", "name", name, "reason", d.Reason,
				"taken_over_in", wait.Round(time.Second))
			return m.deployIfPending(ctx, spec, s, opts, &k.deployBackoff, wait), nil
		}
		m.logger.Warn("renewing a certificate another node owns: its owner has not renewed it in time",
			"name", name, "remaining", s.Remaining(m.now()).Round(time.Minute), "grace", opts.OwnerGrace)
	}
	if d.Due || urgent {
		m.logger.Info("renewing", "name", name, "reason", d.Reason)
		trigger := TriggerDue
		if !d.Due {
			trigger = TriggerEmergency
		}
		return m.attempt(ctx, spec, s.Chain[0], trigger, opts, &k.backoff, &k.deployBackoff)
	}
	wait := min(m.until(d.At), opts.CheckEvery)
	if s.ARI != nil && !s.ARI.RetryAfter.IsZero() {
		wait = min(wait, max(m.until(s.ARI.RetryAfter), time.Minute))
	}
	wait = m.deployIfPending(ctx, spec, s, opts, &k.deployBackoff, max(wait, time.Second)+jitter(wait))
	m.logger.Debug("next look at certificate", "name", name, "in", wait.Round(time.Second), "reason", d.Reason)
	return wait, nil
}

// ownership is what a sleeping keeper watches besides storage: whether
// it owns its certificate (owned, as last asked of owns), and changed,
// which is closed when the set of owners may have changed.
type ownership struct {
	changed <-chan struct{}
	owned   bool
	owns    func(certID string) bool
	owners  *broadcast
}

// broadcast tells every keeper at once that ownership may have changed:
// wait returns a channel that the next fire closes.
type broadcast struct {
	mu sync.Mutex
	ch chan struct{}
}

func newBroadcast() *broadcast { return &broadcast{ch: make(chan struct{})} }

// wait returns the channel the next fire closes; nil (never ready) on a
// nil broadcast.
func (b *broadcast) wait() <-chan struct{} {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

func (b *broadcast) fire() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.ch)
	b.ch = make(chan struct{})
}

// recordStamp is what a keeper compares to tell that the stored
// certificate changed under it: another serial, a revocation, what it
// was issued for (reconfigured), or none. Renewal information and
// deployment outcomes, which the keeper writes itself, are left out.
type recordStamp struct {
	ok      bool // stored, with the spec's names
	serial  string
	revoked bool
	spec    string
}

func stampOf(rec *Record, ok bool) recordStamp {
	if !ok || rec == nil {
		return recordStamp{}
	}
	spec, _ := json.Marshal(rec.Spec)
	return recordStamp{ok: true, serial: rec.Serial, revoked: !rec.Revoked.IsZero(), spec: string(spec)}
}

// sleep waits for d, or less when a receive on wake finds the stored
// certificate changed since seen, or when the keeper came to own its
// certificate or stopped owning it. It reports false when ctx ended.
func (m *Manager) sleep(ctx context.Context, spec Spec, d time.Duration, wake <-chan struct{}, seen recordStamp, own ownership) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-own.changed:
			own.changed = own.owners.wait()
			if now := own.owns == nil || own.owns(spec.ID()); now != own.owned {
				if now {
					m.logger.Info("this node now renews the certificate; looking at it now", "name", spec.Names[0])
				} else {
					m.logger.Info("another node now renews the certificate", "name", spec.Names[0])
				}
				return true
			}
		case <-wake:
			// The record alone: every write of it wakes every node's
			// keeper (in a cluster, each node records its own
			// deployments), so reading the certificate and key too
			// would multiply the reads by three for nothing.
			var now recordStamp
			if rec, err := m.loadRecord(ctx, spec.ID()); err == nil {
				now = stampOf(rec, sameNames(rec.Names, spec.Names))
			}
			if now != seen {
				m.logger.Info("stored certificate changed; looking at it now", "name", spec.Names[0],
					"serial", now.serial, "was", seen.serial, "revoked", now.revoked)
				return true
			}
		}
	}
}

// attempt obtains once and returns how long to wait before looking again:
// shortly after a success, the backoff after a failure, the deployment
// backoff when only the deployment failed; and the record stored, if any.
func (m *Manager) attempt(ctx context.Context, spec Spec, replaces *x509.Certificate, trigger string, opts KeepOptions, backoff, deployBackoff *time.Duration) (time.Duration, *Record) {
	var rec *Record
	var err error
	if replaces == nil {
		rec, err = m.obtainMissing(ctx, spec)
	} else {
		rec, err = m.renewKept(ctx, spec, replaces)
	}
	if opts.OnAttempt != nil {
		opts.OnAttempt(spec, trigger, rec, err)
	}
	if opts.OnRenewed != nil && (rec != nil || err != nil) {
		opts.OnRenewed(rec, err)
	}
	if rec != nil {
		// Stored (even if deployment failed): serve it.
		m.LoadIntoCache(ctx, spec, opts.Cache)
	}
	if err == nil {
		*backoff, *deployBackoff = opts.MinBackoff, opts.MinBackoff
		return time.Second, rec
	}
	if ctx.Err() != nil {
		return 0, rec
	}
	if rec != nil {
		// Stored; only the deployment failed, and the record says so:
		// a later look deploys it again, without a new order.
		*backoff = opts.MinBackoff
		return m.deployFailed(rec, err, opts, deployBackoff), rec
	}
	if errors.Is(err, storage.ErrUnavailable) {
		// Storage went away during the attempt: no reason to back off
		// as from the CA; look again soon, and pause then (keepOne).
		m.logger.Warn("storage unreachable: renewal paused; the certificate in service stays; resuming on its own when storage answers",
			"name", spec.Names[0], "retry_every", opts.StorageRetry, "error", err)
		return opts.StorageRetry + jitter(opts.StorageRetry), nil
	}
	wait := *backoff
	var re *issuer.RetryError
	if errors.As(err, &re) && re.After > wait {
		wait = re.After
	}
	*backoff = min(2**backoff, opts.MaxBackoff)
	m.logger.Error("obtaining certificate failed; will retry", "name", spec.Names[0], "in", wait.Round(time.Second), "error", err)
	return wait + jitter(wait), nil
}

// deployIfPending deploys s, the stored certificate, to spec's outputs if
// its record says they do not have it (its deployment failed, none was
// recorded, or the outputs changed), without ordering anything. It returns
// how long to wait before looking again: wait, or less when the deployment
// failed and is to be retried sooner.
func (m *Manager) deployIfPending(ctx context.Context, spec Spec, s *Stored, opts KeepOptions, backoff *time.Duration, wait time.Duration) time.Duration {
	if !s.Revoked.IsZero() || s.deployedOn(m.node, spec) {
		return wait
	}
	tried, before, err := m.deployPending(ctx, spec)
	switch {
	case err == nil:
		*backoff = opts.MinBackoff
		if tried {
			m.logger.Info("stored certificate deployed", "names", spec.Names, "serial", before.Serial)
		}
		return wait
	case ctx.Err() != nil:
		return 0
	case before == nil:
		// Not even tried: the record could not be locked or read.
		before = &s.Record
	}
	return min(wait, m.deployFailed(before, err, opts, backoff))
}

// deployFailed reports that deploying rec's certificate failed, and
// returns how long to wait before trying again, from backoff, which it
// doubles up to opts.MaxBackoff.
func (m *Manager) deployFailed(rec *Record, err error, opts KeepOptions, backoff *time.Duration) time.Duration {
	wait := *backoff
	*backoff = min(2*wait, opts.MaxBackoff)
	wait += jitter(wait)
	shown := wait.Round(time.Second)
	if wait < time.Second {
		shown = wait.Round(time.Millisecond)
	}
	serial := rec.Serial
	if serial == "" {
		serial = "(unknown)"
	}
	m.logger.Warn(fmt.Sprintf("deploying %s serial %s failed; the server still has the previous certificate; retrying in %s: %v",
		strings.Join(rec.Names, ", "), serial, shown, err), "name", rec.Name(), "serial", rec.Serial)
	return wait
}

// emergency is true when so little lifetime is left (a twelfth, or one
// day) that the CA's window must not be waited for.
func emergency(s *Stored, now time.Time) bool {
	return !now.Before(emergencyAt(s))
}

// emergencyAt is when s's certificate has so little lifetime left that
// it is renewed whatever the schedule: a twelfth of its lifetime, or a
// day, whichever is more.
func emergencyAt(s *Stored) time.Time {
	return s.NotAfter.Add(-max(s.Lifetime()/12, 24*time.Hour))
}

// jitter spreads renewals of many certificates (and many nodes) by up to
// a tenth of the wait, at most ten minutes.
func jitter(d time.Duration) time.Duration {
	j := min(d/10, 10*time.Minute)
	if j <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(j)))
}

// until is how long from now, by the manager's clock, until t. The waits
// of the keeper are measured on the same clock as its decisions: measured
// on another, a decision "due at t" would be slept past or woken early.
func (m *Manager) until(t time.Time) time.Duration { return t.Sub(m.now()) }
