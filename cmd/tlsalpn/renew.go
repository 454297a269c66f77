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
	"github.com/tlsalpn/tlsalpn/storage"
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

type renewFlags struct {
	caFlags
	force, quiet, dryRun bool
	preHook, postHook    string
	timeout              time.Duration
}

func (f *renewFlags) register(fs *flagSet) {
	f.caFlags.register(fs, false)
	fs.BoolVar(&f.force, "force", false, "renew every certificate now, due or not")
	fs.BoolVar(&f.quiet, "q", false, "quiet: print nothing unless a certificate was renewed or deployed, or something failed (for cron)")
	fs.BoolVar(&f.quiet, "quiet", false, "the same as -q")
	fs.BoolVar(&f.dryRun, "dry-run", false, "rehearse every renewal (a real order, at the CA's staging when known); store, write and deploy nothing")
	fs.StringVar(&f.preHook, "pre-hook", "", "shell `COMMAND` to run before the validation listener binds (e.g. stop the server holding :443), once per run")
	fs.StringVar(&f.postHook, "post-hook", "", "shell `COMMAND` to run after the validation listener was released (e.g. start that server again), once per run")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Minute, "give up after this `DURATION`")
}

func runRenew(ctx context.Context, e *env, args []string) error {
	var f renewFlags
	fs := newFlagSet(e, "renew", renewUsage)
	f.register(fs)
	if err := fs.parse(args, 0); err != nil {
		return err
	}
	if f.quiet && f.verbose {
		return usagef("-q and -v contradict each other: give one")
	}
	if err := checkTimeout(f.timeout); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, f.timeout)
	defer cancel()
	logger := f.logger(e)
	if f.quiet {
		logger = quietLogger(e, f.logFormat)
	}
	st, err := openStorage(ctx, e, &f.storageFlags, mustExist, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	store := st.store
	hooks := manager.NewStandaloneHooks(logger, f.preHook, f.postHook)
	if f.dryRun {
		return dryRunRenew(ctx, e, st, logger, hooks, f.verbose)
	}
	is := newIssuers(store, logger, responder.New(responder.WithLogger(logger)))
	is.Hooks = hooks
	defer is.CloseIdle()
	if _, err := useCluster(ctx, store, is, logger); err != nil {
		return err
	}
	if f.verbose {
		is.OnStep = stepPrinter(e)
	}
	m := manager.New(store, is.Get, logger)
	h := &renewHandoff{e: e, store: store, force: f.force, handed: map[string]*handed{}, wheres: map[string]where{}}
	// A certificate that a running "tlsalpn serve" manages is renewed by
	// that serve, through the port it holds: renew would only find the
	// port taken.
	if h.serves, err = frontdoor.LiveServes(ctx, store); err != nil {
		logger.Warn("cannot tell whether tlsalpn serve runs on this storage; renewing here", "error", err)
	}
	results, err := m.RenewWith(ctx, manager.RenewOptions{Force: f.force, Elsewhere: h.elsewhere})
	// A post-hook that failed (the server did not come back) is a
	// failure of this run, reported after what was renewed.
	hookErr := hooks.Finish(ctx)
	if err != nil {
		return errors.Join(err, hookErr)
	}
	if len(results) == 0 {
		if !f.quiet {
			fmt.Fprintf(e.stdout, "no certificates stored in %s: issue one with tlsalpn issue\n", st.where())
		}
		return nil
	}
	total := len(results)
	if f.quiet {
		results = worthSaying(results)
	}
	var failed []error
	for _, r := range results {
		if err := h.print(ctx, r); err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		return errors.Join(fmt.Errorf("%d of %d renewals failed: %w", len(failed), total, errors.Join(failed...)), hookErr)
	}
	return hookErr
}

// renewHandoff hands renewals of the certificates a running serve keeps
// to that serve, and remembers what it did for the lines renew prints.
type renewHandoff struct {
	e      *env
	store  storage.Storage
	force  bool
	serves []*serveLease
	handed map[string]*handed // by certificate name
	wheres map[string]where   // by certificate name, for a port taken
}

type handed struct {
	serve   *serveLease
	byOther bool // serve found it renewed already
}

type where struct{ id, listen string }

// elsewhere is manager.RenewOptions.Elsewhere: it hands s to the serve
// that keeps it, if one runs, and waits for its outcome.
func (h *renewHandoff) elsewhere(ctx context.Context, s *manager.Stored, d manager.Decision) (*manager.Record, bool, error) {
	id := s.Name()
	h.wheres[id] = where{id, s.Listen}
	for _, l := range h.serves {
		if !l.Manages(id) {
			continue
		}
		h.handed[id] = &handed{serve: l}
		fmt.Fprintf(h.e.stdout, "%-30s handing the renewal (%s) to %s, which holds the port...\n", id, d.Reason, serveName(l))
		out, err := requestRenewal(ctx, h.store, l, id, s.Name(), s.Serial, h.force, d.Reason)
		switch {
		case err != nil:
			return nil, true, err
		case out.Error != "":
			return nil, true, fmt.Errorf("%s could not renew it: %s", serveName(l), out.Error)
		}
		h.handed[id].byOther = out.ByOther
		var derr error
		if out.DeployError != "" {
			derr = fmt.Errorf("%s stored it but deploying it failed: %s", serveName(l), out.DeployError)
		}
		return &manager.Record{Spec: s.Spec, Serial: out.Serial, NotAfter: out.NotAfter}, true, derr
	}
	return nil, false, nil
}

// print says what became of one certificate, and returns its failure.
func (h *renewHandoff) print(ctx context.Context, r manager.RenewResult) error {
	out := h.e.stdout
	var de *manager.DamagedError
	switch {
	case errors.As(r.Err, &de):
		fmt.Fprintf(out, "%-30s DAMAGED: %s: re-issue it (tlsalpn issue --force --cert-name %s -d …) or delete it (tlsalpn delete %s)\n",
			r.Name, oneLine(de.Err), r.Name, r.Name)
		return r.Err
	case r.Err != nil && ctx.Err() != nil && errors.Is(r.Err, context.Canceled):
		fmt.Fprintf(out, "%-30s interrupted: not renewed\n", renewLabel(r))
		return fmt.Errorf("%s: %w", r.Name, r.Err)
	case r.Err != nil:
		err := servePortError(ctx, h.store, r.Err, h.wheres[r.Name].id, r.Name, h.wheres[r.Name].listen)
		fmt.Fprintf(out, "%-30s FAILED: %s\n", renewLabel(r), oneLine(err))
		return fmt.Errorf("%s: %w", r.Name, err)
	case r.Renewed != nil && h.handed[r.Renewed.Name()] != nil:
		hd := h.handed[r.Renewed.Name()]
		if hd.byOther {
			fmt.Fprintf(out, "%-30s renewed meanwhile (%s found it renewed already): serial %s, valid until %s\n", r.Name, serveName(hd.serve),
				r.Renewed.Serial, r.Renewed.NotAfter.Format(time.RFC3339))
			break
		}
		fmt.Fprintf(out, "%-30s renewed by %s (%s): serial %s, valid until %s\n", r.Name, serveName(hd.serve), r.Decision.Reason,
			r.Renewed.Serial, r.Renewed.NotAfter.Format(time.RFC3339))
	case r.Renewed != nil && r.ByOther:
		fmt.Fprintf(out, "%-30s renewed meanwhile by another process (tlsalpn serve, or another renew): serial %s, valid until %s\n", renewLabel(r),
			r.Renewed.Serial, r.Renewed.NotAfter.Format(time.RFC3339))
	case r.Renewed != nil:
		fmt.Fprintf(out, "%-30s renewed (%s): serial %s, valid until %s\n", renewLabel(r), r.Decision.Reason,
			r.Renewed.Serial, r.Renewed.NotAfter.Format(time.RFC3339))
	case r.Redeployed:
		why := "previous attempt had failed"
		if r.LastDeployError == "" {
			why = "no earlier deployment recorded"
		}
		fmt.Fprintf(out, "%-30s deployed (%s); not due: renews around %s\n", renewLabel(r), why, r.Decision.At.Local().Format("2006-01-02 15:04"))
	case r.Decision.At.IsZero():
		// Revoked or retired: not renewed at all, and the reason says why.
		fmt.Fprintf(out, "%-30s not renewed: %s\n", renewLabel(r), decisionText(r.Decision))
	default:
		fmt.Fprintf(out, "%-30s not due: renews around %s (%s)\n", renewLabel(r), r.Decision.At.Local().Format("2006-01-02 15:04"), r.Decision.Reason)
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
