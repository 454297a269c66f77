package frontdoor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/tlsalpn/tlsalpn/config"
	"github.com/tlsalpn/tlsalpn/responder"
)

// certDirScan is how often the challenge directory is read whole, to
// report a bad certificate when it is written. Handshakes do not wait for
// it: each reads its own name's files.
const certDirScan = 2 * time.Second

// keepClient is what cfg says about another ACME client kept beside
// tlsalpn: where to forward its validations, where it writes its
// challenge certificates. nil when cfg says nothing of it.
func keepClient(cfg *config.Config) (*responder.KeepClient, error) {
	type fwd struct{ pattern, addr string }
	var routes []fwd
	for i, r := range cfg.Routes {
		if r.ACMEForward == "" {
			continue
		}
		if err := checkForward(r.ACMEForward); err != nil {
			return nil, fmt.Errorf("routes[%d].acme_forward: %w", i, err)
		}
		for _, n := range r.Names {
			routes = append(routes, fwd{strings.ToLower(strings.TrimSuffix(n, ".")), r.ACMEForward})
		}
	}
	if cfg.ACMEForward != "" {
		if err := checkForward(cfg.ACMEForward); err != nil {
			return nil, fmt.Errorf("acme_forward: %w", err)
		}
	}
	if len(routes) == 0 && cfg.ACMEForward == "" && cfg.ACMECertDir == "" {
		return nil, nil
	}
	k := &responder.KeepClient{CertDir: cfg.ACMECertDir}
	if len(routes) > 0 || cfg.ACMEForward != "" {
		all := cfg.ACMEForward
		// Routes match as the proxy matches them: exact name, then a
		// one-label wildcard, then "*"; then the top-level address.
		k.Forward = func(name string) string {
			var wild, star string
			for _, f := range routes {
				switch {
				case f.pattern == name:
					return f.addr
				case f.pattern == "*":
					star = f.addr
				case strings.HasPrefix(f.pattern, "*.") && wild == "":
					if i := strings.IndexByte(name, '.'); i > 0 && name[i+1:] == f.pattern[2:] {
						wild = f.addr
					}
				}
			}
			switch {
			case wild != "":
				return wild
			case star != "":
				return star
			}
			return all
		}
	}
	return k, nil
}

// CheckKeepClient reports what New would refuse in cfg's acme_forward
// settings, for serve --check-config.
func CheckKeepClient(cfg *config.Config) error {
	_, err := keepClient(cfg)
	return err
}

// checkForward refuses a forward address that is not HOST:PORT.
func checkForward(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("%q: want HOST:PORT, such as 127.0.0.1:5001, where the other ACME client answers tls-alpn-01", addr)
	}
	return nil
}

// keepClientSteerWhy says why steering cannot run while another client's
// validations may arrive, or "". The other client decides alone when the
// CA connects (lego and acme.sh bind their port and tell the CA at once;
// dehydrated writes its files and tells the CA): no signal would reach
// tlsalpn in time to take connections back from the backend's socket,
// and a poll would lose the race with the CA's first connection. So the
// front door relays every connection while forwarding or a challenge
// directory is configured. The ualpn socket needs no such rule: its
// "auth" returns only once steering has turned to relay.
func keepClientSteerWhy(cfg *config.Config) string {
	if cfg.ACMEForward != "" {
		return "acme_forward is set: another ACME client's validation can arrive at any moment, and only the front door can relay it"
	}
	for _, r := range cfg.Routes {
		if r.ACMEForward != "" {
			return "a route has acme_forward: another ACME client's validation can arrive at any moment, and only the front door can relay it"
		}
	}
	if cfg.ACMECertDir != "" {
		return "acme_cert_dir is set: another ACME client's validation can arrive at any moment, and only the front door can answer it"
	}
	return ""
}

// serveKeepClient scans the challenge directory and serves the ualpn
// socket, if configured, until ctx ends. The socket is bound before it
// returns; a socket file left by a dead process is replaced, one with a
// live listener is not.
func (rt *runtime) serveKeepClient(ctx context.Context, cfg *config.Config) error {
	if cfg.ACMECertDir != "" {
		if fi, err := os.Stat(cfg.ACMECertDir); err != nil || !fi.IsDir() {
			rt.logger.Warn("acme_cert_dir does not exist yet; it is read when it does", "dir", cfg.ACMECertDir)
		}
		go rt.r.ScanEvery(ctx, certDirScan)
	}
	if cfg.UALPNSocket == "" {
		return nil
	}
	ln, err := listenUnix(cfg.UALPNSocket)
	if err != nil {
		return err
	}
	rt.logger.Info("ualpn socket: listening; uacme's ualpn.sh and challenge publications from the command line talk to it", "socket", cfg.UALPNSocket)
	go func() {
		if err := rt.r.ServeUALPN(ctx, ln); err != nil {
			rt.logger.Error("ualpn socket stopped", "socket", cfg.UALPNSocket, "error", err)
		}
		os.Remove(cfg.UALPNSocket)
	}()
	return nil
}

// listenUnix binds path, replacing a stale socket file, with mode 0600:
// whoever may write to the socket may publish challenges.
func listenUnix(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("ualpn socket %s: another process (ualpn, or another tlsalpn serve) listens on it", path)
	} else if errors.Is(err, syscall.ECONNREFUSED) {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("ualpn socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("ualpn socket %s: %w", path, err)
	}
	return ln, nil
}
