package manager

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage"
)

// Pool builds and caches one issuer per CA, account and validation
// listener, all answering through one responder, so that concurrent orders
// (issue --separate, renew, serve's keeper) share the account and the
// listener. Its Get is a Manager's IssuerFunc.
//
// The pool names no responder and no checker: it is given how to publish
// (Publisher, or OnDemand for a standalone listener) and how to preflight,
// so manager stays below responder and check.
type Pool struct {
	Store    storage.Storage
	Logger   *slog.Logger
	EAB      *acme.EAB
	AgreeTOS bool
	OnStep   func(issuer.Step)
	// Publisher, when set, publishes every challenge instead of an
	// on-demand listener: a daemon answers on the port it owns.
	Publisher issuer.Publisher
	// OnDemand returns the publisher that binds a standalone listener on
	// listen with bind while challenges are pending; one is made per
	// listener and pair of hooks. Used when Publisher is nil.
	OnDemand func(listen string, bind func(ctx context.Context, addr string) (net.Listener, error)) issuer.Publisher
	// Listen overrides how standalone listeners are opened (the demo and
	// tests use it); nil means net.Listen.
	Listen func(ctx context.Context, addr string) (net.Listener, error)
	// Hooks runs each spec's pre- and post-hooks around the standalone
	// listener; nil runs none. Its owner calls Hooks.Finish at the end of
	// its run.
	Hooks *StandaloneHooks
	// Preflight returns the check of each challenge before the CA is
	// told, for a responder on listen that the CA reaches on port; nil
	// checks nothing.
	Preflight func(listen string, port int) issuer.Preflighter
	// ValidationPort is the port the CA connects to, which the preflight
	// checks; 0 means 443.
	ValidationPort int
	// HTTPClient returns the client that trusts caRoot; nil means
	// issuer.HTTPClient.
	HTTPClient func(caRoot string) (*http.Client, error)

	mu       sync.Mutex
	byKey    map[string]*issuer.Issuer
	ondemand map[string]issuer.Publisher
	clients  map[string]*http.Client
}

func (p *Pool) httpClient(caRoot string) (*http.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[caRoot]; ok {
		return c, nil
	}
	newClient := p.HTTPClient
	if newClient == nil {
		newClient = issuer.HTTPClient
	}
	c, err := newClient(caRoot)
	if err != nil {
		return nil, err
	}
	if p.clients == nil {
		p.clients = map[string]*http.Client{}
	}
	p.clients[caRoot] = c
	return c, nil
}

// SetHTTPClient makes c the client for caRoot: one the caller built
// already (and checked) is reused, not built again.
func (p *Pool) SetHTTPClient(caRoot string, c *http.Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.clients == nil {
		p.clients = map[string]*http.Client{}
	}
	p.clients[caRoot] = c
}

// Get returns the issuer for spec, made on first use.
func (p *Pool) Get(ctx context.Context, spec Spec) (Issuer, error) {
	hc, err := p.httpClient(spec.CARoot)
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
	port := p.ValidationPort
	if spec.ValidationPort != 0 {
		port = spec.ValidationPort
	}
	key := spec.CA + "\x00" + spec.Email + "\x00" + spec.CARoot + "\x00" + odKey + "\x00" + strconv.Itoa(port)
	p.mu.Lock()
	defer p.mu.Unlock()
	if iss, ok := p.byKey[key]; ok {
		return iss, nil
	}
	pub := p.Publisher
	if pub == nil {
		od, ok := p.ondemand[odKey]
		if !ok {
			od = p.OnDemand(listen, p.listenWithHooks(spec))
			if p.ondemand == nil {
				p.ondemand = map[string]issuer.Publisher{}
			}
			p.ondemand[odKey] = od
		}
		pub = od
	}
	var pf issuer.Preflighter
	if p.Preflight != nil {
		pf = p.Preflight(listen, port)
	}
	iss, err := issuer.New(issuer.Config{
		Directory:  spec.CA,
		HTTPClient: hc,
		Email:      spec.Email,
		AgreeTOS:   p.AgreeTOS,
		EAB:        p.EAB,
		Storage:    p.Store,
		Publisher:  pub,
		Logger:     p.Logger,
		OnStep:     p.OnStep,
		Preflight:  pf,
	})
	if err != nil {
		return nil, err
	}
	if p.byKey == nil {
		p.byKey = map[string]*issuer.Issuer{}
	}
	p.byKey[key] = iss
	return iss, nil
}

// CloseIdle closes the CA connections kept alive for reuse, at the end of
// a run: a process would drop them on exit, but a run in-process (tests,
// the demo) would leave them open until the CA's server gave up on them.
func (p *Pool) CloseIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.clients {
		c.CloseIdleConnections()
	}
}

// listenWithHooks returns how the standalone listener for spec is bound:
// spec's pre-hook first (once per run), then p.Listen or net.Listen.
func (p *Pool) listenWithHooks(spec Spec) func(ctx context.Context, addr string) (net.Listener, error) {
	base := p.Listen
	if base == nil {
		base = func(ctx context.Context, addr string) (net.Listener, error) {
			var lc net.ListenConfig
			return lc.Listen(ctx, "tcp", addr)
		}
	}
	if p.Hooks == nil {
		return base
	}
	return func(ctx context.Context, addr string) (net.Listener, error) {
		if err := p.Hooks.BeforeBind(ctx, spec); err != nil {
			return nil, err
		}
		return base(ctx, addr)
	}
}
