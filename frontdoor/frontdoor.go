// Package frontdoor is the serve daemon: it wires the responder that
// answers the CA (its pending hook holds steering during validations),
// the certificate manager and its keeper, and the proxy in front of the
// backends, and carries out reloads and the drain. The command line only
// builds a Config, binds the listener and reports; another program (or a
// test) runs the same daemon without it.
package frontdoor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/cluster"
	"github.com/tlsalpn/tlsalpn/config"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/metrics"
	"github.com/tlsalpn/tlsalpn/proxy"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/steer"
	"github.com/tlsalpn/tlsalpn/storage"
)

// Config is what a front door runs with.
type Config struct {
	// Config is the configuration at start; Reload replaces it.
	Config *config.Config
	// Storage holds certificates, the serve lease and renewal requests.
	Storage storage.Storage
	Logger  *slog.Logger
	// NewPool returns a new issuer pool with how the caller trusts CAs
	// and preflights challenges (nil Preflight checks nothing); the
	// daemon sets its publisher and account. nil means a bare pool.
	NewPool func() *manager.Pool
	// Reload, when it delivers, asks for Load's configuration to be
	// applied; a configuration Load or the daemon refuses is logged and
	// the current one keeps running. Load nil means there is nothing to
	// re-read.
	Reload <-chan struct{}
	Load   func() (*config.Config, error)
	// Reloaded, when set, is called after each request on Reload has
	// been handled, whether the configuration was applied or refused:
	// either way the daemon runs again (systemd's READY=1 after
	// RELOADING=1).
	Reloaded func()

	// NodeID and NodeAddress name this serve as a cluster node, when Storage keeps ephemeral
	// keys (etcd; see ClusterMode): its id (default the host name; two live nodes cannot share
	// one) and the host:port the balancer and the other nodes reach it at (default: see
	// NodeAddress). Version is registered with the node, for people.
	NodeID      string
	NodeAddress string
	Version     string

	// Metrics, when set, is told what the daemon does (package
	// metrics); nil observes nothing, at no cost.
	Metrics *metrics.Metrics
	// Admin, when set, is the listener the admin API (metrics, health,
	// status, forced renewals) is served on while Serve runs, requiring
	// AdminToken as a bearer token unless it is "". Metrics are made
	// for it when not given.
	Admin      net.Listener
	AdminToken string
}

// ConfigError is a configuration the daemon cannot run with, found when
// it is built: nothing was started.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Daemon is a front door built from a Config, not yet serving.
type Daemon struct {
	cfg Config
	rt  *runtime
}

// New builds the front door for cfg: the storage is read and the
// certificates already stored are served from the first connection.
// Nothing listens yet.
func New(cfg Config) (*Daemon, error) {
	if cfg.Admin != nil && cfg.Metrics == nil {
		cfg.Metrics = metrics.New() // the admin API serves them
	}
	rt, err := newRuntime(cfg)
	if err != nil {
		return nil, err
	}
	return &Daemon{cfg: cfg, rt: rt}, nil
}

// Serve runs the front door on ln until ctx ends, then stops accepting
// and drains open connections for proxy.drain_timeout. Steering, the
// keeper, the storage watch and the serve lease run meanwhile.
func (d *Daemon) Serve(ctx context.Context, ln net.Listener) error {
	rt, cfg, logger := d.rt, d.cfg.Config, d.cfg.Logger
	rt.mu.Lock()
	rt.front, rt.serveCtx = ln.Addr(), ctx
	rt.mu.Unlock()
	if d.cfg.Admin != nil {
		adone := make(chan struct{})
		actx, stopAdmin := context.WithCancel(ctx)
		go func() {
			defer close(adone)
			if err := d.admin().Serve(actx, d.cfg.Admin); err != nil {
				logger.Error("admin API stopped", "error", err)
			}
		}()
		defer func() { stopAdmin(); <-adone }()
	}
	if ClusterMode(rt.store) {
		// Before the first connection is accepted: a node that answers the balancer must
		// hold every challenge already pending.
		if err := rt.joinCluster(ctx, d.cfg, rt.front); err != nil {
			return err
		}
		defer rt.node.Stop()
	}
	// Steering outlives the drain: connections that arrive while the old
	// ones finish still reach the backend.
	rt.applySteering(ctx, cfg, rt.front)
	defer rt.closeSteering()

	// Another ACME client's challenges (a directory, the ualpn socket)
	// are answered from the first connection on.
	if err := rt.serveKeepClient(ctx, cfg); err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- rt.srv.Serve(context.WithoutCancel(ctx), ln) }()
	rt.startKeeping(ctx, cfg)
	// What the command line does to storage (revoke, renew, delete,
	// reconfigure) reaches the keeper in seconds, not at its next look.
	wctx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	if err := rt.watchStorage(wctx); err != nil {
		logger.Warn("storage changes made while serve runs are noticed only at the keeper's next look (up to 6 h)", "error", err)
	}
	rt.announce(ctx, cfg.Listen)
	defer rt.stopAnnouncing()

	for {
		select {
		case err := <-served:
			stopWatching()
			rt.stopKeeping()
			rt.waitRequests()
			return err
		case <-d.cfg.Reload:
			cfg = d.reload(ctx, cfg)
			if d.cfg.Reloaded != nil {
				d.cfg.Reloaded()
			}
		case <-ctx.Done():
			return d.drain(cfg, served)
		}
	}
}

// reload applies the configuration Load returns and returns the one that
// runs after.
func (d *Daemon) reload(ctx context.Context, cur *config.Config) *config.Config {
	logger := d.cfg.Logger
	if d.cfg.Load == nil {
		logger.Warn("SIGHUP: no configuration file to re-read; nothing to do")
		return cur
	}
	// The times are logged because a hosting node's configuration of
	// thousands of routes is reloaded under load: how long a reload takes
	// is a figure its operator (and bench/hosting.sh) reads here.
	start := time.Now()
	next, err := d.cfg.Load()
	loaded := time.Since(start)
	if err == nil {
		err = d.rt.reload(ctx, cur, next)
	}
	if err != nil {
		logger.Error("SIGHUP: new configuration refused; the current one keeps running", "error", err)
		return cur
	}
	logger.Info("SIGHUP: configuration reloaded", "summary", next.Summary(), "took", time.Since(start), "reading", loaded)
	return next
}

// drain stops accepting, waits up to cfg's drain timeout for open
// connections, and stops the keeper and the requests being carried out.
func (d *Daemon) drain(cfg *config.Config, served <-chan error) error {
	rt, logger := d.rt, d.cfg.Logger
	logger.Info("shutting down: no new connections; draining", "open", rt.srv.Active(), "within", time.Duration(cfg.Proxy.DrainTimeout))
	dctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.Proxy.DrainTimeout))
	err := rt.srv.Shutdown(dctx)
	cancel()
	rt.stopKeeping()
	rt.waitRequests()
	<-served
	if err != nil {
		logger.Warn("drain incomplete", "error", err)
	}
	return nil
}

// runtime is what serve runs: the front door, the responder it
// answers the CA with, the certificate cache, and the renewal keeper.
type runtime struct {
	logger  *slog.Logger
	store   storage.Storage
	newPool func() *manager.Pool
	host    string // names serve's lease, and the requests for it
	r       *responder.Responder
	cache   *manager.Cache
	srv     *proxy.Server
	steer   steering
	front   net.Addr // the listener's address, once bound
	// node is this serve as a cluster node (ClusterMode), once joined: its publisher
	// publishes every order's challenges to every node.
	node *cluster.Node

	// metrics is Config.Metrics; serveCtx is Serve's context, for the
	// renewals the admin API starts; cfg the configuration the keeper
	// runs with.
	metrics  *metrics.Metrics
	serveCtx context.Context
	cfg      *config.Config

	// deployAs is the node id the keeper records its deployments
	// under (manager.WithNode): Config.NodeID; "" on one host.
	deployAs string

	mu         sync.Mutex
	keepCancel context.CancelFunc
	keepDone   chan struct{}
	// keepMgr and specs are what the keeper runs with; wake holds each
	// of its certificates' wake-up channel, by certID.
	keepMgr *manager.Manager
	specs   []manager.Spec
	wake    map[string]chan struct{}
	// handling holds the renewal requests being carried out, by key;
	// requests counts them, for the drain.
	handling map[string]bool
	requests sync.WaitGroup
	closing  bool // no more requests are started
	// leaseNow asks for the lease to be rewritten; leaseDone is closed
	// once it was removed at the end.
	leaseNow    chan struct{}
	leaseCancel context.CancelFunc
	leaseDone   chan struct{}
}

func newRuntime(c Config) (*runtime, error) {
	cfg, logger := c.Config, c.Logger
	rt := &runtime{logger: logger, store: c.Storage, newPool: c.NewPool, deployAs: c.NodeID, cache: manager.NewCache(), metrics: c.Metrics,
		wake: map[string]chan struct{}{}, handling: map[string]bool{}}
	// The steering switch holds steering while any challenge is pending:
	// the responder's first-pending / last-withdrawn hook.
	rt.steer.gate = &steer.Switch{}
	rt.r = responder.New(append(responderOptions(c), responder.WithLogger(logger), responder.WithPendingHook(rt.steer.gate.Pending))...)
	kc, err := keepClient(cfg)
	if err != nil {
		return nil, &ConfigError{err}
	}
	rt.r.SetKeepClient(kc)
	if rt.host, err = os.Hostname(); err != nil || rt.host == "" {
		rt.host = "localhost"
	}
	// Certificates already stored are served from the first connection.
	m, specs, err := rt.manager(cfg)
	if err != nil {
		return nil, err
	}
	for _, s := range specs {
		m.LoadIntoCache(context.Background(), s, rt.cache)
	}
	rt.srv, err = proxy.New(ProxyConfig(cfg), rt.r, rt.cache, logger)
	if err != nil {
		return nil, &ConfigError{err}
	}
	if c.Metrics != nil {
		if err := rt.observe(c.Metrics); err != nil {
			return nil, &ConfigError{err}
		}
	}
	return rt, nil
}

// manager builds a manager whose issuers publish challenges on the
// front door's own responder, and the specs of cfg's certificates.
func (rt *runtime) manager(cfg *config.Config) (*manager.Manager, []manager.Spec, error) {
	caURL, err := issuer.ResolveCA(cfg.ACME.CA)
	if err != nil {
		return nil, nil, &ConfigError{fmt.Errorf("acme.ca: %w", err)}
	}
	var specs []manager.Spec
	for i, c := range cfg.Certificates {
		names := make([]string, len(c.Names))
		for j, n := range c.Names {
			id, err := challenge.ParseIdentifier(n)
			if err != nil {
				return nil, nil, &ConfigError{fmt.Errorf("certificates[%d]: %q: %w", i, n, err)}
			}
			names[j] = id.Value
		}
		kt, _ := issuer.ParseKeyType(c.KeyType)
		spec := manager.Spec{
			Names: names, CA: caURL, CARoot: cfg.ACME.CARoot, Email: cfg.ACME.Email,
			KeyType: kt, Profile: c.Profile, PreferredChain: cfg.ACME.PreferredChain,
			Out: c.Out, DeployHook: c.DeployHook, HookTimeout: time.Duration(c.HookTimeout), Listen: cfg.Listen,
		}
		if c.HAProxy != nil {
			spec.HAProxySocket, spec.HAProxyCert = c.HAProxy.Socket, c.HAProxy.Cert
		}
		specs = append(specs, spec)
	}
	return manager.New(rt.store, rt.pool(cfg.ACME).Get, rt.logger, manager.WithNode(rt.deployAs)), specs, nil
}

// pool is an issuer pool whose every challenge is published on the front
// door's own responder (whose hook holds steering), never on a listener of
// its own: the daemon holds the port.
func (rt *runtime) pool(a config.ACME) *manager.Pool {
	p := &manager.Pool{}
	if rt.newPool != nil {
		p = rt.newPool()
	}
	p.Store, p.Logger, p.Publisher, p.AgreeTOS = rt.store, rt.logger, rt.r, a.AgreeTOS
	if rt.node != nil {
		// Every node answers the CA, wherever the balancer sends it; the node's publisher
		// says ready only when each holds the challenge and answers it on its own address.
		p.Publisher = rt.node.Publisher()
	}
	rt.observeHTTP(p)
	if a.EAB != nil {
		p.EAB = &acme.EAB{KeyID: a.EAB.KID, MACKey: a.EAB.HMACKey}
	}
	return p
}

// ProxyConfig is the proxy's part of cfg.
func ProxyConfig(cfg *config.Config) proxy.Config {
	pc := proxy.Config{
		ClientHelloTimeout: time.Duration(cfg.Proxy.ClientHelloTimeout),
		IdleTimeout:        time.Duration(cfg.Proxy.IdleTimeout),
		DialTimeout:        time.Duration(cfg.Proxy.DialTimeout),
		MaxConns:           cfg.Proxy.MaxConnections,
		TrustedProxies:     cfg.Proxy.TrustedProxies,
	}
	pc.MaxHelloWaitsPerSource = cfg.Proxy.MaxHelloWaitsPerSource
	for _, r := range cfg.Routes {
		pc.Routes = append(pc.Routes, proxy.Route{Names: r.Names, Backend: r.Backend, Mode: proxy.Mode(r.Mode), SendProxy: r.SendProxy})
	}
	return pc
}

// startKeeping runs the renewal keeper for cfg's certificates.
func (rt *runtime) startKeeping(ctx context.Context, cfg *config.Config) error {
	m, specs, err := rt.manager(cfg)
	if err != nil {
		return err
	}
	kctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	rt.mu.Lock()
	rt.keepCancel, rt.keepDone = cancel, done
	rt.keepMgr, rt.specs, rt.wake, rt.cfg = m, specs, map[string]chan struct{}{}, cfg
	rt.mu.Unlock()
	rt.reannounce()
	rt.announceKeeps(ctx, specs)
	go func() {
		defer close(done)
		opts := manager.KeepOptions{
			Cache:     rt.cache,
			Wake:      rt.wakeFor,
			OnAttempt: rt.onAttempt(),
			OnRenewed: func(rec *manager.Record, err error) {
				switch {
				case rec != nil && err != nil:
					rt.logger.Warn("certificate obtained, but its deployment failed (retried with backoff)", "names", rec.Names, "serial", rec.Serial, "not_after", rec.NotAfter, "deploy_error", err)
				case rec != nil:
					rt.logger.Info("certificate obtained", "names", rec.Names, "serial", rec.Serial, "not_after", rec.NotAfter)
				}
			},
		}
		rt.ownership(&opts)
		m.Keep(kctx, specs, opts)
	}()
	return nil
}

// stopAnnouncing removes the lease and waits until it is gone.
func (rt *runtime) stopAnnouncing() {
	if rt.leaseDone != nil {
		rt.leaseCancel()
		<-rt.leaseDone
	}
}

func (rt *runtime) stopKeeping() {
	rt.mu.Lock()
	cancel, done := rt.keepCancel, rt.keepDone
	rt.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// reload applies next: the front door's routes and limits at once, then
// the keeper restarts with the new certificate list. The listen address
// and storage cannot change without a restart.
func (rt *runtime) reload(ctx context.Context, cur, next *config.Config) error {
	if next.Listen != cur.Listen {
		return fmt.Errorf("listen changed from %s to %s: that needs a restart", cur.Listen, next.Listen)
	}
	if next.Storage != (config.Storage{}) && next.Storage != cur.Storage {
		return errors.New("storage changed: that needs a restart")
	}
	next.Storage = cur.Storage
	if next.Admin != cur.Admin || next.AdminTokenFile != cur.AdminTokenFile {
		return fmt.Errorf("admin or admin_token_file changed (from %q, %q to %q, %q): that needs a restart", cur.Admin, cur.AdminTokenFile, next.Admin, next.AdminTokenFile)
	}
	if _, _, err := rt.manager(next); err != nil {
		return err
	}
	kc, err := keepClient(next)
	if err != nil {
		return err
	}
	if next.ACMECertDir != cur.ACMECertDir || next.UALPNSocket != cur.UALPNSocket {
		return errors.New("acme_cert_dir or ualpn_socket changed: that needs a restart")
	}
	if err := rt.srv.Reload(ProxyConfig(next)); err != nil {
		return err
	}
	rt.r.SetKeepClient(kc)
	rt.applySteering(ctx, next, rt.front)
	rt.stopKeeping()
	return rt.startKeeping(ctx, next)
}
