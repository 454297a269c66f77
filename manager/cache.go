package manager

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// Cache holds the certificates a TLS server presents, in memory, and
// answers tls.Config.GetCertificate. Renewal swaps a certificate in with an
// atomic store per name: handshakes in progress keep the certificate they
// started with, the next ones get the new one, and nothing restarts.
//
// A handshake's lookup takes no lock (sync.Map's reads are atomic loads),
// and a Put costs its own names only, not the size of the cache: a copied
// map per Put made loading 10,000 certificates take seconds, quadratically.
type Cache struct {
	certs sync.Map // cacheKey(name) -> *tls.Certificate
}

// NewCache returns an empty cache.
func NewCache() *Cache { return &Cache{} }

// Put makes cert the certificate for each of names (exact names, or
// "*.example.com" wildcards).
func (c *Cache) Put(names []string, cert *tls.Certificate) {
	for _, n := range names {
		c.certs.Store(cacheKey(n), cert)
	}
}

// lookup returns the certificate stored under key, or nil.
func (c *Cache) lookup(key string) *tls.Certificate {
	if v, ok := c.certs.Load(key); ok {
		return v.(*tls.Certificate)
	}
	return nil
}

// ErrNoCertificate is returned for a server name no certificate covers.
var ErrNoCertificate = errors.New("no certificate for this server name")

// GetCertificate returns the certificate for the handshake's server name:
// an exact name first, then a wildcard one label up. It has the signature
// of tls.Config.GetCertificate.
func (c *Cache) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := challenge.NormalizeServerName(hello.ServerName)
	if cert := c.lookup(name); cert != nil {
		return cert, nil
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if cert := c.lookup("*" + name[i:]); cert != nil {
			return cert, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrNoCertificate, hello.ServerName)
}

// Get returns the certificate stored under exactly name.
func (c *Cache) Get(name string) *tls.Certificate {
	return c.lookup(cacheKey(name))
}

// cacheKey is the key a certificate name is stored and found under: the
// name as a handshake's server name normalises (challenge.NormalizeServerName,
// which GetCertificate applies to the SNI), keeping a wildcard's "*.", so
// that "App.Example." and the SNI "app.example" meet. A name that is no
// server name (an IP address, which SNI never carries) stays as it is.
func cacheKey(name string) string {
	rest, wild := strings.CutPrefix(name, "*.")
	n := challenge.NormalizeServerName(rest)
	switch {
	case n == "":
		return name
	case wild:
		return "*." + n
	}
	return n
}
