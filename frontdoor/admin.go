package frontdoor

// What the admin API and the metrics (package metrics) see of the daemon:
// its status, whether it is ready, and renewals forced through the API.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/metrics"
	"github.com/tlsalpn/tlsalpn/proxy"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage"
)

// observe makes m see what the daemon does: the CA's validation
// handshakes and the front door's connections. The keeper, the issuers'
// HTTP clients and the requested renewals are wired where they are made.
func (rt *runtime) observe(m *metrics.Metrics) error {
	rt.metrics = m
	m.SetStatus(rt.status)
	return rt.srv.SetObserver(m)
}

// responderOptions are the responder's options for c.
func responderOptions(c Config) []responder.Option {
	if c.Metrics == nil {
		return nil
	}
	return []responder.Option{responder.WithObserver(c.Metrics.Challenge)}
}

// observeHTTP makes the pool's issuers talk to the CA through the
// metrics' counting transport.
func (rt *runtime) observeHTTP(p *manager.Pool) {
	if rt.metrics == nil {
		return
	}
	newClient := p.HTTPClient
	if newClient == nil {
		newClient = issuer.HTTPClient
	}
	p.HTTPClient = func(caRoot string) (*http.Client, error) {
		c, err := newClient(caRoot)
		if err != nil {
			return nil, err
		}
		cc := *c
		cc.Transport = rt.metrics.Transport(c.Transport)
		return &cc, nil
	}
}

// onAttempt is the keeper's KeepOptions.OnAttempt: nil without metrics.
func (rt *runtime) onAttempt() func(manager.Spec, string, *manager.Record, error) {
	if rt.metrics == nil {
		return nil
	}
	return rt.metrics.Attempt
}

// status is what the daemon keeps and how: each certificate as stored,
// when it renews and why, the challenges pending and the routes.
func (rt *runtime) status(ctx context.Context) (*metrics.Status, error) {
	rt.mu.Lock()
	m, specs, cfg, front := rt.keepMgr, rt.specs, rt.cfg, rt.front
	rt.mu.Unlock()
	if m == nil {
		return nil, errors.New("the keeper has not started yet")
	}
	st := &metrics.Status{PendingChallenges: rt.r.PendingNames(), Certificates: []metrics.CertificateStatus{}, Routes: []metrics.RouteStatus{},
		SteeredConnections: rt.steer.gate.Steered()}
	if front != nil {
		st.Listening = front.String()
	}
	for _, spec := range specs {
		cs := metrics.CertificateStatus{Name: spec.ID(), Names: spec.Names}
		s, err := m.Load(ctx, spec.ID())
		switch {
		case errors.Is(err, storage.ErrNotExist):
		case err != nil && ctx.Err() != nil:
			return nil, fmt.Errorf("reading the certificate %s: %w", spec.ID(), err)
		case err != nil:
			cs.NextRenewalReason = fmt.Sprintf("stored certificate unreadable: %v", err)
		case s.Retired == nil && s.CA == spec.CA && sameSet(s.Names, spec.Names):
			rt.fillStored(ctx, m, &cs, s)
		}
		st.Certificates = append(st.Certificates, cs)
	}
	if cfg != nil {
		_, why := steerBackend(cfg)
		steered := rt.steer.gate.Steering()
		for _, r := range ProxyConfig(cfg).Routes {
			rs := metrics.RouteStatus{Route: metrics.RouteLabel(r), Names: r.Names, Backend: r.Backend, Mode: string(r.Mode), Steered: steered}
			if rs.Mode == "" {
				rs.Mode = string(proxy.Passthrough)
			}
			switch {
			case steered:
			case why != "":
				rs.SteerNote = why
			case len(st.PendingChallenges) > 0:
				rs.SteerNote = "a challenge is pending: the front door takes every connection until it is withdrawn"
			default:
				rs.SteerNote = "steering could not be set up on this host (see the log)"
			}
			st.Routes = append(st.Routes, rs)
		}
	}
	return st, nil
}

// fillStored sets what s, the stored certificate for cs, says.
func (rt *runtime) fillStored(ctx context.Context, m *manager.Manager, cs *metrics.CertificateStatus, s *manager.Stored) {
	cs.Stored = true
	cs.Serial, cs.NotBefore, cs.NotAfter, cs.LastRenewal = s.Serial, s.NotBefore, s.NotAfter, s.ObtainedAt
	cs.Revoked = !s.Revoked.IsZero()
	if a := s.ARI; a != nil && !a.Unavailable && a.CertSerial == s.Serial {
		cs.ARIStart, cs.ARIEnd = a.Start, a.End
	}
	// Without an issuer, Due asks the CA nothing: it says what the
	// stored renewal information and the lifetime say.
	d := m.Due(ctx, nil, s)
	cs.NextRenewal, cs.NextRenewalReason = d.At, d.Reason
	ds := s.Deployed
	if rt.deployAs != "" {
		ds = s.DeployedOn[rt.deployAs]
	}
	if ds != nil {
		cs.LastDeployment, cs.DeployError, cs.DeployErrorAt = ds.At, ds.Error, ds.ErrorAt
		if ds.Serial != s.Serial && ds.Error == "" {
			cs.LastDeployment = time.Time{} // an older certificate's deployment
		}
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// ready says what serve still waits for before it can do its work: the
// front door listening, and a certificate stored for every one it keeps.
func (rt *runtime) ready(ctx context.Context) error {
	st, err := rt.status(ctx)
	if err != nil {
		return err
	}
	if st.Listening == "" {
		return errors.New("the front door is not listening yet")
	}
	var missing []string
	for _, c := range st.Certificates {
		if !c.Stored {
			missing = append(missing, c.Name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no certificate yet for %v", missing)
	}
	return nil
}

// renewNow renews the certificate name (a certificate name or one of its
// names) through the path "tlsalpn renew --force" takes to a running
// serve: a renewal request in storage, which the watch hands to
// handleRequest, and whose outcome is read back.
func (rt *runtime) renewNow(ctx context.Context, name string, by string) (*metrics.RenewResult, error) {
	rt.mu.Lock()
	m, specs, sctx := rt.keepMgr, rt.specs, rt.serveCtx
	rt.mu.Unlock()
	var spec *manager.Spec
	for i := range specs {
		if specs[i].ID() == name || slices.Contains(specs[i].Names, name) {
			spec = &specs[i]
			break
		}
	}
	if spec == nil || m == nil || sctx == nil {
		return nil, metrics.ErrUnknownCertificate
	}
	req := &RenewRequest{ID: NewRequestID(), Cert: spec.ID(), Name: spec.ID(), Force: true, Reason: "forced through the admin API",
		Requested: time.Now().UTC(), By: by, To: rt.host}
	if s, err := m.Load(ctx, spec.ID()); err == nil {
		req.Serial = s.Serial
	}
	if d, ok := ctx.Deadline(); ok {
		req.Deadline = d.UTC()
	}
	if err := PutRequest(ctx, rt.store, req); err != nil {
		return nil, err
	}
	key := RequestKey(req.ID)
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		rt.store.Delete(dctx, key)
	}()
	// The storage watch starts it too; startRequest runs a key once.
	rt.startRequest(sctx, key)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the renewal of %s: %w", spec.ID(), context.Cause(ctx))
		case <-t.C:
		}
		cur, err := GetRequest(ctx, rt.store, key)
		switch {
		case errors.Is(err, storage.ErrNotExist):
			return nil, fmt.Errorf("the request to renew %s was dropped without an answer (see the log)", spec.ID())
		case err != nil:
			return nil, fmt.Errorf("waiting for the renewal of %s: %w", spec.ID(), err)
		case cur.Result != nil:
			o := cur.Result
			return &metrics.RenewResult{Name: spec.ID(), Serial: o.Serial, NotAfter: o.NotAfter, ByOther: o.ByOther, Error: o.Error, DeployError: o.DeployError}, nil
		}
	}
}

// admin is the admin API of d.
func (d *Daemon) admin() *metrics.Admin {
	rt := d.rt
	return &metrics.Admin{
		Metrics: d.cfg.Metrics,
		Status:  rt.status,
		Ready: func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return rt.ready(ctx)
		},
		Renew: func(ctx context.Context, name string) (*metrics.RenewResult, error) {
			return rt.renewNow(ctx, name, "the admin API")
		},
		Token:  d.cfg.AdminToken,
		Logger: d.cfg.Logger,
	}
}
