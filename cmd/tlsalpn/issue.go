package main

import (
	"context"
	"errors"
	"fmt"
	"os"
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
)

const issueUsage = `
Usage: tlsalpn issue -d NAME [-d NAME…] --email ADDR --agree-tos [flags]

Obtains a certificate through ACME TLS-ALPN-01: tlsalpn listens on --listen
(default :443) only while the CA validates, answers the CA's handshake itself,
then writes cert.pem, chain.pem, fullchain.pem and key.pem (0600) to --out
and runs --deploy-hook. Everything given here is remembered, so that
"tlsalpn renew" renews the same way with no flags.

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
  tlsalpn issue -d example.com --ca zerossl --eab-kid KID --eab-hmac-key-file /etc/tlsalpn/eab.key --agree-tos

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
	separate       bool
	noPreflight    bool
	keyType        string
	profile        string
	preferredChain string
}

func (f *issueFlags) register(fs *flagSet) {
	f.caFlags.register(fs, true)
	fs.DurationVar(&f.timeout, "timeout", 10*time.Minute, "give up on the whole operation after this `DURATION`")
	fs.Var(&f.names, "d", "a `NAME` (DNS name or IP address) to put in the certificate; repeat for more, or comma-separate")
	fs.StringVar(&f.listen, "listen", ":443", "`ADDR` to answer the CA on while validating; the CA always connects to port 443, so anything else needs a port forward")
	fs.StringVar(&f.out, "out", "", "`DIR` to write cert.pem, chain.pem, fullchain.pem and key.pem to (default STORAGE/live/NAME)")
	fs.StringVar(&f.hook, "deploy-hook", "", "shell `COMMAND` to run after the files are written, e.g. 'systemctl reload nginx'")
	fs.BoolVar(&f.noPreflight, "no-preflight", false, "do not check each challenge from outside before telling the CA it is ready")
	fs.BoolVar(&f.separate, "separate", false, "order one certificate per name, concurrently, each in --out/NAME")
	fs.StringVar(&f.keyType, "key-type", "ec256", "certificate key `TYPE`: ec256, ec384, rsa2048, rsa3072 or rsa4096")
	fs.StringVar(&f.profile, "profile", "", "ACME `PROFILE` to request (e.g. classic, tlsserver, shortlived); default: classic or default when the CA offers it")
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
	in, err := validateIssueFlags(e, &f)
	if err != nil {
		return err
	}
	ids, caURL, kt, eab := in.ids, in.caURL, in.kt, in.eab
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

	// Reach the CA before writing anything: an unreachable CA, or one
	// that needs EAB or a profile we were not given, is a clean failure.
	dir, err := issuer.FetchDirectory(ctx, caURL, hc)
	if err != nil {
		return err
	}
	if dir.Meta != nil && dir.Meta.ExternalAccountRequired && eab == nil {
		if err := needAccountOrEAB(f.storage, caURL, f.email); err != nil {
			return err
		}
	}
	if _, err := issuer.ChooseProfile(profilesOf(dir), f.profile); err != nil {
		return usagef("--profile: %v", err)
	}
	if err := checkAgreeTOS(f.storage, caURL, f.email, f.agreeTOS, dir); err != nil {
		return err
	}

	store, err := openStorage(f.storage)
	if err != nil {
		return err
	}
	out := f.out
	if out == "" {
		out = filepath.Join(store.Root(), "live")
		if !f.separate {
			out = filepath.Join(out, ids[0].Value)
		}
	}
	if out, err = filepath.Abs(out); err != nil {
		return usagef("--out: %v", err)
	}

	logger := f.logger(e)
	r := responder.New(responder.WithLogger(logger))
	is := newIssuers(store, logger, r)
	is.eab, is.agreeTOS, is.noPreflight = eab, f.agreeTOS, f.noPreflight
	if f.verbose {
		is.onStep = stepPrinter(e)
	}
	is.httpClientSet(f.caRoot, hc)
	m := manager.New(store, is.get, logger)

	specFor := func(names []string, out string) manager.Spec {
		return manager.Spec{
			Names: names, CA: caURL, CARoot: f.caRoot, Email: f.email, KeyType: kt, Profile: f.profile,
			PreferredChain: f.preferredChain, Out: out, DeployHook: f.hook, Listen: f.listen,
		}
	}
	var specs []manager.Spec
	if f.separate {
		for _, id := range ids {
			specs = append(specs, specFor([]string{id.Value}, filepath.Join(out, id.Value)))
		}
	} else {
		names := make([]string, len(ids))
		for i, id := range ids {
			names[i] = id.Value
		}
		specs = append(specs, specFor(names, out))
	}

	start := time.Now()
	errs := make([]error, len(specs))
	recs := make([]*manager.Record, len(specs))
	var wg sync.WaitGroup
	for i, spec := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs[i], errs[i] = m.Obtain(ctx, spec, nil)
		}()
	}
	wg.Wait()
	var failed []error
	for i, rec := range recs {
		if rec != nil {
			printIssued(e, rec, time.Since(start))
		}
		if errs[i] != nil {
			failed = append(failed, errs[i])
		}
	}
	return errors.Join(failed...)
}

func printIssued(e *env, rec *manager.Record, took time.Duration) {
	p := deploy.PathsIn(rec.Out)
	fmt.Fprintf(e.stdout, "issued %s: serial %s, issuer %q, valid until %s (%d days)%s, in %s\n",
		strings.Join(rec.Names, ", "), rec.Serial, rec.Issuer, rec.NotAfter.Format("2006-01-02 15:04 MST"),
		int(time.Until(rec.NotAfter).Hours()/24), profileNote(rec.Profile), took.Round(time.Millisecond))
	fmt.Fprintf(e.stdout, "  %s\n  %s\n", p.FullChain, p.Key)
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
func needAccountOrEAB(storageDir, caURL, email string) error {
	root := storageDir
	if root == "" {
		d, err := fsDefaultRoot()
		if err != nil {
			return err
		}
		root = d
	}
	if email == "" {
		email = "default"
	}
	acct := filepath.Join(root, "accounts", issuer.CAKey(caURL), issuer.AccountSegment(email), "account.json")
	if _, err := os.Stat(acct); err == nil {
		return nil
	}
	return usagef("%s requires External Account Binding: pass --eab-kid and --eab-hmac-key-file (or $TLSALPN_EAB_KID and $TLSALPN_EAB_HMAC_KEY) "+
		"(ZeroSSL: from the dashboard's Developer page; Google: gcloud publicca external-account-keys create)", caURL)
}
