package check

import (
	"net"
	"net/netip"
)

// HostAddrs returns the addresses of this host's interfaces, without zones.
func HostAddrs() ([]netip.Addr, error) {
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ia := range ifaddrs {
		if pfx, err := netip.ParsePrefix(ia.String()); err == nil {
			out = append(out, pfx.Addr().WithZone(""))
		}
	}
	return out, nil
}
