package main

import (
	"context"
	"log/slog"
	"net"
	"os"

	"github.com/tlsalpn/tlsalpn/config"
	"github.com/tlsalpn/tlsalpn/internal/sdnotify"
)

// serveNotify tells systemd (Type=notify) how serve is doing: READY=1 once
// the stored certificates are loaded and the listener is bound,
// RELOADING=1 on SIGHUP and READY=1 again when the reload has been
// handled, STOPPING=1 when the drain starts, and WATCHDOG=1 at half of
// WatchdogSec. Outside systemd ($NOTIFY_SOCKET unset) it does nothing.
type serveNotify struct {
	n      *sdnotify.Notifier
	e      *env
	logger *slog.Logger
}

func newServeNotify(e *env, logger *slog.Logger) *serveNotify {
	n, err := sdnotify.New(e.getenv("NOTIFY_SOCKET"))
	if err != nil {
		// Loud, not fatal: the service runs; systemd, which waits for
		// READY=1, times the start out and says so.
		logger.Error("systemd notification disabled", "error", err)
	}
	return &serveNotify{n: n, e: e, logger: logger}
}

func (s *serveNotify) send(states ...string) {
	if err := s.n.Notify(states...); err != nil {
		s.logger.Error("telling systemd", "states", states, "error", err)
	}
}

// ready is sent once New has loaded the stored certificates and ln is
// bound: the front door answers from the first connection. Certificates
// not stored yet are obtained in the background through this listener,
// which cannot happen before it is up, so READY=1 does not wait for them
// (a start that waited on the CA would be timed out by systemd).
func (s *serveNotify) ready(addr net.Addr, cfg *config.Config) {
	s.send("READY=1", "STATUS=listening on "+addr.String()+"; "+summaryAfterListen(cfg))
}

// reloading is sent when SIGHUP arrives; reloaded after it was handled.
func (s *serveNotify) reloading() { s.send(sdnotify.Reloading()...) }
func (s *serveNotify) reloaded()  { s.send("READY=1") }

// run sends STOPPING=1 when ctx ends (the drain begins) and pings the
// watchdog until done ends.
func (s *serveNotify) run(ctx, done context.Context) {
	if s.n == nil {
		return
	}
	go func() {
		select {
		case <-ctx.Done():
			s.send("STOPPING=1", "STATUS=draining open connections")
		case <-done.Done():
		}
	}()
	every, err := sdnotify.WatchdogInterval(s.e.getenv("WATCHDOG_USEC"), s.e.getenv("WATCHDOG_PID"), os.Getpid())
	if err != nil {
		s.logger.Error("systemd watchdog not served; systemd will restart the service when WatchdogSec passes", "error", err)
		return
	}
	go s.n.Watchdog(done, every, nil, s.logger)
}
