package config

import (
	"os"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, name := range []string{"example-nginx.yaml", "example-haproxy.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"", "lisen: x\n", "a:\n\tb: 1\n", "routes: *x\n", "x: &a [1]\nroutes: [*a, *a]\n",
		"listen: !!str 443\n", "acme: {eab: {}}\n", "<<: {}\n", "? a\n: b\n", "- a\n- b\n",
		"routes:\n  - names: [\"*\", \"*.a\", a.*.b]\n    backend: \"[::1\"\n    send_proxy: 99999999999999999999\n",
		"proxy:\n  trusted_proxies: [\"fe80::1%eth0\", \"::ffff:1.2.3.4\", 1.2.3.4/40]\n  idle_timeout: 9999999999d\n",
		"certificates:\n  - names: [\"\", \"*\", ..., \"0.0.0.0\"]\n    haproxy:\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz.yaml")
		if err == nil {
			// Whatever parses must describe itself and still validate.
			_ = c.Summary()
			if err := c.Validate(); err != nil {
				t.Fatalf("Parse accepted a config that Validate refuses: %v", err)
			}
		} else if err.Error() == "" {
			t.Fatal("empty error message")
		}
	})
}
