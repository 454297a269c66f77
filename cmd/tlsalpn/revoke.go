package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/responder"
)

const revokeUsage = `
Usage: tlsalpn revoke NAME [--reason CODE] [--storage DIR]

Revokes the stored certificate that covers NAME, signing with the account
that obtained it, and marks it so that "tlsalpn renew" leaves it alone. The
files in its output directory are not removed: replace them first
("tlsalpn issue" again), then revoke, or your server keeps serving a revoked
certificate.

Reasons (RFC 5280): 0 unspecified, 1 keyCompromise, 4 superseded,
5 cessationOfOperation.
Exit codes: 0 revoked, 1 the CA refused, 2 usage error (no such certificate).
`

func runRevoke(ctx context.Context, e *env, args []string) error {
	var cf caFlags
	var reason int
	fs := newFlagSet(e, "revoke", revokeUsage)
	cf.register(fs, false)
	fs.IntVar(&reason, "reason", 0, "RFC 5280 revocation reason `CODE`: 0, 1, 4 or 5")
	if err := fs.parse(args, 1); err != nil {
		return err
	}
	if len(fs.pos) != 1 {
		return usagef("give the NAME of the certificate to revoke (see tlsalpn revoke --help)")
	}
	switch reason {
	case 0, 1, 4, 5:
	default:
		return usagef("--reason %d: use 0 (unspecified), 1 (keyCompromise), 4 (superseded) or 5 (cessationOfOperation)", reason)
	}
	name := fs.pos[0]
	store, err := openStorage(e, cf.storage, mustExist)
	if err != nil {
		return err
	}
	logger := cf.logger(e)
	is := newIssuers(store, logger, responder.New())
	m := manager.New(store, is.get, logger)
	found, err := m.Find(ctx, name)
	if err != nil {
		return err
	}
	switch len(found) {
	case 0:
		return usagef("no stored certificate covers %q (see tlsalpn list)", name)
	case 1:
	default:
		var cas []string
		for _, s := range found {
			cas = append(cas, s.CA)
		}
		return usagef("%d stored certificates cover %q (from %s): revoking all of them is not what you want; remove the others first", len(found), name, strings.Join(cas, ", "))
	}
	s := found[0]
	if !s.Revoked.IsZero() {
		return fmt.Errorf("the certificate for %s (serial %s) was already revoked on %s", name, s.Serial, s.Revoked.Format("2006-01-02"))
	}
	if err := m.Revoke(ctx, s, reason); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "revoked %s: serial %s from %s\n", strings.Join(s.Names, ", "), s.Serial, s.CA)
	return nil
}
