package importer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tlsalpn/tlsalpn/issuer"
)

// Lego reads lego's directory (.lego, or the --path given to lego):
// accounts/<host>/<email>/{account.json,keys/<email>.key} and
// certificates/<name>.{crt,key,json}. lego keeps only the CA's host, so
// its directory URL is opts.CA or a CA tlsalpn knows there; and since it
// does not record which account obtained a certificate, a CA with several
// accounts needs opts.Email. lego has no output paths and no hooks: the
// caller chooses the output.
func Lego(dir string, opts Options) (*Source, error) {
	src := &Source{Tool: "lego", Path: dir}
	refuse := func(err error) (*Source, error) { return nil, &RefusedError{Tool: "lego", Path: dir, Err: err} }
	accts, err := legoAccounts(dir, opts)
	if err != nil {
		return refuse(err)
	}
	crts, err := filepath.Glob(filepath.Join(dir, "certificates", "*.crt"))
	if err != nil {
		return refuse(err)
	}
	var certs []string
	for _, c := range crts {
		if !strings.HasSuffix(c, ".issuer.crt") {
			certs = append(certs, c)
		}
	}
	if len(certs) == 0 {
		return refuse(fmt.Errorf("no certificates: %s holds no NAME.crt (is %s lego's --path, .lego?)", filepath.Join(dir, "certificates"), dir))
	}
	sort.Strings(certs)
	used := map[*Account]bool{}
	for _, crt := range certs {
		base := strings.TrimSuffix(crt, ".crt")
		c := Certificate{CertName: certName(filepath.Base(base)), From: crt}
		var res struct {
			Domain  string `json:"domain"`
			CertURL string `json:"certUrl"`
		}
		data, err := os.ReadFile(base + ".json")
		if err == nil {
			err = json.Unmarshal(data, &res)
		}
		if err != nil {
			return refuse(fmt.Errorf("reading %s.json: %w", base, err))
		}
		if c.ChainPEM, err = os.ReadFile(crt); err != nil {
			return refuse(err)
		}
		if c.KeyPEM, err = os.ReadFile(base + ".key"); err != nil {
			return refuse(fmt.Errorf("reading the key of %s: %w", crt, err))
		}
		if chain, err := issuer.ParseChainPEM(c.ChainPEM); err == nil && len(chain) == 1 {
			// lego --no-bundle: the issuer is beside it.
			if ic, err := os.ReadFile(base + ".issuer.crt"); err == nil {
				c.ChainPEM = append(append(c.ChainPEM, '\n'), ic...)
			}
		}
		if res.Domain != "" {
			c.Names = append([]string{res.Domain}, leafNamesExcept(c.ChainPEM, c.KeyPEM, res.Domain)...)
		}
		if err := certificate(&c); err != nil {
			return refuse(err)
		}
		host, err := hostOf(res.CertURL)
		if err != nil {
			return refuse(fmt.Errorf("%s.json: certUrl: %w", base, err))
		}
		acct, err := pickAccount(accts, host, opts.Email)
		if err != nil {
			return refuse(fmt.Errorf("%s: %w", crt, err))
		}
		c.CA, c.Email = acct.CA, acct.Email
		src.Certificates = append(src.Certificates, c)
		if !used[acct] {
			used[acct] = true
			src.Accounts = append(src.Accounts, *acct)
		}
	}
	return src, nil
}

// leafNamesExcept returns the names of the pair's certificate other than
// first, or nothing when the pair is unreadable (certificate reports it).
func leafNamesExcept(chainPEM, keyPEM []byte, first string) []string {
	chain, err := issuer.ParseChainPEM(chainPEM)
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range leafNames(chain[0]) {
		if n != first {
			out = append(out, n)
		}
	}
	return out
}

// pickAccount is the account at host: the only one, or the one for email.
func pickAccount(accts []*Account, host, email string) (*Account, error) {
	var at []*Account
	for _, a := range accts {
		if h, _ := hostOf(a.Location); strings.EqualFold(h, host) {
			if email == "" || strings.EqualFold(a.Email, email) {
				at = append(at, a)
			}
		}
	}
	switch {
	case len(at) == 1:
		return at[0], nil
	case len(at) == 0 && email != "":
		return nil, fmt.Errorf("no account for %s at %s", email, host)
	case len(at) == 0:
		return nil, fmt.Errorf("no account at %s, the CA that issued it", host)
	}
	return nil, &AccountChoiceError{Accounts: len(at), Host: host}
}

func legoAccounts(dir string, opts Options) ([]*Account, error) {
	files, err := filepath.Glob(filepath.Join(dir, "accounts", "*", "*", "account.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, errors.New("no accounts: accounts/<server>/<email>/account.json is missing, so renewals would need a new registration")
	}
	sort.Strings(files)
	var out []*Account
	for _, f := range files {
		adir := filepath.Dir(f)
		var rec struct {
			Email        string       `json:"email"`
			Registration registration `json:"registration"`
		}
		data, err := os.ReadFile(f)
		if err == nil {
			err = json.Unmarshal(data, &rec)
		}
		if err != nil {
			return nil, fmt.Errorf("reading account %s: %w", f, err)
		}
		if rec.Registration.URI == "" {
			return nil, fmt.Errorf("account %s has no registration URL (lego registered nothing)", f)
		}
		host, err := hostOf(rec.Registration.URI)
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", f, err)
		}
		// lego's server directory is the host with ':' as '_'.
		if want := strings.ReplaceAll(host, ":", "_"); !strings.EqualFold(filepath.Base(filepath.Dir(adir)), want) {
			return nil, fmt.Errorf("account %s: its URL is at %s, but it is stored under %s", f, host, filepath.Base(filepath.Dir(adir)))
		}
		ca, err := directoryForHost(host, opts)
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", f, err)
		}
		email := rec.Email
		if email == "" {
			email = filepath.Base(adir)
		}
		kf := filepath.Join(adir, "keys", filepath.Base(adir)+".key")
		keyPEM, err := os.ReadFile(kf)
		if err != nil {
			return nil, fmt.Errorf("reading account key: %w", err)
		}
		key, err := issuer.ParseKeyPEM(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("reading account key %s: %w", kf, err)
		}
		out = append(out, &Account{CA: ca, Email: email, Location: rec.Registration.URI, Contact: rec.Registration.Body.Contact, Key: key, From: adir})
	}
	return out, nil
}
