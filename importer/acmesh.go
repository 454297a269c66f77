package importer

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tlsalpn/tlsalpn/issuer"
)

// ACMESh reads acme.sh's home (~/.acme.sh, or its --config-home): each
// NAME/NAME.conf or NAME_ecc/NAME.conf is a certificate (NAME.cer,
// NAME.key, fullchain.cer), renewed from its Le_API directory with the
// account of ca/<host>/<path>/{account.key,ca.conf}. Where acme.sh
// installed the files (--install-cert: Le_RealCertPath, Le_RealKeyPath,
// Le_RealCACertPath, Le_RealFullChainPath), the deploy hook copies each
// renewal there; Le_RenewHook and Le_ReloadCmd run around the copies as
// acme.sh runs them, and Le_PreHook and Le_PostHook are kept.
func ACMESh(dir string) (*Source, error) {
	src := &Source{Tool: "acme.sh", Path: dir}
	refuse := func(err error) (*Source, error) { return nil, &RefusedError{Tool: "acme.sh", Path: dir, Err: err} }
	certs, err := acmeShConfs(dir)
	if err != nil {
		return refuse(err)
	}
	global, _ := readShellConf(filepath.Join(dir, "account.conf")) // optional
	accounts := map[string]*Account{}
	for _, conf := range certs {
		v, err := readShellConf(conf)
		if err != nil {
			return refuse(err)
		}
		c, err := acmeShCertificate(dir, conf, v)
		if err != nil {
			return refuse(err)
		}
		if c.CA, err = issuer.ResolveCA(v["Le_API"]); err != nil {
			return refuse(fmt.Errorf("%s: Le_API: %w", conf, err))
		}
		acct, ok := accounts[c.CA]
		if !ok {
			if acct, err = acmeShAccount(dir, c.CA, global); err != nil {
				return refuse(fmt.Errorf("%s: %w", conf, err))
			}
			accounts[c.CA] = acct
			src.Accounts = append(src.Accounts, *acct)
		}
		c.Email = acct.Email
		acmeShHooks(&c, v)
		src.Certificates = append(src.Certificates, c)
	}
	return src, nil
}

// acmeShConfs returns the certificates' NAME/NAME.conf and
// NAME_ecc/NAME.conf under dir, sorted; the other .conf files there
// (account.conf, ca/…) are not certificates.
func acmeShConfs(dir string) ([]string, error) {
	confs, err := filepath.Glob(filepath.Join(dir, "*", "*.conf"))
	if err != nil {
		return nil, err
	}
	var certs []string
	for _, c := range confs {
		d := filepath.Base(filepath.Dir(c))
		name := strings.TrimSuffix(filepath.Base(c), ".conf")
		if d == name || d == name+"_ecc" {
			certs = append(certs, c)
		}
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no certificates: no NAME/NAME.conf (is %s acme.sh's home, ~/.acme.sh?)", dir)
	}
	sort.Strings(certs)
	return certs, nil
}

// acmeShCertificate reads the certificate that conf (read into v)
// describes: its name, its names and the files beside conf. Its CA and
// account are the caller's, which shares one account among certificates.
func acmeShCertificate(dir, conf string, v map[string]string) (Certificate, error) {
	name := strings.TrimSuffix(filepath.Base(conf), ".conf")
	cdir := filepath.Dir(conf)
	c := Certificate{CertName: certName(name), From: conf}
	if d := filepath.Base(cdir); d == name+"_ecc" && fileExists(filepath.Join(dir, name, name+".conf")) {
		// acme.sh keeps an RSA and an ECDSA certificate for the same
		// name side by side; they stay two certificates here too.
		c.CertName = certName(d)
	}
	if v["Le_Domain"] == "" {
		return c, fmt.Errorf("%s: no Le_Domain", conf)
	}
	c.Names = []string{v["Le_Domain"]}
	if alt := v["Le_Alt"]; alt != "" && alt != "no" {
		c.Names = append(c.Names, strings.Split(alt, ",")...)
	}
	var err error
	if c.ChainPEM, err = os.ReadFile(filepath.Join(cdir, "fullchain.cer")); err != nil {
		return c, fmt.Errorf("%s: %w", conf, err)
	}
	if c.KeyPEM, err = os.ReadFile(filepath.Join(cdir, name+".key")); err != nil {
		return c, fmt.Errorf("%s: %w", conf, err)
	}
	if err := certificate(&c); err != nil {
		return c, err
	}
	return c, nil
}

// acmeShHooks carries over what acme.sh does around a renewal of the
// certificate of v: the copies --install-cert asked for (Le_Real*Path),
// between Le_RenewHook and Le_ReloadCmd, and Le_PreHook and Le_PostHook.
func acmeShHooks(c *Certificate, v map[string]string) {
	var copies []string
	for _, f := range []struct{ env, key string }{
		{"TLSALPN_CERT", "Le_RealCertPath"},
		{"TLSALPN_CHAIN", "Le_RealCACertPath"},
		{"TLSALPN_FULLCHAIN", "Le_RealFullChainPath"},
		{"TLSALPN_KEY", "Le_RealKeyPath"},
	} {
		if p := v[f.key]; p != "" {
			copies = append(copies, installCopy(f.env, p, f.env == "TLSALPN_KEY"))
			c.Installs = append(c.Installs, p)
		}
	}
	// acme.sh runs Le_RenewHook after a renewal, then installs the
	// files and runs Le_ReloadCmd, with the paths in its own
	// variables, which are given here the paths tlsalpn deploys to.
	var env string
	if v["Le_RenewHook"] != "" || v["Le_ReloadCmd"] != "" {
		env = `export CERT_PATH="$TLSALPN_CERT" CERT_KEY_PATH="$TLSALPN_KEY" CA_CERT_PATH="$TLSALPN_CHAIN" CERT_FULLCHAIN_PATH="$TLSALPN_FULLCHAIN" Le_Domain="$TLSALPN_DOMAIN"`
	}
	c.DeployHook = joinHooks(env, v["Le_RenewHook"], strings.Join(copies, " && "), v["Le_ReloadCmd"])
	c.PreHook, c.PostHook = v["Le_PreHook"], v["Le_PostHook"]
	if v["Le_Webroot"] != "" && v["Le_Webroot"] != "no" {
		c.Notes = append(c.Notes, "acme.sh validated it with "+v["Le_Webroot"]+"; tlsalpn renews it with TLS-ALPN-01 on port 443")
	}
}

// installCopy is the shell command that puts the file in $env at path,
// whole (a copy beside it, renamed over it), private for a key.
func installCopy(env, path string, private bool) string {
	tmp := shellQuote(path + ".tlsalpn-tmp")
	cp := `cp "$` + env + `" ` + tmp
	if private {
		cp = "(umask 077 && " + cp + ")"
	}
	return cp + " && mv -f " + tmp + " " + shellQuote(path)
}

// acmeShAccount reads the account acme.sh uses for the CA at directory:
// ca/<host>/<path>/{account.key,ca.conf (ACCOUNT_URL)}, and its email
// from account.json's contact or account.conf's ACCOUNT_EMAIL.
func acmeShAccount(dir, directory string, global map[string]string) (*Account, error) {
	u, err := url.Parse(directory)
	if err != nil {
		return nil, err
	}
	cadir := filepath.Join(dir, "ca", u.Host, filepath.FromSlash(strings.Trim(u.Path, "/")))
	if _, err := os.Stat(filepath.Join(cadir, "ca.conf")); err != nil {
		// acme.sh before 2.9 kept the account under ca/<host>/ only.
		if old := filepath.Join(dir, "ca", u.Host); fileExists(filepath.Join(old, "ca.conf")) {
			cadir = old
		}
	}
	conf, err := readShellConf(filepath.Join(cadir, "ca.conf"))
	if err != nil {
		return nil, fmt.Errorf("reading the account for %s: %w", directory, err)
	}
	a := &Account{CA: directory, Location: conf["ACCOUNT_URL"], From: cadir}
	if a.Location == "" {
		return nil, fmt.Errorf("%s has no ACCOUNT_URL: acme.sh registered no account there", filepath.Join(cadir, "ca.conf"))
	}
	keyPEM, err := os.ReadFile(filepath.Join(cadir, "account.key"))
	if err != nil {
		return nil, fmt.Errorf("reading the account key for %s: %w", directory, err)
	}
	if a.Key, err = issuer.ParseKeyPEM(keyPEM); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(cadir, "account.key"), err)
	}
	var body struct {
		Contact []string `json:"contact"`
	}
	if data, err := os.ReadFile(filepath.Join(cadir, "account.json")); err == nil {
		if err := json.Unmarshal(data, &body); err != nil {
			return nil, fmt.Errorf("reading %s: %w", filepath.Join(cadir, "account.json"), err)
		}
	}
	a.Contact = body.Contact
	if a.Email = emailOf(body.Contact); a.Email == "" {
		if a.Email = conf["CA_EMAIL"]; a.Email == "" {
			a.Email = global["ACCOUNT_EMAIL"]
		}
	}
	return a, nil
}

// readShellConf reads acme.sh's KEY='value' lines. Values acme.sh stored
// encoded (__ACME_BASE64__START_…__ACME_BASE64__END_, as it does for
// Le_ReloadCmd) are decoded.
func readShellConf(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		line = strings.TrimPrefix(line, "export ")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: not a KEY='value' line: %q", path, n, line)
		}
		v, err := unquoteShell(v)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %s: %w", path, n, k, err)
		}
		const pre, post = "__ACME_BASE64__START_", "__ACME_BASE64__END_"
		if strings.HasPrefix(v, pre) && strings.HasSuffix(v, post) {
			dec, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(strings.TrimPrefix(v, pre), post))
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %s: %w", path, n, k, err)
			}
			v = string(dec)
		}
		out[k] = v
	}
	return out, sc.Err()
}

// unquoteShell reads one shell word of single-quoted, double-quoted and
// bare parts, as acme.sh's _setopt writes them.
func unquoteShell(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); {
		switch c := s[i]; c {
		case '\'', '"':
			// A quoted part ends at the next quote of its kind.
			j := strings.IndexByte(s[i+1:], c)
			if j < 0 {
				return "", fmt.Errorf("unterminated quote in %q", s)
			}
			b.WriteString(s[i+1 : i+1+j])
			i += j + 2
		case '\\':
			if i+1 < len(s) {
				b.WriteByte(s[i+1])
			}
			i += 2
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), nil
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}
