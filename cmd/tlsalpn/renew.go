package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tlsalpn/tlsalpn/frontdoor"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/responder"
)

const renewUsage = `
Usage: tlsalpn renew [-q] [--force] [--dry-run] [--storage DIR]

Renews every stored certificate that is due, exactly as it was issued: the
same CA and account, profile, key type, validation listener, output
directory, deploy hook and pre- and post-hooks. A certificate is due when
the CA's ACME Renewal Information (ARI) window says so (a random moment in
the window, chosen once), or, when the CA offers no ARI, once a third of its
lifetime remains (half for certificates valid under ten days). Renewals name
the old certificate in the order ("replaces"), which Let's Encrypt exempts
from rate limits.

Run it from cron or a systemd timer, as the user that ran "tlsalpn issue"
(so that it finds the same storage); twice a day is plenty:
  /etc/cron.d/tlsalpn:  17 3,15 * * *  root  /usr/local/bin/tlsalpn renew -q
  systemd:              contrib/systemd/tlsalpn-renew.{service,timer}
The storage is --storage, else $TLSALPN_STORAGE, else /var/lib/tlsalpn for
root and $XDG_DATA_HOME/tlsalpn or ~/.local/share/tlsalpn for other users.
A storage directory that does not exist is an error, not "nothing to do".

A certificate that a running "tlsalpn serve" keeps (on this storage) is
handed to that serve, which renews it through the port it holds; renew
waits for it and prints the new serial.

A failed renewal leaves the current certificate and files untouched. A
certificate whose deployment failed (files, hook or HAProxy) is deployed
again by the next run, without a new order, even when it is not due.

--dry-run rehearses the renewal of every certificate, due or not: a real
order and validation, at the CA's staging directory when one is known (Let's
Encrypt), else at the same CA, with a throwaway copy of the accounts; nothing
is stored, no file is written to any output directory, no deploy hook runs.
Pre- and post-hooks do run, as with certbot: without them the validation
listener could not bind.

--pre-hook and --post-hook add commands to run around the validation
listener in this run, besides those each certificate was issued with: each
distinct pre-hook once before the first bind (not at all when nothing is
due), each post-hook once at the end, even when a validation failed.

Exit codes: 0 nothing failed (renewed, or nothing due), 1 a renewal, a
deployment or a hook failed, or there is no storage.
`

func runRenew(ctx context.Context, e *env, args []string) error {
	var cf caFlags
	var force, quiet, dryRun bool
	var preHook, postHook string
	var timeout time.Duration
	fs := newFlagSet(e, "renew", renewUsage)
	cf.register(fs, false)
	fs.BoolVar(&force, "force", false, "renew every certificate now, due or not")
	fs.BoolVar(&quiet, "q", false, "quiet: print nothing unless a certificate was renewed or deployed, or something failed (for cron)")
	fs.BoolVar(&quiet, "quiet", false, "the same as -q")
	fs.BoolVar(&dryRun, "dry-run", false, "rehearse every renewal (a real order, at the CA's staging when known); store, write and deploy nothing")
	fs.StringVar(&preHook, "pre-hook", "", "shell `COMMAND` to run before the validation listener binds (e.g. stop the server holding :443), once per run")
	fs.StringVar(&postHook, "post-hook", "", "shell `COMMAND` to run after the validation listener was released (e.g. start that server again), once per run")
	fs.DurationVar(&timeout, "timeout", 30*time.Minute, "give up after this `DURATION`")
	if err := fs.parse(args, 0); err != nil {
		return err
	}
	if quiet && cf.verbose {
		return usagef("-q and -v contradict each other: give one")
	}
	if err := checkTimeout(timeout); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, timeout)
	defer cancel()
	store, err := openStorage(e, cf.storage, mustExist)
	if err != nil {
		return err
	}
	logger := cf.logger(e)
	if quiet {
		logger = quietLogger(e)
	}
	hooks := manager.NewStandaloneHooks(logger, preHook, postHook)
	if dryRun {
		return dryRunRenew(ctx, e, store, logger, hooks, cf.verbose)
	}
	is := newIssuers(store, logger, responder.New(responder.WithLogger(logger)))
	is.Hooks = hooks
	defer is.CloseIdle()
	if cf.verbose {
		is.OnStep = stepPrinter(e)
	}
	m := manager.New(store, is.Get, logger)
	// A certificate that a running "tlsalpn serve" manages is renewed by
	// that serve, through the port it holds: renew would only find the
	// port taken.
	serves, err := frontdoor.LiveServes(ctx, store)
	if err != nil {
		logger.Warn("cannot tell whether tlsalpn serve runs on this storage; renewing here", "error", err)
	}
	type handoff struct {
		serve   *serveLease
		byOther bool // serve found it renewed already
	}
	handed := map[string]*handoff{} // by certID
	type where struct{ id, listen string }
	wheres := map[string]where{} // by name, for a port taken
	results, err := m.RenewWith(ctx, manager.RenewOptions{Force: force,
		Elsewhere: func(ctx context.Context, s *manager.Stored, d manager.Decision) (*manager.Record, bool, error) {
			id := s.Name()
			wheres[s.Name()] = where{id, s.Listen}
			for _, l := range serves {
				if !l.Manages(id) {
					continue
				}
				handed[id] = &handoff{serve: l}
				fmt.Fprintf(e.stdout, "%-30s handing the renewal (%s) to %s, which holds the port...\n", s.Name(), d.Reason, l)
				out, err := requestRenewal(ctx, store, l, id, s.Name(), s.Serial, force, d.Reason)
				switch {
				case err != nil:
					return nil, true, err
				case out.Error != "":
					return nil, true, fmt.Errorf("%s could not renew it: %s", l, out.Error)
				}
				rec := &manager.Record{Spec: s.Spec, Serial: out.Serial, NotAfter: out.NotAfter}
				handed[id].byOther = out.ByOther
				var derr error
				if out.DeployError != "" {
					derr = fmt.Errorf("%s stored it but deploying it failed: %s", l, out.DeployError)
				}
				return rec, true, derr
			}
			return nil, false, nil
		},
	})
	// A post-hook that failed (the server did not come back) is a
	// failure of this run, reported after what was renewed.
	hookErr := hooks.Finish(ctx)
	if err != nil {
		return errors.Join(err, hookErr)
	}
	if len(results) == 0 {
		if !quiet {
			fmt.Fprintf(e.stdout, "no certificates stored in %s: issue one with tlsalpn issue\n", store.Root())
		}
		return nil
	}
	total := len(results)
	if quiet {
		results = worthSaying(results)
	}
	var failed []error
	for _, r := range results {
		var de *manager.DamagedError
		switch {
		case errors.As(r.Err, &de):
			fmt.Fprintf(e.stdout, "%-30s DAMAGED: %s: re-issue it (tlsalpn issue --force --cert-name %s -d …) or delete it (tlsalpn delete %s)\n",
				r.Name, oneLine(de.Err), r.Name, r.Name)
			failed = append(failed, r.Err)
		case r.Err != nil && ctx.Err() != nil && errors.Is(r.Err, context.Canceled):
			fmt.Fprintf(e.stdout, "%-30s interrupted: not renewed\n", renewLabel(r))
			failed = append(failed, fmt.Errorf("%s: %w", r.Name, r.Err))
		case r.Err != nil:
			r.Err = servePortError(ctx, store, r.Err, wheres[r.Name].id, r.Name, wheres[r.Name].listen)
			fmt.Fprintf(e.stdout, "%-30s FAILED: %s\n", renewLabel(r), oneLine(r.Err))
			failed = append(failed, fmt.Errorf("%s: %w", r.Name, r.Err))
		case r.Renewed != nil && handed[r.Renewed.Name()] != nil:
			h := handed[r.Renewed.Name()]
			if h.byOther {
				fmt.Fprintf(e.stdout, "%-30s renewed meanwhile (%s found it renewed already): serial %s, valid until %s\n", r.Name, h.serve,
					r.Renewed.Serial, r.Renewed.NotAfter.Format(time.RFC3339))
				break
			}
			fmt.Fprintf(e.stdout, "%-30s renewed by %s (%s): serial %s, valid until %s\n", r.Name, h.serve, r.Decision.Reason,
				r.Renewed.Serial, r.Renewed.NotAfter.Format(time.RFC3339))
		case r.Renewed != nil && r.ByOther:
			fmt.Fprintf(e.stdout, "%-30s renewed meanwhile by another process (tlsalpn serve, or another renew): serial %s, valid until %s\n", renewLabel(r),
				r.Renewed.Serial, r.Renewed.NotAfter.Format(time.RFC3339))
		case r.Renewed != nil:
			fmt.Fprintf(e.stdout, "%-30s renewed (%s): serial %s, valid until %s\n", renewLabel(r), r.Decision.Reason,
				r.Renewed.Serial, r.Renewed.NotAfter.Format(time.RFC3339))
		case r.Redeployed:
			why := "previous attempt had failed"
			if r.LastDeployError == "" {
				why = "no earlier deployment recorded"
			}
			fmt.Fprintf(e.stdout, "%-30s deployed (%s); not due: renews around %s\n", renewLabel(r), why, r.Decision.At.Local().Format("2006-01-02 15:04"))
		case r.Decision.At.IsZero():
			// Revoked or retired: not renewed at all, and the reason says why.
			fmt.Fprintf(e.stdout, "%-30s not renewed: %s\n", renewLabel(r), decisionText(r.Decision))
		default:
			fmt.Fprintf(e.stdout, "%-30s not due: renews around %s (%s)\n", renewLabel(r), r.Decision.At.Local().Format("2006-01-02 15:04"), r.Decision.Reason)
		}
	}
	if len(failed) > 0 {
		return errors.Join(fmt.Errorf("%d of %d renewals failed: %w", len(failed), total, errors.Join(failed...)), hookErr)
	}
	if hookErr != nil {
		return hookErr
	}
	return nil
}

// renewLabel names a certificate in renew's lines: its certificate name,
// and the names it covers when they say more.
func renewLabel(r manager.RenewResult) string {
	if len(r.Names) == 0 || (len(r.Names) == 1 && r.Names[0] == r.Name) {
		return r.Name
	}
	return r.Name + " (" + strings.Join(r.Names, ", ") + ")"
}
