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
new output failed: it keeps deploying where it did; the other changes are kept), 2 usage error.
`

type reconfigureFlags struct {
	caFlags
	out, hook, keyType, profile, listen, email string
	hookTimeout                                time.Duration
}

func (f *reconfigureFlags) register(fs *flagSet) {
	f.caFlags.register(fs, false)
	fs.StringVar(&f.out, "out", "", "new output `DIR`")
	fs.StringVar(&f.hook, "deploy-hook", "", "new deploy hook `COMMAND` ('' for none)")
	fs.DurationVar(&f.hookTimeout, "hook-timeout", 0, "new bound on the deploy hook's run `DURATION`")
	fs.StringVar(&f.keyType, "key-type", "", "key `TYPE` of the next renewal: ec256, ec384, rsa2048, rsa3072 or rsa4096")
	fs.StringVar(&f.profile, "profile", "", "ACME `PROFILE` of the next renewal")
	fs.StringVar(&f.listen, "listen", "", "`ADDR` to answer the CA on while validating renewals")
	fs.StringVar(&f.email, "email", "", "account `EMAIL` for the next renewal")
}

// edit checks the values of the flags in set and returns what they do to
// a certificate's spec.
func (f *reconfigureFlags) edit(set map[string]bool) (func(*manager.Spec), error) {
	var kt issuer.KeyType
	var err error
	if set["key-type"] {
		if kt, err = issuer.ParseKeyType(f.keyType); err != nil {
			return nil, usagef("--key-type: %v", err)
		}
	}
	if set["out"] {
		if f.out == "" {
			return nil, usagef("--out: give a directory")
		}
		if f.out, err = filepath.Abs(f.out); err != nil {
			return nil, usagef("--out: %v", err)
		}
	}
	if set["listen"] {
		if err := checkListen(f.listen); err != nil {
			return nil, err
		}
	}
	if set["email"] {
		if err := checkEmail(f.email); err != nil {
			return nil, err
		}
	}
	return func(s *manager.Spec) {
		for name, apply := range map[string]func(){
			"out":          func() { s.Out = f.out },
			"deploy-hook":  func() { s.DeployHook = f.hook },
			"hook-timeout": func() { s.HookTimeout = f.hookTimeout },
			"key-type":     func() { s.KeyType = kt },
			"profile":      func() { s.Profile = f.profile },
			"listen":       func() { s.Listen = f.listen },
			"email":        func() { s.Email = f.email },
		} {
			if set[name] {
				apply()
			}
		}
	}, nil
}

func runReconfigure(ctx context.Context, e *env, args []string) error {
	var f reconfigureFlags
	fs := newFlagSet(e, "reconfigure", reconfigureUsage)
	f.register(fs)
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
	edit, err := f.edit(set)
	if err != nil {
		return err
	}
	m, st, err := managerForChange(ctx, e, &f.caFlags, name, "change")
	if err != nil {
		return err
	}
	defer st.Close()
	rec, changed, err := m.Reconfigure(ctx, name, edit)
	if err != nil {
		return err
	}
	if len(changed) == 0 {
		fmt.Fprintf(e.stdout, "certificate %s: nothing changed\n", name)
		return nil
	}
	fmt.Fprintf(e.stdout, "certificate %s: updated %s; nothing ordered\n", name, strings.Join(changed, ", "))
	if set["out"] && rec != nil && rec.Out == f.out {
		fmt.Fprintf(e.stdout, "  deployed to %s\n", f.out)
	}
	return nil
}
