package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/check"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage"
)

// issuers builds and caches one issuer per CA, account and validation
// listener, all answering through one responder, so that concurrent orders
// (--separate, or renew) share the account and the listener.
type issuers struct {
	store    storage.Storage
	logger   *slog.Logger
	eab      *acme.EAB
	agreeTOS bool
	onStep   func(issuer.Step)
	// listen overrides how validation listeners are opened (the demo and
	// tests use it); nil means net.Listen.
	listen    func(ctx context.Context, addr string) (net.Listener, error)
	responder *responder.Responder
	// publisher, when set, publishes every challenge instead of an
	// on-demand listener: "tlsalpn serve" answers on the port it owns.
	publisher issuer.Publisher
	// noPreflight skips checking each challenge before the CA is told.
	noPreflight bool
	// hooks runs each spec's pre- and post-hooks around the standalone
	// listener; nil runs none. The command calls hooks.finish at the end
	// of its run.
	hooks *standaloneHooks
	// validationPort is the port the CA connects to, which the preflight
	// checks; 0 means 443.
	validationPort int

	mu       sync.Mutex
	byKey    map[string]*issuer.Issuer
	ondemand map[string]*responder.OnDemand
	clients  map[string]*http.Client
}

func newIssuers(store storage.Storage, logger *slog.Logger, r *responder.Responder) *issuers {
	return &issuers{
		store: store, logger: logger, responder: r,
		byKey: map[string]*issuer.Issuer{}, ondemand: map[string]*responder.OnDemand{}, clients: map[string]*http.Client{},
	}
}

func (is *issuers) httpClient(caRoot string) (*http.Client, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if c, ok := is.clients[caRoot]; ok {
		return c, nil
	}
	c, err := httpClient(caRoot)
	if err != nil {
		return nil, err
	}
	is.clients[caRoot] = c
	return c, nil
}

func (is *issuers) get(ctx context.Context, spec manager.Spec) (manager.Issuer, error) {
	hc, err := is.httpClient(spec.CARoot)
	if err != nil {
		return nil, err
	}
	listen := spec.Listen
	if listen == "" {
		listen = ":443"
	}
	// One listener per address and pair of hooks: the hooks run around
	// its bind, and specs that share them share it.
	odKey := listen + "\x00" + spec.PreHook + "\x00" + spec.PostHook
	port := is.validationPort
	if spec.ValidationPort != 0 {
		port = spec.ValidationPort
	}
	key := spec.CA + "\x00" + spec.Email + "\x00" + spec.CARoot + "\x00" + odKey + "\x00" + strconv.Itoa(port)
	is.mu.Lock()
	defer is.mu.Unlock()
	if iss, ok := is.byKey[key]; ok {
		return iss, nil
	}
	var pub issuer.Publisher = is.publisher
	if pub == nil {
		od, ok := is.ondemand[odKey]
		if !ok {
			od = responder.NewOnDemand(is.responder, listen, is.listenWithHooks(spec))
			is.ondemand[odKey] = od
		}
		pub = od
	}
	iss, err := issuer.New(issuer.Config{
		Directory:  spec.CA,
		HTTPClient: hc,
		Email:      spec.Email,
		AgreeTOS:   is.agreeTOS,
		EAB:        is.eab,
		Storage:    is.store,
		Publisher:  pub,
		Logger:     is.logger,
		OnStep:     is.onStep,
		Preflight:  is.preflightFor(listen, port),
	})
	if err != nil {
		return nil, err
	}
	is.byKey[key] = iss
	return iss, nil
}

// stepPrinter returns an OnStep callback that prints each step for people.
func stepPrinter(e *env) func(issuer.Step) {
	var mu sync.Mutex
	return func(s issuer.Step) {
		mu.Lock()
		defer mu.Unlock()
		if s.Identifier != "" {
			e.stdout.Write([]byte("  [" + string(s.Kind) + "] " + s.Identifier + ": " + s.Detail + "\n"))
		} else {
			e.stdout.Write([]byte("  [" + string(s.Kind) + "] " + s.Detail + "\n"))
		}
	}
}

// closeIdle closes the CA connections kept alive for reuse, at the end of
// a command: a process would drop them on exit, but a command run
// in-process (tests, the demo) would leave them open until the CA's
// server gave up on them.
func (is *issuers) closeIdle() {
	is.mu.Lock()
	defer is.mu.Unlock()
	for _, c := range is.clients {
		c.CloseIdleConnections()
	}
}

func (is *issuers) httpClientSet(caRoot string, c *http.Client) {
	is.mu.Lock()
	is.clients[caRoot] = c
	is.mu.Unlock()
}

func (is *issuers) preflightFor(listen string, port int) issuer.Preflighter {
	if is.noPreflight {
		return nil
	}
	return newPreflight(listen, port, is.logger)
}

// listenWithHooks returns how the standalone listener for spec is bound:
// spec's pre-hook first (once per run), then is.listen or net.Listen.
func (is *issuers) listenWithHooks(spec manager.Spec) func(ctx context.Context, addr string) (net.Listener, error) {
	base := is.listen
	if base == nil {
		base = func(ctx context.Context, addr string) (net.Listener, error) {
			var lc net.ListenConfig
			return lc.Listen(ctx, "tcp", addr)
		}
	}
	if is.hooks == nil {
		return base
	}
	return func(ctx context.Context, addr string) (net.Listener, error) {
		if err := is.hooks.beforeBind(ctx, spec); err != nil {
			return nil, err
		}
		return base(ctx, addr)
	}
}

// envDNSServer names the environment variable that gives the preflight a
// DNS server of its own (HOST:PORT): a lab CA's, whose names the system's
// resolver does not know, and the test suite's, whose lookups must stay
// on this machine. Unset means the system's resolver.
const envDNSServer = "TLSALPN_DNS_SERVER"

// newPreflight is the preflight of a responder on listen that the CA
// reaches on caPort, resolving as envDNSServer says.
func newPreflight(listen string, caPort int, logger *slog.Logger) *check.Preflight {
	return check.NewPreflight(listen, caPort, check.ResolverAt(os.Getenv(envDNSServer)), logger)
}
