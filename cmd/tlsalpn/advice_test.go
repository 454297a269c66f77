package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/tlsalpn/tlsalpn/issuer"
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
		{"other", errors.New("disk full"), "disk full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := oneLine(tt.err); got != tt.want {
				t.Errorf("oneLine = %q\nwant        %q", got, tt.want)
			}
		})
	}
}
