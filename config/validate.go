package config

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/mail"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/proxy"
	"github.com/tlsalpn/tlsalpn/storage/etcd"
)

// validator reports problems at the position Parse recorded for each path,
// or without a position for a Config built in code.
type validator struct {
	errorSink
	pos map[string]pos
}

// at returns the position of path, or of its nearest recorded ancestor
// when the value itself was not in the file (a default, a missing key).
func (v *validator) at(path string) pos {
	for {
		if p, ok := v.pos[path]; ok {
			return p
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	if p, ok := v.pos[""]; ok {
		return p
	}
	return pos{}
}

func (v *validator) errorf(path, format string, args ...any) {
	v.add(v.at(path), "%s: %s", path, fmt.Sprintf(format, args...))
}

// Validate checks the configuration as a whole: addresses, names, modes,
// and the rules that tie routes, certificates and the account together. It
// expects the defaults to have been applied (see SetDefaults). Errors are
// an *Error or, when there are several, an ErrorList, in file order.
func (c *Config) Validate() error {
	v := &validator{errorSink: errorSink{file: c.file}, pos: c.pos}

	if len(c.Routes) == 0 && len(c.Certificates) == 0 {
		v.add(v.at(""), "nothing to do: add routes: to proxy connections, certificates: to obtain certificates, or both")
	}
	if err := proxy.CheckAddr(c.Listen, "443", true); err != nil {
		v.errorf("listen", "%v", err)
	}
	c.validateStorage(v)
	c.validateACME(v)
	c.validateProxy(v)
	refused := c.validateRoutes(v)
	c.validateCertificates(v)
	c.validateCoverage(v, refused)
	c.validateAdmin(v)

	slices.SortStableFunc(v.errs, func(a, b *Error) int {
		// Errors without a position keep their order, after the others.
		la, lb := a.Line, b.Line
		if la == 0 {
			la = math.MaxInt
		}
		if lb == 0 {
			lb = math.MaxInt
		}
		return cmp.Or(cmp.Compare(la, lb), cmp.Compare(a.Column, b.Column))
	})
	return v.err()
}

// validateStorage checks what the file alone decides: the location's form
// and that etcd settings do not sit beside a directory. The command may
// complete the section (a location from its environment, a key file from
// a flag), so what needs the whole (pairs of settings, the encryption key
// for private values) is checked by storage/etcd when it is opened, and
// whether the files exist by the command when it loads the file.
func (c *Config) validateStorage(v *validator) {
	s := &c.Storage
	loc := "storage" // the plain form, storage: /var/lib/tlsalpn
	if _, ok := v.pos["storage.location"]; ok {
		loc = "storage.location"
	}
	files := []struct{ key, val string }{
		{"etcd_ca", s.EtcdCA}, {"etcd_cert", s.EtcdCert}, {"etcd_key", s.EtcdKey},
		{"etcd_password_file", s.EtcdPasswordFile}, {"encryption_key_file", s.EncryptionKeyFile},
	}
	dir := false
	switch {
	case s.IsEtcd():
		// The meaning of the URL is storage/etcd's, which opens it.
		if _, err := etcd.ParseURL(s.Location); err != nil {
			v.errorf(loc, "%v: write etcd://HOST:PORT[,HOST:PORT…]/PREFIX, e.g. etcd://10.0.0.1:2379,10.0.0.2:2379/tlsalpn", err)
		}
	case strings.Contains(s.Location, "://"):
		v.errorf(loc, "%q: want a directory such as /var/lib/tlsalpn, or an etcd cluster as etcd://10.0.0.1:2379/tlsalpn", s.Location)
	case s.Location != "" && !filepath.IsAbs(s.Location):
		v.errorf(loc, "%q is relative: write an absolute path such as /var/lib/tlsalpn (a daemon's working directory is not where this file is)", s.Location)
	default:
		dir = s.Location != ""
	}
	if s.EtcdUser != "" && dir {
		v.errorf("storage.etcd_user", "only etcd storage uses etcd_user: write location: etcd://HOST:PORT/PREFIX, or remove etcd_user")
	}
	for _, f := range files {
		switch {
		case f.val == "":
		case dir:
			v.errorf("storage."+f.key, "only etcd storage uses %s: write location: etcd://HOST:PORT/PREFIX, or remove %s", f.key, f.key)
		case !filepath.IsAbs(f.val):
			v.errorf("storage."+f.key, "%q is relative: write an absolute path", f.val)
		}
	}
}

func (c *Config) validateACME(v *validator) {
	a := &c.ACME
	switch {
	case a.CA == "":
		v.errorf("acme.ca", "no CA: write ca: letsencrypt, or the CA's directory URL")
	case strings.Contains(a.CA, "://"):
		u, err := url.Parse(a.CA)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.errorf("acme.ca", "%q is not a directory URL: write one such as https://acme-v02.api.letsencrypt.org/directory", a.CA)
		}
	case strings.ContainsAny(a.CA, "./:"):
		v.errorf("acme.ca", "%q is neither a CA name nor a URL: write the full directory URL, https://%s", a.CA, a.CA)
	}
	if a.Email != "" {
		addr, err := mail.ParseAddress(a.Email)
		if err != nil || addr.Address != a.Email {
			v.errorf("acme.email", "%q is not an email address: write just the address, e.g. ops@example.com", a.Email)
		}
	}
	if len(c.Certificates) > 0 && !a.AgreeTOS {
		path := "acme.agree_tos"
		if _, ok := v.pos[path]; !ok {
			if _, ok := v.pos["acme"]; !ok {
				path = "certificates"
			}
		}
		v.add(v.at(path), "acme.agree_tos: certificates are listed but the CA's terms of service are not accepted: read the CA's terms, then set agree_tos: true under acme:")
	}
	if a.CARoot != "" && !filepath.IsAbs(a.CARoot) {
		v.errorf("acme.ca_root", "%q is relative: write an absolute path", a.CARoot)
	}
	if e := a.EAB; e != nil {
		switch {
		case e.KID == "" && e.HMACKey == "":
			v.errorf("acme.eab", "empty: an external account binding needs both kid and hmac_key from your CA; remove eab: if your CA needs none")
		case e.KID == "":
			v.errorf("acme.eab", "kid is missing: an external account binding needs both kid and hmac_key, as your CA shows them")
		case e.HMACKey == "":
			v.errorf("acme.eab", "hmac_key is missing: an external account binding needs both kid and hmac_key, as your CA shows them")
		default:
			if !isBase64(e.HMACKey) {
				v.errorf("acme.eab.hmac_key", "not base64url: copy the HMAC key exactly as your CA shows it")
			}
		}
	}
	checkKeyType(v, "acme.key_type", a.KeyType)
}

func isBase64(s string) bool {
	s = strings.TrimRight(s, "=")
	if _, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return true
	}
	_, err := base64.RawStdEncoding.DecodeString(s)
	return err == nil
}

// checkKeyType leaves the meaning of a key type to issuer, which uses it,
// and says where in the file an unknown one is, with the nearest known.
func checkKeyType(v *validator, path, kt string) {
	_, err := issuer.ParseKeyType(kt)
	var unknown *issuer.UnknownKeyTypeError
	switch {
	case err == nil:
		return
	case !errors.As(err, &unknown):
		v.errorf(path, "%v", err)
		return
	}
	var known []string
	for _, k := range issuer.KeyTypes() {
		known = append(known, string(k))
	}
	msg := fmt.Sprintf("unknown key type %q: want %s", unknown.Value, orList(known))
	if near := nearest(unknown.Value, known); near != "" {
		msg += fmt.Sprintf("; did you mean %q?", near)
	}
	v.errorf(path, "%s", msg)
}

func (c *Config) validateProxy(v *validator) {
	p := &c.Proxy
	for _, d := range []struct {
		key string
		d   Duration
	}{
		{"client_hello_timeout", p.ClientHelloTimeout},
		{"idle_timeout", p.IdleTimeout},
		{"dial_timeout", p.DialTimeout},
		{"drain_timeout", p.DrainTimeout},
	} {
		checkDuration(v, "proxy."+d.key, d.d)
	}
	if p.MaxConnections < 0 {
		v.errorf("proxy.max_connections", "%d is negative: write a number of connections such as %d", p.MaxConnections, DefaultMaxConnections)
	}
	if p.MaxHelloWaitsPerSource < 0 {
		v.errorf("proxy.max_hello_waits_per_source", "%d is negative: write a number of connections such as %d", p.MaxHelloWaitsPerSource, DefaultMaxHelloWaits)
	}
	switch strings.ToLower(p.Steer) {
	case "", SteerAuto, SteerOff:
	default:
		v.errorf("proxy.steer", "unknown value %q: write auto (hand connections straight to the backend's socket while no challenge is pending, where possible) or off (relay every connection)", p.Steer)
	}
	for i, pfx := range p.TrustedProxies {
		path := index("proxy.trusted_proxies", i)
		if !pfx.IsValid() {
			v.errorf(path, "not a network: write a CIDR prefix such as 10.0.0.0/8, or one address")
		} else if pfx != pfx.Masked() {
			v.errorf(path, "%s has bits set past the /%d prefix: did you mean %s?", pfx, pfx.Bits(), pfx.Masked())
		}
	}
}

func checkDuration(v *validator, path string, d Duration) {
	if d < 0 {
		v.errorf(path, "%s is negative: write a positive duration such as \"30s\" (0 means the default)", d)
	}
}

// validateRoutes leaves the meaning of a route to proxy, which uses it,
// and puts each of its errors at the line of the field it names, in the
// words of this file (its keys, routes[i] for a route). It returns the
// names proxy refused, by path, so that later checks skip them.
func (c *Config) validateRoutes(v *validator) map[string]bool {
	routes := make([]proxy.Route, len(c.Routes))
	for i, r := range c.Routes {
		routes[i] = proxy.Route{Names: r.Names, Backend: r.Backend, Mode: proxy.Mode(r.Mode), SendProxy: r.SendProxy}
	}
	refused := map[string]bool{}
	for _, err := range proxy.CheckRoutes(routes) {
		re, ok := errors.AsType[*proxy.RouteError](err)
		if !ok {
			v.errorf("routes", "%v", err)
			continue
		}
		path := index("routes", re.Route)
		if re.Field != "" {
			path += "." + string(re.Field)
		}
		if re.Field == proxy.FieldNames {
			path = index(path, re.Name)
			if _, dup := errors.AsType[*proxy.DuplicateNameError](re.Err); !dup {
				refused[path] = true
			}
		}
		if errors.Is(re.Err, proxy.ErrNoBackend) {
			v.add(v.at(path), "%s is missing: add backend: 127.0.0.1:8443, the host:port of the server these names go to", path)
			continue
		}
		v.errorf(path, "%s", routeProblem(re.Err))
	}
	return refused
}

// routeProblem words an error of proxy.CheckRoutes for this file.
func routeProblem(err error) string {
	if de, ok := errors.AsType[*proxy.DuplicateNameError](err); ok {
		switch {
		case de.SameRoute:
			return fmt.Sprintf("%q is listed twice in this route: remove one", de.Name)
		case de.Name == "*":
			return fmt.Sprintf("a second default route \"*\" (the first is %s): keep one", index("routes", de.First))
		}
		return fmt.Sprintf("%q is already routed by %s: a name may appear in one route only", de.Name, index("routes", de.First))
	}
	if me, ok := errors.AsType[*proxy.UnknownModeError](err); ok {
		var modes []string
		for _, m := range proxy.Modes() {
			modes = append(modes, string(m))
		}
		if near := nearest(me.Mode, modes); near != "" {
			return fmt.Sprintf("%v; did you mean %q?", err, near)
		}
	}
	switch {
	case errors.Is(err, proxy.ErrNoNames):
		return "no names: add names: [example.com], or names: [\"*\"] for the default route"
	}
	return err.Error()
}

func (c *Config) validateCertificates(v *validator) {
	owner := map[string]string{} // key type + " " + name -> path of the certificate
	for i, ct := range c.Certificates {
		path := index("certificates", i)
		if len(ct.Names) == 0 {
			v.errorf(path, "no names: add names: [example.com, www.example.com], the names the certificate is for")
		}
		kt := strings.ToLower(cmp.Or(ct.KeyType, c.ACME.KeyType))
		seen := map[string]bool{}
		for j, raw := range ct.Names {
			np := index(path+".names", j)
			name := canonicalName(raw)
			if msg := certNameProblem(name); msg != "" {
				v.errorf(np, "%s", msg)
				continue
			}
			if a, err := netip.ParseAddr(name); err == nil {
				name = a.Unmap().String()
			}
			key := kt + " " + name
			switch {
			case seen[name]:
				v.errorf(np, "%q is listed twice in this certificate: remove one", name)
			case owner[key] != "":
				v.errorf(np, "%q is already in %s with the same key type: a name belongs to one certificate (per key type)", name, owner[key])
			default:
				owner[key] = path
			}
			seen[name] = true
		}
		if ct.Out != "" && !filepath.IsAbs(ct.Out) {
			v.errorf(path+".out", "%q is relative: write an absolute directory such as /etc/nginx/tls/example.com", ct.Out)
		}
		checkDuration(v, path+".hook_timeout", ct.HookTimeout)
		if h := ct.HAProxy; h != nil {
			hp := path + ".haproxy"
			if msg := socketProblem(h.Socket); msg != "" {
				v.errorf(hp+".socket", "%s", msg)
			}
			switch {
			case h.Cert == "":
				v.errorf(hp, "cert is missing: add cert: with the crt path HAProxy loaded, e.g. /etc/haproxy/certs/example.com.pem")
			case !filepath.IsAbs(h.Cert):
				v.errorf(hp+".cert", "%q is relative: write the crt path exactly as HAProxy loaded it, e.g. /etc/haproxy/certs/example.com.pem", h.Cert)
			}
		}
		checkKeyType(v, path+".key_type", ct.KeyType)
	}
}

// certNameProblem says why name cannot be on a certificate obtained through
// TLS-ALPN-01, or "". IP addresses can (RFC 8738).
func certNameProblem(name string) string {
	switch {
	case name == "":
		return "empty name: write a host name such as example.com"
	case name == "*":
		return "\"*\" is the default route's name, not a certificate name: list the host names the certificate is for"
	case strings.Contains(name, "*"):
		return fmt.Sprintf("%q is a wildcard: TLS-ALPN-01 cannot validate wildcards (RFC 8737), a CA issues them only through DNS-01; list each name instead, e.g. %q", name, strings.Replace(name, "*", "www", 1))
	}
	if a, err := netip.ParseAddr(name); err == nil {
		if a.Zone() != "" {
			return fmt.Sprintf("%q has a zone: leave out the %%zone", name)
		}
		return ""
	}
	if err := challenge.CheckHostname(name); err != nil {
		return err.Error()
	}
	return ""
}

func socketProblem(s string) string {
	const want = "write a unix socket path such as /run/haproxy/admin.sock, or host:port of a TCP stats socket such as 127.0.0.1:9999"
	switch {
	case s == "":
		return "empty: " + want
	case strings.HasPrefix(s, "unix@") || strings.HasPrefix(s, "ipv4@"):
		return fmt.Sprintf("%q: leave out the %s prefix HAProxy's own configuration uses: %s", s, s[:5], want)
	case strings.HasPrefix(s, "/"):
		return ""
	}
	if err := proxy.CheckAddr(s, "9999", false); err != nil {
		return err.Error() + "; or " + want
	}
	return ""
}

// validateCoverage checks that every name a route terminates TLS for has a
// certificate: without one the front door has nothing to present. (Names
// on certificates need no route: the front door answers acme-tls/1 for
// every name itself.)
func (c *Config) validateCoverage(v *validator, refused map[string]bool) {
	covered := map[string]bool{}
	for _, ct := range c.Certificates {
		for _, n := range ct.Names {
			covered[canonicalName(n)] = true
		}
	}
	for i, r := range c.Routes {
		mode := strings.ToLower(r.Mode)
		if mode != ModeHTTP && mode != ModeTCP {
			continue
		}
		path := index("routes", i)
		for j, raw := range r.Names {
			np := index(path+".names", j)
			name := canonicalName(raw)
			switch {
			case refused[np]:
				// Reported already.
			case name == "*":
				v.errorf(np, "the default route \"*\" cannot use mode %s: terminating TLS needs a certificate for each name, and no certificate covers every name; use mode passthrough, or list the names", mode)
			case strings.HasPrefix(name, "*."):
				v.errorf(np, "mode %s needs a certificate for each name, and %q is a wildcard, which TLS-ALPN-01 cannot obtain (only DNS-01 can): list the exact names, or use mode passthrough", mode, name)
			case !covered[name]:
				v.errorf(np, "mode %s terminates TLS for %q with a managed certificate, but no certificate has that name: add it under certificates:, e.g. - names: [%s]", mode, name, name)
			}
		}
	}
}
