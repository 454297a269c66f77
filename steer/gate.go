package steer

import (
	"context"
	"crypto/tls"
	"strings"
	"sync"
)

// Publisher is what a Gate wraps: the front door's responder.
type Publisher interface {
	Publish(ctx context.Context, serverName string, cert *tls.Certificate) (<-chan struct{}, error)
	Unpublish(ctx context.Context, serverName string) error
}

// Gate publishes challenges through a Publisher and holds steering from
// just before a challenge is published until just after it is withdrawn,
// so that the CA's validation connections reach the front door. Its
// Steerer may be nil (no steering: calls only pass through) and may be
// swapped while challenges are pending (a configuration reload).
type Gate struct {
	next Publisher

	mu    sync.Mutex
	s     *Steerer
	holds map[string]int // by server name: an Unpublish releases only what its Publish held
	total int
}

// NewGate returns a Gate that publishes through next and holds s.
func NewGate(s *Steerer, next Publisher) *Gate {
	return &Gate{s: s, next: next, holds: make(map[string]int)}
}

// Publish holds steering, then publishes. If steering cannot be held the
// challenge is not published: the CA's connection would reach the
// backend, and the authorization would fail for nothing.
func (g *Gate) Publish(ctx context.Context, serverName string, cert *tls.Certificate) (<-chan struct{}, error) {
	key := strings.ToLower(strings.TrimSuffix(serverName, "."))
	g.mu.Lock()
	if g.s != nil {
		if err := g.s.Hold(); err != nil {
			g.mu.Unlock()
			return nil, err
		}
	}
	g.holds[key]++
	g.total++
	g.mu.Unlock()
	seen, err := g.next.Publish(ctx, serverName, cert)
	if err != nil {
		g.release(key)
		return nil, err
	}
	return seen, nil
}

// Unpublish withdraws the challenge, then releases what its Publish held.
func (g *Gate) Unpublish(ctx context.Context, serverName string) error {
	err := g.next.Unpublish(ctx, serverName)
	g.release(strings.ToLower(strings.TrimSuffix(serverName, ".")))
	return err
}

func (g *Gate) release(key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.holds[key] == 0 {
		return
	}
	g.holds[key]--
	if g.holds[key] == 0 {
		delete(g.holds, key)
	}
	g.total--
	if g.s != nil {
		g.s.Release()
	}
}

// Swap makes s the Steerer this Gate holds, held as many times as
// challenges are pending now, and returns the previous one for the caller
// to close. s may be nil.
func (g *Gate) Swap(s *Steerer) (old *Steerer, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s != nil {
		for i := 0; i < g.total; i++ {
			if err := s.Hold(); err != nil {
				for ; i > 0; i-- {
					s.Release()
				}
				return nil, err
			}
		}
	}
	old, g.s = g.s, s
	return old, nil
}
