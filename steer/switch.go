package steer

import (
	"context"
	"sync"
)

// Switch is the front door's steering as challenges come and go. Its
// Pending method is meant as the responder's pending hook
// (responder.WithPendingHook): steering is held from just before the
// first challenge is published until just after the last is withdrawn,
// so that the CA's validation connections reach the front door whichever
// publisher put the challenge there. Its Steerer may be nil (no steering:
// Pending does nothing) and may be swapped while challenges are pending
// (a configuration reload). The zero value is ready to use.
//
// Switch wraps no publisher, so steer depends on nothing that publishes:
// a challenge reaches the responder through one path, and the hook is
// told.
type Switch struct {
	mu      sync.Mutex
	s       *Steerer
	pending bool
	// steered counts what the Steerers swapped out had steered (when
	// they were), so that Steered only grows.
	steered uint64
}

// Pending holds steering when pending is true and releases it when false.
// If steering cannot be held, it returns the error, and the responder does
// not publish: the CA's connection would reach the backend, and the
// authorization would fail for nothing.
func (w *Switch) Pending(_ context.Context, pending bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pending == w.pending {
		return nil
	}
	if w.s != nil {
		if pending {
			if err := w.s.Hold(); err != nil {
				return err
			}
		} else {
			w.s.Release()
		}
	}
	w.pending = pending
	return nil
}

// Swap makes s the Steerer this Switch holds, held now if a challenge is
// pending, and returns the previous one for the caller to close. s may be
// nil.
func (w *Switch) Swap(s *Steerer) (old *Steerer, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s != nil && w.pending {
		if err := s.Hold(); err != nil {
			return nil, err
		}
	}
	old, w.s = w.s, s
	if old != nil {
		w.steered += old.Steered()
	}
	return old, nil
}

// Steering reports whether new connections bypass the front door now:
// a Steerer is in place and steering (no challenge holds it). It is what
// the admin API's status and the route_steered metric say.
func (w *Switch) Steering() bool {
	w.mu.Lock()
	s := w.s
	w.mu.Unlock()
	return s != nil && s.Steering()
}

// Steered returns how many new connections the Steerers this Switch held
// have handed straight to the backend: the count of Steerer.Steered,
// kept across Swaps (those steered between a Swap and the old Steerer's
// Close are not counted).
func (w *Switch) Steered() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.steered
	if w.s != nil {
		n += w.s.Steered()
	}
	return n
}
