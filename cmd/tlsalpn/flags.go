package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"net/http"
	"net/mail"
	"os"
	"strings"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// errHelp means --help was asked for and printed.
var errHelp = errors.New("help shown")

// flagSet wraps flag.FlagSet: errors become one-line usage errors and
// --help prints the command's own text.
type flagSet struct {
	*flag.FlagSet
	usage string // the text before the flag list
	pos   []string
	out   io.Writer
}

func newFlagSet(e *env, name, usage string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &flagSet{FlagSet: fs, usage: usage, out: e.stdout}
}

// parse parses args; positional arguments are allowed only where the
// command takes them (maxArgs; -1 for any number).
func (f *flagSet) parse(args []string, maxArgs int) error {
	// Let flags follow positional arguments ("revoke NAME --reason 4"),
	// as users of lego and certbot expect.
	var pos []string
	rest := args
	for {
		if err := f.FlagSet.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				f.printHelp()
				return errHelp
			}
			return usagef("%v%s (see tlsalpn %s --help)", err, f.didYouMean(err), f.Name())
		}
		rest = f.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" {
			pos = append(pos, rest[1:]...)
			break
		}
		pos = append(pos, rest[0])
		rest = rest[1:]
	}
	if maxArgs >= 0 && len(pos) > maxArgs {
		return usagef("unexpected argument %q (see tlsalpn %s --help)", pos[maxArgs], f.Name())
	}
	f.pos = pos
	return nil
}

// setFlags returns the names of the flags given on the command line.
func (f *flagSet) setFlags() map[string]bool {
	set := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	return set
}

// otherToolFlags maps flags people bring from certbot and lego to ours.
var otherToolFlags = map[string]string{
	"domain":     "d",
	"domains":    "d",
	"server":     "ca",
	"m":          "email",
	"accept-tos": "agree-tos",
}

// didYouMean returns "; did you mean --x?" for a flag the parser did not
// know when one of this command's flags is within a small edit distance
// of it (a typo), or is its name in certbot or lego; "" otherwise.
func (f *flagSet) didYouMean(err error) string {
	const prefix = "flag provided but not defined: -"
	msg := err.Error()
	if !strings.HasPrefix(msg, prefix) {
		return ""
	}
	typed := strings.TrimLeft(msg[len(prefix):], "-")
	if alt, ok := otherToolFlags[typed]; ok && f.Lookup(alt) != nil {
		return "; did you mean " + dashed(alt) + "?"
	}
	// Short names are too close to everything to guess from.
	maxDist := 0
	switch {
	case len(typed) >= 6:
		maxDist = 2
	case len(typed) >= 3:
		maxDist = 1
	}
	best, bestDist := "", maxDist+1
	f.VisitAll(func(fl *flag.Flag) {
		if d := editDistance(typed, fl.Name); d < bestDist {
			best, bestDist = fl.Name, d
		}
	})
	if best == "" {
		return ""
	}
	return "; did you mean " + dashed(best) + "?"
}

// dashed spells a flag name the way the help does: -d, --email.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of adjacent
// bytes each cost one, so "agree-tso" is one step from "agree-tos".
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

func (f *flagSet) printHelp() {
	fmt.Fprint(f.out, strings.TrimLeft(f.usage, "\n"))
	fmt.Fprintln(f.out, "\nFlags:")
	f.VisitAll(func(fl *flag.Flag) {
		dash := "--"
		if len(fl.Name) == 1 {
			dash = "-"
		}
		name, usage := flag.UnquoteUsage(fl)
		head := "  " + dash + fl.Name
		if name != "" {
			head += " " + name
		}
		def := ""
		if fl.DefValue != "" && fl.DefValue != "false" && fl.DefValue != "[]" && fl.DefValue != "0s" {
			def = " (default " + fl.DefValue + ")"
		}
		fmt.Fprintf(f.out, "%s\n      %s%s\n", head, usage, def)
	})
}

// listFlag collects a repeated flag; each value may also hold several
// comma-separated items.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// caFlags are the flags that choose a CA and an account.
type caFlags struct {
	ca, caRoot, email string
	agreeTOS          bool
	eabKID, eabHMAC   string
	eabHMACFile       string
	storageFlags
	verbose   bool
	timeout   time.Duration
	logFormat logFormat
}

func (c *caFlags) register(f *flagSet, withAccount bool) {
	c.storageFlags.register(f)
	f.BoolVar(&c.verbose, "v", false, "show each step of the ACME flow, and info logs")
	registerLogFormat(f, &c.logFormat)
	if !withAccount {
		return
	}
	f.StringVar(&c.ca, "ca", "letsencrypt", "the CA: a directory `URL`, or one of "+strings.Join(issuer.CANames(), ", "))
	f.StringVar(&c.caRoot, "ca-root", "", "PEM `FILE` of roots to trust for the CA's own HTTPS (a private CA such as step-ca or Pebble)")
	f.StringVar(&c.email, "email", "", "contact `ADDRESS` for the ACME account (expiry and incident mail from the CA)")
	f.BoolVar(&c.agreeTOS, "agree-tos", false, "agree to the CA's terms of service (required to create an account)")
	f.StringVar(&c.eabKID, "eab-kid", "", "External Account Binding key `ID` (ZeroSSL, Google and other CAs that require EAB)")
	f.StringVar(&c.eabHMAC, "eab-hmac-key", "", "External Account Binding HMAC `KEY`, base64url as the CA gives it; visible to every user in ps: prefer --eab-hmac-key-file or $TLSALPN_EAB_HMAC_KEY")
	f.StringVar(&c.eabHMACFile, "eab-hmac-key-file", "", "`FILE` holding the External Account Binding HMAC key (instead of --eab-hmac-key)")
}

// The environment variables that may carry External Account Binding
// credentials instead of the command line, where ps shows them.
const (
	envEABKID  = "TLSALPN_EAB_KID"
	envEABHMAC = "TLSALPN_EAB_HMAC_KEY"
)

// eab resolves the External Account Binding from --eab-kid and one of
// --eab-hmac-key, --eab-hmac-key-file or $TLSALPN_EAB_HMAC_KEY (the key ID
// may come from $TLSALPN_EAB_KID), and checks that the key is base64url as
// CAs give it, so that a pasting mistake is a usage error and not a CA's
// "malformed" after an account request.
func (c *caFlags) eab(e *env) (*acme.EAB, error) {
	kid, key := c.eabKID, c.eabHMAC
	if c.eabHMAC != "" && c.eabHMACFile != "" {
		return nil, usagef("give the EAB HMAC key once: --eab-hmac-key or --eab-hmac-key-file, not both")
	}
	if c.eabHMACFile != "" {
		data, err := os.ReadFile(c.eabHMACFile)
		if err != nil {
			return nil, usagef("--eab-hmac-key-file: %v", err)
		}
		if key = strings.TrimSpace(string(data)); key == "" {
			return nil, usagef("--eab-hmac-key-file %s is empty: it should hold the HMAC key as the CA shows it", c.eabHMACFile)
		}
	}
	if kid == "" {
		kid = strings.TrimSpace(e.getenv(envEABKID))
	}
	if key == "" {
		key = strings.TrimSpace(e.getenv(envEABHMAC))
	}
	switch {
	case kid == "" && key == "":
		return nil, nil
	case kid == "":
		return nil, usagef("an EAB HMAC key without its key ID: give --eab-kid (or $%s) too", envEABKID)
	case key == "":
		return nil, usagef("--eab-kid and the EAB HMAC key go together: give --eab-hmac-key-file FILE (or $%s, or --eab-hmac-key)", envEABHMAC)
	}
	if _, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(key, "=")); err != nil {
		return nil, usagef("the EAB HMAC key is not base64url: copy it exactly as the CA shows it")
	}
	c.eabKID, c.eabHMAC = kid, key
	return &acme.EAB{KeyID: kid, MACKey: key}, nil
}

// validate checks the account flags before anything is contacted or
// written: an empty --ca, a malformed --email and a --timeout that would
// mean "never give up" are usage errors.
func (c *caFlags) validate() error {
	if strings.TrimSpace(c.ca) == "" {
		return usagef("--ca is empty (an unset variable?): give a directory URL or one of %s", strings.Join(issuer.CANames(), ", "))
	}
	if err := checkEmail(c.email); err != nil {
		return err
	}
	return nil
}

// checkEmail accepts an empty address (no contact) or exactly one plain
// address: the CA would otherwise refuse the account, after storage was
// created and the order was under way.
func checkEmail(email string) error {
	if email == "" {
		return nil
	}
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email {
		return usagef("--email %q is not an email address: give just the address, e.g. ops@example.com", email)
	}
	return nil
}

// checkTimeout refuses a --timeout that is zero or negative, which would
// otherwise mean no limit at all.
func checkTimeout(d time.Duration) error {
	if d <= 0 {
		return usagef("--timeout %s: give a positive duration such as 10m", d)
	}
	return nil
}

func (c *caFlags) logger(e *env) *slog.Logger {
	level := slog.LevelWarn
	if c.verbose {
		level = slog.LevelInfo
	}
	if e.getenv("TLSALPN_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return newLogger(e, c.logFormat, level)
}

// storageDir is the storage directory a command uses: --storage when
// given, else fs.DefaultRootFor this process ($TLSALPN_STORAGE, then
// /var/lib/tlsalpn for root, ~/.local/share/tlsalpn for a user).
func storageDir(e *env, flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	d, err := fs.DefaultRootFor(e.euid(), e.getenv)
	if errors.Is(err, fs.ErrNoHome) {
		return "", usagef("no --storage given and no default: %v (under systemd, give the unit a User= or pass --storage)", err)
	}
	if err != nil {
		return "", usagef("no --storage given and no default: %v", err)
	}
	return d, nil
}

// storageMode says whether a command may create its storage directory.
type storageMode int

const (
	// mustExist: renew, list and revoke work on certificates already
	// issued; a missing directory means a wrong --storage, another user
	// or a first issue that never happened, and creating an empty one
	// would only hide that.
	mustExist storageMode = iota
	// create: issue and serve store what they obtain.
	create
)

// errNoStorage is returned when a command that needs existing storage
// finds none.
var errNoStorage = errors.New("no storage")

// resolveStorage is storageDir, refusing root's default while root's
// certificates are still where an earlier tlsalpn put them.
func resolveStorage(e *env, flagValue string) (string, error) {
	dir, err := storageDir(e, flagValue)
	if err != nil {
		return "", err
	}
	if old, ok := legacyRootStorage(e, flagValue, dir); ok {
		return "", fmt.Errorf("%w at %s, root's storage, but %s holds what an earlier tlsalpn stored for root: "+
			"move it (mv %s %s) so that every command finds it, or pass --storage %s", errNoStorage, dir, old, old, dir, old)
	}
	return dir, nil
}

// legacyRootStorage reports where root's certificates are when dir, root's
// default storage, does not exist but the user default an earlier tlsalpn
// used for root ($XDG_DATA_HOME/tlsalpn or ~/.local/share/tlsalpn) does:
// after an upgrade, issue and serve would otherwise start a second,
// empty storage, and renew would never see the first one.
func legacyRootStorage(e *env, flagValue, dir string) (string, bool) {
	if flagValue != "" || e.euid() != 0 || e.getenv(fs.EnvRoot) != "" {
		return "", false
	}
	if _, err := os.Stat(dir); !errors.Is(err, iofs.ErrNotExist) {
		return "", false
	}
	old, err := fs.UserRoot(e.getenv)
	if err != nil {
		return "", false
	}
	if fi, err := os.Stat(old); err != nil || !fi.IsDir() {
		return "", false
	}
	return old, true
}

// openStorageDir opens the storage in dir, resolved already.
func openStorageDir(dir string, mode storageMode) (*fs.FS, error) {
	if mode == mustExist {
		if _, err := os.Stat(dir); errors.Is(err, iofs.ErrNotExist) {
			return nil, fmt.Errorf("%w at %s (issue a certificate first, or pass --storage)", errNoStorage, dir)
		}
	}
	s, err := fs.New(dir)
	if err != nil {
		return nil, fmt.Errorf("opening storage: %w", err)
	}
	return s, nil
}

// isDefaultStorage reports whether root is where this user's commands
// look when given no --storage and no environment: where a crontab line
// or a systemd unit run as the same user will look.
func isDefaultStorage(e *env, root string) bool {
	clean := &env{getenv: func(k string) string {
		if k == "HOME" {
			return e.getenv(k)
		}
		return ""
	}, geteuid: e.geteuid}
	d, err := fs.DefaultRootFor(clean.euid(), clean.getenv)
	return err == nil && d == root
}

// httpClient is issuer.HTTPClient, with a bad --ca-root a usage error.
func httpClient(caRoot string) (*http.Client, error) {
	c, err := issuer.HTTPClient(caRoot)
	if err != nil {
		return nil, caRootError(caRoot, err)
	}
	return c, nil
}

func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
