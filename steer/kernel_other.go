//go:build !linux

package steer

import (
	"fmt"
	"net/netip"
	"runtime"

	"github.com/tlsalpn/tlsalpn/procnet"
)

// kernel has no implementation here: sk_lookup is Linux's.
type kernel struct{}

func loadKernel(netip.AddrPort) (*kernel, error) {
	return nil, fmt.Errorf("steer: %w on %s (Linux only)", ErrUnsupported, runtime.GOOS)
}

func (*kernel) grab(string, netip.AddrPort) (procnet.Listener, error) {
	return procnet.Listener{}, ErrUnsupported
}
func (*kernel) present() bool          { return false }
func (*kernel) steered() uint64        { return 0 }
func (*kernel) setSteering(bool) error { return ErrUnsupported }
func (*kernel) detach() error          { return nil }
func (*kernel) close() error           { return nil }
