package responder

import (
	"context"
	"net"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// IsPending reports whether a challenge is published for serverName. A
// front door uses it to decide, from a peeked ClientHello, whether an
// acme-tls/1 handshake is for us or for a backend that solves its own
// challenges.
func (r *Responder) IsPending(serverName string) bool {
	name := challenge.NormalizeServerName(serverName)
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.pending[name] != nil
}

// ServeConn answers one validation handshake on conn (whose ClientHello
// may already have been peeked and is replayed by conn) and closes it.
func (r *Responder) ServeConn(conn net.Conn) {
	r.handle(context.Background(), conn, r.standaloneConfig())
}
