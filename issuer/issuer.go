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
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

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
	// MaxOrders bounds the orders this issuer runs at once; Obtain waits
	// for a free slot (or for ctx to end) before it orders. 0 means
	// DefaultMaxOrders. Without a bound, tlsalpn serve starting with a
	// thousand certificates missing placed a thousand orders at the CA in
	// the same second, each on its own connection: Pebble locked up under
	// the burst (two of its locks taken in opposite orders by concurrent
	// new-order and authorization requests) and none was issued, every
	// request timing out; a real CA answers such a burst with rate limits.
	MaxOrders int
}

// DefaultMaxOrders is the number of orders an Issuer runs at once unless
// Config.MaxOrders says otherwise: enough to keep a CA's round trips and
// validations overlapping (tlsalpn issue --separate of 100 names takes no
// longer than unbounded), few enough that a thousand certificates are
// ordered as a steady stream, not a burst.
const DefaultMaxOrders = 8

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
	// RenewalInfo is the CA's renewal information for Leaf (RFC 9773),
	// which acmez fetches with the certificate when the CA offers ARI; nil
	// when it offers none or gave no window. Kept with the certificate, it
	// spares asking the CA again a moment later: tlsalpn serve did, for
	// every certificate it obtained (two renewalInfo requests each,
	// bench/many.sh).
	RenewalInfo *acme.RenewalInfo

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

	// orders holds a token for each order running (Config.MaxOrders).
	orders chan struct{}
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
	if cfg.MaxOrders < 0 {
		return nil, fmt.Errorf("issuer: MaxOrders %d: want 0 (the default, %d) or more", cfg.MaxOrders, DefaultMaxOrders)
	}
	if cfg.MaxOrders == 0 {
		cfg.MaxOrders = DefaultMaxOrders
	}
	return &Issuer{
		orders: make(chan struct{}, cfg.MaxOrders),
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
//
// At most Config.MaxOrders Obtains run at once; the others wait their turn
// here, before anything is sent to the CA.
func (iss *Issuer) Obtain(ctx context.Context, req Request) (*Result, error) {
	select {
	case iss.orders <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for one of the %d orders running at %s to end, to order %s: %w",
			cap(iss.orders), iss.cfg.Directory, strings.Join(identifierValues(req.Identifiers), ", "), context.Cause(ctx))
	}
	defer func() { <-iss.orders }()
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
