package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tlsalpn/tlsalpn/storage"
	"github.com/tlsalpn/tlsalpn/storage/etcd"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// etcdScheme begins a --storage that is an etcd cluster rather than a directory.
const etcdScheme = "etcd://"

// storageFlags choose the storage: --storage, a directory or an etcd:// URL, and for etcd the
// files that reach it (TLS, user and password) and the key that encrypts private values. Every
// command that reads or writes state registers them, and openStorage is the one place that
// turns them into a storage.Storage.
type storageFlags struct {
	storage          string
	etcdCA           string
	etcdCert         string
	etcdKey          string
	etcdUser         string
	etcdPasswordFile string
	encryptionKey    string
}

func (s *storageFlags) register(f *flagSet) {
	f.StringVar(&s.storage, "storage", "", "`DIR` holding accounts, keys and certificates, or etcd://HOST:PORT[,HOST:PORT…]/PREFIX for a cluster's state in etcd (with --encryption-key) (default $TLSALPN_STORAGE, else "+fs.SystemRoot+" as root, else $XDG_DATA_HOME/tlsalpn or ~/.local/share/tlsalpn)")
	s.registerEtcd(f)
}

// registerEtcd registers the flags that reach an etcd storage, without
// --storage (storage copy takes its storages as arguments).
func (s *storageFlags) registerEtcd(f *flagSet) {
	f.StringVar(&s.etcdCA, "etcd-ca", "", "PEM `FILE` of the CA that signed the etcd members' certificates (TLS to etcd; etcd:// storage only)")
	f.StringVar(&s.etcdCert, "etcd-cert", "", "PEM `FILE` of a client certificate for etcd, with --etcd-key")
	f.StringVar(&s.etcdKey, "etcd-key", "", "PEM `FILE` of the private key of --etcd-cert")
	f.StringVar(&s.etcdUser, "etcd-user", "", "etcd user `NAME`, with --etcd-password-file")
	f.StringVar(&s.etcdPasswordFile, "etcd-password-file", "", "`FILE` holding the password of --etcd-user")
	f.StringVar(&s.encryptionKey, "encryption-key", "", "`FILE` of 32 random bytes (raw or base64) that encrypts private keys before they reach etcd; make it with: head -c 32 /dev/urandom > FILE")
}

// etcdFlagsGiven returns the etcd flags that were given, as the user typed them.
func (s *storageFlags) etcdFlagsGiven() []string {
	var given []string
	for _, f := range []struct{ name, v string }{
		{"--etcd-ca", s.etcdCA}, {"--etcd-cert", s.etcdCert}, {"--etcd-key", s.etcdKey},
		{"--etcd-user", s.etcdUser}, {"--etcd-password-file", s.etcdPasswordFile}, {"--encryption-key", s.encryptionKey},
	} {
		if f.v != "" {
			given = append(given, f.name)
		}
	}
	return given
}

// configStorage is the storage section of serve's config file, in the
// terms of config.Storage.
type configStorage struct {
	location, etcdCA, etcdCert, etcdKey, etcdUser, etcdPasswordFile, encryptionKeyFile string
}

// withConfig returns the storage flags completed by the config file's
// storage section. A --storage on the command line replaces the whole
// section (the flags then say everything about the storage); otherwise
// each etcd flag given replaces its key in the section.
func (s storageFlags) withConfig(c configStorage) storageFlags {
	if s.storage != "" {
		return s
	}
	or := func(flag, file string) string {
		if flag != "" {
			return flag
		}
		return file
	}
	return storageFlags{
		storage:          c.location,
		etcdCA:           or(s.etcdCA, c.etcdCA),
		etcdCert:         or(s.etcdCert, c.etcdCert),
		etcdKey:          or(s.etcdKey, c.etcdKey),
		etcdUser:         or(s.etcdUser, c.etcdUser),
		etcdPasswordFile: or(s.etcdPasswordFile, c.etcdPasswordFile),
		encryptionKey:    or(s.encryptionKey, c.encryptionKeyFile),
	}
}

// storageLoc is a storage resolved from the flags and the environment, not opened yet: a
// directory, or an etcd cluster.
type storageLoc struct {
	dir  string       // the directory; "" for etcd
	url  string       // the etcd:// URL; "" for a directory
	etcd *etcd.Config // with every file read; nil for a directory
	key  string       // the encryption key file, for messages
}

// where names the storage for people: the directory, or the etcd:// URL.
func (l storageLoc) where() string {
	if l.etcd != nil {
		return l.url
	}
	return l.dir
}

// resolve turns the flags into a storageLoc, reading every file they name, so that a bad URL, a
// missing file or a key of the wrong size is a usage error before anything is contacted or
// written. The default ($TLSALPN_STORAGE, else the user's directory) applies when --storage is
// not given; $TLSALPN_STORAGE may be an etcd:// URL too.
func (s *storageFlags) resolve(e *env) (storageLoc, error) {
	loc := s.storage
	if loc == "" && strings.HasPrefix(e.getenv(fs.EnvRoot), etcdScheme) {
		loc = e.getenv(fs.EnvRoot)
	}
	if !strings.HasPrefix(loc, etcdScheme) {
		if given := s.etcdFlagsGiven(); len(given) > 0 {
			what := "no --storage"
			if s.storage != "" {
				what = fmt.Sprintf("--storage %s is a directory", s.storage)
			}
			return storageLoc{}, usagef("%s %s for an etcd:// storage, but %s: give --storage etcd://HOST:PORT/PREFIX, or leave %s out",
				strings.Join(given, ", "), isAre(len(given)), what, itThem(len(given)))
		}
		dir, err := resolveStorage(e, loc)
		if err != nil {
			return storageLoc{}, err
		}
		return storageLoc{dir: dir}, nil
	}
	cfg, err := etcd.ParseURL(loc)
	if err != nil {
		return storageLoc{}, usagef("--storage: %v (want etcd://HOST:PORT[,HOST:PORT…]/PREFIX)", err)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = etcd.DefaultPrefix
	}
	l := storageLoc{url: loc, key: s.encryptionKey}
	for _, f := range []struct{ flag, path string }{
		{"--etcd-ca", s.etcdCA}, {"--etcd-cert", s.etcdCert}, {"--etcd-key", s.etcdKey},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return storageLoc{}, usagef("%s: %v", f.flag, err)
		}
	}
	if (s.etcdCert == "") != (s.etcdKey == "") {
		return storageLoc{}, usagef("--etcd-cert and --etcd-key go together: give both (a client certificate and its key) or neither")
	}
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = s.etcdCA, s.etcdCert, s.etcdKey
	switch {
	case s.etcdUser != "" && s.etcdPasswordFile == "":
		return storageLoc{}, usagef("--etcd-user %s needs --etcd-password-file FILE (a password on the command line would show in ps)", s.etcdUser)
	case s.etcdUser == "" && s.etcdPasswordFile != "":
		return storageLoc{}, usagef("--etcd-password-file needs --etcd-user NAME")
	case s.etcdUser != "":
		data, err := os.ReadFile(s.etcdPasswordFile)
		if err != nil {
			return storageLoc{}, usagef("--etcd-password-file: %v", err)
		}
		pw := strings.TrimRight(string(data), "\r\n")
		if pw == "" {
			return storageLoc{}, usagef("--etcd-password-file %s is empty", s.etcdPasswordFile)
		}
		cfg.Username, cfg.Password = s.etcdUser, pw
	}
	if s.encryptionKey == "" {
		return storageLoc{}, usagef("an etcd:// storage needs --encryption-key FILE: private keys are encrypted before they reach etcd " +
			"(make one with: head -c 32 /dev/urandom > FILE, and give every node and command the same)")
	}
	if cfg.EncryptionKey, err = etcd.LoadKey(s.encryptionKey); err != nil {
		return storageLoc{}, usagef("--encryption-key: %v", err)
	}
	l.etcd = &cfg
	return l, nil
}

// openedStorage is a storage opened by openStorage. store is the backend itself (not a
// wrapper), so that what it also implements (storage.Versioned, storage.Ephemeral) can be
// found by type assertion.
type openedStorage struct {
	store storage.Storage
	loc   storageLoc
	close func() error
}

// where names the storage for people: the directory, or the etcd:// URL.
func (o *openedStorage) where() string { return o.loc.where() }

// Close releases the storage: for etcd, its connection, locks and sessions.
func (o *openedStorage) Close() error {
	if o == nil || o.close == nil {
		return nil
	}
	return o.close()
}

// etcdOpenTimeout bounds connecting to etcd and checking the encryption key: a command run
// against an etcd that is not there fails in seconds, naming the endpoints.
const etcdOpenTimeout = 5 * time.Second

// openStorage opens the storage the flags choose: the one place that does. mode says whether a
// command may start an empty one.
func openStorage(ctx context.Context, e *env, sf *storageFlags, mode storageMode, logger *slog.Logger) (*openedStorage, error) {
	loc, err := sf.resolve(e)
	if err != nil {
		return nil, err
	}
	return openLoc(ctx, loc, mode, logger)
}

// openLoc opens a resolved storage.
func openLoc(ctx context.Context, loc storageLoc, mode storageMode, logger *slog.Logger) (*openedStorage, error) {
	if loc.etcd == nil {
		s, err := openStorageDir(loc.dir, mode)
		if err != nil {
			return nil, err
		}
		return &openedStorage{store: s, loc: loc}, nil
	}
	cfg := *loc.etcd
	cfg.Logger = logger
	octx, cancel := context.WithTimeout(ctx, etcdOpenTimeout)
	defer cancel()
	s, err := etcd.Open(octx, cfg)
	if err != nil {
		return nil, etcdOpenError(ctx, loc, err)
	}
	o := &openedStorage{store: s, loc: loc, close: s.Close}
	if mode == mustExist {
		empty, err := noDurableState(ctx, s)
		if err != nil {
			o.Close()
			return nil, fmt.Errorf("reading %s: %w", loc.url, err)
		}
		if empty {
			o.Close()
			return nil, fmt.Errorf("%w: nothing is stored under %s (another prefix? tlsalpn storage copy moves a host's storage there)", errNoStorage, loc.url)
		}
	}
	return o, nil
}

// etcdOpenError says in an operator's words why etcd could not be opened.
func etcdOpenError(ctx context.Context, loc storageLoc, err error) error {
	endpoints := strings.Join(loc.etcd.Endpoints, ", ")
	switch {
	case ctx.Err() != nil:
		return err
	case errors.Is(err, etcd.ErrWrongKey):
		return fmt.Errorf("--encryption-key %s: this is not the key the cluster's data was written with; nothing was written: %w", loc.key, err)
	case errors.Is(err, etcd.ErrAuth):
		return fmt.Errorf("etcd at %s refused the user or the client certificate: %w", endpoints, err)
	case errors.Is(err, etcd.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		hint := ""
		if loc.etcd.CAFile == "" {
			// A plaintext client to a TLS member sees only a timeout.
			hint = "; if etcd serves TLS, give --etcd-ca (and --etcd-cert, --etcd-key)"
		}
		return fmt.Errorf("etcd unreachable at %s (within %s%s): %w", endpoints, etcdOpenTimeout, hint, err)
	}
	return fmt.Errorf("opening etcd at %s: %w", endpoints, err)
}

// noDurableState reports whether s holds none of tlsalpn's durable state.
func noDurableState(ctx context.Context, s storage.Storage) (bool, error) {
	for _, p := range storage.DurablePrefixes() {
		keys, err := s.List(ctx, p, false)
		if err != nil {
			return false, err
		}
		if len(keys) > 0 {
			return false, nil
		}
	}
	return true, nil
}

// fsMode returns the permission bits of a key of a storage directory, for storage.Copy.
func fsMode(s *fs.FS) func(context.Context, string) (os.FileMode, error) {
	return func(_ context.Context, key string) (os.FileMode, error) {
		fi, err := os.Stat(filepath.FromSlash(s.Path(key)))
		if err != nil {
			return 0, err
		}
		return fi.Mode().Perm(), nil
	}
}

func isAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

func itThem(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}
