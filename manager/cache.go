package manager

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// Cache holds the certificates a TLS server presents, in memory, and
// answers tls.Config.GetCertificate. Renewal swaps a certificate in with one
// atomic store: handshakes in progress keep the certificate they started
// with, the next ones get the new one, and nothing restarts.
type Cache struct {
	mu    sync.Mutex // serialises writers
	table atomic.Pointer[map[string]*tls.Certificate]
}

// NewCache returns an empty cache.
func NewCache() *Cache {
	c := &Cache{}
	m := map[string]*tls.Certificate{}
	c.table.Store(&m)
	return c
}

// Put makes cert the certificate for each of names (exact names, or
// "*.example.com" wildcards).
func (c *Cache) Put(names []string, cert *tls.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.table.Load()
	next := make(map[string]*tls.Certificate, len(old)+len(names))
	for k, v := range old {
		next[k] = v
	}
	for _, n := range names {
		next[cacheKey(n)] = cert
	}
	c.table.Store(&next)
}

// ErrNoCertificate is returned for a server name no certificate covers.
var ErrNoCertificate = errors.New("no certificate for this server name")

// GetCertificate returns the certificate for the handshake's server name:
// an exact name first, then a wildcard one label up. It has the signature
// of tls.Config.GetCertificate.
func (c *Cache) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := challenge.NormalizeServerName(hello.ServerName)
	t := *c.table.Load()
	if cert := t[name]; cert != nil {
		return cert, nil
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		if cert := t["*"+name[i:]]; cert != nil {
			return cert, nil
		}
	}
	return nil, fmt.Errorf("%w: %q", ErrNoCertificate, hello.ServerName)
}

// Get returns the certificate stored under exactly name.
func (c *Cache) Get(name string) *tls.Certificate {
	return (*c.table.Load())[cacheKey(name)]
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
