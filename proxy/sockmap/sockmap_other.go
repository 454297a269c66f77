//go:build !linux

package sockmap

import (
	"errors"
	"net"
	"time"
)

// ErrUnsupported is wrapped by New's error: BPF sockmaps exist on Linux
// only.
var ErrUnsupported = errors.New("sockmap: in-kernel forwarding unsupported")

// ErrRefused is wrapped by Add's error when a pair cannot be forwarded in
// the kernel but nothing was changed.
var ErrRefused = errors.New("sockmap: pair refused")

// Forwarder is never created off Linux.
type Forwarder struct{}

// New reports ErrUnsupported.
func New() (*Forwarder, error) { return nil, ErrUnsupported }

// Close does nothing.
func (f *Forwarder) Close() error { return nil }

// Pipe never handles a pair off Linux.
func Pipe(f *Forwarder, client, backend *net.TCPConn, idle time.Duration) (handled bool, err error) {
	return false, nil
}
