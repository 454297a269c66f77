package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tlsalpn/tlsalpn/check"
	"github.com/tlsalpn/tlsalpn/issuer"
)

const checkUsage = `
Usage: tlsalpn check [flags] NAME[:PORT]...
       tlsalpn check --monitor [--expiring-within DURATION] NAME[:PORT]...

Two modes.

The CA's check (default) validates each name from the outside exactly as
Let's Encrypt's CA does for TLS-ALPN-01, before the CA does (it allows only
5 failures per name per hour): resolves A and AAAA, connects to every
address with the CA's settings (TLS 1.2 or later, ALPN acme-tls/1 only, the
name as SNI, 10 s for connect and handshake), and applies the CA's checks to
the certificate. It prints, per address, each rule as PASS or FAIL with the
CA's own words, one line on how to fix each failure, and what the CA would
conclude: it tries the first IPv6 address, and the first IPv4 address only
if IPv6 fails to connect. It also checks what the CA cannot see: that
ordinary clients (ALPN h2, http/1.1 or none) never get the validation
certificate, and the production certificate browsers get. It needs a
challenge to be pending: outside a validation a correct responder (tlsalpn
serve) has nothing to answer acme-tls/1 with, and the check fails.
Without --key-authorization (or --token and --thumbprint) the validation
certificate's structure is checked but not the hash it carries.

Monitoring (--monitor, implied by --expiring-within) judges only what
ordinary clients get, so it works against any TLS server at any time, also
behind tlsalpn serve: on every A and AAAA address, one handshake offering
h2 and http/1.1 with the name as SNI, then the chain against the system
roots (plus --ca-root), whether the certificate covers the name, and how
long it has left. It prints one line per address with three separate
verdicts: the handshake, the certificate, and its expiry (a failed
handshake reads "unknown", never "ok").

Examples:
  tlsalpn check example.com www.example.com
  tlsalpn check --address 192.0.2.10 --address 2001:db8::10 example.com
  tlsalpn check --token TOKEN --thumbprint THUMBPRINT example.com
  tlsalpn check 192.0.2.10:5001                         (an IP, another port)
  tlsalpn check --expiring-within 30d example.com       (monitoring, e.g. from cron)
  tlsalpn check --monitor --json example.com www.example.com
  tlsalpn check --expiring-within 30d --monitor=false example.com
                                 (the CA's check, plus the expiry threshold)

Exit codes of the CA's check, like openssl x509 -checkend:
  0  every name passes
  1  some production certificate expires within --expiring-within (none fail)
  2  some name fails: the CA would fail, or an address, the leak check or the
     production certificate does; also for a usage error (then nothing was
     checked, and stderr says what was wrong)

Exit codes of --monitor (when several apply: 3 before 4 before 1):
  0  every address of every name serves a valid certificate for the name,
     valid for longer than --expiring-within
  1  some certificate expires within --expiring-within; nothing worse
  2  usage error: nothing was checked, stderr says what was wrong
  3  some address serves a certificate clients refuse: its chain does not
     lead to a trusted root, it does not cover the name, or it has expired
  4  some name does not resolve, or some address refuses the connection,
     times out or fails the handshake (and no certificate is refused)
`

type checkFlags struct {
	addresses      listFlag
	keyAuth        string
	token          string
	thumbprint     string
	caRoot         string
	expiringWithin string
	timeout        time.Duration
	json           bool
	verbose        bool
	monitor        bool
}

func (f *checkFlags) register(fs *flagSet) {
	fs.Var(&f.addresses, "address", "connect to this `IP` instead of resolving the names; repeat for more (IPv4 and IPv6)")
	fs.StringVar(&f.keyAuth, "key-authorization", "", "the pending challenge's key authorization `TOKEN.THUMBPRINT`, to check the hash too (one name only)")
	fs.StringVar(&f.token, "token", "", "the pending challenge's `TOKEN` (with --thumbprint, instead of --key-authorization)")
	fs.StringVar(&f.thumbprint, "thumbprint", "", "the account key's JWK `THUMBPRINT` (with --token)")
	fs.StringVar(&f.caRoot, "ca-root", "", "PEM `FILE` of extra roots to trust for the production certificate (a private CA)")
	fs.StringVar(&f.expiringWithin, "expiring-within", "", "exit 1 when a certificate expires within this `DURATION`, e.g. 30d or 720h; implies --monitor unless --monitor=false is given")
	fs.DurationVar(&f.timeout, "timeout", check.DialTimeout, "connect and handshake `DURATION` for each connection (the CA's is 10s)")
	fs.BoolVar(&f.monitor, "monitor", false, "judge only what ordinary clients get (chain, names, expiry), with no acme-tls/1 handshake: for monitoring, also behind tlsalpn serve; implied by --expiring-within")
	fs.BoolVar(&f.json, "json", false, "print JSON for scripts")
	fs.BoolVar(&f.verbose, "v", false, "log each handshake")
}

func runCheck(ctx context.Context, e *env, args []string) error {
	var f checkFlags
	fs := newFlagSet(e, "check", checkUsage)
	f.register(fs)
	if err := fs.parse(args, -1); err != nil {
		return err
	}
	targets, err := checkTargets(fs.pos)
	if err != nil {
		return err
	}
	keyAuth, err := f.keyAuthorization()
	if err != nil {
		return err
	}
	if keyAuth != "" {
		if len(targets) != 1 {
			return usagef("a key authorization belongs to one name's challenge: give exactly one name with --key-authorization or --token")
		}
		targets[0].KeyAuthorization = keyAuth
	}
	c, err := f.checker(e)
	if err != nil {
		return err
	}
	monitor := f.monitor
	if f.expiringWithin != "" && !flagGiven(fs, "monitor") {
		// An expiry threshold is a monitoring question, and the CA's
		// rules fail outside a validation (no challenge is pending), so
		// the threshold alone selects the monitoring mode.
		monitor = true
	}
	if monitor {
		if keyAuth != "" {
			return usagef("--monitor makes no acme-tls/1 handshake, so a key authorization has nothing to check: drop --key-authorization/--token, or give --monitor=false for the CA's check")
		}
		return runMonitor(ctx, e, c, targets, f)
	}

	return runCAChecks(ctx, e, c, targets, f)
}

// checker is the check.Checker that f asks for.
func (f *checkFlags) checker(e *env) (*check.Checker, error) {
	if f.timeout <= 0 {
		return nil, usagef("--timeout %s: give a positive duration", f.timeout)
	}
	c := &check.Checker{Timeout: f.timeout}
	for _, a := range f.addresses {
		addr, err := netip.ParseAddr(strings.Trim(a, "[]"))
		if err != nil || addr.Zone() != "" {
			return nil, usagef("--address %q is not an IP address", a)
		}
		c.Addresses = append(c.Addresses, addr)
	}
	var err error
	if f.expiringWithin != "" {
		if c.ExpiringWithin, err = parseDays(f.expiringWithin); err != nil {
			return nil, usagef("--expiring-within: %v", err)
		}
	}
	if f.caRoot != "" {
		if c.Roots, err = rootPool(f.caRoot); err != nil {
			return nil, err
		}
	}
	if f.verbose {
		c.Logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return c, nil
}

// runCAChecks checks targets by the CA's rules, prints the reports and
// returns the exit the verdict calls for.
func runCAChecks(ctx context.Context, e *env, c *check.Checker, targets []check.Target, f checkFlags) error {
	prog := newProgress(e, "names checked", len(targets))
	c.Checked = prog.checked
	reports := c.CheckAll(ctx, targets)
	prog.clear()
	var failing, expiring int
	for _, r := range reports {
		switch r.Verdict {
		case check.Fail:
			failing++
		case check.Expiring:
			expiring++
		}
	}
	overall := check.Pass
	switch {
	case failing > 0:
		overall = check.Fail
	case expiring > 0:
		overall = check.Expiring
	}
	for _, r := range reports {
		for i := range r.Results {
			remedyFix(&r.Results[i].Fix, r.Results[i].Remedy)
		}
		for j := range r.Addresses {
			res := r.Addresses[j].Results
			for i := range res {
				remedyFix(&res[i].Fix, res[i].Remedy)
			}
		}
	}
	if f.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			Verdict check.Verdict   `json:"verdict"`
			Reports []*check.Report `json:"reports"`
		}{overall, reports}); err != nil {
			return err
		}
	} else {
		for _, r := range reports {
			printReport(e.stdout, r)
		}
		fmt.Fprintf(e.stdout, "verdict: %s (%d failing, %d expiring, %d fine, of %d)\n",
			strings.ToUpper(string(overall)), failing, expiring, len(reports)-failing-expiring, len(reports))
	}

	switch overall {
	case check.Fail:
		return &exitError{code: 2, err: fmt.Errorf("%d of %d names fail", failing, len(reports))}
	case check.Expiring:
		return &exitError{code: 1, err: fmt.Errorf("%d of %d names have a certificate expiring within %s", expiring, len(reports), f.expiringWithin)}
	}
	return nil
}

// Exit codes of check --monitor, one per status; usage errors exit 2.
const (
	exitMonitorCertificate = 3
	exitMonitorUnreachable = 4
)

// runMonitor checks what ordinary clients get from each target and exits
// by the worst status: 0 ok, 1 expiring, 3 certificate, 4 unreachable.
func runMonitor(ctx context.Context, e *env, c *check.Checker, targets []check.Target, f checkFlags) error {
	prog := newProgress(e, "names checked", len(targets))
	c.Checked = prog.checked
	reports := c.MonitorAll(ctx, targets)
	prog.clear()
	overall := check.StatusOK
	counts := map[check.Status]int{}
	for _, r := range reports {
		overall = overall.Worst(r.Status)
		counts[r.Status]++
	}
	for _, r := range reports {
		if r.Resolve != nil {
			remedyFix(&r.Resolve.Fix, r.Resolve.Remedy)
		}
		for i := range r.Addresses {
			remedyFix(&r.Addresses[i].Fix, r.Addresses[i].Remedy)
		}
	}
	if f.json {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			Status  check.Status           `json:"status"`
			Reports []*check.MonitorReport `json:"reports"`
		}{overall, reports}); err != nil {
			return err
		}
	} else {
		for _, r := range reports {
			printMonitorReport(e.stdout, r)
		}
		fmt.Fprintf(e.stdout, "status: %s (%d ok, %d expiring, %d certificate, %d unreachable, of %d)\n",
			strings.ToUpper(string(overall)), counts[check.StatusOK], counts[check.StatusExpiring],
			counts[check.StatusCertificate], counts[check.StatusUnreachable], len(reports))
	}
	n := counts[overall]
	switch overall {
	case check.StatusCertificate:
		return &exitError{code: exitMonitorCertificate, err: fmt.Errorf("%d of %d names serve a certificate clients refuse", n, len(reports))}
	case check.StatusUnreachable:
		return &exitError{code: exitMonitorUnreachable, err: fmt.Errorf("%d of %d names are unreachable on some address", n, len(reports))}
	case check.StatusExpiring:
		return &exitError{code: exitFailure, err: fmt.Errorf("%d of %d names have a certificate expiring within %s", n, len(reports), f.expiringWithin)}
	}
	return nil
}

// remedyFix adds to a check's fix, which says what to do in general words,
// how this program does it, for the kinds of fix it carries out itself.
func remedyFix(fix *string, r check.Remedy) {
	if *fix == "" {
		return
	}
	switch r {
	case check.RemedyResponder:
		*fix += "; the responder: tlsalpn serve, or tlsalpn issue while it validates"
	case check.RemedyResponderInFront:
		*fix += "; tlsalpn serve in front of the web server answers acme-tls/1 itself; to monitor a server, use check --monitor"
	case check.RemedyRenew:
		*fix += "; to renew: tlsalpn renew"
	case check.RemedyTrustRoot:
		*fix += " with --ca-root"
	}
}

// printMonitorReport prints one name: a line per address with the
// handshake, certificate and expiry verdicts in separate columns, then the
// fix lines and the name's status.
func printMonitorReport(w io.Writer, r *check.MonitorReport) {
	fmt.Fprintf(w, "%s port %d\n", r.Name, r.Port)
	if r.Resolve != nil && !r.Resolve.Pass {
		fmt.Fprintf(w, "  resolve: FAIL: %s\n  fix resolve: %s\n", r.Resolve.Detail, r.Resolve.Fix)
	}
	if len(r.Addresses) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  ADDRESS\tHANDSHAKE\tCERTIFICATE\tEXPIRY")
		for _, a := range r.Addresses {
			hs := "ok: " + a.Handshake
			if !a.HandshakeOK {
				hs = "FAIL: " + a.Problem
			}
			cert, exp := "-", "unknown: no certificate seen"
			if c := a.Certificate; c != nil {
				cert = "ok: " + strings.Join(c.Names, ", ") + "; issuer " + c.Issuer
				if !a.CertificateOK {
					cert = "FAIL: " + a.Problem
				}
				exp = fmt.Sprintf("%s: %s, %d days left", a.Expiry, c.NotAfter.UTC().Format(time.DateOnly), c.DaysLeft)
				if a.Expiry != check.ExpiryOK {
					exp = strings.ToUpper(string(a.Expiry)) + exp[len(a.Expiry):]
				}
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", a.Address, hs, cert, exp)
		}
		tw.Flush()
		for _, a := range r.Addresses {
			if a.Fix != "" {
				fmt.Fprintf(w, "  fix %s: %s\n", a.Address, a.Fix)
			}
		}
	}
	fmt.Fprintf(w, "  %s: %s: %s\n\n", r.Name, strings.ToUpper(string(r.Status)), r.Summary)
}

// flagGiven reports whether the flag name was given on the command line.
func flagGiven(fs *flagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// checkTargets parses and de-duplicates the NAME[:PORT] arguments.
func checkTargets(args []string) ([]check.Target, error) {
	if len(args) == 0 {
		return nil, usagef("no names: give at least one NAME[:PORT] (see tlsalpn check --help)")
	}
	seen := map[string]bool{}
	var out []check.Target
	for _, a := range args {
		t, err := check.ParseTarget(a)
		if err != nil {
			return nil, usagef("%v", err)
		}
		k := t.ID.Value + "|" + strconv.Itoa(t.Port)
		if !seen[k] {
			seen[k] = true
			out = append(out, t)
		}
	}
	return out, nil
}

// keyAuthorization is --key-authorization, or --token "." --thumbprint.
func (f *checkFlags) keyAuthorization() (string, error) {
	switch {
	case f.keyAuth != "" && (f.token != "" || f.thumbprint != ""):
		return "", usagef("give --key-authorization or --token with --thumbprint, not both")
	case (f.token == "") != (f.thumbprint == ""):
		return "", usagef("--token and --thumbprint go together: give both (or --key-authorization)")
	case f.token != "":
		return f.token + "." + f.thumbprint, nil
	case f.keyAuth != "":
		tok, tp, ok := strings.Cut(f.keyAuth, ".")
		if !ok || tok == "" || tp == "" || strings.Contains(tp, ".") {
			return "", usagef("--key-authorization %q is not TOKEN.THUMBPRINT", f.keyAuth)
		}
		return f.keyAuth, nil
	}
	return "", nil
}

// parseDays parses a Go duration, or a whole number of days such as "30d".
func parseDays(s string) (time.Duration, error) {
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return 0, fmt.Errorf("%q is not a number of days such as 30d", s)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q is neither a number of days (30d) nor a duration (720h)", s)
		}
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q is not positive", s)
	}
	return d, nil
}

// rootPool is issuer.RootPool, with a bad --ca-root a usage error.
func rootPool(file string) (*x509.CertPool, error) {
	pool, err := issuer.RootPool(file)
	if err != nil {
		return nil, caRootError(file, err)
	}
	return pool, nil
}

// caRootError says what is wrong with --ca-root file in the flag's words.
func caRootError(file string, err error) error {
	if errors.Is(err, issuer.ErrNoRootCertificate) {
		return usagef("--ca-root %s holds no PEM certificate", file)
	}
	if pe, ok := errors.AsType[*iofs.PathError](err); ok {
		return usagef("reading --ca-root: %v", pe)
	}
	return usagef("--ca-root: %v", err)
}

// printReport prints one name: a table of every rule at every address, the
// fix lines, what the CA would conclude, and the name's verdict.
func printReport(w io.Writer, r *check.Report) {
	fmt.Fprintf(w, "%s port %d (%s, SNI %s)\n", r.Name, r.Port, r.Type, r.ServerName)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  ADDRESS\tRULE\tRESULT\tCA'S WORDS / SEEN")
	type fix struct{ where, rule, fix string }
	var fixes []fix
	row := func(addr string, res check.Result) {
		result := "PASS"
		if !res.Pass {
			result = "FAIL"
		}
		words := res.CAMessage
		if words == "" {
			words = res.Detail
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", addr, res.Rule, result, words)
		if !res.Pass && res.Fix != "" {
			fixes = append(fixes, fix{addr, string(res.Rule), res.Fix})
		}
	}
	for _, res := range r.Results {
		row("-", res)
	}
	for _, a := range r.Addresses {
		for _, res := range a.Results {
			row(a.Address, res)
		}
	}
	tw.Flush()
	for _, f := range fixes {
		if f.where == "-" {
			fmt.Fprintf(w, "  fix %s: %s\n", f.rule, f.fix)
		} else {
			fmt.Fprintf(w, "  fix %s %s: %s\n", f.where, f.rule, f.fix)
		}
	}
	fmt.Fprintf(w, "  CA: %s\n", r.CA.Summary)
	fmt.Fprintf(w, "  %s: %s: %s\n\n", r.Name, strings.ToUpper(string(r.Verdict)), r.Summary)
}
