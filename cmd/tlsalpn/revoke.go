package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/tlsalpn/tlsalpn/frontdoor"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/responder"
)

const revokeUsage = `
Usage: tlsalpn revoke NAME [--reason CODE] [--storage DIR]

Revokes the stored certificate named NAME (its certificate name, as
"tlsalpn list" shows it) or, when NAME is no certificate name, the one
certificate that covers NAME, signing with the account
that obtained it, and marks it so that "tlsalpn renew" leaves it alone. The
files in its output directory are not removed: replace them first
("tlsalpn issue" again), then revoke, or your server keeps serving a revoked
certificate. A certificate that a running "tlsalpn serve" keeps is replaced
by that serve within seconds, and deployed.

Reasons (RFC 5280 §5.3.1), by name (any case) or number: unspecified (0),
keyCompromise (1), affiliationChanged (3), superseded (4),
cessationOfOperation (5). Let's Encrypt accepts no others.

Examples:
  tlsalpn revoke example.com --reason superseded      (after issuing its replacement)
  tlsalpn revoke example.com --reason keyCompromise   (the key leaked)
  tlsalpn revoke 192.0.2.10 --storage /var/lib/tlsalpn

Exit codes: 0 revoked, 1 the CA refused, 2 usage error (no such certificate).
`

// revocationReasons are the RFC 5280 reason codes a subscriber may give
// (the ones Let's Encrypt accepts), by the names RFC 5280 uses.
var revocationReasons = []struct {
	name string
	code int
}{
	{"unspecified", 0},
	{"keyCompromise", 1},
	{"affiliationChanged", 3},
	{"superseded", 4},
	{"cessationOfOperation", 5},
}

// parseReason takes a reason's RFC 5280 name, in any case, or its number.
func parseReason(s string) (int, error) {
	t := strings.TrimSpace(s)
	n, numErr := strconv.Atoi(t)
	for _, r := range revocationReasons {
		if strings.EqualFold(t, r.name) || (numErr == nil && n == r.code) {
			return r.code, nil
		}
	}
	var want []string
	for _, r := range revocationReasons {
		want = append(want, fmt.Sprintf("%s (%d)", r.name, r.code))
	}
	return 0, usagef("--reason %s: use one of %s", s, strings.Join(want, ", "))
}

func runRevoke(ctx context.Context, e *env, args []string) error {
	var cf caFlags
	var reasonText string
	fs := newFlagSet(e, "revoke", revokeUsage)
	cf.register(fs, false)
	fs.StringVar(&reasonText, "reason", "unspecified", "RFC 5280 revocation `REASON`: unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation (or 0, 1, 3, 4, 5)")
	if err := fs.parse(args, 1); err != nil {
		return err
	}
	if len(fs.pos) != 1 {
		return usagef("give the NAME of the certificate to revoke (see tlsalpn revoke --help)")
	}
	reason, err := parseReason(reasonText)
	if err != nil {
		return err
	}
	name := fs.pos[0]
	logger := cf.logger(e)
	st, err := openStorage(ctx, e, &cf.storageFlags, mustExist, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	store := st.store
	is := newIssuers(store, logger, responder.New())
	m := manager.New(store, is.Get, logger)
	found, err := m.Find(ctx, name)
	if err != nil {
		return err
	}
	if s, err := m.Load(ctx, name); err == nil {
		// A certificate name is exact, whatever else covers the name.
		found = []*manager.Stored{s}
	}
	switch len(found) {
	case 0:
		return usagef("no stored certificate is named or covers %q (see tlsalpn list)", name)
	case 1:
	default:
		var which []string
		for _, s := range found {
			which = append(which, fmt.Sprintf("%s (%s from %s)", s.Name(), strings.Join(s.Names, ", "), s.CA))
		}
		return usagef("%d stored certificates cover %q: %s; give the certificate name of the one to revoke",
			len(found), name, strings.Join(which, "; "))
	}
	s := found[0]
	if !s.Revoked.IsZero() {
		return fmt.Errorf("the certificate for %s (serial %s) was already revoked on %s", name, s.Serial, s.Revoked.Format("2006-01-02"))
	}
	if err := m.Revoke(ctx, s, reason); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "revoked %s: serial %s from %s\n", strings.Join(s.Names, ", "), s.Serial, s.CA)
	if serves, err := frontdoor.LiveServes(ctx, store); err == nil {
		for _, l := range serves {
			if l.Manages(s.Name()) {
				fmt.Fprintf(e.stdout, "%s keeps %s: it obtains and deploys a new certificate within seconds\n", serveName(l), s.Name())
			}
		}
	}
	return nil
}
