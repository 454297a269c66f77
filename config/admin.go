package config

import (
	"errors"

	"github.com/tlsalpn/tlsalpn/metrics"
)

// validateAdmin checks the admin API's address with the package that
// serves it (metrics): host:port, and loopback unless a bearer token file
// is given, since the API forces renewals (each counts against the CA's
// rate limits) and tells what is kept where. A host left out (":9443")
// listens everywhere. This only puts metrics' verdict on the line.
func (c *Config) validateAdmin(v *validator) {
	if c.Admin == "" {
		// A token file alone is checked by the command, whose --admin
		// may give the address.
		return
	}
	switch err := metrics.CheckAddr(c.Admin, c.AdminTokenFile != ""); {
	case err == nil:
	case errors.Is(err, metrics.ErrNotLoopback):
		v.errorf("admin", "%s is not a loopback address: the admin API can force renewals, so anything but 127.0.0.1, ::1 or localhost needs admin_token_file (a file holding the bearer token clients send)", c.Admin)
	default:
		v.errorf("admin", "%q: write host:port such as 127.0.0.1:9443", c.Admin)
	}
}
