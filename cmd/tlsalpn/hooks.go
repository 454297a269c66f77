package main

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/tlsalpn/tlsalpn/deploy"
	"github.com/tlsalpn/tlsalpn/manager"
)

// standaloneHooks runs the pre- and post-hooks around the standalone
// validation listener, as certbot's --pre-hook and --post-hook do around
// its standalone server: each distinct pre-hook once, just before the
// first bind of a run (so a run with nothing due stops nothing), and each
// post-hook once, by finish, after the last listener is released, whether
// the validations succeeded or not, so that a server stopped to free :443
// is always started again.
type standaloneHooks struct {
	// extraPre and extraPost are given on the command line of this run
	// (renew --pre-hook) besides the ones each record remembers.
	extraPre, extraPost string
	logger              *slog.Logger

	// mu is held while a pre-hook runs: a second listener waits until
	// the server holding the port was stopped.
	mu   sync.Mutex
	pre  map[string]error // pre-hooks run in this run, and how they ended
	post []string         // post-hooks finish runs, in order, each once
}

func newStandaloneHooks(logger *slog.Logger, extraPre, extraPost string) *standaloneHooks {
	return &standaloneHooks{extraPre: extraPre, extraPost: extraPost, logger: logger, pre: map[string]error{}}
}

// beforeBind runs spec's pre-hook (and this run's) unless it ran already,
// and schedules the post-hooks. A failed pre-hook fails the bind: the
// server it should have stopped may still hold the port.
func (h *standaloneHooks) beforeBind(ctx context.Context, spec manager.Spec) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	// Scheduled first: a pre-hook that fails halfway may have stopped the
	// server all the same.
	for _, c := range []string{spec.PostHook, h.extraPost} {
		if strings.TrimSpace(c) != "" && !slices.Contains(h.post, c) {
			h.post = append(h.post, c)
		}
	}
	var errs []error
	for _, c := range []string{spec.PreHook, h.extraPre} {
		if strings.TrimSpace(c) == "" {
			continue
		}
		err, ran := h.pre[c]
		if !ran {
			var res deploy.HookResult
			res, err = deploy.Hook{Command: c, Name: "pre-hook"}.Run(ctx, nil)
			h.pre[c] = err
			h.logger.Info("pre-hook ran", "command", c, "output", string(res.Output), "error", err)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// finish runs the scheduled post-hooks, even when ctx is done (the run
// timed out or was interrupted): the server they start must come back.
// Each hook keeps its own timeout.
func (h *standaloneHooks) finish(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	h.mu.Lock()
	posts := h.post
	h.post = nil
	h.mu.Unlock()
	var errs []error
	for _, c := range posts {
		res, err := deploy.Hook{Command: c, Name: "post-hook"}.Run(ctx, nil)
		h.logger.Info("post-hook ran", "command", c, "output", string(res.Output), "error", err)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
