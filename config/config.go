package config

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Config is the whole file. Its fields are plain values; cmd/tlsalpn maps
// them onto the proxy, manager and deploy types, so this package depends on
// none of them.
//
// The tags name each key of the file (yaml) and, for messages, what a
// value looks like (example) or what is wanted (want); a field tagged
// scalar may also be written as its struct's whole value.
type Config struct {
	// Listen is the front door's address. Default ":443".
	Listen string `yaml:"listen" example:":443"`
	// Storage is where accounts and certificates are kept.
	Storage      Storage       `yaml:"storage"`
	ACME         ACME          `yaml:"acme"`
	Proxy        Proxy         `yaml:"proxy"`
	Routes       []Route       `yaml:"routes" want:"a list of routes, each starting with \"- names:\""`
	Certificates []Certificate `yaml:"certificates" want:"a list of certificates, each starting with \"- names:\""`
	// Admin is the address of the admin API (Prometheus metrics,
	// health, status, forced renewals); "" (the default) serves none.
	// Loopback unless AdminTokenFile is set.
	Admin string `yaml:"admin" example:"127.0.0.1:9443"`
	// AdminTokenFile holds the bearer token every admin API request must
	// carry; required for an address that is not loopback.
	AdminTokenFile string `yaml:"admin_token_file" example:"/etc/tlsalpn/admin-token"`
	// ACMEForward is where validation handshakes (exactly acme-tls/1)
	// for names with no challenge of tlsalpn's own pending are relayed,
	// byte for byte: the port another ACME client answers on (lego
	// --tls.port, acme.sh --tlsport). A route's own acme_forward wins.
	ACMEForward string `yaml:"acme_forward" example:"127.0.0.1:5001"`
	// ACMECertDir is a directory where another ACME client writes
	// challenge certificates as NAME.crt.pem and NAME.key.pem
	// (dehydrated's ALPNCERTDIR); they are served to validations.
	ACMECertDir string `yaml:"acme_cert_dir" example:"/var/lib/dehydrated/alpn-certs"`
	// UALPNSocket is a Unix socket speaking ualpn's protocol, for uacme's
	// ualpn.sh hook and "tlsalpn challenge publish".
	UALPNSocket string `yaml:"ualpn_socket" example:"/run/ualpn.sock"`

	// Set by Parse so that Validate can point at the line of a value.
	file string
	pos  map[string]pos
}

// Storage says where accounts and certificates are kept: a directory, or
// an etcd cluster shared by the nodes of a cluster. The file takes either a
// plain value (storage: /var/lib/tlsalpn), which is the Location, or a
// mapping of these keys. The files named are checked when the command
// opens them, not here: this package reads no file but the configuration.
type Storage struct {
	// Location is an absolute directory or etcd://HOST:PORT[,HOST:PORT…]/PREFIX;
	// "" lets the command pick its default directory.
	Location string `yaml:"location" example:"/var/lib/tlsalpn" scalar:"the plain form"`
	// EtcdCA, EtcdCert and EtcdKey are PEM files for TLS to etcd: the CA
	// that signed etcd's certificates, and a client certificate and key
	// (both or neither).
	EtcdCA   string `yaml:"etcd_ca" example:"/etc/tlsalpn/etcd-ca.pem"`
	EtcdCert string `yaml:"etcd_cert" example:"/etc/tlsalpn/etcd-client.pem"`
	EtcdKey  string `yaml:"etcd_key" example:"/etc/tlsalpn/etcd-client-key.pem"`
	// EtcdUser and EtcdPasswordFile are etcd's own authentication (both or
	// neither); the password is in a file so that it stays out of this one.
	EtcdUser         string `yaml:"etcd_user" example:"tlsalpn"`
	EtcdPasswordFile string `yaml:"etcd_password_file" example:"/etc/tlsalpn/etcd-password"`
	// EncryptionKeyFile holds the 32-byte key that encrypts private values
	// (account and certificate keys) at rest in etcd; without one, given
	// here or to the command, etcd storage refuses to store them.
	EncryptionKeyFile string `yaml:"encryption_key_file" example:"/etc/tlsalpn/storage.key"`
}

// IsEtcd reports whether the storage is an etcd cluster.
func (s Storage) IsEtcd() bool { return strings.HasPrefix(s.Location, etcdScheme) }

const etcdScheme = "etcd://"

// ACME says which CA to use and as whom.
type ACME struct {
	// CA is a directory URL or a name the command knows (letsencrypt,
	// letsencrypt-staging, ...). Default "letsencrypt".
	CA       string `yaml:"ca" example:"letsencrypt"`
	Email    string `yaml:"email" example:"ops@example.com"`
	AgreeTOS bool   `yaml:"agree_tos"`
	// CARoot is a PEM file of roots to trust for the CA's own HTTPS (a
	// private CA or a test CA such as Pebble).
	CARoot string `yaml:"ca_root" example:"/etc/tlsalpn/ca-root.pem"`
	// EAB is the external account binding some CAs require; nil if none.
	EAB *EAB `yaml:"eab"`
	// KeyType is the default for every certificate: ec256 (default),
	// ec384, rsa2048, rsa3072 or rsa4096.
	KeyType        string `yaml:"key_type" example:"ec256"`
	Profile        string `yaml:"profile"`
	PreferredChain string `yaml:"preferred_chain"`
}

// EAB is an external account binding (RFC 8555 §7.3.4), as the CA hands it
// out: a key identifier and a base64url-encoded HMAC key.
type EAB struct {
	KID     string `yaml:"kid"`
	HMACKey string `yaml:"hmac_key"`
}

// Proxy tunes the front door. Zero values mean the defaults below, which
// are the proxy package's own.
type Proxy struct {
	ClientHelloTimeout Duration `yaml:"client_hello_timeout"`                                        // default 10s
	IdleTimeout        Duration `yaml:"idle_timeout"`                                                // default 10m
	DialTimeout        Duration `yaml:"dial_timeout"`                                                // default 5s
	MaxConnections     int      `yaml:"max_connections" want:"a number of connections such as 8000"` // default 8000
	// MaxHelloWaitsPerSource caps the connections one client address (an
	// IPv6 /64) may have open that have not yet sent their ClientHello;
	// a flood from one machine then cannot take the slots of everyone
	// else (and of the CA). Behind a trusted proxy, the client its PROXY
	// header names counts, not the proxy.
	MaxHelloWaitsPerSource int      `yaml:"max_hello_waits_per_source" want:"a number of connections such as 128"` // default 128
	DrainTimeout           Duration `yaml:"drain_timeout"`                                                         // default 30s: the SIGTERM grace period
	// TrustedProxies are the networks allowed (and required) to send a
	// PROXY protocol header; a bare address is a one-address prefix.
	TrustedProxies []netip.Prefix `yaml:"trusted_proxies" want:"a list of networks such as [10.0.0.0/8, 192.0.2.7]" example:"10.0.0.0/8"`
	// Steer is SteerAuto (default) or SteerOff: whether, while no
	// challenge is pending, the kernel hands new connections straight to
	// the backend's listening socket (package steer).
	Steer string `yaml:"steer" example:"auto"`
}

// The proxy.steer values.
const (
	SteerAuto = "auto" // steer when the configuration and the host allow it
	SteerOff  = "off"  // relay every connection through the front door
)

// The route modes.
const (
	ModePassthrough = "passthrough" // splice TLS bytes to the backend untouched
	ModeHTTP        = "http"        // terminate TLS, reverse proxy HTTP
	ModeTCP         = "tcp"         // terminate TLS, pipe the plaintext
)

// Route sends connections for some server names to a backend.
type Route struct {
	// Names are exact names, one-label wildcards ("*.example.com") or "*",
	// the default route for every other name and for no SNI at all.
	Names     []string `yaml:"names" want:"a list such as [example.com, \"*.example.com\"]"`
	Backend   string   `yaml:"backend" example:"127.0.0.1:8443"` // host:port
	Mode      string   `yaml:"mode" example:"passthrough"`       // ModePassthrough (default), ModeHTTP or ModeTCP
	SendProxy int      `yaml:"send_proxy" want:"0, 1 or 2"`      // PROXY protocol version sent to the backend: 0 (none), 1 or 2
	// ACMEForward overrides the top-level acme_forward for these names.
	ACMEForward string `yaml:"acme_forward" example:"127.0.0.1:5001"`
}

// Certificate is one certificate to obtain at start and keep renewed.
type Certificate struct {
	Names []string `yaml:"names" want:"a list such as [example.com, www.example.com]"`
	// Out is a directory to deploy the PEM files to; "" deploys none.
	Out string `yaml:"out" example:"/etc/nginx/tls/example.com"`
	// DeployHook is run through sh -c after each deployment.
	DeployHook  string   `yaml:"deploy_hook" example:"systemctl reload nginx"`
	HookTimeout Duration `yaml:"hook_timeout"` // default 2m
	// HAProxy, if set, receives the new certificate through its runtime
	// API, with no reload.
	HAProxy *HAProxy `yaml:"haproxy"`
	// KeyType and Profile override acme's; after Parse (or SetDefaults)
	// they hold the effective values.
	KeyType string `yaml:"key_type" example:"ec256"`
	Profile string `yaml:"profile"`
}

// HAProxy names a runtime API socket and the certificate to update on it.
type HAProxy struct {
	// Socket is a unix socket path or the host:port of a TCP stats socket.
	Socket string `yaml:"socket" example:"/run/haproxy/admin.sock"`
	// Cert is the crt path HAProxy loaded, the name "set ssl cert" takes.
	Cert string `yaml:"cert" example:"/etc/haproxy/certs/example.com.pem"`
}

// Defaults.
const (
	DefaultListen             = ":443"
	DefaultCA                 = "letsencrypt"
	DefaultKeyType            = "ec256"
	DefaultClientHelloTimeout = Duration(10 * time.Second)
	DefaultIdleTimeout        = Duration(10 * time.Minute)
	DefaultDialTimeout        = Duration(5 * time.Second)
	DefaultMaxConnections     = 8000
	DefaultMaxHelloWaits      = 128
	DefaultDrainTimeout       = Duration(30 * time.Second)
	DefaultHookTimeout        = Duration(2 * time.Minute)
)

// maxFileSize bounds what Load reads. A file of a few sites is a few KiB,
// but a hosting node's 10,000 routes with two names each take 1 to 2 MiB
// (1 MiB, the bound once, refused them); 16 MiB still catches a log or a
// binary named by mistake before YAML parsing chews on it.
const maxFileSize = 16 << 20

// Load reads and parses the file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading config %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, &Error{File: path, Msg: fmt.Sprintf("the file is larger than %d MiB; a configuration of 10,000 routes takes 1 to 2 MiB: is this the right file?", maxFileSize>>20)}
	}
	return Parse(data, path)
}

// Parse decodes data (unknown keys are errors), fills in defaults and
// validates the result. filename is used in error messages only. Errors are
// an *Error or, when there are several, an ErrorList.
func Parse(data []byte, filename string) (*Config, error) {
	c, err := decode(data, filename)
	if err != nil {
		return nil, err
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// SetDefaults fills in every value left unset and puts names in canonical
// form (lower case, no trailing dot), so that a Config built in code (from
// command-line flags, say) ends up like a parsed one.
func (c *Config) SetDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	a := &c.ACME
	if a.CA == "" {
		a.CA = DefaultCA
	}
	a.KeyType = strings.ToLower(a.KeyType)
	if a.KeyType == "" {
		a.KeyType = DefaultKeyType
	}
	p := &c.Proxy
	setDuration(&p.ClientHelloTimeout, DefaultClientHelloTimeout)
	setDuration(&p.IdleTimeout, DefaultIdleTimeout)
	setDuration(&p.DialTimeout, DefaultDialTimeout)
	setDuration(&p.DrainTimeout, DefaultDrainTimeout)
	if p.MaxConnections == 0 {
		p.MaxConnections = DefaultMaxConnections
	}
	if p.MaxHelloWaitsPerSource == 0 {
		p.MaxHelloWaitsPerSource = DefaultMaxHelloWaits
	}
	p.Steer = strings.ToLower(strings.TrimSpace(p.Steer))
	if p.Steer == "" {
		p.Steer = SteerAuto
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		canonicalNames(r.Names)
		r.Mode = strings.ToLower(r.Mode)
		if r.Mode == "" {
			r.Mode = ModePassthrough
		}
	}
	for i := range c.Certificates {
		ct := &c.Certificates[i]
		canonicalNames(ct.Names)
		ct.KeyType = strings.ToLower(ct.KeyType)
		if ct.KeyType == "" {
			ct.KeyType = a.KeyType
		}
		if ct.Profile == "" {
			ct.Profile = a.Profile
		}
		setDuration(&ct.HookTimeout, DefaultHookTimeout)
	}
}

func setDuration(d *Duration, def Duration) {
	if *d == 0 {
		*d = def
	}
}

func canonicalNames(names []string) {
	for i, n := range names {
		names[i] = canonicalName(n)
	}
}

// canonicalName lower-cases a name and drops one trailing dot; names are
// compared, and matched against SNI, in this form.
func canonicalName(n string) string {
	n = strings.ToLower(strings.TrimSpace(n))
	if len(n) > 1 {
		n = strings.TrimSuffix(n, ".")
	}
	return n
}

// Summary describes the configuration in one line for
// "tlsalpn serve --check-config".
func (c *Config) Summary() string {
	var parts []string
	parts = append(parts, "listening on "+c.Listen)
	if len(c.Routes) > 0 {
		modes := map[string]int{}
		for _, r := range c.Routes {
			m := r.Mode
			if m == "" {
				m = ModePassthrough
			}
			modes[m]++
		}
		var ms []string
		for _, m := range []string{ModePassthrough, ModeHTTP, ModeTCP} {
			if modes[m] > 0 {
				ms = append(ms, fmt.Sprintf("%d %s", modes[m], m))
			}
		}
		s := fmt.Sprintf("%s (%s)", plural(len(c.Routes), "route"), strings.Join(ms, ", "))
		if r := c.defaultRoute(); r != nil {
			s += "; default route to " + r.Backend
		} else {
			s += "; no default route: unknown names are refused"
		}
		parts = append(parts, s)
	} else {
		parts = append(parts, "no routes: only ACME challenges are answered")
	}
	if len(c.Certificates) > 0 {
		names := 0
		for _, ct := range c.Certificates {
			names += len(ct.Names)
		}
		s := fmt.Sprintf("%s (%s) from %s", plural(len(c.Certificates), "certificate"), plural(names, "name"), c.ACME.CA)
		if c.ACME.Email != "" {
			s += " as " + c.ACME.Email
		}
		parts = append(parts, s)
	} else {
		parts = append(parts, "no certificates")
	}
	if n := len(c.Proxy.TrustedProxies); n > 0 {
		parts = append(parts, fmt.Sprintf("PROXY protocol accepted from %s", plural(n, "network")))
	}
	if c.ACMEForward != "" {
		parts = append(parts, "acme-tls/1 validations of other names forwarded to "+c.ACMEForward)
	}
	if c.ACMECertDir != "" {
		parts = append(parts, "challenge certificates read from "+c.ACMECertDir)
	}
	if c.UALPNSocket != "" {
		parts = append(parts, "ualpn socket "+c.UALPNSocket)
	}
	parts = append(parts, fmt.Sprintf("at most %d connections", c.Proxy.MaxConnections))
	if c.Storage.Location != "" {
		parts = append(parts, "storage in "+c.Storage.Location)
	}
	if c.Admin != "" {
		parts = append(parts, "admin API on "+c.Admin)
	}
	return strings.Join(parts, "; ")
}

func (c *Config) defaultRoute() *Route {
	for i := range c.Routes {
		for _, n := range c.Routes[i].Names {
			if n == "*" {
				return &c.Routes[i]
			}
		}
	}
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
