package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/config"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/proxy"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/steer"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

const serveUsage = `
Usage: tlsalpn serve --config FILE
       tlsalpn serve --listen :443 --backend 127.0.0.1:8443 -d NAME… --email ADDR --agree-tos [--out DIR --deploy-hook CMD]
       tlsalpn serve --check-config FILE

Runs the front door on :443 in front of the server you already have. Every
ClientHello is read without being consumed: a TLS-ALPN-01 validation from
the CA (ALPN exactly acme-tls/1, for a name with a challenge pending now) is
answered here; every other connection goes to its backend by SNI, byte for
byte (passthrough: nginx or HAProxy keep terminating TLS), or is terminated
here with the managed certificate (mode http or tcp in the config file).

Certificates named in the config are obtained at start if missing and renewed
in the background through this same listener: ARI first, else when a third of
the lifetime remains, with jitter, backoff and the CA's Retry-After honoured.
After each renewal the files are written atomically where the backend reads
them, then the deploy hook runs (e.g. "systemctl reload nginx") or HAProxy is
updated live through its runtime API. A failed renewal changes nothing.
Storage is watched: a certificate revoked or renewed from the command line
while serve runs is replaced or picked up within seconds, and "tlsalpn renew
--force" of a certificate serve keeps is handed to serve.

Steering (Linux, root; on unless proxy.steer: off or --steer off): with one
passthrough route for every name to a backend on this host and no PROXY
protocol, the front door steps out of the way while no challenge is pending.
The kernel (a BPF sk_lookup program) hands each new connection straight to
the backend's own listening socket: nothing is copied, the backend sees the
client's real address, and if tlsalpn stops, the program goes with it. Just
before a challenge is published, new connections come to the front door again
until the last one is withdrawn. Where steering cannot be had, every
connection is relayed, and the log says why.

Signals: SIGHUP re-reads the config file (a bad one is refused and the old one
keeps running; established connections are never dropped); SIGTERM or SIGINT
stop accepting and drain open connections for proxy.drain_timeout.

Simplest use, no config file: nginx moved to 127.0.0.1:8443, tlsalpn on :443:
  tlsalpn serve --listen :443 --backend 127.0.0.1:8443 -d example.com -d www.example.com \
      --email ops@example.com --agree-tos --out /etc/nginx/tls/example.com --deploy-hook 'nginx -s reload'

Exit codes: 0 stopped cleanly, 1 failed, 2 bad flags or configuration.
`

type serveFlags struct {
	caFlags
	configFile  string
	checkConfig string
	listen      string
	backend     string
	names       listFlag
	out         string
	hook        string
	sendProxy   int
	keyType     string
	profile     string
	noPreflight bool
	steer       string
	hapSocket   string
	hapCert     string
}

func runServe(ctx context.Context, e *env, args []string) error {
	var f serveFlags
	fs := newFlagSet(e, "serve", serveUsage)
	f.caFlags.register(fs, true)
	fs.StringVar(&f.configFile, "config", "", "YAML configuration `FILE` (see config/example-nginx.yaml)")
	fs.StringVar(&f.checkConfig, "check-config", "", "validate `FILE`, print what it sets up, and exit")
	fs.StringVar(&f.listen, "listen", ":443", "`ADDR` to accept TLS connections on")
	fs.StringVar(&f.backend, "backend", "", "without --config: `HOST:PORT` every connection is passed to, untouched")
	fs.Var(&f.names, "d", "without --config: a `NAME` to obtain and renew a certificate for; repeat for more")
	fs.StringVar(&f.out, "out", "", "without --config: `DIR` the certificate files are written to")
	fs.StringVar(&f.hook, "deploy-hook", "", "without --config: shell `COMMAND` run after each renewal")
	fs.StringVar(&f.hapSocket, "haproxy-socket", "", "without --config: HAProxy's runtime API `SOCKET` (unix path or host:port); each renewal goes live there with set/commit ssl cert, no reload")
	fs.StringVar(&f.hapCert, "haproxy-cert", "", "without --config: the crt `PATH` HAProxy loaded, as \"show ssl cert\" lists it (with --haproxy-socket)")
	fs.IntVar(&f.sendProxy, "send-proxy", 0, "without --config: send a PROXY protocol header of this `VERSION` (1 or 2) to the backend")
	fs.StringVar(&f.keyType, "key-type", "ec256", "without --config: certificate key `TYPE`")
	fs.StringVar(&f.profile, "profile", "", "without --config: ACME `PROFILE`")
	fs.StringVar(&f.steer, "steer", "auto", "without --config: steering `MODE`: auto hands new connections straight to the backend's listening socket while no challenge is pending (Linux, root, backend on this host), off relays every one")
	fs.BoolVar(&f.noPreflight, "no-preflight", false, "do not check each challenge through the front door before telling the CA it is ready")
	if err := fs.parse(args, 0); err != nil {
		return err
	}
	if f.checkConfig != "" {
		cfg, err := config.Load(f.checkConfig)
		if err != nil {
			return usagef("%v", err)
		}
		if err := checkConfigFiles(cfg); err != nil {
			return usagef("%s: %v", f.checkConfig, err)
		}
		fmt.Fprintf(e.stdout, "%s: OK: %s\n", f.checkConfig, cfg.Summary())
		return nil
	}
	if err := servePlatform(e.goOS()); err != nil {
		return err
	}
	cfg, err := serveConfig(e, &f)
	if err != nil {
		return err
	}
	if err := checkConfigFiles(cfg); err != nil {
		return usagef("%v", err)
	}
	logger := f.logger(e)
	if !f.verbose && e.getenv("TLSALPN_DEBUG") == "" {
		// A daemon reports what it does: info by default.
		logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: adviseErrors}))
	}
	if e.getenv("GOGC") == "" {
		// The front door's live heap is a megabyte or two while each TLS
		// handshake allocates ~50 KB, so at the runtime's 4 MiB heap
		// floor it collects dozens of times a second; a 200% target
		// halves that for a few MiB more. GOGC, when set, decides.
		debug.SetGCPercent(200)
	}
	if cfg.Storage, err = resolveStorage(e, cfg.Storage); err != nil {
		return err
	}
	rt, err := newServeRuntime(cfg, logger, f.noPreflight)
	if err != nil {
		return err
	}
	ln, err := proxy.Listen(ctx, cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w%s", cfg.Listen, err, listenHint(err))
	}
	fmt.Fprintf(e.stdout, "tlsalpn serve: listening on %s; %s\n", ln.Addr(), summaryAfterListen(cfg))
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	rt.front = ln.Addr()
	// Steering outlives the drain: connections that arrive while the old
	// ones finish still reach the backend.
	rt.applySteering(ctx, cfg, rt.front)
	defer rt.closeSteering()

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
		case <-hup:
			if f.configFile == "" {
				logger.Warn("SIGHUP: no --config file to re-read; nothing to do")
				continue
			}
			next, err := config.Load(f.configFile)
			if err == nil {
				err = checkConfigFiles(next)
			}
			if err == nil {
				err = rt.reload(ctx, cfg, next)
			}
			if err != nil {
				logger.Error("SIGHUP: new configuration refused; the current one keeps running", "error", err)
				continue
			}
			cfg = next
			logger.Info("SIGHUP: configuration reloaded", "summary", cfg.Summary())
		case <-ctx.Done():
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
	}
}

// serveConfig reads --config, or builds the same configuration from flags.
func serveConfig(e *env, f *serveFlags) (*config.Config, error) {
	if f.configFile != "" {
		if f.backend != "" || len(f.names) > 0 {
			return nil, usagef("--backend and -d are for use without --config: put routes and certificates in %s", f.configFile)
		}
		cfg, err := config.Load(f.configFile)
		if err != nil {
			return nil, usagef("%v", err)
		}
		if f.storage != "" {
			cfg.Storage = f.storage
		}
		return cfg, nil
	}
	if err := validateServeFlags(e, f); err != nil {
		return nil, err
	}
	if f.steer != config.SteerAuto && f.steer != config.SteerOff {
		return nil, usagef("--steer %q: want auto (steer where it fits) or off (relay every connection)", f.steer)
	}
	if f.backend == "" {
		return nil, usagef("give --config FILE, or --backend HOST:PORT for the server that now sits behind tlsalpn (see tlsalpn serve --help)")
	}
	storageDir := f.storage
	if storageDir != "" {
		// A flag is relative to where the command runs, as with --out.
		abs, err := filepath.Abs(storageDir)
		if err != nil {
			return nil, usagef("--storage: %v", err)
		}
		storageDir = abs
	}
	cfg := &config.Config{
		Listen:  f.listen,
		Storage: storageDir,
		ACME:    config.ACME{CA: f.ca, Email: f.email, AgreeTOS: f.agreeTOS, CARoot: f.caRoot, KeyType: f.keyType, Profile: f.profile},
		Routes:  []config.Route{{Names: []string{"*"}, Backend: f.backend, SendProxy: f.sendProxy}},
		Proxy:   config.Proxy{Steer: f.steer},
	}
	if f.eabKID != "" || f.eabHMAC != "" {
		cfg.ACME.EAB = &config.EAB{KID: f.eabKID, HMACKey: f.eabHMAC}
	}
	if len(f.names) > 0 {
		out := f.out
		if out != "" {
			abs, err := filepath.Abs(out)
			if err != nil {
				return nil, usagef("--out: %v", err)
			}
			out = abs
		}
		if f.caRoot != "" {
			abs, err := filepath.Abs(f.caRoot)
			if err != nil {
				return nil, usagef("--ca-root: %v", err)
			}
			cfg.ACME.CARoot = abs
		}
		cfg.Certificates = []config.Certificate{{Names: f.names, Out: out, DeployHook: f.hook}}
		if f.hapSocket != "" || f.hapCert != "" {
			if f.hapSocket == "" || f.hapCert == "" {
				return nil, usagef("--haproxy-socket and --haproxy-cert go together: the socket to talk to and the crt path HAProxy loaded")
			}
			cfg.Certificates[0].HAProxy = &config.HAProxy{Socket: f.hapSocket, Cert: f.hapCert}
		}
	} else if f.hapSocket != "" || f.hapCert != "" || f.out != "" || f.hook != "" {
		return nil, usagef("--out, --deploy-hook and --haproxy-* say where a certificate goes: name it with -d")
	}
	if len(f.names) > 0 && !f.agreeTOS {
		return nil, usagef("-d asks for certificates, which needs the CA's terms of service accepted: read them, then add --agree-tos")
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, usagef("%s", asFlags(err))
	}
	return cfg, nil
}

// summaryAfterListen is cfg's summary without its first part, the listen
// address, which the banner already names as bound.
func summaryAfterListen(cfg *config.Config) string {
	s := cfg.Summary()
	if rest, ok := strings.CutPrefix(s, "listening on "+cfg.Listen); ok {
		return strings.TrimLeft(rest, "; ,")
	}
	return s
}

// checkConfigFiles checks what validation of the text cannot: that the
// names parse as identifiers and that files named exist.
func checkConfigFiles(cfg *config.Config) error {
	if cfg.ACME.CARoot != "" {
		if _, err := os.Stat(cfg.ACME.CARoot); err != nil {
			return fmt.Errorf("acme.ca_root: %w", err)
		}
	}
	if _, err := issuer.ResolveCA(cfg.ACME.CA); err != nil {
		return fmt.Errorf("acme.ca: %w", err)
	}
	for i, c := range cfg.Certificates {
		ids, err := parseNames(c.Names)
		if err == nil {
			err = checkNameCount(ids, false)
		}
		if err != nil {
			return fmt.Errorf("certificates[%d]: %w", i, err)
		}
		if _, err := issuer.ParseKeyType(c.KeyType); err != nil {
			return fmt.Errorf("certificates[%d]: %w", i, err)
		}
	}
	return nil
}

// serveRuntime is what serve runs: the front door, the responder it
// answers the CA with, the certificate cache, and the renewal keeper.
type serveRuntime struct {
	logger *slog.Logger
	store  *fs.FS
	host   string // names serve's lease, and the requests for it
	r      *responder.Responder
	cache  *manager.Cache
	srv    *proxy.Server
	steer  steering
	front  net.Addr // the listener's address, once bound

	noPreflight bool

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

func newServeRuntime(cfg *config.Config, logger *slog.Logger, noPreflight bool) (*serveRuntime, error) {
	store, err := openStorageDir(cfg.Storage, create)
	if err != nil {
		return nil, err
	}
	rt := &serveRuntime{logger: logger, store: store, cache: manager.NewCache(), noPreflight: noPreflight,
		wake: map[string]chan struct{}{}, handling: map[string]bool{}}
	rt.steer.gate = &steer.Switch{}
	rt.r = responder.New(responder.WithLogger(logger), responder.WithPendingHook(rt.steer.gate.Pending))
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
	rt.srv, err = proxy.New(proxyConfig(cfg), rt.r, rt.cache, logger)
	if err != nil {
		return nil, usagef("%v", err)
	}
	return rt, nil
}

// manager builds a manager whose issuers publish challenges on the
// front door's own responder, and the specs of cfg's certificates.
func (rt *serveRuntime) manager(cfg *config.Config) (*manager.Manager, []manager.Spec, error) {
	caURL, err := issuer.ResolveCA(cfg.ACME.CA)
	if err != nil {
		return nil, nil, usagef("acme.ca: %v", err)
	}
	is := newIssuers(rt.store, rt.logger, rt.r)
	is.publisher = rt.r
	is.noPreflight = rt.noPreflight
	is.agreeTOS = cfg.ACME.AgreeTOS
	if cfg.ACME.EAB != nil {
		is.eab = &acme.EAB{KeyID: cfg.ACME.EAB.KID, MACKey: cfg.ACME.EAB.HMACKey}
	}
	var specs []manager.Spec
	for _, c := range cfg.Certificates {
		ids, err := parseNames(c.Names)
		if err != nil {
			return nil, nil, err
		}
		kt, _ := issuer.ParseKeyType(c.KeyType)
		spec := manager.Spec{
			Names: identifierValues(ids), CA: caURL, CARoot: cfg.ACME.CARoot, Email: cfg.ACME.Email,
			KeyType: kt, Profile: c.Profile, PreferredChain: cfg.ACME.PreferredChain,
			Out: c.Out, DeployHook: c.DeployHook, HookTimeout: time.Duration(c.HookTimeout), Listen: cfg.Listen,
		}
		if c.HAProxy != nil {
			spec.HAProxySocket, spec.HAProxyCert = c.HAProxy.Socket, c.HAProxy.Cert
		}
		specs = append(specs, spec)
	}
	return manager.New(rt.store, is.get, rt.logger), specs, nil
}

func proxyConfig(cfg *config.Config) proxy.Config {
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
func (rt *serveRuntime) startKeeping(ctx context.Context, cfg *config.Config) error {
	m, specs, err := rt.manager(cfg)
	if err != nil {
		return err
	}
	kctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	rt.mu.Lock()
	rt.keepCancel, rt.keepDone = cancel, done
	rt.keepMgr, rt.specs, rt.wake = m, specs, map[string]chan struct{}{}
	rt.mu.Unlock()
	rt.reannounce()
	go func() {
		defer close(done)
		m.Keep(kctx, specs, manager.KeepOptions{
			Cache: rt.cache,
			Wake:  rt.wakeFor,
			OnRenewed: func(rec *manager.Record, err error) {
				switch {
				case rec != nil && err != nil:
					rt.logger.Warn("certificate obtained, but its deployment failed (retried with backoff)", "names", rec.Names, "serial", rec.Serial, "not_after", rec.NotAfter, "deploy_error", err)
				case rec != nil:
					rt.logger.Info("certificate obtained", "names", rec.Names, "serial", rec.Serial, "not_after", rec.NotAfter)
				}
			},
		})
	}()
	return nil
}

// stopAnnouncing removes the lease and waits until it is gone.
func (rt *serveRuntime) stopAnnouncing() {
	if rt.leaseDone != nil {
		rt.leaseCancel()
		<-rt.leaseDone
	}
}

func (rt *serveRuntime) stopKeeping() {
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
func (rt *serveRuntime) reload(ctx context.Context, cur, next *config.Config) error {
	if next.Listen != cur.Listen {
		return fmt.Errorf("listen changed from %s to %s: that needs a restart", cur.Listen, next.Listen)
	}
	if next.Storage != cur.Storage && next.Storage != "" {
		return errors.New("storage changed: that needs a restart")
	}
	next.Storage = cur.Storage
	if _, _, err := rt.manager(next); err != nil {
		return err
	}
	if err := rt.srv.Reload(proxyConfig(next)); err != nil {
		return err
	}
	rt.applySteering(ctx, next, rt.front)
	rt.stopKeeping()
	return rt.startKeeping(ctx, next)
}

func listenHint(err error) string {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return " (another server owns this port: move it to a loopback port such as 127.0.0.1:8443 and name that as the backend)"
	case errors.Is(err, syscall.EACCES):
		return " (ports below 1024 need root or CAP_NET_BIND_SERVICE: setcap cap_net_bind_service=+ep $(command -v tlsalpn))"
	}
	return ""
}
