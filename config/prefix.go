package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// parsePrefix reads a CIDR prefix or a bare address (a one-address prefix).
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a network: write a CIDR prefix such as 10.0.0.0/8 or 2001:db8::/32, or one address", s)
		}
		if p.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q has a zone: leave out the %%zone", s)
		}
		if m := p.Masked(); m != p {
			return netip.Prefix{}, fmt.Errorf("%q has bits set past the /%d prefix: did you mean %s?", s, p.Bits(), m)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or network: write an address such as 192.0.2.7 or a CIDR prefix such as 10.0.0.0/8", s)
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q has a zone: leave out the %%zone", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
