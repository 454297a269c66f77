//go:build !linux

package proxy

import (
	"context"
	"net"
	"time"
)

// relayer is the event-loop relay; elsewhere than Linux pipe does the work.
type relayer struct{}

func (*relayer) relay(client, backend net.Conn, idle time.Duration) (int64, int64, bool) {
	return 0, 0, false
}

func (*relayer) closeAll() {}

func (*relayer) stop() {}

// serveLoops: Serve accepts on its own.
func (*Server) serveLoops(context.Context, net.Listener) (error, bool) { return nil, false }
