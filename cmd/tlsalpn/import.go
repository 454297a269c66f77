package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tlsalpn/tlsalpn/deploy"
	"github.com/tlsalpn/tlsalpn/importer"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/storage"
)

const importUsage = `
Usage: tlsalpn import certbot|lego|acme.sh|traefik PATH [flags]

Takes over the certificates and accounts of another ACME client, so that
the next renewal is done by tlsalpn with the account that client
registered: nothing is ordered now, no new account is registered.

Examples:
  tlsalpn import certbot /etc/letsencrypt --dry-run
  tlsalpn import certbot /etc/letsencrypt
  tlsalpn import lego ~/.lego
  tlsalpn import acme.sh ~/.acme.sh
  tlsalpn import traefik /etc/traefik/acme.json

What is carried over, per tool:
  certbot  renewal/NAME.conf: the certificate (live/NAME), its account and
           CA, key type; the output stays live/NAME (cert.pem, chain.pem,
           fullchain.pem, and privkey.pem kept pointing at the new key);
           the scripts in renewal-hooks/{pre,deploy,post}, renew_hook
           (--deploy-hook), pre_hook and post_hook, in certbot's order.
  lego     certificates/NAME.crt and the account at the CA that issued it;
           lego records only the CA's host: a CA tlsalpn does not know needs
           --ca URL, and several accounts at one CA need --email.
  acme.sh  NAME[_ecc]/NAME.conf: the certificate, Le_API's account, and
           where --install-cert put the files (Le_Real*Path), copied
           there by the deploy hook between Le_RenewHook and Le_ReloadCmd;
           Le_PreHook and Le_PostHook.
  traefik  every resolver's account and certificates; --ca as for lego.
Certificates without an output of their own (lego, acme.sh, Traefik) are
deployed to --out DIR/NAME (default: STORAGE/live/NAME) by the next renew.

A source is imported whole or not at all: a file that cannot be read, a
CA that cannot be told or a wildcard name (TLS-ALPN-01 cannot validate
one) refuses it with the reason, and nothing is written. A certificate
name or an account already stored is not replaced without --force.
--dry-run lists what would be imported, and writes nothing.

Then stop the other tool's renewals (certbot: systemctl disable --now
certbot.timer; lego and acme.sh: their cron line), and let tlsalpn renew
keep them (cron or timer, see tlsalpn renew --help).

Exit codes: 0 imported (or listed), 1 refused or failed (nothing written
unless it says so), 2 usage error.
`

type importFlags struct {
	caFlags
	dryRun, force  bool
	out            string
	listen         string
	validationPort int
}

func runImport(ctx context.Context, e *env, args []string) error {
	f, tool, path, err := parseImportArgs(e, args)
	if err != nil {
		return err
	}
	src, err := readImportSource(&f, tool, path)
	if err != nil {
		return err
	}
	parent, err := importOutParent(e, &f)
	if err != nil {
		return err
	}
	mode := create
	if f.dryRun {
		mode = mustExist
	}
	st, err := openStorage(ctx, e, &f.storageFlags, mode, f.logger(e))
	if f.dryRun && errors.Is(err, errNoStorage) {
		st, err = nil, nil // nothing stored: nothing in the way
	}
	if err != nil {
		return err
	}
	defer st.Close()
	var m *manager.Manager
	var stor storage.Storage
	if st != nil {
		stor = st.store
		m = manager.New(stor, nil, f.logger(e))
	}
	specs, err := importSpecs(src, &f, parent)
	if err != nil {
		return &importer.RefusedError{Tool: src.Tool, Path: src.Path, Err: err}
	}
	if err := importCheck(ctx, stor, m, src, specs, f.force, f.dryRun); err != nil {
		return &importer.RefusedError{Tool: src.Tool, Path: src.Path, Err: err}
	}
	printImportPlan(e, src, specs, f.dryRun)
	if f.dryRun {
		fmt.Fprintln(e.stdout, "dry run: nothing written")
		return nil
	}
	// A terminal shows how far the import is; results print after.
	prog := newProgress(e, "certificates imported", len(specs))
	err = writeImport(ctx, stor, m, src, specs, f.force, prog)
	prog.clear()
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "imported %s and %s from %s into %s\n", count(len(specs), "certificate"), count(len(src.Accounts), "account"), src.Path, st.where())
	fmt.Fprintf(e.stdout, "now stop %s renewing them (%s), and renew them with tlsalpn renew from cron or a timer (tlsalpn renew --help); its next run deploys each once to its output\n", src.Tool, stopRenewing(src.Tool))
	return nil
}

// parseImportArgs reads import's flags and its tool and PATH, and checks
// everything that needs no file read: a bad flag is a usage error before
// the other tool's files are looked at.
func parseImportArgs(e *env, args []string) (f importFlags, tool, path string, err error) {
	fs := newFlagSet(e, "import", importUsage)
	f.caFlags.register(fs, false)
	fs.StringVar(&f.ca, "ca", "", "the CA's directory `URL`, for lego and Traefik, which record only its host (not needed for Let's Encrypt and the other CAs tlsalpn knows)")
	fs.StringVar(&f.caRoot, "ca-root", "", "PEM `FILE` of roots to trust for the CA's own HTTPS, kept for renewals (a private CA, Pebble)")
	fs.StringVar(&f.email, "email", "", "the account's email, when a lego directory holds several accounts at one CA")
	fs.BoolVar(&f.dryRun, "dry-run", false, "list what would be imported; write nothing")
	fs.BoolVar(&f.force, "force", false, "replace certificates and accounts stored already under the same names")
	fs.StringVar(&f.out, "out", "", "parent `DIR` of the output directories of certificates the tool kept no files for: DIR/NAME (default STORAGE/live/NAME)")
	fs.StringVar(&f.listen, "listen", ":443", "`ADDR` to answer the CA on when renewing, as for issue")
	fs.IntVar(&f.validationPort, "validation-port", 443, "the `PORT` the CA connects to, as for issue: 443 for every real CA")
	if err := fs.parse(args, 2); err != nil {
		return f, "", "", err
	}
	if len(fs.pos) != 2 {
		return f, "", "", usagef("give the tool and its directory or file: tlsalpn import certbot|lego|acme.sh|traefik PATH (see tlsalpn import --help)")
	}
	if f.validationPort < 1 || f.validationPort > 65535 {
		return f, "", "", usagef("--validation-port %d: give a port from 1 to 65535 (the CA's is 443)", f.validationPort)
	}
	// Stored for every renewal: a bad address must not wait for the
	// first one to be found out.
	if err := checkListen(f.listen); err != nil {
		return f, "", "", err
	}
	if f.ca != "" {
		if _, err := issuer.ResolveCA(f.ca); err != nil {
			return f, "", "", usagef("--ca: %v", err)
		}
	}
	for _, p := range []*string{&f.caRoot, &f.out} {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return f, "", "", usagef("%v", err)
			}
			*p = abs
		}
	}
	if f.caRoot != "" {
		if _, err := httpClient(f.caRoot); err != nil {
			return f, "", "", err
		}
	}
	return f, fs.pos[0], fs.pos[1], nil
}

// readImportSource reads what tool left at path, after refusing the
// flags that tool's files make meaningless: lego and Traefik record only
// the CA's host, the others the directory URL and the account, which a
// flag must not silently contradict.
func readImportSource(f *importFlags, tool, path string) (*importer.Source, error) {
	opts := importer.Options{CA: f.ca, Email: f.email}
	var read func() (*importer.Source, error)
	switch tool {
	case "certbot":
		read = func() (*importer.Source, error) { return importer.Certbot(path) }
	case "lego":
		read = func() (*importer.Source, error) { return importer.Lego(path, opts) }
	case "acme.sh", "acmesh":
		read = func() (*importer.Source, error) { return importer.ACMESh(path) }
	case "traefik":
		read = func() (*importer.Source, error) { return importer.Traefik(path, opts) }
	default:
		return nil, usagef("unknown tool %q: import certbot, lego, acme.sh or traefik", tool)
	}
	if f.ca != "" && tool != "lego" && tool != "traefik" {
		return nil, usagef("--ca is for lego and traefik, which do not record the CA's directory URL; %s records it for each certificate", tool)
	}
	if f.email != "" && tool != "lego" {
		return nil, usagef("--email chooses among a lego directory's accounts; %s records which account each certificate uses", tool)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, usagef("%s: %v", tool, err)
	}
	return read()
}

// importOutParent is the directory under which certificates the tool
// kept no files for get theirs: --out, or the storage's live/. An etcd
// storage has no directory on this host, so it needs --out.
func importOutParent(e *env, f *importFlags) (string, error) {
	if f.out != "" {
		return f.out, nil
	}
	loc, err := f.storageFlags.resolve(e)
	if err != nil {
		return "", err
	}
	if loc.etcd != nil {
		return "", usagef("give --out DIR with etcd storage: the certificates the tool kept no files for need a directory on this host")
	}
	return filepath.Join(loc.dir, "live"), nil
}

// printImportPlan lists every account and certificate of src as it will
// be stored (or would be, for a dry run), with what the user may want to
// check: the output, the hooks carried over and the importer's notes.
func printImportPlan(e *env, src *importer.Source, specs []manager.Spec, dryRun bool) {
	verb := "importing"
	if dryRun {
		verb = "would import"
	}
	for _, a := range src.Accounts {
		fmt.Fprintf(e.stdout, "%s account %s (%s) at %s\n", verb, a.Location, orNoEmail(a.Email), a.CA)
	}
	for i, c := range src.Certificates {
		s := specs[i]
		fmt.Fprintf(e.stdout, "%s certificate %s: %s, %s, serial %s, valid until %s\n", verb, s.ID(), strings.Join(s.Names, ", "),
			c.KeyType, c.Leaf.SerialNumber.Text(16), c.Leaf.NotAfter.UTC().Format("2006-01-02 15:04 UTC"))
		fmt.Fprintf(e.stdout, "    out %s\n", s.Out)
		if s.DeployHook != "" {
			fmt.Fprintf(e.stdout, "    deploy hook: %s\n", strings.ReplaceAll(s.DeployHook, "\n", " "))
		}
		if s.PreHook != "" || s.PostHook != "" {
			fmt.Fprintf(e.stdout, "    pre-hook: %s; post-hook: %s\n", orDash(s.PreHook), orDash(s.PostHook))
		}
		for _, n := range append(c.Notes, toolNote(src.Tool)...) {
			fmt.Fprintf(e.stdout, "    note: %s\n", n)
		}
	}
}

// toolNote is what to know of every certificate from tool once tlsalpn
// keeps it, in this command's words: what the tool does not record, or
// how its server is to find the files.
func toolNote(tool string) []string {
	switch tool {
	case "lego":
		return []string{"lego keeps no output paths or hooks: set a deploy hook with tlsalpn reconfigure --deploy-hook if a server reloads it"}
	case "traefik":
		return []string{"Traefik serves certificates from acme.json only: point it at the output with a file provider, or put tlsalpn serve in front"}
	}
	return nil
}

// writeImport stores src's accounts, then its certificates: a certificate
// stored without its account could not be renewed. importCheck found
// beforehand what would stop it half-way; an error still says how far it
// got.
func writeImport(ctx context.Context, stor storage.Storage, m *manager.Manager, src *importer.Source, specs []manager.Spec, force bool, prog *progress) error {
	for _, a := range src.Accounts {
		if err := issuer.ImportAccount(ctx, stor, a.CA, a.Email, a.Key, a.Location, a.Contact, force); err != nil {
			return fmt.Errorf("importing the account %s: %w", a.Location, err)
		}
	}
	for i, c := range src.Certificates {
		prog.update("importing "+specs[i].ID(), false)
		if _, err := m.Import(ctx, specs[i], c.ChainPEM, c.KeyPEM, force); err != nil {
			return fmt.Errorf("after importing %d of %d certificates: %w", i, len(specs), err)
		}
		prog.update(specs[i].ID()+" imported", true)
	}
	return nil
}

// stopRenewing says how to stop tool's own renewals once tlsalpn keeps
// its certificates: two clients renewing one certificate waste the CA's
// rate limits and race each other's deploys.
func stopRenewing(tool string) string {
	switch tool {
	case "certbot":
		return "systemctl disable --now certbot.timer (or remove certbot's cron line)"
	case "lego":
		return "remove lego's cron line or timer"
	case "acme.sh":
		return "acme.sh --uninstall-cronjob"
	case "traefik":
		return "point Traefik at the output directories (a file provider) or put tlsalpn serve in front of it"
	}
	return ""
}

func count(n int, what string) string {
	return fmt.Sprintf("%d %s", n, plural(n, what))
}

func orNoEmail(s string) string {
	if s == "" {
		return "no email"
	}
	return s
}

// importSpecs maps each certificate of src to what tlsalpn stores, and
// refuses two certificates under one name.
func importSpecs(src *importer.Source, f *importFlags, parent string) ([]manager.Spec, error) {
	seen := map[string]string{}
	var specs []manager.Spec
	for _, c := range src.Certificates {
		spec := manager.Spec{
			CertName: c.CertName, Names: c.Names, CA: c.CA, CARoot: f.caRoot, Email: c.Email, KeyType: c.KeyType,
			Out: c.Out, DeployHook: c.DeployHook, PreHook: c.PreHook, PostHook: c.PostHook,
		}
		if err := manager.ValidateCertName(spec.ID()); err != nil {
			return nil, fmt.Errorf("%s: %w", c.From, err)
		}
		if spec.Out == "" {
			spec.Out = filepath.Join(parent, spec.ID())
		}
		if f.listen != ":443" {
			spec.Listen = f.listen
		}
		if f.validationPort != 443 {
			spec.ValidationPort = f.validationPort
		}
		if prev, ok := seen[spec.ID()]; ok {
			return nil, fmt.Errorf("%s and %s would both be certificate %s", prev, c.From, spec.ID())
		}
		seen[spec.ID()] = c.From
		specs = append(specs, spec)
	}
	return specs, nil
}

// importCheck finds everything that would stop the import half-way, before
// anything is written: accounts and certificate names stored already
// (unless force), two accounts of the source for one CA and email, and
// output directories that cannot be written.
func importCheck(ctx context.Context, store storage.Storage, m *manager.Manager, src *importer.Source, specs []manager.Spec, force, dryRun bool) error {
	var errs []error
	slots := map[string]string{}
	for _, a := range src.Accounts {
		k := a.CA + "\x00" + a.Email
		if loc, ok := slots[k]; ok && loc != a.Location {
			errs = append(errs, fmt.Errorf("two accounts for %s at %s (%s and %s): tlsalpn keeps one per CA and email", orNoEmail(a.Email), a.CA, loc, a.Location))
		}
		slots[k] = a.Location
		if store == nil {
			continue
		}
		loc, err := issuer.StoredAccount(ctx, store, a.CA, a.Email)
		switch {
		case err != nil && !force:
			errs = append(errs, err)
		case loc != "" && loc != a.Location && !force:
			errs = append(errs, fmt.Errorf("an account for %s at %s is stored already (%s): --force replaces it", orNoEmail(a.Email), a.CA, loc))
		}
	}
	for i, s := range specs {
		if !dryRun {
			for _, p := range src.Certificates[i].Installs {
				if fi, err := os.Stat(filepath.Dir(p)); err != nil || !fi.IsDir() {
					errs = append(errs, fmt.Errorf("certificate %s is installed at %s, whose directory is missing: the deploy hook could not copy it there", s.ID(), p))
				} else if err := deploy.CheckWritable(filepath.Dir(p)); err != nil {
					errs = append(errs, fmt.Errorf("certificate %s is installed at %s: %w", s.ID(), p, err))
				}
			}
		}
		if m != nil && !force {
			cur, err := m.Load(ctx, s.ID())
			switch {
			case err == nil:
				errs = append(errs, fmt.Errorf("certificate %s is stored already (serial %s, for %s): --force replaces it", s.ID(), cur.Serial, strings.Join(cur.Names, ", ")))
			case !errors.Is(err, storage.ErrNotExist):
				errs = append(errs, err)
			}
		}
		if !dryRun {
			if err := deploy.CheckWritable(s.Out); err != nil {
				errs = append(errs, fmt.Errorf("certificate %s: %w", s.ID(), err))
			}
		}
	}
	return errors.Join(errs...)
}
