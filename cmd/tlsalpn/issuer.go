package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/tlsalpn/tlsalpn/check"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage"
)

// newIssuers is the issuer pool of a command: standalone listeners
// answer through r, each challenge is preflighted, and a bad CA root is a
// --ca-root usage error.
func newIssuers(store storage.Storage, logger *slog.Logger, r *responder.Responder) *manager.Pool {
	return &manager.Pool{
		Store: store, Logger: logger, HTTPClient: httpClient,
		OnDemand: func(listen string, bind func(ctx context.Context, addr string) (net.Listener, error)) issuer.Publisher {
			return responder.NewOnDemand(r, listen, bind)
		},
		Preflight: func(listen string, port int) issuer.Preflighter {
			return newPreflight(listen, port, logger)
		},
	}
}

// stepPrinter returns an OnStep callback that prints each step for people.
func stepPrinter(e *env) func(issuer.Step) {
	var mu sync.Mutex
	return func(s issuer.Step) {
		mu.Lock()
		defer mu.Unlock()
		if s.Identifier != "" {
			e.stdout.Write([]byte("  [" + string(s.Kind) + "] " + s.Identifier + ": " + s.Detail + "\n"))
		} else {
			e.stdout.Write([]byte("  [" + string(s.Kind) + "] " + s.Detail + "\n"))
		}
	}
}

// envDNSServer names the environment variable that gives the preflight a
// DNS server of its own (HOST:PORT): a lab CA's, whose names the system's
// resolver does not know, and the test suite's, whose lookups must stay
// on this machine. Unset means the system's resolver.
const envDNSServer = "TLSALPN_DNS_SERVER"

// newPreflight is the preflight of a responder on listen that the CA
// reaches on caPort, resolving as envDNSServer says.
func newPreflight(listen string, caPort int, logger *slog.Logger) *check.Preflight {
	return check.NewPreflight(listen, caPort, check.ResolverAt(os.Getenv(envDNSServer)), logger)
}
