package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/responder"
)

// TestAdvice: the libraries' typed errors reach people with this command's
// flags named, wherever they are wrapped; other errors get no advice.
func TestAdvice(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"eab", fmt.Errorf("registering: https://ca/dir %w", issuer.ErrEABRequired),
			"registering: https://ca/dir requires External Account Binding: pass --eab-kid and --eab-hmac-key (ZeroSSL: from the dashboard's Developer page; Google: gcloud publicca external-account-keys create)"},
		{"tos", fmt.Errorf("https://ca/dir %w (https://ca/tos)", issuer.ErrTOSRequired),
			"https://ca/dir requires agreeing to its terms of service (https://ca/tos): read them, then pass --agree-tos"},
		{"profile", func() error { _, err := issuer.ChooseProfile(nil, "shortlived"); return err }(),
			`profile "shortlived" requested but the CA offers no profiles: drop --profile`},
		{"directory", fmt.Errorf("%w at https://x/dir: EOF", issuer.ErrDirectory),
			"cannot reach the CA at https://x/dir: EOF (check --ca, --ca-root and the network)"},
		{"preflight", &issuer.PreflightError{Identifier: "example.com", Err: errors.New("refused")},
			"preflight for example.com failed, so the CA was not asked to validate (no failed attempt counted against its limits): refused (--no-preflight skips this check)"},
		{"damaged", &manager.DamagedError{Name: "example.com", Key: "certificates/example.com/record.json", Err: errors.New("bad JSON")},
			"stored certificate example.com is damaged (certificates/example.com/record.json): bad JSON; repair it, or remove it with tlsalpn delete example.com"},
		{"port in use", fmt.Errorf("example.com: %w", &responder.BindError{Addr: ":443", Err: &net.OpError{Op: "listen", Err: syscall.EADDRINUSE}}),
			"example.com: binding :443 to answer the CA: listen: address already in use (another server owns this port: run `tlsalpn serve` in front of it in proxy mode, or stop it while issuing)"},
		{"port needs root", &responder.BindError{Addr: ":443", Err: &net.OpError{Op: "listen", Err: syscall.EACCES}},
			"binding :443 to answer the CA: listen: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE: `setcap cap_net_bind_service=+ep $(command -v tlsalpn)`)"},
		{"port held by serve", &heldByServeError{port: "443", serve: &serveLease{}, name: "a.example", err: &responder.BindError{Addr: ":443", Err: syscall.EADDRINUSE}},
			"port 443 is held by "},
		{"other", errors.New("disk full"), "disk full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := oneLine(tt.err)
			if tt.name == "port held by serve" {
				// Its own words, without the generic advice.
				if !strings.HasPrefix(got, tt.want) || strings.Contains(got, "another server owns") {
					t.Errorf("oneLine = %q; want it to start %q and give no generic advice", got, tt.want)
				}
				return
			}
			if got != tt.want {
				t.Errorf("oneLine = %q\nwant        %q", got, tt.want)
			}
		})
	}
}

// TestDecisionText: a revoked certificate's reason says what to do, in this
// command's words; other reasons are the manager's.
func TestDecisionText(t *testing.T) {
	tests := []struct {
		d    manager.Decision
		want string
	}{
		{manager.Decision{Reason: "revoked", Revoked: true}, "revoked; issue a new certificate with tlsalpn issue"},
		{manager.Decision{Reason: "due when a third of its lifetime remains"}, "due when a third of its lifetime remains"},
	}
	for _, tt := range tests {
		if got := decisionText(tt.d); got != tt.want {
			t.Errorf("decisionText(%+v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// TestAdviseErrors: an error a library logs carries the same advice as one
// the command prints.
func TestAdviseErrors(t *testing.T) {
	var b strings.Builder
	logger := slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{ReplaceAttr: adviseErrors}))
	logger.Warn("obtaining", "err", &issuer.PreflightError{Identifier: "example.com", Err: errors.New("refused")}, "other", errors.New("plain"))
	if got := b.String(); !strings.Contains(got, "refused (--no-preflight skips this check)") || !strings.Contains(got, "other=plain") {
		t.Errorf("log = %q; want the preflight advice, and the plain error as it is", got)
	}
}

// TestServeName: a serve is named by its pid, and by its host too when
// that is not this one (the lease only carries the facts).
func TestServeName(t *testing.T) {
	host, _ := os.Hostname()
	for _, tc := range []struct {
		lease serveLease
		want  string
	}{
		{serveLease{Host: host, PID: 42}, "tlsalpn serve (pid 42)"},
		{serveLease{Host: host + "-other", PID: 7}, "tlsalpn serve (pid 7 on " + host + "-other)"},
	} {
		if got := serveName(&tc.lease); got != tc.want {
			t.Errorf("serveName(%+v) = %q, want %q", tc.lease, got, tc.want)
		}
	}
}
