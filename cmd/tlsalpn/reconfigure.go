package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
)

const reconfigureUsage = `
Usage: tlsalpn reconfigure CERT-NAME [--out DIR] [--deploy-hook CMD] [--key-type T]
                           [--profile P] [--listen ADDR] [--email ADDR] [--storage DIR]

Changes what a stored certificate remembers for its renewals, without
ordering anything: where it is deployed, the hook, the key type and profile
of the next renewal, the validation listener, the account's email. When the
output directory changes, the current certificate is deployed there at once
(and the hook run). Names and CA cannot change this way: issue again with
the new names and the same --out (the certificate is replaced), or with
--cert-name for a second one.

Examples:
  tlsalpn reconfigure example.com --deploy-hook 'systemctl reload nginx'
  tlsalpn reconfigure example.com --out /etc/nginx/tls/example.com
  tlsalpn reconfigure example.com --deploy-hook ''       (no hook any more)

Exit codes: 0 changed (or nothing to change), 1 failed (a deployment to the
new output failed: the old settings stay), 2 usage error.
`

func runReconfigure(ctx context.Context, e *env, args []string) error {
	var cf caFlags
	var out, hook, keyType, profile, listen, email string
	var hookTimeout time.Duration
	fs := newFlagSet(e, "reconfigure", reconfigureUsage)
	cf.register(fs, false)
	fs.StringVar(&out, "out", "", "new output `DIR`")
	fs.StringVar(&hook, "deploy-hook", "", "new deploy hook `COMMAND` ('' for none)")
	fs.DurationVar(&hookTimeout, "hook-timeout", 0, "new bound on the deploy hook's run `DURATION`")
	fs.StringVar(&keyType, "key-type", "", "key `TYPE` of the next renewal: ec256, ec384, rsa2048, rsa3072 or rsa4096")
	fs.StringVar(&profile, "profile", "", "ACME `PROFILE` of the next renewal")
	fs.StringVar(&listen, "listen", "", "`ADDR` to answer the CA on while validating renewals")
	fs.StringVar(&email, "email", "", "account `EMAIL` for the next renewal")
	if err := fs.parse(args, 1); err != nil {
		return err
	}
	if len(fs.pos) != 1 {
		return usagef("give the certificate name to reconfigure (see tlsalpn list)")
	}
	name := fs.pos[0]
	set := fs.setFlags()
	delete(set, "storage")
	delete(set, "v")
	if len(set) == 0 {
		return usagef("nothing to change: give at least one of --out, --deploy-hook, --hook-timeout, --key-type, --profile, --listen, --email")
	}
	var kt issuer.KeyType
	if set["key-type"] {
		var err error
		if kt, err = issuer.ParseKeyType(keyType); err != nil {
			return usagef("--key-type: %v", err)
		}
	}
	if set["out"] {
		if out == "" {
			return usagef("--out: give a directory")
		}
		var err error
		if out, err = filepath.Abs(out); err != nil {
			return usagef("--out: %v", err)
		}
	}
	m, err := managerForChange(ctx, e, &cf, name, "change")
	if err != nil {
		return err
	}
	rec, changed, err := m.Reconfigure(ctx, name, func(s *manager.Spec) {
		if set["out"] {
			s.Out = out
		}
		if set["deploy-hook"] {
			s.DeployHook = hook
		}
		if set["hook-timeout"] {
			s.HookTimeout = hookTimeout
		}
		if set["key-type"] {
			s.KeyType = kt
		}
		if set["profile"] {
			s.Profile = profile
		}
		if set["listen"] {
			s.Listen = listen
		}
		if set["email"] {
			s.Email = email
		}
	})
	if err != nil {
		return err
	}
	if len(changed) == 0 {
		fmt.Fprintf(e.stdout, "certificate %s: nothing changed\n", name)
		return nil
	}
	fmt.Fprintf(e.stdout, "certificate %s: updated %s; nothing ordered\n", name, strings.Join(changed, ", "))
	if set["out"] && rec != nil && rec.Out == out {
		fmt.Fprintf(e.stdout, "  deployed to %s\n", out)
	}
	return nil
}
