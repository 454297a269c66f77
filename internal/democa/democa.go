// Package democa runs a local ACME certificate authority for tests and demos:
// Pebble's own packages (ca, db, va, wfe) in-process, serving ACME and
// Pebble's management API over HTTPS on loopback, plus a DNS stub that the
// validation authority uses to resolve the names it validates.
//
// Everything listens on 127.0.0.1 with kernel-chosen ports, so any number of
// CAs can run side by side in one process. The one exception is the
// tls-alpn-01 port (Options.TLSPort): Pebble dials the resolved address of the
// name being validated on that port, which is where the responder under test
// must listen.
//
// Pebble reads part of its configuration from environment variables inside
// va.New and wfe.New; Start sets them from Options around those two calls,
// under a process-wide lock, and restores the previous values afterwards (see
// env.go).
package democa

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// DefaultProfiles returns the certificate profiles offered when
// Options.Profiles is empty: a 90-day "default" and a 6-day "shortlived",
// mirroring the lifetimes Let's Encrypt offers. Both lifetimes are explicit
// because Pebble's own fallback validity is an implementation detail that
// tests must not rely on.
//
// Pebble picks a profile at random for an order that names none, so a test
// that checks lifetimes should name its profile.
func DefaultProfiles() map[string]ca.Profile {
	return map[string]ca.Profile{
		"default": {
			Description:    "90-day certificates",
			ValidityPeriod: uint64(90 * 24 * time.Hour / time.Second),
		},
		"shortlived": {
			Description:    "6-day certificates",
			ValidityPeriod: uint64(6 * 24 * time.Hour / time.Second),
		},
	}
}

// defaultHTTPPort is where Pebble's VA would dial for http-01 when the caller
// does not care: port 1 (tcpmux) is closed on any ordinary host, so an
// accidental http-01 attempt fails fast with "connection refused".
const defaultHTTPPort = 1

// shutdownTimeout bounds how long Close waits for in-flight HTTP requests and
// DNS exchanges before closing connections forcibly.
const shutdownTimeout = 5 * time.Second

// Options configures a CA. The zero value is not usable: TLSPort is required.
type Options struct {
	// TLSPort is the port Pebble's VA dials for tls-alpn-01 validation, at
	// the address the DNS stub gives for the name being validated. It is
	// required: it is where the responder under test listens.
	TLSPort int
	// HTTPPort is the port the VA dials for http-01. Unused by this
	// project; 0 means port 1, which is closed.
	HTTPPort int
	// Strict is Pebble's -strict flag: reject deprecated protocol usage.
	Strict bool
	// NoSleep disables the random 0-5 s sleep the VA takes before each of its
	// three validation attempts. Tests and demos want this; leave it false to
	// exercise a client's patience with slow validation.
	NoSleep bool
	// EABRequired makes newAccount require an External Account Binding.
	EABRequired bool
	// EABKeys maps EAB key IDs to base64url (unpadded) HMAC keys.
	EABKeys map[string]string
	// NonceRejectPercent is how often Pebble rejects a good nonce as bad, to
	// exercise badNonce retries. Unlike the pebble binary (5%), 0 means never.
	NonceRejectPercent int
	// AuthzReuse is how often (percent) Pebble reuses an existing valid
	// authorization for a new order. Unlike the pebble binary (50%), 0 means
	// never, so every order is validated afresh.
	AuthzReuse int
	// Profiles are the certificate profiles offered in the directory.
	// Empty means DefaultProfiles().
	Profiles map[string]ca.Profile
	// RetryAfterAuthz and RetryAfterOrder are Retry-After hints, in seconds,
	// on pending authorizations and processing orders. 0 means no hint.
	RetryAfterAuthz, RetryAfterOrder int
	// ChainLength is the number of intermediates between a leaf and the
	// root. 0 means 1, as in Pebble.
	ChainLength int
	// AlternateRoots is the number of additional root hierarchies that
	// cross-sign the issuing intermediate, offered as alternate chains
	// (Link rel="alternate").
	AlternateRoots int
	// BlockedDomains are names (and their subdomains) Pebble refuses to order.
	BlockedDomains []string
	// Logger receives Pebble's own log lines, and this package's, at Debug
	// level. Nil discards them.
	Logger *slog.Logger

	// DNSIPv4 is the address the DNS stub gives in A answers for every name
	// without an override. The zero value means 127.0.0.1.
	DNSIPv4 netip.Addr
	// DNSIPv6 is the address the DNS stub gives in AAAA answers for every
	// name without an override. The zero value means no AAAA records. Pebble
	// dials the first address it resolves, preferring IPv6.
	DNSIPv6 netip.Addr
	// DNS overrides the answers for individual names (lower case A-labels,
	// no trailing dot): A answers carry the IPv4 addresses of the list,
	// AAAA answers the IPv6 ones. A name present with an empty list gets
	// NXDOMAIN. See also CA.SetDNS.
	DNS map[string][]netip.Addr

	// Handler, if set, wraps Pebble's ACME handler (not the management
	// handler), for fault injection such as answering some requests with 500.
	Handler func(http.Handler) http.Handler
}

// CA is a running ACME CA. Its methods are safe for concurrent use.
type CA struct {
	log        *slog.Logger
	pebbleLog  *log.Logger
	ca         *ca.CAImpl
	rootsPEM   []byte
	httpClient *http.Client

	acmeURL string // https://127.0.0.1:PORT
	// dirPath is where the directory is served: wfe.DirectoryPath and a
	// random part. ACME clients cache directories by URL for hours
	// (acmez: 12 h, process-wide), so a CA started later on a port an
	// earlier one used must not share its URL, or a client is handed the
	// earlier CA's directory (its EAB requirement, its endpoints).
	dirPath string
	mgmtURL string // https://127.0.0.1:PORT
	acmeSrv *http.Server
	mgmtSrv *http.Server
	serving sync.WaitGroup // the two Serve goroutines

	dns *dnsStub

	closeOnce sync.Once
	closeErr  error
}

// Start starts a CA whose ACME server, management server and DNS stub all
// listen on 127.0.0.1 with kernel-chosen ports. Close releases them.
//
// Pebble's VA and nonce goroutines cannot be stopped and outlive Close; they
// hold no sockets.
func Start(ctx context.Context, opts Options) (*CA, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("democa: starting: %w", err)
	}
	c := &CA{log: opts.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
		c.pebbleLog = log.New(io.Discard, "", 0)
	} else {
		c.pebbleLog = log.New(slogWriter{c.log}, "", 0)
	}

	srvTLS, rootsPEM, err := newServerTLS()
	if err != nil {
		return nil, fmt.Errorf("democa: creating the HTTPS certificate: %w", err)
	}
	c.rootsPEM = rootsPEM
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(rootsPEM)
	c.httpClient = &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}}

	c.dns, err = startDNS(ctx, c.log, opts.DNSIPv4, opts.DNSIPv6, opts.DNS)
	if err != nil {
		return nil, err
	}

	store := db.NewMemoryStore()
	for kid, key := range opts.EABKeys {
		if err := store.AddExternalAccountKeyByID(kid, key); err != nil {
			c.closeDNS()
			return nil, fmt.Errorf("democa: adding EAB key %q: %w", kid, err)
		}
	}
	for _, name := range opts.BlockedDomains {
		if err := store.AddBlockedDomain(name); err != nil {
			c.closeDNS()
			return nil, fmt.Errorf("democa: blocking domain %q: %w", name, err)
		}
	}

	wfeImpl, err := c.newPebble(store, opts)
	if err != nil {
		c.closeDNS()
		return nil, err
	}

	c.dirPath = wfe.DirectoryPath + "/" + rand.Text()[:12]
	// Innermost, so that a test's middleware (a delay, a fault) runs
	// outside the lock.
	one := &sync.Mutex{}
	acmeHandler := serial(one, wfeImpl.Handler())
	if opts.Handler != nil {
		acmeHandler = opts.Handler(acmeHandler)
	}
	// Outermost: the middleware sees Pebble's own paths.
	acmeHandler = directoryAt(c.dirPath, acmeHandler)
	c.acmeSrv, c.acmeURL, err = c.serve(srvTLS, acmeHandler)
	if err != nil {
		c.closeDNS()
		return nil, fmt.Errorf("democa: starting the ACME server: %w", err)
	}
	c.mgmtSrv, c.mgmtURL, err = c.serve(srvTLS, serial(one, wfeImpl.ManagementHandler()))
	if err != nil {
		c.acmeSrv.Close()
		c.serving.Wait()
		c.closeDNS()
		return nil, fmt.Errorf("democa: starting the management server: %w", err)
	}
	c.log.Debug("democa started", "directory", c.DirectoryURL(), "management", c.mgmtURL, "dns", c.dns.addr)
	return c, nil
}

// serial has Pebble handle one request at a time.
//
// Pebble's request handlers take the locks of an authorization and of its
// order in opposite orders: wfe.Authz holds the authorization's lock and
// then takes its order's, while db.GetOrderByID (fetching or finalizing
// an order) holds the store's and the order's and then takes the
// authorizations', and then the order's for writing. Two fetches of an
// order and one of its authorization at the same moment then wait on each
// other for good, and since a waiting fetch holds the store's lock, every
// later request waits too: the CA stops answering altogether. Cluster
// nodes that share an account hit it (TestConcurrentRequestsOnOneOrder
// shows it in seconds). Pebble's background work, the validation
// authority and the CA, takes those locks one at a time or in an order no
// single request reverses, so one request at a time is enough to keep out
// of the cycle. Requests are short (no handler waits on the network but
// to write its answer), so the cost is only the CA's own concurrency.
func serial(mu *sync.Mutex, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (o *Options) validate() error {
	switch {
	case o.TLSPort <= 0 || o.TLSPort > 65535:
		return fmt.Errorf("democa: TLSPort %d is not a port number", o.TLSPort)
	case o.HTTPPort < 0 || o.HTTPPort > 65535:
		return fmt.Errorf("democa: HTTPPort %d is not a port number", o.HTTPPort)
	case o.ChainLength < 0:
		return fmt.Errorf("democa: ChainLength %d is negative", o.ChainLength)
	case o.AlternateRoots < 0:
		return fmt.Errorf("democa: AlternateRoots %d is negative", o.AlternateRoots)
	case o.NonceRejectPercent < 0 || o.NonceRejectPercent > 99:
		// Pebble clips 100 to 99: every nonce rejected would make the CA unusable.
		return fmt.Errorf("democa: NonceRejectPercent %d is not in [0, 99]", o.NonceRejectPercent)
	case o.AuthzReuse < 0 || o.AuthzReuse > 100:
		return fmt.Errorf("democa: AuthzReuse %d is not in [0, 100]", o.AuthzReuse)
	case o.RetryAfterAuthz < 0 || o.RetryAfterOrder < 0:
		return errors.New("democa: negative Retry-After")
	case o.DNSIPv4.IsValid() && !o.DNSIPv4.Unmap().Is4():
		return fmt.Errorf("democa: DNSIPv4 %s is not an IPv4 address", o.DNSIPv4)
	case o.DNSIPv6.IsValid() && (!o.DNSIPv6.Is6() || o.DNSIPv6.Is4In6()):
		return fmt.Errorf("democa: DNSIPv6 %s is not an IPv6 address", o.DNSIPv6)
	}
	return nil
}

// newPebble builds Pebble's CA, VA and WFE as cmd/pebble does. Pebble
// reports construction failures by panicking; they are turned into errors.
func (c *CA) newPebble(store *db.MemoryStore, opts Options) (w *wfe.WebFrontEndImpl, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("democa: constructing Pebble: %v", r)
		}
	}()
	profiles := opts.Profiles
	if len(profiles) == 0 {
		profiles = DefaultProfiles()
	}
	chainLength := opts.ChainLength
	if chainLength == 0 {
		chainLength = 1
	}
	httpPort := opts.HTTPPort
	if httpPort == 0 {
		httpPort = defaultHTTPPort
	}

	// ECDSA P-256 keys: the hierarchy is generated in milliseconds, where
	// RSA-2048 takes a noticeable fraction of a second per key.
	caImpl := ca.New(c.pebbleLog, store, "", "ecdsa", opts.AlternateRoots, chainLength, profiles)
	c.ca = caImpl

	var vaImpl *va.VAImpl
	var wfeImpl wfe.WebFrontEndImpl
	withPebbleEnv(pebbleEnv(opts), func() {
		vaImpl = va.New(c.pebbleLog, httpPort, opts.TLSPort, opts.Strict, c.dns.addr, store)
		wfeImpl = wfe.New(c.pebbleLog, store, vaImpl, caImpl, []string{"pebble.letsencrypt.org"},
			opts.Strict, opts.EABRequired, opts.RetryAfterAuthz, opts.RetryAfterOrder)
	})
	return &wfeImpl, nil
}

// serve serves h over HTTPS on a new 127.0.0.1 listener and returns the
// server and its base URL.
func (c *CA) serve(tlsConf *tls.Config, h http.Handler) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	// HTTP/1.1 only: Shutdown closes idle HTTP/1.1 connections at once,
	// whereas an HTTP/2 connection counts as active until the client
	// reacts to GOAWAY, which made Close take a second or two.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	srv := &http.Server{
		Handler:           h,
		Protocols:         &protocols,
		TLSConfig:         tlsConf.Clone(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          c.pebbleLog,
	}
	c.serving.Add(1)
	go func() {
		defer c.serving.Done()
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.log.Debug("democa: HTTPS server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return srv, "https://" + ln.Addr().String(), nil
}

// DirectoryURL is the URL of the ACME directory.
func (c *CA) DirectoryURL() string { return c.acmeURL + c.dirPath }

// directoryAt serves Pebble's directory at path too (see CA.dirPath).
func directoryAt(path string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path {
			r.URL.Path = wfe.DirectoryPath
		}
		h.ServeHTTP(w, r)
	})
}

// ManagementURL is the base URL (no trailing slash) of Pebble's management
// API: /roots/N, /intermediates/N, /cert-status-by-serial/HEX,
// /set-renewal-info/.
func (c *CA) ManagementURL() string { return c.mgmtURL }

// RootsPEM is the PEM of the self-signed root that signs the HTTPS
// certificate of the ACME and management servers; it is generated by Start.
// It is unrelated to the roots that sign issued certificates (IssuerRootsPEM).
func (c *CA) RootsPEM() []byte { return bytes.Clone(c.rootsPEM) }

// HTTPClient is an HTTP client that trusts RootsPEM. It is shared: do not
// modify it.
func (c *CA) HTTPClient() *http.Client { return c.httpClient }

// DNSAddr is the host:port of the DNS stub, on UDP and TCP.
func (c *CA) DNSAddr() string { return c.dns.addr }

// SetDNS overrides the DNS stub's answers for name, as Options.DNS does;
// an empty addrs makes the name NXDOMAIN.
func (c *CA) SetDNS(name string, addrs ...netip.Addr) { c.dns.set(name, addrs) }

// ResetDNS removes the override for name, which then gets the default
// answers again.
func (c *CA) ResetDNS(name string) { c.dns.reset(name) }

// IssuerRootsPEM returns the PEM of the roots that sign issued certificates:
// the primary root first, then the alternate roots. Each Start creates new
// roots.
func (c *CA) IssuerRootsPEM(ctx context.Context) ([]byte, error) {
	var out []byte
	for i := range c.ca.GetNumberOfRootCerts() {
		u := c.mgmtURL + wfe.RootCertPath + strconv.Itoa(i)
		body, err := c.mgmtDo(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, fmt.Errorf("democa: fetching issuer root %d: %w", i, err)
		}
		out = append(out, body...)
	}
	return out, nil
}

// SetRenewalInfo makes the CA's ARI endpoint suggest the window [start, end]
// for cert, which must have been issued by this CA.
func (c *CA) SetRenewalInfo(ctx context.Context, cert *x509.Certificate, start, end time.Time) error {
	var ari struct {
		SuggestedWindow struct {
			Start time.Time `json:"start"`
			End   time.Time `json:"end"`
		} `json:"suggestedWindow"`
	}
	ari.SuggestedWindow.Start = start.UTC()
	ari.SuggestedWindow.End = end.UTC()
	raw, err := json.Marshal(ari)
	if err != nil {
		return fmt.Errorf("democa: encoding renewal info: %w", err)
	}
	return c.SetRenewalInfoRaw(ctx, cert, string(raw))
}

// SetRenewalInfoRaw makes the CA's ARI endpoint answer for cert with the
// given body verbatim (with a Retry-After of six hours), even if it is not
// valid JSON, to test how a client copes.
func (c *CA) SetRenewalInfoRaw(ctx context.Context, cert *x509.Certificate, ariResponse string) error {
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	body, err := json.Marshal(struct {
		Certificate string
		ARIResponse string
	}{string(certPEM), ariResponse})
	if err != nil {
		return fmt.Errorf("democa: encoding renewal info: %w", err)
	}
	if _, err := c.mgmtDo(ctx, http.MethodPost, c.mgmtURL+"/set-renewal-info/", body); err != nil {
		return fmt.Errorf("democa: setting renewal info for serial %x: %w", cert.SerialNumber, err)
	}
	return nil
}

// mgmtDo makes one request to the management API and returns the body of a
// 200 response.
func (c *CA) mgmtDo(ctx context.Context, method, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading response: %w", method, url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(respBody))
	}
	return respBody, nil
}

// Close stops the HTTPS servers and the DNS stub, waiting up to five seconds
// for requests in flight. It is safe to call more than once.
func (c *CA) Close() error {
	c.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		// The CA's own client (SetRenewalInfo) keeps an HTTP/2 connection
		// to the management server, which Shutdown would otherwise wait
		// for until its timeout.
		c.httpClient.CloseIdleConnections()
		var errs []error
		for _, srv := range []*http.Server{c.acmeSrv, c.mgmtSrv} {
			if err := srv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("democa: shutting down HTTPS server: %w", err))
				srv.Close()
			}
		}
		c.serving.Wait()
		if err := c.dns.shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		c.httpClient.CloseIdleConnections()
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

func (c *CA) closeDNS() {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	_ = c.dns.shutdown(ctx)
}
