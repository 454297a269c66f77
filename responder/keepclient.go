package responder

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// ErrForwardOnly is the reason a validation handshake for a forwarded
// name is refused where it cannot be relayed: in GetConfigForClient, the
// handshake has begun here and its bytes are no longer whole.
var ErrForwardOnly = errors.New("tls-alpn-01 challenges for this server name are answered by the ACME client it is forwarded to; only a front door that peeks the ClientHello can relay it")

// ErrAlreadyPending is returned by Offer when a challenge is pending for
// the name already: two challenges for one name cannot be told apart
// (see Responder), and Offer does not wait for its turn.
var ErrAlreadyPending = errors.New("a tls-alpn-01 challenge is already pending for this server name")

// KeepClient is how the responder finds the challenges of another ACME
// client that keeps running beside tlsalpn (lego, acme.sh, dehydrated), so
// that it too validates through the front door. Its values are consulted
// only for a validation handshake (exactly acme-tls/1) for a name with no
// challenge of the responder's own pending.
type KeepClient struct {
	// CertDir is a directory where the other client writes challenge
	// certificates in dehydrated's ALPNCERTDIR layout, NAME.crt.pem and
	// NAME.key.pem. A certificate is served only if it has the shape the
	// CA demands (challenge.VerifyStructure) for NAME; it is read when a
	// handshake asks for NAME, so it is served from the moment it is
	// written and never after it is removed. "" for none.
	CertDir string
	// Forward returns the address that validation handshakes for a name
	// are relayed to, byte for byte (where lego --tls or acme.sh --alpn
	// listens), or "" for none. nil for none.
	Forward func(serverName string) string

	dir *certDir
}

// SetKeepClient installs k (nil removes it); handshakes looked up from
// now on use it. A reload calls it again.
func (r *Responder) SetKeepClient(k *KeepClient) {
	if k != nil {
		k = &KeepClient{CertDir: k.CertDir, Forward: k.Forward}
		if k.CertDir != "" {
			k.dir = &certDir{path: k.CertDir, cache: map[string]*dirEntry{}}
			if old := r.keep.Load(); old != nil && old.dir != nil && old.dir.path == k.CertDir {
				k.dir = old.dir // keep what was read and logged
			}
		}
	}
	r.keep.Store(k)
}

// lookup finds name's challenge in the directory, else its forward.
func (k *KeepClient) lookup(name string, logger *slog.Logger) *Challenge {
	if k.dir != nil {
		if cert := k.dir.get(name, logger); cert != nil {
			return &Challenge{name: name, cert: cert, seen: make(chan struct{}, 1)}
		}
	}
	if k.Forward != nil {
		if addr := k.Forward(name); addr != "" {
			return &Challenge{name: name, forward: addr}
		}
	}
	return nil
}

// Scan reads every certificate in the challenge directory now, logging
// each bad one with the reason, and forgets those whose files are gone. A
// handshake does not need it (it reads its own name's files); serve calls
// it every few seconds so that a bad file is reported when it is written,
// not only when the CA is refused.
func (r *Responder) Scan() {
	k := r.keep.Load()
	if k == nil || k.dir == nil {
		return
	}
	k.dir.scan(r.logger)
}

// certDir reads challenge certificates from a directory, caching each by
// the files' size and modification time.
type certDir struct {
	path string

	mu      sync.Mutex
	cache   map[string]*dirEntry // by server name
	scanErr string               // the last scan's error, logged once
}

type dirEntry struct {
	stamp string // sizes and mtimes of the two files
	cert  *tls.Certificate
	err   error
}

const crtSuffix, keySuffix = ".crt.pem", ".key.pem"

func stamp(fi ...os.FileInfo) string {
	var b strings.Builder
	for _, f := range fi {
		fmt.Fprintf(&b, "%d/%d ", f.Size(), f.ModTime().UnixNano())
	}
	return b.String()
}

// get returns name's certificate if its files are there and valid; a bad
// one is logged once per version of its files.
func (d *certDir) get(name string, logger *slog.Logger) *tls.Certificate {
	if strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return nil // never a path outside the directory
	}
	crt, key := filepath.Join(d.path, name+crtSuffix), filepath.Join(d.path, name+keySuffix)
	cfi, err1 := os.Stat(crt)
	kfi, err2 := os.Stat(key)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err1 != nil || err2 != nil {
		delete(d.cache, name)
		return nil
	}
	st := stamp(cfi, kfi)
	if e := d.cache[name]; e != nil && e.stamp == st {
		return e.cert
	}
	e := &dirEntry{stamp: st}
	e.cert, e.err = loadChallengeCert(name, crt, key)
	d.cache[name] = e
	if e.err != nil {
		logger.Error("challenge directory: certificate refused; it is not served", "server_name", name, "file", crt, "error", e.err)
	} else {
		logger.Info("challenge directory: certificate ready", "server_name", name, "file", crt)
	}
	return e.cert
}

func (d *certDir) scan(logger *slog.Logger) {
	ents, err := os.ReadDir(d.path)
	d.mu.Lock()
	report := err != nil && err.Error() != d.scanErr
	d.scanErr = ""
	if err != nil {
		d.scanErr = err.Error()
	}
	d.mu.Unlock()
	if err != nil {
		// Once per error, not every scan: dehydrated creates its
		// ALPNCERTDIR only when it first needs it.
		if report {
			logger.Warn("challenge directory unreadable; its certificates are not served until it can be read", "dir", d.path, "error", err)
		}
		return
	}
	seen := map[string]bool{}
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), crtSuffix); ok {
			seen[name] = true
			d.get(name, logger)
		}
	}
	d.mu.Lock()
	for name := range d.cache {
		if !seen[name] {
			delete(d.cache, name)
		}
	}
	d.mu.Unlock()
}

// loadChallengeCert reads a key pair and checks it is a validation
// certificate for name.
func loadChallengeCert(name, crt, key string) (*tls.Certificate, error) {
	id, err := challenge.ParseIdentifier(name)
	if err != nil {
		return nil, fmt.Errorf("file name %q is not an identifier: %w", name, err)
	}
	cert, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", crt, err)
	}
	if err := challenge.VerifyStructure(cert.Leaf, id); err != nil {
		return nil, fmt.Errorf("%s is not a tls-alpn-01 certificate for %s the CA would accept: %w", crt, name, err)
	}
	return &cert, nil
}

// Offer publishes cert for serverName at once, for a challenge another
// client drives: unlike Publish it does not wait for a turn, but fails
// with ErrAlreadyPending. The pending hook runs as for Publish, so that
// steering turns to relay before Offer returns. withdraw unpublishes it,
// if it is still the one pending, and may be called more than once.
func (r *Responder) Offer(ctx context.Context, serverName string, cert *tls.Certificate) (withdraw func(), err error) {
	name := challenge.NormalizeServerName(serverName)
	if name == "" {
		return nil, fmt.Errorf("publishing challenge for %q: not a valid server name", serverName)
	}
	if err := r.holds.acquire(ctx); err != nil {
		return nil, fmt.Errorf("publishing challenge for %q: %w", serverName, err)
	}
	e := &Challenge{name: name, cert: cert, seen: make(chan struct{}, 1), done: make(chan struct{})}
	r.mu.Lock()
	if r.pending[name] != nil {
		r.mu.Unlock()
		r.holds.release(ctx, r.logger)
		return nil, fmt.Errorf("publishing challenge for %q: %w", serverName, ErrAlreadyPending)
	}
	r.pending[name] = e
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			mine := r.pending[name] == e
			if mine {
				delete(r.pending, name)
				close(e.done)
			}
			r.mu.Unlock()
			if mine {
				r.holds.release(context.WithoutCancel(ctx), r.logger)
			}
		})
	}, nil
}

// ScanEvery runs Scan every interval until ctx ends.
func (r *Responder) ScanEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		r.Scan()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
