package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/tlsalpn/tlsalpn/config"
	"github.com/tlsalpn/tlsalpn/frontdoor"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/proxy"
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

Admin API (off by default): --admin 127.0.0.1:9443 (admin: in the config)
serves Prometheus metrics on /metrics, /healthz, /readyz, /status (JSON) and
POST /renew?name=NAME. Loopback only, unless --admin-token-file names a file
holding the bearer token every request must then send.

Keeping another ACME client (lego, acme.sh, dehydrated, uacme): --acme-forward
HOST:PORT relays validations for names with no challenge of tlsalpn's own
pending to where lego --tls.port or acme.sh --tlsport answers; --acme-cert-dir
DIR serves the challenge certificates dehydrated writes to its ALPNCERTDIR;
--ualpn-socket PATH speaks ualpn's socket protocol, for uacme's ualpn.sh hook
and "tlsalpn challenge publish". Only a ClientHello offering exactly
acme-tls/1 ever reaches them. Forwarding and a challenge directory keep the
front door relaying every connection (steering off): the other client decides
alone when the CA connects.

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
	nodeID      string
	nodeAddress string
	admin       string
	adminToken  string
	keep        keepClientFlags
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
	fs.StringVar(&f.nodeID, "node-id", "", "cluster mode (etcd storage): this node's `ID`, unique among live nodes (default: the host name)")
	fs.StringVar(&f.nodeAddress, "node-address", "", "cluster mode: the `HOST:PORT` the balancer and the other nodes reach this node at (default: the listen address, with this host's first non-loopback address for an unspecified host)")
	fs.StringVar(&f.admin, "admin", "", "serve the admin API (Prometheus /metrics, /healthz, /readyz, /status, POST /renew) on `ADDR`, such as 127.0.0.1:9443; loopback only unless --admin-token-file (overrides the config's admin)")
	fs.StringVar(&f.adminToken, "admin-token-file", "", "`FILE` holding the bearer token the admin API requires (overrides the config's admin_token_file)")
	fs.BoolVar(&f.noPreflight, "no-preflight", false, "do not check each challenge through the front door before telling the CA it is ready")
	f.keep.register(fs)
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
		logger = newLogger(e, f.logFormat, slog.LevelInfo)
	}
	if e.getenv("GOGC") == "" {
		// The front door's live heap is a megabyte or two while each TLS
		// handshake allocates ~50 KB, so at the runtime's 4 MiB heap
		// floor it collects dozens of times a second; a 200% target
		// halves that for a few MiB more. GOGC, when set, decides.
		debug.SetGCPercent(200)
	}
	loc, err := serveStorage(e, &f, cfg)
	if err != nil {
		return err
	}
	cfg.Storage.Location = loc.where()
	if err := checkNodeFlags(&f, cfg.Storage.Location); err != nil {
		return err
	}
	return runFrontDoor(ctx, e, &f, cfg, loc, logger)
}

// serveStorage resolves serve's storage: the config file's storage
// section, completed or replaced by the flags (see withConfig).
func serveStorage(e *env, f *serveFlags, cfg *config.Config) (storageLoc, error) {
	cs := cfg.Storage
	sf := f.storageFlags.withConfig(configStorage{location: cs.Location, etcdCA: cs.EtcdCA, etcdCert: cs.EtcdCert, etcdKey: cs.EtcdKey,
		etcdUser: cs.EtcdUser, etcdPasswordFile: cs.EtcdPasswordFile, encryptionKeyFile: cs.EncryptionKeyFile})
	return sf.resolve(e)
}

// runFrontDoor builds the front door for cfg, binds its listener, and
// serves until ctx ends; SIGHUP re-reads --config.
func runFrontDoor(ctx context.Context, e *env, f *serveFlags, cfg *config.Config, loc storageLoc, logger *slog.Logger) error {
	st, err := openLoc(ctx, loc, create, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	store := st.store
	hup := make(chan os.Signal, 1)
	reload := make(chan struct{}, 1)
	notify := newServeNotify(e, logger)
	fc := frontdoor.Config{Config: cfg, Storage: store, Logger: logger, Reload: reload, Reloaded: notify.reloaded,
		NodeID: f.nodeID, NodeAddress: f.nodeAddress, Version: version(),
		NewPool: func() *manager.Pool {
			is := newIssuers(store, logger, nil)
			if f.noPreflight {
				is.Preflight = nil
			}
			return is
		}}
	if f.configFile != "" {
		fc.Load = func() (*config.Config, error) {
			next, err := config.Load(f.configFile)
			if err == nil {
				// The flags given at start still hold.
				err = f.keep.apply(next)
			}
			if err == nil {
				err = checkConfigFiles(next)
			}
			if err == nil {
				err = adminFlags(f, next) // the flags override the file, as at start
			}
			return next, err
		}
	}
	adminLn, err := adminListener(ctx, e, cfg, &fc)
	if err != nil {
		return err
	}
	if adminLn != nil {
		defer adminLn.Close()
	}
	d, err := frontdoor.New(fc)
	if err != nil {
		if ce, ok := errors.AsType[*frontdoor.ConfigError](err); ok {
			return usagef("%v", ce.Err)
		}
		return err
	}
	ln, err := proxy.Listen(ctx, cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w%s", cfg.Listen, err, listenHint(err))
	}
	fmt.Fprintf(e.stdout, "tlsalpn serve: listening on %s; %s\n", ln.Addr(), summaryAfterListen(cfg))
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	notify.ready(ln.Addr(), cfg)
	notify.run(ctx, sctx)
	go func() {
		for {
			select {
			case <-hup:
				notify.reloading()
				select {
				case reload <- struct{}{}:
				default:
				}
			case <-sctx.Done():
				return
			}
		}
	}()
	return d.Serve(ctx, ln)
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
			cfg.Storage = config.Storage{Location: f.storage} // the flag replaces the whole section
		}
		if err := adminFlags(f, cfg); err != nil {
			return nil, err
		}
		if err := f.keep.apply(cfg); err != nil {
			return nil, err
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
	etcdStorage := strings.HasPrefix(storageDir, etcdScheme)
	if etcdStorage {
		// Not a path: serveStorage resolves it, after the checks below
		// (which know only directories).
		storageDir = ""
	}
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
		Storage: config.Storage{Location: storageDir},
		ACME:    config.ACME{CA: f.ca, Email: f.email, AgreeTOS: f.agreeTOS, CARoot: f.caRoot, KeyType: f.keyType, Profile: f.profile},
		Routes:  []config.Route{{Names: []string{"*"}, Backend: f.backend, SendProxy: f.sendProxy}},
		Proxy:   config.Proxy{Steer: f.steer},
	}
	if f.eabKID != "" || f.eabHMAC != "" {
		cfg.ACME.EAB = &config.EAB{KID: f.eabKID, HMACKey: f.eabHMAC}
	}
	if err := flagCertificate(f, cfg); err != nil {
		return nil, err
	}
	if len(f.names) > 0 && etcdStorage && f.out == "" {
		return nil, usagef("--storage %s has no directory to deploy to: give --out DIR with -d", f.storage)
	}
	if len(f.names) > 0 && !f.agreeTOS {
		return nil, usagef("-d asks for certificates, which needs the CA's terms of service accepted: read them, then add --agree-tos")
	}
	if err := adminFlags(f, cfg); err != nil {
		return nil, err
	}
	if err := f.keep.apply(cfg); err != nil {
		return nil, err
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, usagef("%s", asFlags(err))
	}
	if etcdStorage {
		cfg.Storage.Location = f.storage
	}
	return cfg, nil
}

// flagCertificate adds to cfg the certificate that -d, --out,
// --deploy-hook and --haproxy-* describe, when -d is given; without -d the
// others have nothing to say where to, which is a usage error.
func flagCertificate(f *serveFlags, cfg *config.Config) error {
	if len(f.names) == 0 {
		if f.hapSocket != "" || f.hapCert != "" || f.out != "" || f.hook != "" {
			return usagef("--out, --deploy-hook and --haproxy-* say where a certificate goes: name it with -d")
		}
		return nil
	}
	out := f.out
	if out != "" {
		abs, err := filepath.Abs(out)
		if err != nil {
			return usagef("--out: %v", err)
		}
		out = abs
	}
	if f.caRoot != "" {
		abs, err := filepath.Abs(f.caRoot)
		if err != nil {
			return usagef("--ca-root: %v", err)
		}
		cfg.ACME.CARoot = abs
	}
	cfg.Certificates = []config.Certificate{{Names: f.names, Out: out, DeployHook: f.hook}}
	if f.hapSocket != "" || f.hapCert != "" {
		if f.hapSocket == "" || f.hapCert == "" {
			return usagef("--haproxy-socket and --haproxy-cert go together: the socket to talk to and the crt path HAProxy loaded")
		}
		cfg.Certificates[0].HAProxy = &config.HAProxy{Socket: f.hapSocket, Cert: f.hapCert}
	}
	return nil
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
	if err := frontdoor.CheckKeepClient(cfg); err != nil {
		return err
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

func listenHint(err error) string {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return " (another server owns this port: move it to a loopback port such as 127.0.0.1:8443 and name that as the backend)"
	case errors.Is(err, syscall.EACCES):
		return " (ports below 1024 need root or CAP_NET_BIND_SERVICE: setcap cap_net_bind_service=+ep $(command -v tlsalpn))"
	}
	return ""
}
