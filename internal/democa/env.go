package democa

import (
	"os"
	"strconv"
	"sync"
)

// Pebble's va.New and wfe.New read part of their configuration from the
// environment with os.Getenv, and offer no other way to set it. Start therefore
// sets these variables from Options just around those two calls and restores
// the previous values right after. envMu serialises that window so that CAs
// started concurrently each see their own settings; it is the package's only
// mutable global, and it exists because the environment itself is global.
// Other code in the process that reads these variables at that moment would
// see the temporary values; nothing but Pebble reads them.
var envMu sync.Mutex

// pebbleEnv maps Options to the environment Pebble's constructors read. Every
// variable Pebble consults is listed, so the CA's behaviour depends on Options
// alone and never on the environment a test happens to run in; a nil value
// means unset.
func pebbleEnv(opts Options) map[string]*string {
	str := func(s string) *string { return &s }
	env := map[string]*string{
		// va.New: sleep up to PEBBLE_VA_SLEEPTIME (default 5) seconds before
		// each validation attempt unless NOSLEEP; ALWAYS_VALID would skip
		// validation entirely, which would defeat the point of this CA.
		"PEBBLE_VA_NOSLEEP":      nil,
		"PEBBLE_VA_SLEEPTIME":    nil,
		"PEBBLE_VA_ALWAYS_VALID": nil,
		// wfe.New.
		"PEBBLE_WFE_NONCEREJECT":     str(strconv.Itoa(opts.NonceRejectPercent)),
		"PEBBLE_AUTHZREUSE":          str(strconv.Itoa(opts.AuthzReuse)),
		"PEBBLE_WFE_ORDERS_PER_PAGE": nil,
	}
	if opts.NoSleep {
		env["PEBBLE_VA_NOSLEEP"] = str("1")
	}
	return env
}

// withPebbleEnv runs f with the environment variables in env set (or unset,
// for nil values), then restores them.
func withPebbleEnv(env map[string]*string, f func()) {
	envMu.Lock()
	defer envMu.Unlock()
	type saved struct {
		val string
		ok  bool
	}
	prev := make(map[string]saved, len(env))
	for k, v := range env {
		old, ok := os.LookupEnv(k)
		prev[k] = saved{old, ok}
		if v == nil {
			os.Unsetenv(k)
		} else {
			os.Setenv(k, *v)
		}
	}
	defer func() {
		for k, p := range prev {
			if p.ok {
				os.Setenv(k, p.val)
			} else {
				os.Unsetenv(k)
			}
		}
	}()
	f()
}
