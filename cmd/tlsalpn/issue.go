package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/deploy"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage"
)

const issueUsage = `
Usage: tlsalpn issue -d NAME [-d NAME…] --email ADDR --agree-tos [flags]

Obtains a certificate through ACME TLS-ALPN-01: tlsalpn listens on --listen
(default :443) only while the CA validates, answers the CA's handshake itself,
then writes cert.pem, chain.pem, fullchain.pem and key.pem (0600) to --out
and runs --deploy-hook. Everything given here is remembered, so that
"tlsalpn renew" renews the same way with no flags.

The certificate is managed under a name (--cert-name, default the first
-d name) and feeds one --out. Running issue again is safe: the same names
from the same CA order nothing ("already valid until …"; --force orders
anyway) and a changed --out, hook, key type or profile is remembered; other
names or another CA for the same --out replace the certificate there; other
names under a certificate name that feeds another --out are refused (exit 2):
give --cert-name for a second certificate.

The CA connects to port 443 of every name (IPv6 first when the name has an
AAAA record), so each name must resolve to this host and port 443 must reach
--listen. If a web server already owns :443, run "tlsalpn serve" in front of
it instead. Wildcard names cannot be validated with TLS-ALPN-01: use a DNS-01
client for those.

Examples:
  tlsalpn issue -d example.com -d www.example.com --email ops@example.com --agree-tos \
      --out /etc/nginx/tls/example.com --deploy-hook 'systemctl reload nginx'
  tlsalpn issue -d 192.0.2.10 --profile shortlived --agree-tos       (an IP certificate)
  tlsalpn issue -d a.example -d b.example --separate --agree-tos     (one certificate each)
  tlsalpn issue -d example.com -d new.example.com --out /etc/nginx/tls/example.com --agree-tos
                                             (adds a name to the certificate that feeds that --out)
  tlsalpn issue -d example.com --ca zerossl --eab-kid KID --eab-hmac-key-file /etc/tlsalpn/eab.key --agree-tos
  tlsalpn issue -d example.com --agree-tos --pre-hook 'systemctl stop nginx' \
      --post-hook 'systemctl start nginx'    (a server holds :443 and cannot move)

Where it is stored: --storage, else $TLSALPN_STORAGE, else /var/lib/tlsalpn
for root and $XDG_DATA_HOME/tlsalpn or ~/.local/share/tlsalpn for other
users. Run "tlsalpn renew" as the same user; issue prints the exact line.

Every value is checked, and --listen bound once, before anything is
written or ordered. The EAB HMAC key may also come from a file or from
$TLSALPN_EAB_HMAC_KEY (and the key ID from $TLSALPN_EAB_KID), out of ps's
sight. -v shows each step, with each challenge's key authorization for
"tlsalpn check NAME --key-authorization".

Exit codes: 0 issued (and deployed), 1 failed, 2 usage error (nothing done),
130 interrupted.
The hook gets TLSALPN_CERT, TLSALPN_KEY, TLSALPN_FULLCHAIN, TLSALPN_CHAIN,
TLSALPN_DOMAIN, TLSALPN_DOMAINS and TLSALPN_OUT (and certbot's
RENEWED_LINEAGE/RENEWED_DOMAINS and lego's LEGO_CERT_* for existing scripts).
`

type issueFlags struct {
	caFlags
	names          listFlag
	listen         string
	out            string
	hook           string
	preHook        string
	postHook       string
	separate       bool
	noPreflight    bool
	validationPort int
	keyType        string
	profile        string
	preferredChain string
	certName       string
	force          bool
}

func (f *issueFlags) register(fs *flagSet) {
	f.caFlags.register(fs, true)
	fs.DurationVar(&f.timeout, "timeout", 10*time.Minute, "give up on the whole operation after this `DURATION`")
	fs.Var(&f.names, "d", "a `NAME` (DNS name or IP address) to put in the certificate; repeat for more, or comma-separate")
	fs.StringVar(&f.listen, "listen", ":443", "`ADDR` to answer the CA on while validating; the CA always connects to port 443, so anything else needs a port forward")
	fs.StringVar(&f.out, "out", "", "`DIR` to write cert.pem, chain.pem, fullchain.pem and key.pem to (default STORAGE/live/NAME)")
	fs.StringVar(&f.hook, "deploy-hook", "", "shell `COMMAND` to run after the files are written, e.g. 'systemctl reload nginx'")
	fs.StringVar(&f.preHook, "pre-hook", "", "shell `COMMAND` run once before the validation listener binds, e.g. 'systemctl stop nginx' when it holds :443; remembered for renew")
	fs.StringVar(&f.postHook, "post-hook", "", "shell `COMMAND` run once after the validation listener is released, even if validation failed, e.g. 'systemctl start nginx'; remembered for renew")
	fs.BoolVar(&f.noPreflight, "no-preflight", false, "do not check each challenge from outside before telling the CA it is ready")
	fs.IntVar(&f.validationPort, "validation-port", 443, "the `PORT` the CA connects to, which the preflight checks: 443 for every real CA; only for a test CA (Pebble) whose validation dials another port")
	fs.BoolVar(&f.separate, "separate", false, "order one certificate per name, concurrently, each in --out/NAME")
	fs.StringVar(&f.keyType, "key-type", "ec256", "certificate key `TYPE`: ec256, ec384, rsa2048, rsa3072 or rsa4096")
	fs.StringVar(&f.profile, "profile", "", "ACME `PROFILE` to request (e.g. classic, tlsserver, shortlived); default: classic or default when the CA offers it")
	fs.StringVar(&f.certName, "cert-name", "", "the `NAME` this certificate is managed by (list, renew, revoke, delete, reconfigure); default: the first -d name")
	fs.BoolVar(&f.force, "force", false, "order a new certificate even when a valid one for these names is stored")
	fs.StringVar(&f.preferredChain, "preferred-chain", "", "pick the chain whose root is issued by this `CN` when the CA offers several")
}

// parseNames validates every name before anything else happens.
func parseNames(names []string) ([]challenge.Identifier, error) {
	if len(names) == 0 {
		return nil, usagef("no names: give at least one -d NAME")
	}
	seen := map[string]bool{}
	var ids []challenge.Identifier
	for _, n := range names {
		id, err := challenge.ParseIdentifier(n)
		if err != nil {
			if errors.Is(err, challenge.ErrWildcard) {
				return nil, usagef("%v", err)
			}
			return nil, usagef("-d %q: %v", n, err)
		}
		if !seen[id.Value] {
			seen[id.Value] = true
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func runIssue(ctx context.Context, e *env, args []string) error {
	var f issueFlags
	fs := newFlagSet(e, "issue", issueUsage)
	f.register(fs)
	if err := fs.parse(args, 0); err != nil {
		return err
	}
	loc, err := f.storageFlags.resolve(e)
	if err != nil {
		return err
	}
	if loc.etcd != nil && f.out == "" {
		return usagef("--storage %s has no directory to deploy to: give --out DIR (where this certificate's files go, on every machine that deploys it)", loc.url)
	}
	in, err := issueInputOf(ctx, e, &f)
	if err != nil {
		return err
	}
	hc, err := httpClient(f.caRoot)
	if err != nil {
		return err
	}
	if f.caRoot != "" {
		if f.caRoot, err = filepath.Abs(f.caRoot); err != nil {
			return usagef("--ca-root: %v", err)
		}
	}
	ctx, cancel := withTimeout(ctx, f.timeout)
	defer cancel()
	if err := issueCAReady(ctx, e, &f, in, hc); err != nil {
		return err
	}

	st, err := openStorage(ctx, e, &f.storageFlags, create, f.logger(e))
	if err != nil {
		return err
	}
	defer st.Close()
	store := st.store
	out := f.out
	if out != "" {
		if out, err = filepath.Abs(out); err != nil {
			return usagef("--out: %v", err)
		}
	}
	prog, logger := issueProgress(e, &f, len(in.ids))
	is := issuePool(e, &f, store, logger, in.eab, hc)
	defer is.CloseIdle()
	if prog != nil {
		is.OnStep = prog.issueStep
	}
	if clustered, err := useCluster(ctx, store, is, logger); err != nil {
		return err
	} else if clustered {
		in.portErr = nil // the nodes answer the CA, not --listen here
	}
	m := manager.New(store, is.Get, logger)
	specs := issueSpecs(&f, fs.setFlags(), in, out)
	// An etcd storage has no directory: resolve refused it without --out.
	recs, failed := issueEach(ctx, e, m, store, specs, issueOptions(&f, in, filepath.Join(st.loc.dir, "live")), prog)
	// The server the pre-hook stopped comes back whatever happened.
	if err := is.Hooks.Finish(ctx); err != nil {
		failed = append(failed, err)
	}
	printRenewHint(e, st, storedNames(recs))
	return errors.Join(failed...)
}

// issueProgress returns the progress line of the validations and the
// logger to issue with. -v prints every step already, so it gets no
// progress line; otherwise a terminal shows how far the validations are,
// and log lines go above that line.
func issueProgress(e *env, f *issueFlags, names int) (*progress, *slog.Logger) {
	if f.verbose {
		return nil, f.logger(e)
	}
	prog := newProgress(e, "names validated", names)
	if prog == nil {
		return nil, f.logger(e)
	}
	le := *e
	le.stderr = prog.above(e.stderr)
	if f.logFormat == "" {
		f.logFormat = "text" // stderr is a terminal
	}
	return prog, f.logger(&le)
}

// issueOptions is how issue orders: the flags' key type and listener for
// the specs that give none, and liveDir/NAME as their output.
func issueOptions(f *issueFlags, in issueInput, liveDir string) manager.IssueOptions {
	return manager.IssueOptions{
		Force: f.force,
		// The port was bind-tested before anything was contacted; it
		// matters only now that something is to be ordered.
		BeforeOrder: func(context.Context, manager.Spec) error { return in.portErr },
		Defaults:    manager.Spec{KeyType: in.kt, Listen: f.listen},
		DefaultOut:  func(name string) string { return filepath.Join(liveDir, name) },
	}
}

// issueInputOf checks issue's flags before anything is contacted, and,
// when --listen cannot be bound, whether that matters: a certificate a
// running serve keeps is that serve's to renew.
func issueInputOf(ctx context.Context, e *env, f *issueFlags) (issueInput, error) {
	in, err := validateIssueFlags(e, f)
	if err != nil {
		return in, err
	}
	if f.certName != "" {
		if err := manager.ValidateCertName(f.certName); err != nil {
			return in, usagef("--cert-name: %v", err)
		}
		if f.separate && len(in.ids) > 1 {
			return in, usagef("--cert-name names one certificate; --separate makes one per name, each named by its name")
		}
	}
	if f.validationPort < 1 || f.validationPort > 65535 {
		return in, usagef("--validation-port %d: give a port from 1 to 65535 (the CA's is 443)", f.validationPort)
	}
	if in.portErr != nil {
		if st, id, need := needsPort(ctx, e, f, in); need {
			if st == nil {
				return in, in.portErr
			}
			defer st.Close()
			return in, servePortError(ctx, st.store, in.portErr, id, in.ids[0].Value, f.listen)
		}
	}
	return in, nil
}

// issueCAReady reaches the CA before anything is written: an unreachable
// CA, or one that needs EAB, a profile or terms we were not given, is a
// clean failure.
func issueCAReady(ctx context.Context, e *env, f *issueFlags, in issueInput, hc *http.Client) error {
	dir, err := issuer.FetchDirectory(ctx, in.caURL, hc)
	if err != nil {
		return err
	}
	if dir.Meta != nil && dir.Meta.ExternalAccountRequired && in.eab == nil {
		if err := needAccountOrEAB(ctx, e, &f.storageFlags, in.caURL, f.email); err != nil {
			return err
		}
	}
	if _, err := issuer.ChooseProfile(profilesOf(dir), f.profile); err != nil {
		return usagef("--profile: %v%s", err, advice(err))
	}
	return checkAgreeTOS(ctx, e, &f.storageFlags, in.caURL, f.email, f.agreeTOS, dir)
}

// issuePool is issue's issuer pool: a standalone listener answers, with
// the account, preflight and step printing the flags ask for, and the
// CA client already made.
func issuePool(e *env, f *issueFlags, store storage.Storage, logger *slog.Logger, eab *acme.EAB, hc *http.Client) *manager.Pool {
	r := responder.New(responder.WithLogger(logger))
	is := newIssuers(store, logger, r)
	is.EAB, is.AgreeTOS = eab, f.agreeTOS
	if f.noPreflight {
		is.Preflight = nil
	}
	is.ValidationPort = f.validationPort
	if f.verbose {
		is.OnStep = stepPrinter(e)
	}
	is.SetHTTPClient(f.caRoot, hc)
	is.Hooks = manager.NewStandaloneHooks(logger, "", "")
	return is
}

// issueSpecs is what issue asks for: one certificate, or one per name
// with --separate, each in its own directory under out. Settings not
// given on the command line (set) keep what a certificate already stored
// under this name has (see manager.Issue).
func issueSpecs(f *issueFlags, set map[string]bool, in issueInput, out string) []manager.Spec {
	specFor := func(names []string, out string) manager.Spec {
		spec := manager.Spec{
			CertName: f.certName, Names: names, CA: in.caURL, CARoot: f.caRoot, Email: f.email, Profile: f.profile,
			PreferredChain: f.preferredChain, Out: out, DeployHook: f.hook, PreHook: f.preHook, PostHook: f.postHook,
		}
		if set["key-type"] {
			spec.KeyType = in.kt
		}
		if set["listen"] {
			spec.Listen = f.listen
		}
		if set["validation-port"] && f.validationPort != 443 {
			spec.ValidationPort = f.validationPort
		}
		return spec
	}
	if !f.separate {
		return []manager.Spec{specFor(identifierValues(in.ids), out)}
	}
	var specs []manager.Spec
	for _, id := range in.ids {
		o := out
		if o != "" {
			o = filepath.Join(out, id.Value)
		}
		specs = append(specs, specFor([]string{id.Value}, o))
	}
	return specs
}

// issueEach issues specs at once, prints each result, and returns the
// records stored and the failures.
func issueEach(ctx context.Context, e *env, m *manager.Manager, store storage.Storage, specs []manager.Spec, opts manager.IssueOptions, prog *progress) ([]*manager.Record, []error) {
	start := time.Now()
	errs := make([]error, len(specs))
	results := make([]*manager.IssueResult, len(specs))
	var wg sync.WaitGroup
	for i, spec := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = m.Issue(ctx, spec, opts)
			if results[i] == nil && errs[i] != nil {
				errs[i] = servePortError(ctx, store, errs[i], spec.ID(), spec.Names[0], spec.Listen)
			}
		}()
	}
	wg.Wait()
	prog.clear()
	var failed []error
	var recs []*manager.Record
	for i, res := range results {
		if res != nil {
			printIssueResult(e, res, time.Since(start))
			recs = append(recs, res.Record)
		}
		if errs[i] != nil {
			var clash *manager.IdentityClashError
			if errors.As(errs[i], &clash) {
				errs[i] = usagef("%v: to keep both, give the new one its own --cert-name; to replace it, issue with --out %s",
					clash, orDash(clash.Existing.Out))
			}
			failed = append(failed, errs[i])
		}
	}
	return recs, failed
}

// needsPort reports whether issue will order anything, and so needs
// --listen, reading storage only (nothing is created, the CA is not
// asked): issuing again what is stored and valid needs no port, which is
// what makes running issue again safe while a server holds :443. When in
// doubt it says yes.
//
// It returns the storage, when there is one, and the certificate name that
// would be ordered, for saying who holds the port.
func needsPort(ctx context.Context, e *env, f *issueFlags, in issueInput) (*openedStorage, string, bool) {
	st, err := openStorage(ctx, e, &f.storageFlags, mustExist, nil)
	if err != nil {
		return nil, "", true
	}
	m := manager.New(st.store, nil, nil)
	caURL := in.caURL
	for _, id := range in.ids {
		names := identifierValues(in.ids)
		if f.separate {
			names = []string{id.Value}
		}
		spec := manager.Spec{CertName: f.certName, Names: names, CA: caURL}
		if f.out != "" {
			spec.Out, _ = filepath.Abs(f.out)
			if f.separate {
				spec.Out = filepath.Join(spec.Out, id.Value)
			}
		}
		order, err := m.WouldOrder(ctx, spec, manager.IssueOptions{Force: f.force})
		if err != nil {
			// Refused for another reason (a name clash, a damaged
			// record), which the run itself reports as such.
			continue
		}
		if order {
			return st, spec.ID(), true
		}
		if !f.separate {
			break
		}
	}
	st.Close()
	return nil, "", false
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printIssueResult says what issue did for one certificate, in the words
// a person needs the day it stops renewing: what is stored, where it is
// deployed, and what stopped.
func printIssueResult(e *env, res *manager.IssueResult, took time.Duration) {
	rec := res.Record
	if rec == nil {
		return
	}
	switch res.Action {
	case manager.Ordered:
		printIssued(e, rec, took)
		if p := res.Previous; p != nil {
			fmt.Fprintf(e.stdout, "  replaces certificate %s as it was (%s from %s): that one is no longer renewed\n",
				p.Name(), strings.Join(p.Names, ", "), p.CA)
		}
	case manager.Unchanged, manager.Reconfigured:
		fmt.Fprintf(e.stdout, "certificate %s (%s) is already valid until %s, renews around %s: nothing ordered (--force orders anyway)\n",
			rec.Name(), strings.Join(rec.Names, ", "), rec.NotAfter.Local().Format("2006-01-02 15:04"),
			renewsAround(rec).Local().Format("2006-01-02"))
		if len(res.Changed) > 0 {
			fmt.Fprintf(e.stdout, "  updated: %s\n", strings.Join(res.Changed, ", "))
		}
		if rec.Out != "" {
			p := deploy.PathsIn(rec.Out)
			fmt.Fprintf(e.stdout, "  %s\n  %s\n", p.FullChain, p.Key)
		}
	}
	for _, r := range res.Retired {
		fmt.Fprintf(e.stdout, "  certificate %s (%s from %s) fed %s and is no longer renewed (tlsalpn delete %s removes it)\n",
			r.Name(), strings.Join(r.Names, ", "), r.CA, r.Out, r.Name())
	}
}

// renewsAround is when rec is expected to renew, from its record alone.
func renewsAround(rec *manager.Record) time.Time {
	return (&manager.Stored{Record: *rec}).RenewsAround()
}

func printIssued(e *env, rec *manager.Record, took time.Duration) {
	fmt.Fprintf(e.stdout, "issued %s: serial %s, issuer %q, valid until %s (%d days)%s, in %s\n",
		strings.Join(rec.Names, ", "), rec.Serial, rec.Issuer, rec.NotAfter.Format("2006-01-02 15:04 MST"),
		int(time.Until(rec.NotAfter).Hours()/24), profileNote(rec.Profile), took.Round(time.Millisecond))
	if rec.CertName != "" {
		fmt.Fprintf(e.stdout, "  certificate name %s\n", rec.CertName)
	}
	if rec.Out != "" {
		p := deploy.PathsIn(rec.Out)
		fmt.Fprintf(e.stdout, "  %s\n  %s\n", p.FullChain, p.Key)
	}
}

func profileNote(p string) string {
	if p == "" {
		return ""
	}
	return ", profile " + p
}

func profilesOf(d acme.Directory) map[string]string {
	if d.Meta == nil {
		return nil
	}
	return d.Meta.Profiles
}

// needAccountOrEAB refuses early when the CA requires External Account
// Binding, no EAB was given, and no account for this CA exists yet.
func needAccountOrEAB(ctx context.Context, e *env, sf *storageFlags, caURL, email string) error {
	exists, err := accountExists(ctx, e, sf, caURL, email)
	if err != nil || exists {
		return err
	}
	return usagef("%s requires External Account Binding: pass --eab-kid and --eab-hmac-key-file (or $TLSALPN_EAB_KID and $TLSALPN_EAB_HMAC_KEY) "+
		"(ZeroSSL: from the dashboard's Developer page; Google: gcloud publicca external-account-keys create)", caURL)
}
