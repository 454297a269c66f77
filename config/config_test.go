package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestExamples(t *testing.T) {
	for _, tc := range []struct {
		file  string
		check func(t *testing.T, c *Config)
	}{
		{"example-nginx.yaml", func(t *testing.T, c *Config) {
			if got := c.Routes[0].Names; !reflect.DeepEqual(got, []string{"example.com", "www.example.com"}) {
				t.Errorf("routes[0].names = %q", got)
			}
			if !reflect.DeepEqual(c.Certificates[0].Names, c.Routes[0].Names) {
				t.Errorf("the alias *site gave %q", c.Certificates[0].Names)
			}
			if c.Routes[0].SendProxy != 2 || c.Routes[1].Mode != ModeHTTP || c.Routes[2].Mode != ModePassthrough {
				t.Errorf("routes = %+v", c.Routes)
			}
			if c.Certificates[0].DeployHook != "systemctl reload nginx" || c.Certificates[0].Out != "/etc/nginx/tls/example.com" {
				t.Errorf("certificates[0] = %+v", c.Certificates[0])
			}
			if time.Duration(c.Proxy.DrainTimeout) != 30*time.Second {
				t.Errorf("drain_timeout = %v", c.Proxy.DrainTimeout)
			}
		}},
		{"example-haproxy.yaml", func(t *testing.T, c *Config) {
			want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32")}
			if !reflect.DeepEqual(c.Proxy.TrustedProxies, want) {
				t.Errorf("trusted_proxies = %v", c.Proxy.TrustedProxies)
			}
			if c.Proxy.MaxHelloWaitsPerSource != 256 {
				t.Errorf("max_hello_waits_per_source = %d", c.Proxy.MaxHelloWaitsPerSource)
			}
			h := c.Certificates[0].HAProxy
			if h == nil || h.Socket != "/run/haproxy/admin.sock" || h.Cert != "/etc/haproxy/certs/example.com.pem" {
				t.Errorf("haproxy = %+v", h)
			}
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			c, err := Load(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if c.Listen != ":443" || c.ACME.CA != "letsencrypt" || !c.ACME.AgreeTOS || c.ACME.KeyType != "ec256" {
				t.Errorf("top = %q %+v", c.Listen, c.ACME)
			}
			if c.Certificates[0].KeyType != "ec256" || c.Certificates[0].HookTimeout != DefaultHookTimeout {
				t.Errorf("certificate defaults not applied: %+v", c.Certificates[0])
			}
			tc.check(t, c)
			t.Log(c.Summary())
		})
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]byte("routes:\n  - names: ['*']\n    backend: 127.0.0.1:8443\n"), "min.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := Proxy{
		ClientHelloTimeout:     DefaultClientHelloTimeout,
		IdleTimeout:            DefaultIdleTimeout,
		DialTimeout:            DefaultDialTimeout,
		MaxConnections:         DefaultMaxConnections,
		MaxHelloWaitsPerSource: DefaultMaxHelloWaits,
		DrainTimeout:           DefaultDrainTimeout,
		Steer:                  SteerAuto,
	}
	if !reflect.DeepEqual(c.Proxy, want) {
		t.Errorf("proxy = %+v, want %+v", c.Proxy, want)
	}
	if c.Listen != ":443" || c.Storage != (Storage{}) || c.ACME.CA != "letsencrypt" || c.Routes[0].Mode != ModePassthrough {
		t.Errorf("defaults: %+v", c)
	}
	if got, want := c.Summary(), "listening on :443; 1 route (1 passthrough); default route to 127.0.0.1:8443; no certificates; at most 8000 connections"; got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}
}

func TestAccepted(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		check      func(c *Config) bool
	}{
		{"names as one string", "routes:\n  - names: Example.COM.\n    backend: \"[::1]:8443\"\n",
			func(c *Config) bool { return reflect.DeepEqual(c.Routes[0].Names, []string{"example.com"}) }},
		{"flow style everywhere", `{routes: [{names: ["*"], backend: "h:1", send_proxy: 1}], acme: {eab: {kid: k, hmac_key: "c2VjcmV0"}}}`,
			func(c *Config) bool { return c.Routes[0].SendProxy == 1 && c.ACME.EAB.KID == "k" }},
		{"IP certificate and days", "acme: {agree_tos: true}\ncertificates:\n  - names: [192.0.2.1, \"2001:db8::1\"]\n    hook_timeout: 1d12h\n",
			func(c *Config) bool { return time.Duration(c.Certificates[0].HookTimeout) == 36*time.Hour }},
		{"per-certificate overrides", "acme: {agree_tos: true, key_type: RSA2048, profile: classic}\ncertificates:\n  - names: [a.example]\n  - names: [a.example]\n    key_type: ec384\n    profile: shortlived\n",
			func(c *Config) bool {
				return c.Certificates[0].KeyType == "rsa2048" && c.Certificates[0].Profile == "classic" &&
					c.Certificates[1].KeyType == "ec384" && c.Certificates[1].Profile == "shortlived"
			}},
		{"tcp mode covered", "acme: {agree_tos: true}\nroutes:\n  - names: [db.example]\n    backend: 127.0.0.1:5432\n    mode: TCP\ncertificates:\n  - names: [DB.example]\n",
			func(c *Config) bool { return c.Routes[0].Mode == ModeTCP }},
		{"x- keys hold anchors", "x-backend: &web {names: [\"*\"], backend: \"127.0.0.1:8443\", send_proxy: 2}\nroutes:\n  - *web\n",
			func(c *Config) bool { return c.Routes[0].SendProxy == 2 }},
		{"!!str tag", "routes:\n  - names: [\"*\"]\n    backend: !!str h:1\nlisten: !!str :8443\n",
			func(c *Config) bool { return c.Listen == ":8443" }},
		{"byte order mark and CRLF", "\ufeffroutes:\r\n- names: ['*']\r\n  backend: h:1\r\n",
			func(c *Config) bool { return c.Routes[0].Backend == "h:1" }},
		{"block scalar hook", "acme: {agree_tos: true}\ncertificates:\n  - names: [a.example]\n    deploy_hook: |\n      systemctl reload nginx\n      echo done\n",
			func(c *Config) bool { return c.Certificates[0].DeployHook == "systemctl reload nginx\necho done\n" }},
		{"comments only around", "# head\nroutes: # x\n  - names: ['*'] # y\n    backend: h:1\n# tail\n",
			func(c *Config) bool { return len(c.Routes) == 1 }},
		{"haproxy TCP socket", "acme: {agree_tos: true}\ncertificates:\n  - names: [a.example]\n    haproxy: {socket: \"127.0.0.1:9999\", cert: /etc/haproxy/a.pem}\n",
			func(c *Config) bool { return c.Certificates[0].HAProxy.Socket == "127.0.0.1:9999" }},
		{"bare zero duration", "proxy: {idle_timeout: 0}\nroutes: [{names: ['*'], backend: 'h:1'}]\n",
			func(c *Config) bool { return c.Proxy.IdleTimeout == DefaultIdleTimeout }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), "t.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("unexpected result: %+v", c)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	const route = "routes:\n  - names: [\"*\"]\n    backend: 127.0.0.1:8443\n"
	for _, tc := range []struct {
		name      string
		yaml      string
		line, col int
		want      string // substring of the message
	}{
		// The file as a whole.
		{"empty", "", 1, 1, "the file is empty"},
		{"comments only", "# nothing\n", 1, 1, "the file is empty"},
		{"not YAML: text", "hello world\n", 1, 1, "the file must be a mapping of keys such as listen:"},
		{"not YAML: TOML", "[acme]\nemail = \"ops@example.com\"\n", 2, 1, "this looks like TOML"},
		{"not YAML: binary", "listen: x\x00\n", 1, 10, "not text"},
		{"not YAML: bad UTF-8", "listen: \xff\n", 1, 9, "not text"},
		{"tab indentation", "routes:\n\t- names: [a]\n", 2, 1, "a tab is used for indentation"},
		{"tab after spaces", "acme:\n  ca: x\n \temail: y\n", 3, 2, "replace the tab with spaces"},
		{"syntax", "listen: \":443\n", 1, 9, "not valid YAML"},
		{"two documents", "listen: \":1\"\n---\nlisten: \":2\"\n", 2, 1, "second YAML document"},
		{"duplicate key", "listen: \":1\"\nstorage: /x\nlisten: \":2\"\n", 3, 1, `key "listen" is given twice in the same mapping (first at line 1)`},
		{"bad indentation", "acme:\n  email: ops@example.com\n   agree_tos: true\n", 2, 10, "check the indentation of this line and the next"},
		{"quoted number", route + "    send_proxy: \"2\"\n", 4, 17, `want 0, 1 or 2, got "2": write the number without quotes`},
		{"nothing to do", "listen: \":443\"\n", 1, 1, "nothing to do"},

		// Unknown keys.
		{"unknown top key", "\n\n\nlisen: \":443\"\n" + route, 4, 1, `unknown key "lisen" in the top level: did you mean "listen"?`},
		{"unknown nested key", route + "    bakend: x\n", 4, 5, `unknown key "bakend" in routes[0]: did you mean "backend"?`},
		{"key at the wrong level", "email: ops@example.com\n" + route, 1, 1, `unknown key "email" in the top level: email belongs under acme:`},
		{"unknown key no hint", "proxy:\n  frobnicate: 1\n" + route, 2, 3, "the keys here are client_hello_timeout, idle_timeout"},
		{"long typo", "proxy:\n  client_helo_timout: 1s\n" + route, 2, 3, `did you mean "client_hello_timeout"?`},
		{"merge key", "acme:\n  <<: {ca: x}\n" + route, 2, 3, "merge keys (<<) are not supported"},

		// Wrong types.
		{"send_proxy yes", route + "    send_proxy: yes\n", 4, 17, `routes[0].send_proxy: want 0, 1 or 2, got "yes"`},
		{"send_proxy 3", route + "    send_proxy: 3\n", 4, 17, `routes[0].send_proxy: want 0, 1 or 2, got 3`},
		{"listen number", "listen: 443\n" + route, 1, 9, `listen: want a string such as ":443", got the number 443`},
		{"agree_tos yes", "acme:\n  agree_tos: yes\n" + route, 2, 14, `acme.agree_tos: want true or false, got "yes"`},
		{"max_connections string", "proxy:\n  max_connections: 8k\n" + route, 2, 20, `want a number of connections such as 8000, got "8k"`},
		{"max_connections huge", "proxy:\n  max_connections: 99999999999999\n" + route, 2, 20, "out of range"},
		{"max_hello_waits_per_source string", "proxy:\n  max_hello_waits_per_source: lots\n" + route, 2, 31, `want a number of connections such as 128, got "lots"`},
		{"steer unknown", "proxy:\n  steer: on\n" + route, 2, 10, `proxy.steer: unknown value "on": write auto`},
		{"duration without unit", "proxy:\n  dial_timeout: 30\n" + route, 2, 17, `write "30s" for seconds`},
		{"duration garbage", "proxy:\n  dial_timeout: soon\n" + route, 2, 17, `"soon" is not a duration`},
		{"duration fractional days", "proxy:\n  idle_timeout: 1.5d\n" + route, 2, 17, `write hours instead, e.g. "36h"`},
		{"routes is a mapping", "routes:\n  names: [a]\n", 2, 3, `routes: want a list of routes, each starting with "- names:", got a mapping`},
		{"acme is a list", "acme: [a]\n" + route, 1, 7, "acme: want a mapping of keys such as ca:, email: or agree_tos:, got a list"},
		{"names is a mapping", "routes:\n  - names: {a: b}\n    backend: h:1\n", 2, 12, "routes[0].names: want a list such as"},
		{"undefined alias", "routes: *r\n", 1, 9, "alias *r refers to no anchor &r"},
		{"unknown tag", "listen: !secret x\n" + route, 1, 9, "YAML tag !secret is not supported"},

		// Routes.
		{"backend without port", "routes:\n  - names: [a.example]\n    backend: 127.0.0.1\n", 3, 14, `routes[0].backend: "127.0.0.1" has no port: write host:port, e.g. "127.0.0.1:8443"`},
		{"backend IPv6 without brackets", "routes:\n  - names: [a.example]\n    backend: \"2001:db8::1:8443\"\n", 3, 14, "has no port: write host:port, with an IPv6 address in brackets"},
		{"backend URL", "routes:\n  - names: [a.example]\n    backend: https://10.0.0.5\n", 3, 14, `is a URL: write a TCP address, host:port, such as "10.0.0.5:443"`},
		{"backend named port", "routes:\n  - names: [a.example]\n    backend: localhost:https\n", 3, 14, "the port must be a number"},
		{"backend port range", "routes:\n  - names: [a.example]\n    backend: h:70000\n", 3, 14, "port 70000 is out of range"},
		{"backend missing", "routes:\n  - names: [a.example]\n    mode: passthrough\n", 2, 5, "routes[0].backend is missing: add backend: 127.0.0.1:8443"},
		{"backend empty", "routes:\n  - names: [a.example]\n    backend:\n", 3, 5, "backend is missing"},
		{"no names", "routes:\n  - backend: h:1\n", 2, 5, "routes[0]: no names"},
		{"mode unknown", route + "    mode: https\n", 4, 11, `routes[0].mode: unknown mode "https": want passthrough`},
		{"mode suggestion", route + "    mode: passthru\n", 4, 11, `did you mean "passthrough"?`},
		{"duplicate across routes", route + "  - names: [a.example]\n    backend: h:1\n  - names: [b.example, A.Example]\n    backend: h:2\n", 6, 24, `routes[2].names[1]: "a.example" is already routed by routes[1]`},
		{"duplicate in route", "routes:\n  - names: [a.example, b.example, a.example]\n    backend: h:1\n", 2, 35, `routes[0].names[2]: "a.example" is listed twice in this route`},
		{"two default routes", route + "  - names:\n      - x.example\n      - \"*\"\n    backend: h:1\n", 6, 9, `routes[1].names[1]: a second default route "*" (the first is routes[0])`},
		{"bad wildcard", "routes:\n  - names: [\"a.*.example\"]\n    backend: h:1\n", 2, 13, "a wildcard must be the whole first label"},
		{"IP route name", "routes:\n  - names: [192.0.2.1]\n    backend: h:1\n", 2, 13, "clients send no server name when they connect to an address"},
		{"bad host name", "routes:\n  - names: [\"exa mple.com\"]\n    backend: h:1\n", 2, 13, `has " ", which is not allowed in a host name`},
		{"http route uncovered", "routes:\n  - names: [app.example]\n    backend: h:1\n    mode: http\n", 2, 13, `mode http terminates TLS for "app.example" with a managed certificate, but no certificate has that name: add it under certificates:`},
		{"tcp route partly covered", "acme: {agree_tos: true}\nroutes:\n  - names: [a.example, b.example]\n    backend: h:1\n    mode: tcp\ncertificates:\n  - names: [a.example]\n", 3, 24, `"b.example" with a managed certificate, but no certificate has that name`},
		{"http default route", "routes:\n  - names: [\"*\"]\n    backend: h:1\n    mode: http\n", 2, 13, `the default route "*" cannot use mode http`},
		{"http wildcard route", "routes:\n  - names: [\"*.example.com\"]\n    backend: h:1\n    mode: http\n", 2, 13, "only DNS-01 can"},

		// Certificates and the account.
		{"wildcard certificate", "acme: {agree_tos: true}\ncertificates:\n  - names:\n      - example.com\n      - \"*.example.com\"\n", 5, 9, `certificates[0].names[1]: "*.example.com" is a wildcard: TLS-ALPN-01 cannot validate wildcards (RFC 8737), a CA issues them only through DNS-01`},
		{"agree_tos false", "acme:\n  email: ops@example.com\n  agree_tos: false\ncertificates:\n  - names: [a.example]\n", 3, 14, "read the CA's terms, then set agree_tos: true"},
		{"agree_tos absent", "certificates:\n  - names: [a.example]\n", 2, 3, "acme.agree_tos: certificates are listed but the CA's terms of service are not accepted"},
		{"eab half", "acme:\n  eab:\n    kid: abc\n" + route, 3, 5, "acme.eab: hmac_key is missing"},
		{"eab other half", "acme:\n  eab: {hmac_key: c2VjcmV0}\n" + route, 2, 8, "acme.eab: kid is missing"},
		{"eab empty", "acme:\n  eab: {}\n" + route, 2, 8, "acme.eab: empty"},
		{"eab bad key", "acme:\n  eab: {kid: a, hmac_key: \"not base64!\"}\n" + route, 2, 27, "acme.eab.hmac_key: not base64url"},
		{"bad email", "acme:\n  email: ops at example.com\n" + route, 2, 10, `"ops at example.com" is not an email address`},
		{"bad key type", "acme:\n  key_type: ec255\n" + route, 2, 13, `unknown key type "ec255": want ec256, ec384, rsa2048, rsa3072 or rsa4096; did you mean "ec256"?`},
		{"bad CA", "acme:\n  ca: acme.example.com/directory\n" + route, 2, 7, "write the full directory URL, https://acme.example.com/directory"},
		{"duplicate certificate name", "acme: {agree_tos: true}\ncertificates:\n  - names: [a.example]\n  - names: [b.example, a.example]\n", 4, 24, `"a.example" is already in certificates[0] with the same key type`},
		{"duplicate in certificate", "acme: {agree_tos: true}\ncertificates:\n  - names: [a.example, a.example]\n", 3, 24, "listed twice in this certificate"},
		{"certificate no names", "acme: {agree_tos: true}\ncertificates:\n  - out: /x\n", 3, 5, "certificates[0]: no names"},
		{"relative out", "acme: {agree_tos: true}\ncertificates:\n  - names: [a.example]\n    out: tls/a\n", 4, 10, `"tls/a" is relative: write an absolute directory`},
		{"haproxy without cert", "acme: {agree_tos: true}\ncertificates:\n  - names: [a.example]\n    haproxy:\n      socket: /run/haproxy.sock\n", 5, 7, "certificates[0].haproxy: cert is missing"},
		{"haproxy unix@", "acme: {agree_tos: true}\ncertificates:\n  - names: [a.example]\n    haproxy: {socket: \"unix@/run/h.sock\", cert: /c.pem}\n", 4, 23, "leave out the unix@ prefix"},
		{"negative hook timeout", "acme: {agree_tos: true}\ncertificates:\n  - names: [a.example]\n    hook_timeout: -1m\n", 4, 19, "certificates[0].hook_timeout: -1m is negative"},

		// Proxy.
		{"negative duration", "proxy:\n  idle_timeout: -5s\n" + route, 2, 17, "proxy.idle_timeout: -5s is negative"},
		{"negative max_connections", "proxy:\n  max_connections: -1\n" + route, 2, 20, "proxy.max_connections: -1 is negative"},
		{"negative max_hello_waits_per_source", "proxy:\n  max_hello_waits_per_source: -1\n" + route, 2, 31, "proxy.max_hello_waits_per_source: -1 is negative: write a number of connections such as 128"},
		{"bad CIDR", "proxy:\n  trusted_proxies: [10.0.0.0/33]\n" + route, 2, 21, `"10.0.0.0/33" is not a network: write a CIDR prefix such as 10.0.0.0/8`},
		{"CIDR host bits", "proxy:\n  trusted_proxies:\n    - 10.1.2.3/8\n" + route, 3, 7, "did you mean 10.0.0.0/8?"},
		{"bad address", "proxy:\n  trusted_proxies: [example.com]\n" + route, 2, 21, "is not an IP address or network"},
		{"listen without port", "listen: \"0.0.0.0\"\n" + route, 1, 9, `"0.0.0.0" has no port`},
		{"relative storage", "storage: data\n" + route, 1, 10, "write an absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "serve.yaml")
			if err == nil {
				t.Fatal("no error")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%T is not an *Error: %v", err, err)
			}
			if e.File != "serve.yaml" || e.Line != tc.line || e.Column != tc.col || !strings.Contains(e.Msg, tc.want) {
				t.Errorf("got  %v\nwant serve.yaml:%d:%d: ...%s...", err, tc.line, tc.col, tc.want)
			}
		})
	}
}

func TestErrorList(t *testing.T) {
	// Three independent mistakes are all reported, in file order.
	src := "lisen: \":443\"\nacme:\n  emial: x\nroutes:\n  - names: [a]\n    backend: h:1\n    send_proxy: yes\n"
	_, err := Parse([]byte(src), "s.yaml")
	var l ErrorList
	if !errors.As(err, &l) || len(l) != 3 {
		t.Fatalf("got %T %v", err, err)
	}
	want := `s.yaml:1:1: unknown key "lisen" in the top level: did you mean "listen"?
s.yaml:3:3: unknown key "emial" in acme: did you mean "email"?
s.yaml:7:17: routes[0].send_proxy: want 0, 1 or 2, got "yes"`
	if err.Error() != want {
		t.Errorf("got\n%v\nwant\n%s", err, want)
	}

	// A flood of errors is cut short.
	var b strings.Builder
	b.WriteString("routes:\n")
	for range 50 {
		b.WriteString("  - names: [a]\n    backend: h\n")
	}
	_, err = Parse([]byte(b.String()), "s.yaml")
	if !errors.As(err, &l) || len(l) != maxErrors+1 || !strings.Contains(l[maxErrors].Msg, "too many errors") {
		t.Errorf("got %d errors: %v", len(l), err)
	}
}

func TestValidateBuilt(t *testing.T) {
	// A Config built in code (from flags) validates too, without positions.
	c := &Config{
		Routes:       []Route{{Names: []string{"Example.com"}, Backend: "127.0.0.1", Mode: "http"}},
		Certificates: []Certificate{{Names: []string{"example.com."}}},
		ACME:         ACME{AgreeTOS: true},
	}
	c.SetDefaults()
	err := c.Validate()
	var e *Error
	if !errors.As(err, &e) || e.Line != 0 || err.Error() != `routes[0].backend: "127.0.0.1" has no port: write host:port, e.g. "127.0.0.1:8443"` {
		t.Fatalf("got %v", err)
	}
	c.Routes[0].Backend = "127.0.0.1:8080"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Routes[0].Names[0] != "example.com" || c.Certificates[0].Names[0] != "example.com" {
		t.Errorf("names not canonical: %q %q", c.Routes[0].Names, c.Certificates[0].Names)
	}
	c.Routes[0].SendProxy = 7
	c.Proxy.TrustedProxies = []netip.Prefix{{}}
	err = c.Validate()
	var l ErrorList
	if !errors.As(err, &l) || len(l) != 2 {
		t.Errorf("got %v", err)
	}
}

func TestErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{File: "f.yaml", Line: 4, Column: 3, Msg: "m"}, "f.yaml:4:3: m"},
		{Error{File: "f.yaml", Line: 4, Msg: "m"}, "f.yaml:4: m"},
		{Error{File: "f.yaml", Msg: "m"}, "f.yaml: m"},
		{Error{Msg: "m"}, "m"},
		{Error{Line: 2, Column: 1, Msg: "m"}, "2:1: m"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.e, got, tc.want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	path := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(path, []byte(strings.Repeat("#\n", maxFileSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	var e *Error
	if _, err := Load(path); !errors.As(err, &e) || !strings.Contains(e.Msg, "larger than") {
		t.Errorf("big file: %v", err)
	}
	path = filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(path, []byte("lisen: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); !errors.As(err, &e) || e.File != path {
		t.Errorf("error does not name the file: %v", err)
	}
}

func TestAliasBudget(t *testing.T) {
	// Anchors reused in every entry cannot make decoding work for long.
	var b strings.Builder
	b.WriteString("x-names: &n [")
	for i := range 2000 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("a.example")
	}
	b.WriteString("]\nroutes:\n")
	for range 2000 {
		b.WriteString("  - names: *n\n")
	}
	_, err := Parse([]byte(b.String()), "bomb.yaml")
	var e *Error
	if !errors.As(err, &e) || !strings.Contains(e.Msg, "expands to more than") {
		t.Errorf("got %.300v", err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"listen", "listen", 0}, {"lisen", "listen", 1}, {"kitten", "sitting", 3}, {"", "abc", 3}, {"emial", "email", 1}, {"ab", "ba", 1},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	if got := nearest("LISTEN", topKeys); got != "listen" {
		t.Errorf("nearest is case-blind: %q", got)
	}
	if got := nearest("zzz", topKeys); got != "" {
		t.Errorf("nearest(zzz) = %q", got)
	}
}

func TestStorage(t *testing.T) {
	const route = "routes:\n  - names: [\"*\"]\n    backend: 127.0.0.1:8443\n"
	for _, tc := range []struct {
		name, yaml string
		want       Storage
	}{
		{"plain directory", "storage: /var/lib/tlsalpn\n" + route, Storage{Location: "/var/lib/tlsalpn"}},
		{"mapping directory", "storage:\n  location: /var/lib/tlsalpn\n" + route, Storage{Location: "/var/lib/tlsalpn"}},
		{"etcd with everything", "storage:\n  location: etcd://10.0.0.1:2379,[2001:db8::2]:2379/tlsalpn\n  etcd_ca: /etc/t/ca.pem\n  etcd_cert: /etc/t/c.pem\n  etcd_key: /etc/t/k.pem\n  etcd_user: tlsalpn\n  etcd_password_file: /etc/t/pw\n  encryption_key_file: /etc/t/key\n" + route,
			Storage{Location: "etcd://10.0.0.1:2379,[2001:db8::2]:2379/tlsalpn", EtcdCA: "/etc/t/ca.pem", EtcdCert: "/etc/t/c.pem", EtcdKey: "/etc/t/k.pem", EtcdUser: "tlsalpn", EtcdPasswordFile: "/etc/t/pw", EncryptionKeyFile: "/etc/t/key"}},
		{"etcd, the rest from the command line", "storage: etcd://a:2379/p\n" + route, Storage{Location: "etcd://a:2379/p"}},
		{"etcd settings, the location from the command line", "storage:\n  etcd_cert: /c\n  encryption_key_file: /k\n" + route, Storage{EtcdCert: "/c", EncryptionKeyFile: "/k"}},
		{"etcd without prefix, flow style", "storage: {location: \"etcd://h:2379\", encryption_key_file: /k}\n" + route, Storage{Location: "etcd://h:2379", EncryptionKeyFile: "/k"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.yaml), "t.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if c.Storage != tc.want {
				t.Errorf("storage = %+v, want %+v", c.Storage, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		name      string
		yaml      string
		line, col int
		want      string
	}{
		{"relative in a mapping", "storage:\n  location: data\n", 2, 13, `storage.location: "data" is relative`},
		{"unknown key", "storage:\n  encryption_keyfile: /x\n", 2, 3, `unknown key "encryption_keyfile" in storage: did you mean "encryption_key_file"?`},
		{"storage key at the top", "etcd_ca: /x\n", 1, 1, "etcd_ca belongs under storage:"},
		{"not a string", "storage: 5\n", 1, 10, `storage: want a string such as "/var/lib/tlsalpn", got the number 5`},
		{"location not a string", "storage:\n  location: [a]\n", 2, 13, "storage.location: want a string"},
		{"other scheme", "storage: https://etcd.example:2379/x\n", 1, 10, `want a directory such as /var/lib/tlsalpn, or an etcd cluster as etcd://`},
		{"etcd no member", "storage: {location: \"etcd:///p\", encryption_key_file: /k}\n", 1, 21, "no HOST:PORT"},
		{"etcd no port", "storage: {location: \"etcd://10.0.0.1/p\", encryption_key_file: /k}\n", 1, 21, `endpoint "10.0.0.1" is not HOST:PORT: write etcd://HOST:PORT`},
		{"etcd bad second member", "storage: {location: \"etcd://a:1,b:x/p\", encryption_key_file: /k}\n", 1, 21, `endpoint "b:x": port "x" is not 1-65535`},
		{"etcd prefix not a name", "storage: {location: \"etcd://a:1/a//b\", encryption_key_file: /k}\n", 1, 21, "prefix"},
		{"etcd credentials in URL", "storage: {location: \"etcd://u:p@a:1/p\", encryption_key_file: /k}\n", 1, 21, "credentials come from their own options"},
		{"etcd relative file", "storage:\n  location: etcd://a:2379/p\n  encryption_key_file: key\n", 3, 24, `storage.encryption_key_file: "key" is relative`},
		{"etcd settings with a directory", "storage:\n  location: /var/lib/tlsalpn\n  etcd_ca: /ca.pem\n", 3, 12, "only etcd storage uses etcd_ca"},
		{"etcd user with a directory", "storage:\n  location: /var/lib/tlsalpn\n  etcd_user: u\n", 3, 14, "only etcd storage uses etcd_user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml+route), "serve.yaml")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%T is not an *Error: %v", err, err)
			}
			if e.Line != tc.line || e.Column != tc.col || !strings.Contains(e.Msg, tc.want) {
				t.Errorf("got  %v\nwant serve.yaml:%d:%d: ...%s...", err, tc.line, tc.col, tc.want)
			}
		})
	}
}
