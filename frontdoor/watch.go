package frontdoor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/metrics"
	"github.com/tlsalpn/tlsalpn/storage"
)

// wakeFor is the keeper's KeepOptions.Wake: one channel per certificate,
// which watchStorage signals when that certificate's record changes.
func (rt *runtime) wakeFor(spec manager.Spec) <-chan struct{} {
	ch := make(chan struct{}, 1)
	rt.mu.Lock()
	rt.wake[spec.ID()] = ch
	rt.mu.Unlock()
	return ch
}

// wakeKeeper tells the keeper of the certificate id, if serve keeps it,
// to look at its record again. A wake already pending is enough.
func (rt *runtime) wakeKeeper(id string) {
	rt.mu.Lock()
	ch := rt.wake[id]
	rt.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

// watchStorage makes serve see what the command line does to its storage
// while it runs: a certificate revoked, renewed, deleted or reconfigured
// wakes that certificate's keeper, and a renewal request from "tlsalpn
// renew" is carried out through the port serve holds. It returns once
// both watches are set up; they end with ctx.
func (rt *runtime) watchStorage(ctx context.Context) error {
	certs, err := rt.store.Watch(ctx, storage.LineagesPrefix)
	if err != nil {
		return fmt.Errorf("watching %s for changes: %w", storage.LineagesPrefix, err)
	}
	reqs, err := rt.store.Watch(ctx, RenewRequestPrefix)
	if err != nil {
		return fmt.Errorf("watching %s for renewal requests: %w", RenewRequestPrefix, err)
	}
	// Requests written before the watch began (while serve restarted)
	// are still to be answered.
	pending, err := rt.store.List(ctx, RenewRequestPrefix, true)
	if err != nil {
		rt.logger.Warn("renewal requests written before serve started not read", "error", err)
	}
	for _, k := range pending {
		rt.startRequest(ctx, k)
	}
	go func() {
		for certs != nil || reqs != nil {
			select {
			case ev, ok := <-certs:
				if !ok {
					certs = nil
					continue
				}
				if id, ok := CertIDOfKey(ev.Key); ok {
					rt.wakeKeeper(id)
				}
			case ev, ok := <-reqs:
				if !ok {
					reqs = nil
					continue
				}
				if !ev.Deleted {
					rt.startRequest(ctx, ev.Key)
				}
			}
		}
	}()
	return nil
}

// startRequest handles the request at key unless it is being handled.
// Writing the outcome into the request changes it again, which the watch
// reports: the request is then found answered and left to its requester.
func (rt *runtime) startRequest(ctx context.Context, key string) {
	rt.mu.Lock()
	if rt.handling[key] || rt.closing {
		rt.mu.Unlock()
		return
	}
	rt.handling[key] = true
	rt.requests.Add(1)
	rt.mu.Unlock()
	go func() {
		defer rt.requests.Done()
		rt.handleRequest(ctx, key)
		rt.mu.Lock()
		delete(rt.handling, key)
		rt.mu.Unlock()
	}()
}

// waitRequests waits for the requests being carried out, and lets no
// more start.
func (rt *runtime) waitRequests() {
	rt.mu.Lock()
	rt.closing = true
	rt.mu.Unlock()
	rt.requests.Wait()
}

// handleRequest carries out the renewal request at key, if serve manages
// its certificate, and writes the outcome into it. Requests too old to
// have a requester waiting are deleted.
func (rt *runtime) handleRequest(ctx context.Context, key string) {
	req, err := GetRequest(ctx, rt.store, key)
	if errors.Is(err, storage.ErrNotExist) {
		return
	}
	now := time.Now()
	if err != nil {
		rt.logger.Warn("dropping a damaged renewal request", "key", key, "error", err)
		rt.store.Delete(ctx, key)
		return
	}
	switch {
	case req.Result != nil:
		if now.Sub(req.Result.Done) > RequestMaxAge {
			rt.store.Delete(ctx, key)
		}
		return
	case now.Sub(req.Requested) > RequestMaxAge || (!req.Deadline.IsZero() && now.After(req.Deadline)):
		rt.logger.Warn("dropping a renewal request nobody waits for any more", "name", req.Name, "requested", req.Requested, "by", req.By)
		rt.store.Delete(ctx, key)
		return
	}
	rt.mu.Lock()
	m, specs := rt.keepMgr, rt.specs
	rt.mu.Unlock()
	var spec *manager.Spec
	for i := range specs {
		if specs[i].ID() == req.Cert {
			spec = &specs[i]
		}
	}
	if m == nil || spec == nil || req.To != rt.host {
		// Another serve on this storage was asked: left to that one.
		return
	}
	rctx := ctx
	if !req.Deadline.IsZero() {
		var cancel context.CancelFunc
		rctx, cancel = context.WithDeadline(ctx, req.Deadline)
		defer cancel()
	}
	rt.logger.Info("renewing at a renewal request from the command line", "name", req.Name, "by", req.By, "force", req.Force, "reason", req.Reason)
	req.Accepted = time.Now().UTC()
	if err := PutRequest(ctx, rt.store, req); err != nil {
		rt.logger.Warn("renewal request not marked as taken; renewing anyway", "name", req.Name, "error", err)
	}
	host, _ := os.Hostname()
	out := &RenewOutcome{Server: fmt.Sprintf("%s pid %d", host, os.Getpid())}
	rt.renewFor(rctx, m, *spec, req, out)
	out.Done = time.Now().UTC()
	req.Result = out
	if err := PutRequest(ctx, rt.store, req); err != nil {
		rt.logger.Error("the outcome of a requested renewal could not be written back", "name", req.Name, "error", err)
		return
	}
	// The requester deletes the request once it read the outcome; one
	// that was killed meanwhile leaves it, to be dropped here.
	select {
	case <-ctx.Done():
	case <-time.After(RequestMaxAge):
		rt.store.Delete(ctx, key)
	}
}

// renewFor renews spec's certificate as req asks, through m, the keeper's
// manager, and fills out.
func (rt *runtime) renewFor(ctx context.Context, m *manager.Manager, spec manager.Spec, req *RenewRequest, out *RenewOutcome) {
	s, err := m.Load(ctx, spec.ID())
	if err != nil {
		out.Error = fmt.Sprintf("reading the stored certificate: %v", err)
		return
	}
	if s.Serial != req.Serial {
		// Renewed (or replaced after a revocation) since the requester
		// looked: that is the renewal it asked for.
		out.Serial, out.NotAfter, out.ByOther = s.Serial, s.NotAfter, true
		return
	}
	replaces := s.Chain[0]
	if !s.Revoked.IsZero() {
		replaces = nil // a revoked certificate is replaced, not renewed
	}
	before := time.Now()
	rec, err := m.Obtain(ctx, spec, replaces)
	if rt.metrics != nil {
		rt.metrics.Attempt(spec, metrics.TriggerRequested, rec, err)
	}
	if rec == nil {
		out.Error = err.Error()
		rt.logger.Error("requested renewal failed", "name", req.Name, "error", err)
		return
	}
	if err != nil {
		out.DeployError = err.Error()
	}
	out.Serial, out.NotAfter = rec.Serial, rec.NotAfter
	out.ByOther = rec.Serial != s.Serial && rec.ObtainedAt.Before(before)
	m.LoadIntoCache(ctx, spec, rt.cache)
	rt.logger.Info("certificate obtained", "names", rec.Names, "serial", rec.Serial, "not_after", rec.NotAfter, "deploy_error", err, "requested_by", req.By)
}

// announce writes serve's lease, so that the command line knows which
// certificates a running serve manages, and rewrites it every
// LeaseRefresh until ctx ends, when it is removed.
func (rt *runtime) announce(ctx context.Context, listen string) {
	host := rt.host
	lease := Lease{Host: host, PID: os.Getpid(), Listen: listen, Started: time.Now().UTC()}
	write := func(ctx context.Context) {
		rt.mu.Lock()
		lease.Certificates = lease.Certificates[:0]
		for _, s := range rt.specs {
			lease.Certificates = append(lease.Certificates, LeaseCert{ID: s.ID(), Names: s.Names})
		}
		rt.mu.Unlock()
		lease.Refreshed = time.Now().UTC()
		data, _ := json.MarshalIndent(&lease, "", "  ")
		if err := rt.store.Put(ctx, LeaseKey(host), data, 0o644); err != nil && ctx.Err() == nil {
			rt.logger.Warn("serve lease not written: renewals requested from the command line cannot be handed to this serve", "error", err)
		}
	}
	ctx, rt.leaseCancel = context.WithCancel(ctx)
	write(ctx)
	rt.leaseDone = make(chan struct{})
	rt.leaseNow = make(chan struct{}, 1)
	go func() {
		defer close(rt.leaseDone)
		t := time.NewTicker(LeaseRefresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				// Removed only if still this process's: a serve
				// started since on this host has written its own.
				if data, err := rt.store.Get(dctx, LeaseKey(host)); err == nil {
					var cur Lease
					if json.Unmarshal(data, &cur) == nil && cur.PID == lease.PID {
						rt.store.Delete(dctx, LeaseKey(host))
					}
				}
				return
			case <-t.C:
			case <-rt.leaseNow:
			}
			write(ctx)
		}
	}()
}

// reannounce rewrites the lease now (the certificates changed).
func (rt *runtime) reannounce() {
	if rt.leaseNow == nil {
		return
	}
	select {
	case rt.leaseNow <- struct{}{}:
	default:
	}
}
