// Package importer reads what other ACME clients keep on disk (certbot,
// lego, acme.sh, Traefik) so that tlsalpn can take their certificates and
// accounts over: the next renewal is done by tlsalpn, with the account the
// other tool registered, and nothing is re-issued now.
//
// Each reader returns a Source: every account and certificate found, read
// in full and checked (key against certificate, account key parsed, CA
// known), or an error saying what could not be read. A source is taken
// whole or not at all, so a reader never returns part of one: an
// unreadable file, a certificate whose CA cannot be told, or a name
// TLS-ALPN-01 cannot validate (a wildcard) refuses the whole source, with
// the reason. Nothing here writes: applying a Source (storage, outputs) is
// the caller's, through issuer.ImportAccount and manager.Import.
package importer

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/issuer"
)

// Account is an ACME account another tool registered.
type Account struct {
	CA       string // directory URL
	Email    string // "" when the account has none
	Location string // the account's URL at the CA
	Contact  []string
	Key      crypto.Signer
	From     string // the file it was read from
}

// Certificate is a certificate another tool obtained and renews, with how
// it renews it, mapped to tlsalpn's settings.
type Certificate struct {
	CertName string   // the other tool's name for it (a lineage)
	Names    []string // the names to renew, first the primary one
	CA       string   // directory URL
	Email    string   // the email of the account that renews it ("" for none)
	KeyType  issuer.KeyType
	ChainPEM []byte // leaf first
	KeyPEM   []byte
	Leaf     *x509.Certificate
	// Out is the output directory the other tool's files are in and
	// tlsalpn's will be (certbot's live/NAME); "" when the tool keeps
	// none that tlsalpn can write (the caller chooses one).
	Out string
	// DeployHook, PreHook and PostHook are the other tool's hooks,
	// mapped; DeployHook may also put the files where the other tool
	// installed them (acme.sh's --install-cert paths).
	DeployHook, PreHook, PostHook string
	// Installs are the files DeployHook writes besides Out, whose
	// directories must be writable.
	Installs []string
	From     string   // the file it was read from
	Notes    []string // what the mapping did or could not carry over
}

// Source is everything read from one directory or file.
type Source struct {
	Tool         string // "certbot", "lego", "acme.sh", "traefik"
	Path         string
	Accounts     []Account
	Certificates []Certificate
}

// Options are what the user says that a source does not record.
type Options struct {
	// CA is the directory URL of the CA, for sources that keep only its
	// host name (lego, Traefik), when it is not a CA tlsalpn knows.
	CA string
	// Email chooses among several accounts of one CA (lego, which does
	// not record which account obtained a certificate).
	Email string
}

// RefusedError is a source that cannot be taken over as a whole.
type RefusedError struct {
	Tool, Path string
	Err        error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("not importing %s from %s: %v", e.Tool, e.Path, e.Err)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// errWildcard is the reason a certificate with a wildcard name cannot be
// renewed here.
var errWildcard = errors.New("TLS-ALPN-01 cannot validate wildcard names (RFC 8737 §3), so tlsalpn could not renew it: keep renewing it with the DNS-01 client")

// certificate checks chain and key, and fills what the certificate says:
// its leaf, key type and, when names is empty, its names (the common
// name first).
func certificate(c *Certificate) error {
	pair, err := tls.X509KeyPair(c.ChainPEM, c.KeyPEM)
	if err != nil {
		return fmt.Errorf("%s: certificate and key do not belong together: %w", c.From, err)
	}
	c.Leaf = pair.Leaf
	c.KeyType = issuer.KeyTypeOf(c.Leaf.PublicKey)
	if c.KeyType == "" {
		return fmt.Errorf("%s: the certificate's key (%T) is of no type tlsalpn orders", c.From, c.Leaf.PublicKey)
	}
	if len(c.Names) == 0 {
		c.Names = leafNames(c.Leaf)
	}
	var names []string
	for _, n := range c.Names {
		if strings.HasPrefix(n, "*.") {
			return fmt.Errorf("%s: %s: %w", c.From, n, errWildcard)
		}
		id, err := challenge.ParseIdentifier(n)
		if err != nil {
			return fmt.Errorf("%s: %w", c.From, err)
		}
		if !slices.Contains(names, id.Value) {
			names = append(names, id.Value)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("%s: the certificate names nothing", c.From)
	}
	for _, n := range leafNames(c.Leaf) {
		if strings.HasPrefix(n, "*.") {
			return fmt.Errorf("%s: %s: %w", c.From, n, errWildcard)
		}
	}
	c.Names = names
	for _, n := range names {
		if c.Leaf.VerifyHostname(n) != nil {
			return fmt.Errorf("%s: the certificate is not valid for %s", c.From, n)
		}
	}
	return nil
}

// leafNames are the names a certificate covers, its common name first.
func leafNames(leaf *x509.Certificate) []string {
	var out []string
	if cn := leaf.Subject.CommonName; cn != "" {
		out = append(out, cn)
	}
	for _, n := range leaf.DNSNames {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	for _, ip := range leaf.IPAddresses {
		if s := ip.String(); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// certName makes a certificate name out of another tool's: the
// characters tlsalpn does not allow become '_'.
func certName(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-', c == '_', c == ':':
		default:
			b[i] = '_'
		}
	}
	return strings.TrimLeft(string(b), ".")
}

// directoryForHost returns the directory URL of the CA at host (as it
// appears in an account's URL): opts.CA when its host is host, else the
// known CA there. Tools that record only the host (lego's accounts
// directory, Traefik's registration URI) are refused without one.
func directoryForHost(host string, opts Options) (string, error) {
	if opts.CA != "" {
		dir, err := issuer.ResolveCA(opts.CA)
		if err != nil {
			return "", err
		}
		u, _ := url.Parse(dir)
		if !strings.EqualFold(u.Host, host) {
			return "", fmt.Errorf("the CA directory %s is at %s, but the account is at %s", dir, u.Host, host)
		}
		return dir, nil
	}
	for _, n := range issuer.CANames() {
		dir, _ := issuer.ResolveCA(n)
		if u, err := url.Parse(dir); err == nil && strings.EqualFold(u.Host, host) {
			return dir, nil
		}
	}
	return "", &UnknownCAError{Host: host}
}

// UnknownCAError refuses a source that records only its CA's host when
// that host is no CA tlsalpn knows: the directory URL must be given.
type UnknownCAError struct{ Host string }

func (e *UnknownCAError) Error() string {
	return fmt.Sprintf("the CA at %s is none tlsalpn knows, and the source does not record its directory URL", e.Host)
}

// AccountChoiceError refuses a certificate that one of several accounts at
// its CA obtained, when the source does not record which: the account must
// be named.
type AccountChoiceError struct {
	Accounts int
	Host     string
}

func (e *AccountChoiceError) Error() string {
	return fmt.Sprintf("%d accounts at %s, and lego does not record which one obtained it", e.Accounts, e.Host)
}

// hostOf is the host (and port) of an account URL.
func hostOf(location string) (string, error) {
	u, err := url.Parse(location)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("account URL %q is not a URL", location)
	}
	return u.Host, nil
}

// registration is what certbot (regr.json), lego (account.json) and
// Traefik (acme.json, through lego) keep of an ACME account: its URL and
// the account object the CA returned, of which only the contacts matter
// here.
type registration struct {
	Body struct {
		Contact []string `json:"contact"`
	} `json:"body"`
	URI string `json:"uri"`
}

// emailOf is the first mailto: contact, without the scheme.
func emailOf(contact []string) string {
	for _, c := range contact {
		if e, ok := strings.CutPrefix(c, "mailto:"); ok {
			return e
		}
	}
	return ""
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// joinHooks runs the commands in order, each only if the one before
// succeeded; empty ones are left out.
func joinHooks(cmds ...string) string {
	var out []string
	for _, c := range cmds {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, "{ "+c+"\n}")
		}
	}
	if len(out) == 1 {
		return strings.TrimSuffix(strings.TrimPrefix(out[0], "{ "), "\n}")
	}
	return strings.Join(out, " && ")
}
