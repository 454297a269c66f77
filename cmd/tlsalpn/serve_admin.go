package main

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/tlsalpn/tlsalpn/config"
	"github.com/tlsalpn/tlsalpn/frontdoor"
	"github.com/tlsalpn/tlsalpn/metrics"
)

// adminFlags applies --admin and --admin-token-file to cfg (they override
// the file's admin and admin_token_file) and refuses an admin address
// that is not loopback without a token: nothing has been done yet.
func adminFlags(f *serveFlags, cfg *config.Config) error {
	if f.admin != "" {
		cfg.Admin = f.admin
	}
	if f.adminToken != "" {
		cfg.AdminTokenFile = f.adminToken
	}
	if cfg.Admin == "" {
		if cfg.AdminTokenFile != "" {
			return usagef("an admin token file (--admin-token-file or admin_token_file) but no admin address: add --admin 127.0.0.1:9443 or admin: in the config, or leave the token out")
		}
		return nil
	}
	if err := metrics.CheckAddr(cfg.Admin, cfg.AdminTokenFile != ""); err != nil {
		if errors.Is(err, metrics.ErrNotLoopback) {
			return usagef("--admin %s: not a loopback address: the admin API can force renewals, so anything but 127.0.0.1, [::1] or localhost needs --admin-token-file FILE (admin_token_file in the config), a file holding the bearer token clients send", cfg.Admin)
		}
		return usagef("--admin: %v", err)
	}
	return nil
}

// adminListener reads the admin token and binds the admin API's
// listener, when cfg asks for one, and sets fc up to serve it with
// metrics. A token file that cannot be read is a usage error (nothing
// was started); an address that cannot be bound, a failure.
func adminListener(ctx context.Context, e *env, cfg *config.Config, fc *frontdoor.Config) (net.Listener, error) {
	if cfg.Admin == "" {
		return nil, nil
	}
	var token string
	if cfg.AdminTokenFile != "" {
		var err error
		if token, err = metrics.ReadToken(cfg.AdminTokenFile); err != nil {
			return nil, usagef("admin_token_file: %v", err)
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Admin)
	if err != nil {
		return nil, fmt.Errorf("listening for the admin API on %s: %w", cfg.Admin, err)
	}
	fc.Metrics, fc.Admin, fc.AdminToken = metrics.New(), ln, token
	auth := "loopback, no token"
	if token != "" {
		auth = "bearer token required"
	}
	fmt.Fprintf(e.stdout, "tlsalpn serve: admin API on http://%s (/metrics, /healthz, /readyz, /status, POST /renew; %s)\n", ln.Addr(), auth)
	return ln, nil
}
