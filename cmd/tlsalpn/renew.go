package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/responder"
)

const renewUsage = `
Usage: tlsalpn renew [--force] [--storage DIR]

Renews every stored certificate that is due, exactly as it was issued: the
same CA and account, profile, key type, validation listener, output
directory and deploy hook. A certificate is due when the CA's ACME Renewal
Information (ARI) window says so (a random moment in the window, chosen once),
or, when the CA offers no ARI, once a third of its lifetime remains (half for
certificates valid under ten days). Renewals name the old certificate in the
order ("replaces"), which Let's Encrypt exempts from rate limits.

Run it from cron or a systemd timer; twice a day is plenty:
  17 3,15 * * *  root  tlsalpn renew --storage /var/lib/tlsalpn

A failed renewal leaves the current certificate and files untouched. A
certificate whose deployment failed (files, hook or HAProxy) is deployed
again by the next run, without a new order, even when it is not due.
Exit codes: 0 nothing failed (renewed, or nothing due), 1 a renewal or a
deployment failed.
`

func runRenew(ctx context.Context, e *env, args []string) error {
	var cf caFlags
	var force bool
	var timeout time.Duration
	fs := newFlagSet(e, "renew", renewUsage)
	cf.register(fs, false)
	fs.BoolVar(&force, "force", false, "renew every certificate now, due or not")
	fs.DurationVar(&timeout, "timeout", 30*time.Minute, "give up after this `DURATION`")
	if err := fs.parse(args, 0); err != nil {
		return err
	}
	if err := checkTimeout(timeout); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, timeout)
	defer cancel()
	store, err := openStorage(cf.storage)
	if err != nil {
		return err
	}
	logger := cf.logger(e)
	is := newIssuers(store, logger, responder.New(responder.WithLogger(logger)))
	if cf.verbose {
		is.onStep = stepPrinter(e)
	}
	m := manager.New(store, is.get, logger)
	results, err := m.Renew(ctx, force)
	if err != nil {
		return err
	}
	if len(results) == 0 {
		fmt.Fprintf(e.stdout, "no certificates stored in %s: issue one with tlsalpn issue\n", store.Root())
		return nil
	}
	var failed []error
	for _, r := range results {
		if len(r.Names) > 0 {
			r.Name = strings.Join(r.Names, ",")
		}
		switch {
		case r.Err != nil && ctx.Err() != nil && errors.Is(r.Err, context.Canceled):
			fmt.Fprintf(e.stdout, "%-30s interrupted: not renewed\n", r.Name)
			failed = append(failed, fmt.Errorf("%s: %w", r.Name, r.Err))
		case r.Err != nil:
			fmt.Fprintf(e.stdout, "%-30s FAILED: %s\n", r.Name, oneLine(r.Err))
			failed = append(failed, fmt.Errorf("%s: %w", r.Name, r.Err))
		case r.Renewed != nil && r.ByOther:
			fmt.Fprintf(e.stdout, "%-30s renewed meanwhile by another process (tlsalpn serve, or another renew): serial %s, valid until %s\n", r.Name,
				r.Renewed.Serial, r.Renewed.NotAfter.Format(time.RFC3339))
		case r.Renewed != nil:
			fmt.Fprintf(e.stdout, "%-30s renewed (%s): serial %s, valid until %s\n", r.Name, r.Decision.Reason,
				r.Renewed.Serial, r.Renewed.NotAfter.Format(time.RFC3339))
		case r.Redeployed:
			why := "previous attempt had failed"
			if r.LastDeployError == "" {
				why = "no earlier deployment recorded"
			}
			fmt.Fprintf(e.stdout, "%-30s deployed (%s); not due: renews around %s\n", r.Name, why, r.Decision.At.Local().Format("2006-01-02 15:04"))
		case r.Decision.At.IsZero():
			// Never renewed (revoked): there is no date to give.
			fmt.Fprintf(e.stdout, "%-30s not renewed: %s\n", r.Name, r.Decision.Reason)
		default:
			fmt.Fprintf(e.stdout, "%-30s not due: renews around %s (%s)\n", r.Name, r.Decision.At.Local().Format("2006-01-02 15:04"), r.Decision.Reason)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d renewals failed: %w", len(failed), len(results), errors.Join(failed...))
	}
	return nil
}
