package responder

import (
	"context"
	"crypto/tls"
	"net"

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
