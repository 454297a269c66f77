// Package steer takes the front door out of the data path when it has
// nothing to add: while no ACME challenge is pending, new TCP connections
// for the front door's address are handed by the kernel straight to the
// backend's own listening socket, so nginx or HAProxy accept them as if
// they listened on :443 themselves. No byte is copied, the backend sees
// the client's real address, and a relayed connection's cost (two more
// trips through the TCP stack per message, which on a small machine is a
// third of all CPU time) is not paid.
//
// Just before a challenge is published the steering is held, so the CA's
// validation connections, and every other new connection, reach the front
// door again, which answers acme-tls/1 itself and relays the rest; when
// the last challenge is withdrawn steering resumes. Connections keep the
// path they started on.
//
// The mechanism is a BPF sk_lookup program attached to the network
// namespace (Linux 5.9 or later, CAP_BPF and CAP_NET_ADMIN), and a
// sockmap holding the backend's listening socket, taken from the process
// that owns it with pidfd_getfd (CAP_SYS_PTRACE, or the same user). The
// sockmap does not keep the socket alive: when the backend closes it (a
// restart), the kernel drops it from the map and connections fall back to
// the front door until the new socket is found. When this process exits,
// the program goes with it and the front door's own listener is all that
// is left, so a crash never leaves a rule behind.
//
// Steering fits only a front door with one passthrough backend on this
// host, no PROXY protocol to the backend and none from a load balancer in
// front: with several routes the choice needs the ClientHello, which the
// kernel does not have when it picks a socket.
package steer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/procnet"
)

// ErrUnsupported is wrapped by New's error when this kernel or this
// process's privileges do not allow steering; the front door then relays
// every connection itself, as it would with steering off.
var ErrUnsupported = errors.New("kernel steering unavailable")

// ErrNoBackend is wrapped by New's error when no process on this host
// listens on the backend's address, or its socket cannot be taken.
var ErrNoBackend = errors.New("no listening socket for the backend on this host")

// DefaultRecheck is how often a Steerer looks for the backend's listening
// socket while it is missing (after a backend restart).
const DefaultRecheck = 2 * time.Second

// Config says what to steer where.
type Config struct {
	// Front is the address the front door listens on. An unspecified
	// address steers connections to any local address on Front's port:
	// 0.0.0.0 IPv4 only, :: both families (as Go's ":443" listens).
	Front netip.AddrPort
	// Backend is the address the backend listens on, on this host.
	Backend netip.AddrPort
	// Recheck is DefaultRecheck when zero.
	Recheck time.Duration
	// ProcRoot is where procfs is mounted; "" means "/proc".
	ProcRoot string
	// Logger receives state changes; nil discards them.
	Logger *slog.Logger
}

// Steerer steers new connections for Front to Backend's listening socket
// except while held. Its methods are safe for concurrent use.
type Steerer struct {
	cfg    Config
	logger *slog.Logger
	k      *kernel

	mu       sync.Mutex
	holds    int
	attached bool             // the backend's socket is in the map, as last seen
	socket   procnet.Listener // the backend's socket last taken
	closed   bool
	final    uint64 // steered() when closed

	cancel context.CancelFunc
	done   chan struct{}
}

// New starts steering Front's new connections to Backend's listening
// socket. Its error wraps ErrUnsupported when the kernel or privileges
// forbid it, and ErrNoBackend when the backend's socket cannot be found
// or taken; in both cases nothing is left attached.
func New(ctx context.Context, cfg Config) (*Steerer, error) {
	if !cfg.Front.IsValid() || cfg.Front.Port() == 0 {
		return nil, fmt.Errorf("steer: front address %v: need an address with a port", cfg.Front)
	}
	if !cfg.Backend.IsValid() || cfg.Backend.Port() == 0 || cfg.Backend.Addr().IsUnspecified() {
		return nil, fmt.Errorf("steer: backend address %v: need a host address with a port", cfg.Backend)
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = DefaultRecheck
	}
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	s := &Steerer{cfg: cfg, logger: cfg.Logger}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	k, err := loadKernel(cfg.Front)
	if err != nil {
		return nil, err
	}
	s.k = k
	l, err := s.k.grab(cfg.ProcRoot, cfg.Backend)
	if err != nil {
		s.k.close()
		return nil, fmt.Errorf("steer: taking the listening socket of %v: %w", cfg.Backend, err)
	}
	s.socket = l
	if err := s.k.setSteering(true); err != nil {
		s.k.close()
		return nil, fmt.Errorf("steer: %w", err)
	}
	s.attached = true
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel, s.done = cancel, make(chan struct{})
	go s.watch(wctx)
	return s, nil
}

// Hold stops steering new connections, which reach the front door from
// now until the matching Release. Holds nest.
func (s *Steerer) Hold() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holds++
	if s.holds > 1 || s.closed {
		return nil
	}
	if err := s.k.setSteering(false); err != nil {
		// Steering cannot be held: stop it for good rather than
		// send the CA's connections to the backend.
		if derr := s.k.detach(); derr != nil {
			s.holds--
			return fmt.Errorf("steer: holding: %w; detaching: %w", err, derr)
		}
		s.logger.Warn("steering stopped for good: it could not be held for a challenge", "error", err)
		return nil
	}
	s.logger.Debug("steering held: new connections come to the front door while a challenge is pending", "front", s.cfg.Front)
	return nil
}

// Release ends one Hold; after the last, new connections are steered
// again.
func (s *Steerer) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.holds == 0 {
		return
	}
	s.holds--
	if s.holds > 0 || s.closed {
		return
	}
	if err := s.k.setSteering(true); err != nil {
		s.logger.Warn("steering not resumed; the front door relays new connections", "error", err)
		return
	}
	s.logger.Debug("steering resumed: no challenge is pending", "front", s.cfg.Front)
}

// Steering reports whether new connections for Front bypass the front
// door now: not held, and the backend's socket in place.
func (s *Steerer) Steering() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && s.holds == 0 && s.k.present()
}

// Steered returns how many new connections the kernel has handed
// straight to the backend's socket, bypassing the front door (which
// therefore never sees them to count).
func (s *Steerer) Steered() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.final
	}
	return s.k.steered()
}

// Socket returns the backend's listening socket last taken: its address
// and the process holding it.
func (s *Steerer) Socket() procnet.Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.socket
}

// Relayed says which new connections the kernel cannot give to the
// backend's socket, and so reach the front door even while steering:
// "IPv6" when the front door takes both families and the socket is IPv4
// only; "" when none.
func (s *Steerer) Relayed() string {
	l := s.Socket()
	if a := s.cfg.Front.Addr(); a.Is6() && a.IsUnspecified() && l.Local.Addr().Is4() {
		return "IPv6"
	}
	return ""
}

// Close detaches the program: every new connection reaches the front door.
// Connections already steered belong to the backend and are not touched.
func (s *Steerer) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	<-s.done
	n := s.k.steered()
	s.mu.Lock()
	s.final = n
	s.mu.Unlock()
	if err := s.k.close(); err != nil {
		return fmt.Errorf("steer: detaching: %w", err)
	}
	return nil
}

// watch finds the backend's listening socket again after the backend
// closed it (a restart): until then the front door relays.
func (s *Steerer) watch(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.cfg.Recheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		present := s.k.present()
		s.mu.Lock()
		was := s.attached
		s.attached = present
		s.mu.Unlock()
		if present {
			continue
		}
		if was {
			s.logger.Info("backend's listening socket is gone; the front door relays new connections until it is back", "backend", s.cfg.Backend)
		}
		l, err := s.k.grab(s.cfg.ProcRoot, s.cfg.Backend)
		if err != nil {
			s.logger.Debug("backend's listening socket not back yet", "backend", s.cfg.Backend, "error", err)
			continue
		}
		s.mu.Lock()
		s.attached, s.socket = true, l
		s.mu.Unlock()
		s.logger.Info("steering new connections to the backend's listening socket again", "backend", s.cfg.Backend, "socket", l.String())
	}
}
