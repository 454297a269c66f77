package config

import (
	"net"
	"net/netip"
)

// validateAdmin checks the admin API's address: host:port, and loopback
// unless a bearer token file is given, since the API forces renewals
// (each counts against the CA's rate limits) and tells what is kept
// where. A host left out (":9443") listens everywhere.
func (c *Config) validateAdmin(v *validator) {
	if c.Admin == "" {
		// A token file alone is checked by the command, whose --admin
		// may give the address.
		return
	}
	host, port, err := net.SplitHostPort(c.Admin)
	if err != nil || port == "" {
		v.errorf("admin", "%q: write host:port such as 127.0.0.1:9443", c.Admin)
		return
	}
	if c.AdminTokenFile != "" || AdminLoopback(host) {
		return
	}
	v.errorf("admin", "%s is not a loopback address: the admin API can force renewals, so anything but 127.0.0.1, ::1 or localhost needs admin_token_file (a file holding the bearer token clients send)", c.Admin)
}

// AdminLoopback reports whether host (of an admin address) is a loopback
// name or address.
func AdminLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
