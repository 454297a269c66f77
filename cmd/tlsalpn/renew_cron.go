package main

// What makes renew fit for cron and timers besides its main loop: -q and
// --dry-run.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// dryRunRenew rehearses the renewal of every stored certificate that is
// not revoked: a real order and validation, in a throwaway storage holding
// a copy of the accounts, at the CA's staging directory when one is known,
// with outputs in the throwaway directory and no deploy hook or HAProxy.
// Nothing is written to store or to any output directory, and no
// "replaces" is sent: a rehearsal must not mark the real certificate as
// replaced at the CA.
func dryRunRenew(ctx context.Context, e *env, st *openedStorage, logger *slog.Logger, hooks *manager.StandaloneHooks, verbose bool) (err error) {
	store := st.store
	all, bad, err := manager.New(store, nil, logger).List(ctx)
	if err != nil {
		return err
	}
	if len(all) == 0 && len(bad) == 0 {
		fmt.Fprintf(e.stdout, "dry run: no certificates stored in %s\n", st.where())
		return nil
	}
	tmp, err := os.MkdirTemp("", "tlsalpn-dry-run-")
	if err != nil {
		return fmt.Errorf("dry run: %w", err)
	}
	defer os.RemoveAll(tmp)
	scratch, err := fs.New(filepath.Join(tmp, "storage"))
	if err != nil {
		return fmt.Errorf("dry run: %w", err)
	}
	if err := copyPrefix(ctx, store, scratch, storage.AccountsPrefix); err != nil {
		return fmt.Errorf("dry run: copying the accounts: %w", err)
	}
	is := newIssuers(scratch, logger, responder.New(responder.WithLogger(logger)))
	// The account at a staging CA is a new one; agreeing to its terms was
	// done for the production CA at issue.
	is.AgreeTOS = true
	is.Hooks = hooks
	defer is.CloseIdle()
	if verbose {
		is.OnStep = stepPrinter(e)
	}
	m := manager.New(scratch, is.Get, logger)
	var failed []error
	for _, d := range bad {
		// The real renewal would fail on it: so does the rehearsal.
		fmt.Fprintf(e.stdout, "dry run: %s: DAMAGED: %s\n", d.Name, oneLine(d.Err))
		failed = append(failed, d)
	}
	for _, s := range all {
		if s.Retired != nil {
			fmt.Fprintf(e.stdout, "dry run: %s is retired: renew leaves it alone\n", s.Name())
			continue
		}
		if !s.Revoked.IsZero() {
			fmt.Fprintf(e.stdout, "dry run: %s is revoked: renew leaves it alone\n", s.Name())
			continue
		}
		spec := s.Spec
		spec.Out = filepath.Join(tmp, "out", s.Name())
		spec.DeployHook, spec.HAProxySocket, spec.HAProxyCert = "", "", ""
		where := spec.CA
		if staging, ok := issuer.StagingFor(spec.CA); ok {
			spec.CA, where = staging, staging+" (staging)"
		}
		if _, err := m.Obtain(ctx, spec, nil); err != nil {
			fmt.Fprintf(e.stdout, "dry run: %s: FAILED at %s: %s\n", s.Name(), where, oneLine(err))
			failed = append(failed, fmt.Errorf("%s: %w", s.Name(), err))
			continue
		}
		fmt.Fprintf(e.stdout, "dry run: would renew %s: ok (ordered and validated at %s; nothing stored or deployed)\n", s.Name(), where)
	}
	hookErr := hooks.Finish(ctx)
	if len(failed) > 0 {
		return errors.Join(fmt.Errorf("dry run: %d of %d failed: %w", len(failed), len(all)+len(bad), errors.Join(failed...)), hookErr)
	}
	return hookErr
}

// copyPrefix copies every key under prefix from one storage to another,
// keeping private keys private.
func copyPrefix(ctx context.Context, from, to storage.Storage, prefix string) error {
	keys, err := from.List(ctx, prefix, true)
	if err != nil {
		return err
	}
	for _, k := range keys {
		v, err := from.Get(ctx, k)
		if err != nil {
			return err
		}
		if err := to.Put(ctx, k, v, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// worthSaying keeps the results worth a line under -q: what this run
// renewed or deployed, or failed to.
func worthSaying(results []manager.RenewResult) []manager.RenewResult {
	return slices.DeleteFunc(results, func(r manager.RenewResult) bool {
		return r.Err == nil && !r.Redeployed && (r.Renewed == nil || r.ByOther)
	})
}

// quietLogger is renew -q's logger: errors only, unless TLSALPN_DEBUG asks
// for everything.
func quietLogger(e *env, format logFormat) *slog.Logger {
	level := slog.LevelError
	if e.getenv("TLSALPN_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return newLogger(e, format, level)
}
