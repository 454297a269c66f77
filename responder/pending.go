package responder

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"sync"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// IsPending reports whether a challenge is published for serverName. A
// front door uses it to decide, from a peeked ClientHello, whether an
// acme-tls/1 handshake is for us or for a backend that solves its own
// challenges.
func (r *Responder) IsPending(serverName string) bool {
	return r.lookup(challenge.NormalizeServerName(serverName)) != nil
}

// ServeConn answers one validation handshake on conn (whose ClientHello
// may already have been peeked and is replayed by conn) and closes it. c
// is what Lookup returned for that ClientHello: the handshake serves it,
// unless it was withdrawn meanwhile, without looking the name up again.
// With c nil, the handshake is decided as the standalone listener
// decides it.
func (r *Responder) ServeConn(conn net.Conn, c *Challenge) {
	cfg := r.standaloneConfig()
	if c != nil {
		cfg = &tls.Config{
			MinVersion: tls.VersionTLS12,
			GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
				return r.answer(hello, c)
			},
		}
	}
	r.handle(context.Background(), conn, cfg)
}

// holdCount counts publications and tells hook of the first ("pending")
// and of the end of the last ("withdrawn"): the one reference count behind
// both the responder's pending hook and OnDemand's listener. Calls to hook
// are serialised with the count, so that no publication goes ahead before
// the first one's hook has returned.
type holdCount struct {
	hook func(ctx context.Context, pending bool) error

	mu   sync.Mutex
	refs int
}

// acquire counts one more publication, running the hook first if it is
// the first; if the hook fails nothing is counted.
func (h *holdCount) acquire(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refs == 0 && h.hook != nil {
		if err := h.hook(ctx, true); err != nil {
			return err
		}
	}
	h.refs++
	return nil
}

// release counts one publication less, running the hook after the last;
// its error is logged, as nobody is left to return it to.
func (h *holdCount) release(ctx context.Context, logger *slog.Logger) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refs == 0 {
		return
	}
	h.refs--
	if h.refs == 0 && h.hook != nil {
		if err := h.hook(context.WithoutCancel(ctx), false); err != nil {
			logger.Warn("after the last challenge was withdrawn", "error", err)
		}
	}
}
