package etcd

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tlsalpn/tlsalpn/storage"
)

// Defaults of Config.
const (
	DefaultPrefix         = "tlsalpn"
	DefaultSessionTTL     = 5 * time.Second
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 10 * time.Second
)

// Config says which etcd to use and how.
type Config struct {
	// Endpoints are the members' client addresses, HOST:PORT.
	Endpoints []string
	// Prefix is the key prefix under which everything is kept (default "tlsalpn"); several
	// independent tlsalpn installations can share one etcd under different prefixes.
	Prefix string
	// CAFile verifies the members' certificates; CertFile and KeyFile are a client certificate
	// (optional, both or neither). With none of them set, the connection is plaintext.
	CAFile, CertFile, KeyFile string
	// Username and Password authenticate to etcd (etcd's own auth).
	Username, Password string
	// EncryptionKey (32 bytes, see LoadKey) seals every private value (mode 0600, or 0) with
	// AES-256-GCM before it reaches etcd. nil: private values are refused (ErrNoEncryptionKey).
	EncryptionKey []byte
	// SessionTTL is the lease TTL of locks and ephemeral keys (default 5 s): how long after
	// this process dies, or loses etcd, they disappear.
	SessionTTL time.Duration
	// DialTimeout bounds connecting in Open (default 5 s).
	DialTimeout time.Duration
	// RequestTimeout bounds each call whose context has no deadline (default 10 s), so that an
	// unreachable etcd gives an error wrapping ErrUnavailable instead of a hang.
	RequestTimeout time.Duration
	// Logger receives what has no caller to return an error to: a watch resynchronizing after
	// a compaction, a lock or session lost. nil discards.
	Logger *slog.Logger
}

// ParseURL parses "etcd://HOST:PORT[,HOST:PORT…]/PREFIX" into a Config with Endpoints and
// Prefix set (PREFIX may be omitted: DefaultPrefix). Credentials, TLS files and the encryption
// key are not part of the URL: a URL ends up in process listings and logs.
func ParseURL(s string) (Config, error) {
	rest, ok := strings.CutPrefix(s, "etcd://")
	if !ok {
		return Config{}, fmt.Errorf("storage/etcd: %q: not an etcd:// URL", s)
	}
	if strings.ContainsAny(rest, "?#@") {
		return Config{}, fmt.Errorf("storage/etcd: %q: a query, fragment or user name is not allowed (credentials come from their own options)", s)
	}
	hosts, prefix, _ := strings.Cut(rest, "/")
	if hosts == "" {
		return Config{}, fmt.Errorf("storage/etcd: %q: no HOST:PORT", s)
	}
	var cfg Config
	for h := range strings.SplitSeq(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" {
			return Config{}, fmt.Errorf("storage/etcd: %q: endpoint %q is not HOST:PORT", s, h)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return Config{}, fmt.Errorf("storage/etcd: %q: endpoint %q: port %q is not 1-65535", s, h, port)
		}
		cfg.Endpoints = append(cfg.Endpoints, h)
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix != "" {
		if err := storage.ValidateLockName(prefix); err != nil {
			return Config{}, fmt.Errorf("storage/etcd: %q: prefix: %w", s, err)
		}
	}
	cfg.Prefix = prefix
	return cfg, nil
}

// keyHowTo says how to make a key file, for error messages.
const keyHowTo = "make one with: head -c 32 /dev/urandom > FILE (and chmod 600 FILE)"

// LoadKey reads an encryption key file: exactly 32 bytes, raw, or their standard base64 (with
// or without a trailing newline). Anything else is refused: a key of the wrong length is a
// mistake, never something to pad or hash into shape.
func LoadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("storage/etcd: encryption key: %w", err)
	}
	if len(b) == 32 {
		return b, nil
	}
	if t := bytes.TrimRight(b, "\r\n"); len(t) > 0 {
		k, err := base64.StdEncoding.DecodeString(string(t))
		if err == nil && len(k) == 32 {
			return k, nil
		}
	}
	return nil, fmt.Errorf("storage/etcd: encryption key %s: %d bytes, neither 32 raw bytes nor their base64; %s", path, len(b), keyHowTo)
}

func (c *Config) validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("storage/etcd: no endpoints")
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	c.Prefix = strings.TrimSuffix(c.Prefix, "/")
	if err := storage.ValidateLockName(c.Prefix); err != nil {
		return fmt.Errorf("storage/etcd: prefix: %w", err)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("storage/etcd: a client certificate needs both its file and its key file")
	}
	if (c.Username == "") != (c.Password == "") {
		return errors.New("storage/etcd: etcd auth needs both a user name and a password")
	}
	if c.EncryptionKey != nil && len(c.EncryptionKey) != 32 {
		return fmt.Errorf("storage/etcd: encryption key has %d bytes, want 32; %s", len(c.EncryptionKey), keyHowTo)
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = DefaultSessionTTL
	}
	if c.SessionTTL < time.Second {
		return fmt.Errorf("storage/etcd: session TTL %v: etcd leases count in whole seconds, give at least 1s", c.SessionTTL)
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
