package manager

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/tlsalpn/tlsalpn/deploy"
)

// StandaloneHooks runs the pre- and post-hooks around the standalone
// validation listener, as certbot's --pre-hook and --post-hook do around
// its standalone server: each distinct pre-hook once, just before the
// first bind of a run (so a run with nothing due stops nothing), and each
// post-hook once, by Finish, after the last listener is released, whether
// the validations succeeded or not, so that a server stopped to free :443
// is always started again.
type StandaloneHooks struct {
	// extraPre and extraPost are given on the command line of this run
	// (renew --pre-hook) besides the ones each record remembers.
	extraPre, extraPost string
	logger              *slog.Logger

	// mu is held while a pre-hook runs: a second listener waits until
	// the server holding the port was stopped.
	mu   sync.Mutex
	pre  map[string]error // pre-hooks run in this run, and how they ended
	post []string         // post-hooks Finish runs, in order, each once
}

// NewStandaloneHooks returns the hooks of one run, with extraPre and
// extraPost run besides each record's own; a nil logger discards.
func NewStandaloneHooks(logger *slog.Logger, extraPre, extraPost string) *StandaloneHooks {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &StandaloneHooks{extraPre: extraPre, extraPost: extraPost, logger: logger, pre: map[string]error{}}
}

// BeforeBind runs spec's pre-hook (and this run's) unless it ran already,
// and schedules the post-hooks. A failed pre-hook fails the bind: the
// server it should have stopped may still hold the port.
func (h *StandaloneHooks) BeforeBind(ctx context.Context, spec Spec) error {
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

// Finish runs the scheduled post-hooks, even when ctx is done (the run
// timed out or was interrupted): the server they start must come back.
// Each hook keeps its own timeout.
func (h *StandaloneHooks) Finish(ctx context.Context) error {
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
