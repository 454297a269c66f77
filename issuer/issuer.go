// Package issuer runs the ACME order flow for TLS-ALPN-01 on top of acmez's
// protocol client: accounts (with EAB and terms of service), orders for one
// or several identifiers, profiles, ARI "replaces", preferred chains,
// renewal information and revocation.
//
// acmez (github.com/mholt/acmez/v3/acme) speaks the protocol: JWS, nonces and
// badNonce retries, HTTP retries, Retry-After on finalisation. This package
// drives the order itself rather than using acmez's high-level flow, for two
// reasons that matter to this product. It solves only tls-alpn-01 and
// ignores every other challenge type in whatever order the CA lists them.
// And it polls an authorization as soon as the responder has served the CA
// (RFC 8555 §7.5.1 recommends exactly that) instead of on a fixed timer,
// which is most of the difference between a one-second and a quarter-second
// issuance.
//
// The issuer never imports the responder: it publishes challenge
// certificates through the small Publisher interface, which a single node
// satisfies with its responder and a cluster with shared storage.
package issuer

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/storage"
)

// Publisher makes a challenge certificate reachable by the CA under the
// server name it will send, and withdraws it afterwards.
type Publisher interface {
	// Publish serves cert for serverName. The returned channel, which may
	// be nil, receives a value each time the CA has been served; the issuer
	// then polls the authorization at once instead of waiting.
	Publish(ctx context.Context, serverName string, cert *tls.Certificate) (seen <-chan struct{}, err error)
	Unpublish(ctx context.Context, serverName string) error
}

// Config configures an Issuer. Directory, Storage and Publisher are required.
type Config struct {
	Directory  string       // ACME directory URL
	HTTPClient *http.Client // nil: system roots, 30 s timeout
	Email      string       // account contact; "" registers without one
	AgreeTOS   bool         // agree to the CA's terms of service
	EAB        *acme.EAB    // External Account Binding, when the CA requires it
	Storage    storage.Storage
	Publisher  Publisher
	Logger     *slog.Logger // nil: discard
	// OnStep, if set, is told of every step of the flow as it happens, for
	// people watching (tlsalpn demo, --verbose). It must not block.
	OnStep func(Step)
	// PollTimeout bounds how long an authorization or order is polled; 0
	// means 5 minutes.
	PollTimeout time.Duration
	// Preflight, if set, checks each published challenge from the outside
	// before the CA is asked to validate it.
	Preflight Preflighter
}

// Preflighter checks that a published challenge can be validated before
// the CA is told it is ready. A CA counts failed validations (Let's Encrypt
// allows five per name per hour); a preflight that fails costs nothing.
//
// On success it returns what it checked, in words for people: how much a
// preflight can see depends on where it runs (behind NAT, only the local
// listener), and the issuer must not claim more than that.
type Preflighter interface {
	Preflight(ctx context.Context, id challenge.Identifier, keyAuth string) (checked string, err error)
}

// StepKind names a step of the flow.
type StepKind string

// The steps of an order, in the order they happen.
const (
	StepAccount     StepKind = "account"
	StepOrder       StepKind = "order"
	StepChallenge   StepKind = "challenge"
	StepReady       StepKind = "ready"
	StepValid       StepKind = "valid"
	StepFinalize    StepKind = "finalize"
	StepCertificate StepKind = "certificate"
)

// Step is one event of the flow.
type Step struct {
	Kind       StepKind
	Identifier string // empty for order-wide steps
	Detail     string
}

// Request is one certificate to obtain.
type Request struct {
	Identifiers []challenge.Identifier
	KeyType     KeyType
	// Key, when set, is used instead of generating a key of KeyType.
	Key crypto.Signer
	// Profile is the ACME profile to ask for. When empty and the CA offers
	// profiles, one is chosen deterministically (see ChooseProfile) rather
	// than leaving it to the CA, whose default may change or be random.
	Profile string
	// PreferredChain selects, among the chains the CA offers, the first
	// whose topmost certificate is issued by a CA with this common name.
	PreferredChain string
	// Replaces is the certificate this one renews, sent as the ARI
	// "replaces" field (RFC 9773 §5).
	Replaces *x509.Certificate
	// Lineage, when set, names the certificate this request is for (its
	// storage identity). Two requests for the same identifiers, key type
	// and profile but different lineages never resume each other's order.
	Lineage string
}

// Result is an obtained certificate.
type Result struct {
	Leaf     *x509.Certificate
	Chain    []*x509.Certificate // leaf first, as served
	ChainPEM []byte              // leaf first
	Key      crypto.Signer
	KeyPEM   []byte
	URL      string // certificate URL at the CA
	Profile  string // the profile asked for ("" when the CA offers none)
	Account  string // account URL
	// Resumed is set when the certificate comes from an order that an
	// earlier Obtain created and did not see through (a crash, a CA error
	// after finalisation, a save that failed): no new order was made.
	Resumed bool

	done func(context.Context) error
}

// Done tells the issuer that the caller has stored the certificate, so the
// order journal may forget it. Until Done is called, Obtain for the same
// request resumes the order and returns this certificate again rather than
// ordering a new one: call Done only once the certificate and key are
// safely stored. It is safe on a nil Result and to call more than once.
func (r *Result) Done(ctx context.Context) error {
	if r == nil || r.done == nil {
		return nil
	}
	return r.done(ctx)
}

// Issuer obtains certificates from one CA with one account. It is safe for
// concurrent use: several orders may run at once (tlsalpn issue --separate).
type Issuer struct {
	cfg    Config
	client *acme.Client
	hints  *retryAfterRecorder
	logger *slog.Logger

	accountMu sync.Mutex
	account   *acme.Account
}

// New returns an Issuer for cfg.
func New(cfg Config) (*Issuer, error) {
	if cfg.Directory == "" {
		return nil, errors.New("issuer: no CA directory URL")
	}
	if cfg.Storage == nil {
		return nil, errors.New("issuer: no storage")
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	hints := &retryAfterRecorder{next: base, after: make(map[string]time.Duration), watched: make(map[string]int), status: make(map[string]int)}
	hcCopy := *hc
	hcCopy.Transport = hints
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	timeout := cfg.PollTimeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	cfg.PollTimeout = timeout
	return &Issuer{
		cfg:    cfg,
		hints:  hints,
		logger: logger,
		client: &acme.Client{
			Directory:  cfg.Directory,
			HTTPClient: &hcCopy,
			UserAgent:  "tlsalpn",
			// Used only where the CA sends no Retry-After: finalisation of
			// a small order takes well under a second everywhere.
			PollInterval: 100 * time.Millisecond,
			PollTimeout:  timeout,
			Logger:       logger,
		},
	}, nil
}

// Directory returns the CA's directory, fetched once.
func (iss *Issuer) Directory(ctx context.Context) (acme.Directory, error) {
	d, err := iss.client.GetDirectory(ctx)
	if err != nil {
		return d, fmt.Errorf("reading the directory of the CA at %s: %w", iss.cfg.Directory, err)
	}
	return d, nil
}

func (iss *Issuer) step(s Step) {
	iss.logger.Debug("acme step", "kind", s.Kind, "identifier", s.Identifier, "detail", s.Detail)
	if iss.cfg.OnStep != nil {
		iss.cfg.OnStep(s)
	}
}

// ChooseProfile picks the profile for an order: want when given (it must be
// offered), otherwise "classic" or "default" when offered, otherwise the
// first offered name in sorted order; "" when the CA offers no profiles.
func ChooseProfile(offered map[string]string, want string) (string, error) {
	if len(offered) == 0 {
		if want != "" {
			return "", fmt.Errorf("profile %q requested but %w", want, ErrNoProfiles)
		}
		return "", nil
	}
	names := make([]string, 0, len(offered))
	for n := range offered {
		names = append(names, n)
	}
	sort.Strings(names)
	if want != "" {
		if _, ok := offered[want]; ok {
			return want, nil
		}
		return "", fmt.Errorf("the CA does not offer profile %q: use one of %s", want, strings.Join(names, ", "))
	}
	for _, p := range []string{"classic", "default"} {
		if _, ok := offered[p]; ok {
			return p, nil
		}
	}
	return names[0], nil
}

// Obtain runs one order to completion and returns the certificate. When the
// CA sent Retry-After with an error, the error is a *RetryError.
//
// Obtain first checks that storage accepts writes, then journals the order
// (URL and certificate key, under storage.OrdersPrefix) as soon as the CA has
// created it. If an earlier Obtain for the same request left an order in
// the journal (it crashed, the CA failed after finalisation, or its caller
// never called Result.Done), that order is resumed: finalised with the
// journaled key if it is ready, polled if processing, downloaded if valid.
// Only an order the CA no longer accepts (invalid, expired, unknown, or
// still pending validation) is dropped for a new one. The caller must call
// Result.Done once it has stored the result.
//
// When the CA says the account does not exist (it lost it), the account is
// registered again with the same key and the order is retried once.
func (iss *Issuer) Obtain(ctx context.Context, req Request) (*Result, error) {
	res, err := iss.obtain(ctx, req)
	if err != nil && accountGone(err) {
		if rerr := iss.reregister(ctx, err); rerr != nil {
			err = rerr
		} else {
			res, err = iss.obtain(ctx, req)
		}
	}
	if err != nil {
		if d, ok := iss.hints.takeErrorHint(); ok {
			return nil, &RetryError{Err: err, After: d}
		}
	}
	return res, err
}

// accountGone reports whether the CA answered accountDoesNotExist.
func accountGone(err error) bool {
	var problem acme.Problem
	return errors.As(err, &problem) && problem.Type == acme.ProblemTypeAccountDoesNotExist
}

// order is what obtain knows of one request while it runs.
type order struct {
	req     Request
	names   []string
	label   string
	profile string
	acct    acme.Account
	j       journal
}

func (iss *Issuer) obtain(ctx context.Context, req Request) (*Result, error) {
	if len(req.Identifiers) == 0 {
		return nil, errors.New("obtaining certificate: no identifiers")
	}
	names := identifierValues(req.Identifiers)
	label := strings.Join(names, ", ")
	if iss.cfg.Publisher == nil {
		return nil, fmt.Errorf("obtaining certificate for %s: no challenge publisher configured", label)
	}
	if req.Key == nil && !req.KeyType.valid() {
		// Before the CA is asked for anything.
		return nil, fmt.Errorf("obtaining certificate for %s: unknown key type %q", label, req.KeyType)
	}
	if err := iss.checkWritable(ctx, label); err != nil {
		return nil, err
	}
	acct, err := iss.Account(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := iss.Directory(ctx)
	if err != nil {
		return nil, err
	}
	var offered map[string]string
	if dir.Meta != nil {
		offered = dir.Meta.Profiles
	}
	profile, err := ChooseProfile(offered, req.Profile)
	if err != nil {
		return nil, fmt.Errorf("obtaining certificate for %s: %w", label, err)
	}
	o := &order{req: req, names: names, label: label, profile: profile, acct: acct, j: iss.journalFor(req, profile)}

	// Two Obtains for the same request (two processes on one storage)
	// never drive the same journaled order at once.
	unlock, err := iss.cfg.Storage.Lock(ctx, o.j.lock)
	if err != nil {
		return nil, fmt.Errorf("locking the order journal for %s: %w", label, err)
	}
	defer unlock()

	res, err := iss.resume(ctx, o)
	if res != nil || err != nil {
		return res, err
	}
	return iss.fresh(ctx, o, dir)
}

// resume finishes the journaled order of o, if there is one that the CA
// still accepts. It returns nil, nil when there is nothing to resume; then
// the journal entry, if any, has been removed.
func (iss *Issuer) resume(ctx context.Context, o *order) (*Result, error) {
	entry, key, err := o.j.load(ctx)
	switch {
	case errors.Is(err, storage.ErrNotExist):
		return nil, nil
	case errors.Is(err, errJournalDamaged):
		iss.logger.Warn("removing a damaged order journal entry; ordering afresh", "names", o.label, "error", err)
		return nil, iss.drop(ctx, o)
	case err != nil:
		return nil, fmt.Errorf("reading the order journal for %s: %w", o.label, err)
	}
	if entry.Account != o.acct.Location {
		// The account was registered again: the old one's orders are
		// out of reach.
		iss.logger.Warn("journaled order belongs to another account; ordering afresh",
			"names", o.label, "order", entry.Order, "account", entry.Account)
		return nil, iss.drop(ctx, o)
	}
	iss.hints.watch(entry.Order)
	ord, err := iss.client.GetOrder(ctx, o.acct, acme.Order{Location: entry.Order})
	status := iss.hints.lastStatus(entry.Order)
	iss.hints.forget(entry.Order)
	if err != nil {
		if accountGone(err) {
			// Registered again, the account may reach this order still.
			return nil, err
		}
		if refused(err) || status == http.StatusNotFound || status == http.StatusGone {
			iss.logger.Warn("the CA no longer serves the journaled order; ordering afresh", "names", o.label, "order", entry.Order, "error", err)
			return nil, iss.drop(ctx, o)
		}
		// The CA may be down for a moment: the order (and the
		// certificate it may hold) is kept for the next attempt.
		return nil, fmt.Errorf("resuming order %s for %s: %w", entry.Order, o.label, err)
	}
	ord.Location = entry.Order
	switch ord.Status {
	case acme.StatusReady, acme.StatusProcessing, acme.StatusValid:
	default:
		// Pending: nothing was issued and the validation in flight died
		// with the process that started it; invalid or expired: the CA
		// will issue nothing for it.
		iss.logger.Info("journaled order cannot be resumed; ordering afresh", "names", o.label, "order", entry.Order, "status", ord.Status)
		return nil, iss.drop(ctx, o)
	}
	iss.logger.Info("resuming an order an earlier run did not finish", "names", o.label, "order", entry.Order, "status", ord.Status)
	iss.step(Step{Kind: StepOrder, Identifier: o.label, Detail: "resuming " + entry.Order + " (" + ord.Status + "), created " +
		entry.Created.UTC().Format(time.RFC3339) + " by a run that did not finish"})
	res, err := iss.complete(ctx, o, ord, key)
	if err != nil {
		if refused(err) && !accountGone(err) {
			iss.logger.Warn("the CA refused to complete the journaled order; ordering afresh", "names", o.label, "order", entry.Order, "error", err)
			return nil, iss.drop(ctx, o)
		}
		return nil, fmt.Errorf("resuming order %s for %s: %w", entry.Order, o.label, err)
	}
	if o.req.Replaces != nil && res.Leaf.SerialNumber.Cmp(o.req.Replaces.SerialNumber) == 0 {
		// The order was seen through and stored, only its entry was not
		// removed: this is the certificate being renewed, not a new one.
		return nil, iss.drop(ctx, o)
	}
	res.Resumed = true
	return res, nil
}

// refused reports whether err is the CA's refusal of a request (a problem
// document with a 4xx status other than a rate limit), as opposed to a
// failure that may pass: a network error, a 5xx, a cancelled context.
func refused(err error) bool {
	var problem acme.Problem
	if !errors.As(err, &problem) {
		return false
	}
	return problem.Status >= 400 && problem.Status < 500 && problem.Type != acme.ProblemTypeRateLimited
}

func (iss *Issuer) drop(ctx context.Context, o *order) error {
	if err := o.j.remove(ctx); err != nil {
		return fmt.Errorf("obtaining certificate for %s: %w", o.label, err)
	}
	return nil
}

// fresh creates a new order for o, journals it and sees it through.
func (iss *Issuer) fresh(ctx context.Context, o *order, dir acme.Directory) (*Result, error) {
	iss.pruneJournal(ctx)
	key := o.req.Key
	if key == nil {
		var err error
		if key, err = o.req.KeyType.Generate(); err != nil {
			return nil, err
		}
	}
	ids := make([]acme.Identifier, len(o.req.Identifiers))
	for i, id := range o.req.Identifiers {
		ids[i] = acme.Identifier{Type: string(id.Type), Value: id.Value}
	}
	ord := acme.Order{Identifiers: ids, Profile: o.profile}
	if o.req.Replaces != nil && dir.RenewalInfo != "" {
		certID, err := acme.ARIUniqueIdentifier(o.req.Replaces)
		if err == nil {
			ord.Replaces = certID
		}
	}
	ord, err := iss.client.NewOrder(ctx, o.acct, ord)
	var problem acme.Problem
	if err != nil && errors.As(err, &problem) && problem.Type == acme.ProblemTypeAlreadyReplaced {
		// Another client (or an earlier run that crashed after ordering)
		// already renewed it: order afresh rather than fail.
		iss.logger.Warn("certificate already replaced; ordering without replaces", "names", o.label)
		ord = acme.Order{Identifiers: ids, Profile: o.profile}
		ord, err = iss.client.NewOrder(ctx, o.acct, ord)
	}
	if err != nil {
		return nil, fmt.Errorf("creating order for %s at %s: %w", o.label, iss.cfg.Directory, err)
	}
	entry := journalEntry{
		Order: ord.Location, Account: o.acct.Location, Directory: iss.cfg.Directory, Identifiers: ids,
		Profile: o.profile, KeyType: keyTypeName(o.req.KeyType), Created: time.Now().UTC(),
	}
	if err := o.j.save(ctx, entry, key); err != nil {
		// Never finalise an order that a crash could lose.
		return nil, fmt.Errorf("not finalizing order %s for %s: %w", ord.Location, o.label, err)
	}
	detail := ord.Location
	if o.profile != "" {
		detail += " (profile " + o.profile + ")"
	}
	if ord.Replaces != "" {
		detail += " replacing " + ord.Replaces
	}
	iss.step(Step{Kind: StepOrder, Identifier: o.label, Detail: detail})
	return iss.complete(ctx, o, ord, key)
}

// complete takes ord from wherever it is to a downloaded, checked
// certificate for key: authorizations if pending, finalisation if ready,
// polling if processing, download once valid.
func (iss *Issuer) complete(ctx context.Context, o *order, ord acme.Order, key crypto.Signer) (*Result, error) {
	if ord.Status == acme.StatusPending {
		if err := iss.authorize(ctx, o.acct, ord); err != nil {
			// Nothing issued: the entry would only be dropped next time.
			if rerr := o.j.remove(context.WithoutCancel(ctx)); rerr != nil {
				iss.logger.Warn("removing the order journal entry of a failed order", "names", o.label, "error", rerr)
			}
			return nil, err
		}
		ord.Status = acme.StatusReady
	}
	var err error
	switch ord.Status {
	case acme.StatusReady:
		csr, err := acmez.NewCSR(key, o.names)
		if err != nil {
			return nil, fmt.Errorf("making CSR for %s: %w", o.label, err)
		}
		location := ord.Location
		ord, err = iss.client.FinalizeOrder(ctx, o.acct, ord, csr.Raw)
		if err != nil {
			return nil, fmt.Errorf("finalizing order %s for %s: %w", location, o.label, err)
		}
		iss.step(Step{Kind: StepFinalize, Identifier: o.label, Detail: "order " + ord.Status + ", certificate at " + ord.Certificate})
	case acme.StatusProcessing:
		if ord, err = iss.pollOrder(ctx, o, ord); err != nil {
			return nil, err
		}
	case acme.StatusValid:
	default:
		return nil, fmt.Errorf("order %s for %s is %s, cannot be completed", ord.Location, o.label, ord.Status)
	}
	if ord.Certificate == "" {
		return nil, fmt.Errorf("order %s for %s is %s but names no certificate", ord.Location, o.label, ord.Status)
	}

	chains, err := iss.client.GetCertificateChain(ctx, o.acct, ord.Certificate)
	if err != nil {
		return nil, fmt.Errorf("downloading certificate for %s from %s: %w", o.label, ord.Certificate, err)
	}
	chosen, chain, err := pickChain(chains, o.req.PreferredChain)
	if err == nil {
		err = checkLeaf(chain[0], key, o.names)
	}
	if err != nil {
		// Resuming would download the same unusable certificate again
		// and fail every later run: the next one orders afresh.
		if rerr := o.j.remove(context.WithoutCancel(ctx)); rerr != nil {
			iss.logger.Warn("removing the order journal entry of an unusable certificate", "names", o.label, "error", rerr)
		}
		return nil, fmt.Errorf("certificate for %s from %s: %w", o.label, ord.Certificate, err)
	}
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return nil, err
	}
	iss.step(Step{Kind: StepCertificate, Identifier: o.label, Detail: fmt.Sprintf("serial %x, issued by %q, valid until %s",
		chain[0].SerialNumber, chain[0].Issuer.CommonName, chain[0].NotAfter.UTC().Format(time.RFC3339))})
	j := o.j
	return &Result{
		Leaf: chain[0], Chain: chain, ChainPEM: chosen.ChainPEM, Key: key, KeyPEM: keyPEM,
		URL: chosen.URL, Profile: o.profile, Account: o.acct.Location,
		done: func(ctx context.Context) error { return j.remove(ctx) },
	}, nil
}

// pollOrder waits for a processing order to become valid, honouring the
// CA's Retry-After, for at most PollTimeout.
func (iss *Issuer) pollOrder(ctx context.Context, o *order, ord acme.Order) (acme.Order, error) {
	location := ord.Location
	iss.hints.watch(location)
	defer iss.hints.forget(location)
	deadline := time.Now().Add(iss.cfg.PollTimeout)
	wait := minBackoff
	for {
		select {
		case <-ctx.Done():
			return ord, fmt.Errorf("waiting for the CA to issue the certificate of order %s for %s: %w", location, o.label, ctx.Err())
		case <-time.After(wait):
		}
		next, err := iss.client.GetOrder(ctx, o.acct, acme.Order{Location: location})
		if err != nil {
			return ord, fmt.Errorf("polling order %s for %s: %w", location, o.label, err)
		}
		next.Location = location
		ord = next
		switch ord.Status {
		case acme.StatusValid:
			return ord, nil
		case acme.StatusProcessing:
		default:
			if ord.Error != nil {
				return ord, fmt.Errorf("order %s for %s became %s while the CA was issuing: %w", location, o.label, ord.Status, *ord.Error)
			}
			return ord, fmt.Errorf("order %s for %s became %s while the CA was issuing, without a reason from the CA", location, o.label, ord.Status)
		}
		if time.Now().After(deadline) {
			return ord, fmt.Errorf("the CA did not issue the certificate of order %s for %s within %s", location, o.label, iss.cfg.PollTimeout)
		}
		if ra, ok := iss.hints.take(location); ok {
			wait = max(ra, minBackoff)
		} else {
			wait = min(2*wait, maxBackoff)
		}
	}
}

func identifierValues(ids []challenge.Identifier) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.Value
	}
	return out
}

// pickChain parses the offered chains and returns the preferred one: the
// first whose topmost certificate's issuer common name is preferred, else
// the CA's default (the first).
func pickChain(chains []acme.Certificate, preferred string) (acme.Certificate, []*x509.Certificate, error) {
	if len(chains) == 0 {
		return acme.Certificate{}, nil, errors.New("the CA returned no certificate chain")
	}
	var (
		first      []*x509.Certificate
		firstChain acme.Certificate
	)
	for i, c := range chains {
		certs, err := ParseChainPEM(c.ChainPEM)
		if err != nil {
			if i == 0 {
				return acme.Certificate{}, nil, fmt.Errorf("parsing chain from %s: %w", c.URL, err)
			}
			continue
		}
		if i == 0 {
			first, firstChain = certs, c
		}
		if preferred == "" {
			break
		}
		top := certs[len(certs)-1]
		if top.Issuer.CommonName == preferred || top.Subject.CommonName == preferred {
			return c, certs, nil
		}
	}
	return firstChain, first, nil
}

// ParseChainPEM parses every CERTIFICATE block in data, leaf first.
func ParseChainPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate in PEM data")
	}
	return certs, nil
}

// checkLeaf makes sure the CA issued what was asked for, before anything is
// written where a server would load it.
func checkLeaf(leaf *x509.Certificate, key crypto.Signer, names []string) error {
	if !publicKeysEqual(leaf.PublicKey, key.Public()) {
		return errors.New("issued certificate does not match our private key")
	}
	for _, n := range names {
		if err := leaf.VerifyHostname(n); err != nil {
			return fmt.Errorf("issued certificate does not cover %s: %w", n, err)
		}
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// RenewalInfo fetches the CA's ARI suggested window for leaf (RFC 9773). It
// returns an error wrapping ErrNoARI when the CA does not offer ARI.
func (iss *Issuer) RenewalInfo(ctx context.Context, leaf *x509.Certificate) (acme.RenewalInfo, error) {
	dir, err := iss.Directory(ctx)
	if err != nil {
		return acme.RenewalInfo{}, err
	}
	if dir.RenewalInfo == "" {
		return acme.RenewalInfo{}, fmt.Errorf("%s: %w", iss.cfg.Directory, ErrNoARI)
	}
	ri, err := iss.client.GetRenewalInfo(ctx, leaf)
	if err != nil {
		return ri, fmt.Errorf("fetching renewal info for %s from %s: %w", leafLabel(leaf), iss.cfg.Directory, err)
	}
	return ri, nil
}

// ErrNoARI means the CA's directory has no renewalInfo endpoint.
var ErrNoARI = errors.New("the CA does not offer ACME Renewal Information")

// Revoke revokes leaf, signing with the account key. reason is an RFC 5280
// CRLReason code (0 unspecified, 1 keyCompromise, 4 superseded, 5
// cessationOfOperation). When the CA says the account does not exist, the
// account is registered again, as in Obtain, and the revocation retried once.
func (iss *Issuer) Revoke(ctx context.Context, leaf *x509.Certificate, reason int) error {
	acct, err := iss.Account(ctx)
	if err != nil {
		return err
	}
	err = iss.client.RevokeCertificate(ctx, acct, leaf, nil, reason)
	if err != nil && accountGone(err) {
		if err = iss.reregister(ctx, err); err == nil {
			if acct, err = iss.Account(ctx); err == nil {
				err = iss.client.RevokeCertificate(ctx, acct, leaf, nil, reason)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("revoking certificate %x for %s: %w", leaf.SerialNumber, leafLabel(leaf), err)
	}
	return nil
}

// leafLabel names a certificate in messages by its SANs: certificates from
// ACME CAs often have no common name at all.
func leafLabel(leaf *x509.Certificate) string {
	names := slices.Clone(leaf.DNSNames)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return fmt.Sprintf("serial %x", leaf.SerialNumber)
	}
	return strings.Join(names, ", ")
}
