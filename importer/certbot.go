package importer

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Certbot reads a certbot configuration directory (/etc/letsencrypt):
// every renewal/NAME.conf is a certificate, read through the live/ paths
// it names, and renewed from its server with its account
// (accounts/<server>/<path>/<id>/{private_key,regr}.json). Its output
// directory stays live/NAME (the same cert.pem, chain.pem and
// fullchain.pem paths; privkey.pem is kept pointing at tlsalpn's key.pem
// by the deploy hook), and its renew_hook (certbot's --deploy-hook),
// pre_hook and post_hook are kept.
func Certbot(dir string) (*Source, error) {
	src := &Source{Tool: "certbot", Path: dir}
	refuse := func(err error) (*Source, error) { return nil, &RefusedError{Tool: "certbot", Path: dir, Err: err} }
	confs, err := filepath.Glob(filepath.Join(dir, "renewal", "*.conf"))
	if err != nil {
		return refuse(err)
	}
	if len(confs) == 0 {
		if _, err := os.Stat(filepath.Join(dir, "renewal")); err != nil {
			return refuse(fmt.Errorf("no renewal directory: is %s certbot's configuration directory (/etc/letsencrypt)? %w", dir, err))
		}
		return refuse(errors.New("no certificates: renewal/ holds no NAME.conf"))
	}
	sort.Strings(confs)
	accounts, err := certbotAccounts(dir)
	if err != nil {
		return refuse(err)
	}
	used := map[string]bool{}
	for _, conf := range confs {
		c, acct, err := certbotCertificate(conf, accounts)
		if err != nil {
			return refuse(err)
		}
		src.Certificates = append(src.Certificates, c)
		if !used[acct] {
			used[acct] = true
			src.Accounts = append(src.Accounts, accounts[acct])
		}
	}
	return src, nil
}

func certbotCertificate(conf string, accounts map[string]Account) (Certificate, string, error) {
	name := strings.TrimSuffix(filepath.Base(conf), ".conf")
	c := Certificate{CertName: certName(name), From: conf}
	top, params, err := readCertbotConf(conf)
	if err != nil {
		return c, "", err
	}
	for _, k := range []string{"fullchain", "privkey"} {
		if top[k] == "" {
			return c, "", fmt.Errorf("%s: no %s path", conf, k)
		}
	}
	if c.ChainPEM, err = os.ReadFile(top["fullchain"]); err != nil {
		return c, "", fmt.Errorf("%s: reading its fullchain: %w", conf, err)
	}
	if c.KeyPEM, err = os.ReadFile(top["privkey"]); err != nil {
		return c, "", fmt.Errorf("%s: reading its private key: %w", conf, err)
	}
	if err := certificate(&c); err != nil {
		return c, "", err
	}
	id := params["account"]
	acct, ok := accounts[id]
	if !ok {
		return c, "", fmt.Errorf("%s: its account %q is not under accounts/", conf, id)
	}
	c.CA = params["server"]
	if c.CA == "" {
		c.CA = acct.CA
	}
	if c.CA != acct.CA {
		return c, "", fmt.Errorf("%s: its server %s is not its account's CA (%s)", conf, c.CA, acct.CA)
	}
	c.Email = acct.Email
	c.Out = filepath.Dir(top["fullchain"])
	// certbot's live/NAME/privkey.pem; tlsalpn writes key.pem beside it,
	// so the name servers are configured with points there, swapped by
	// rename once the new files are in place.
	link := `ln -sfn key.pem "$TLSALPN_OUT/.privkey.pem.tlsalpn" && mv -Tf "$TLSALPN_OUT/.privkey.pem.tlsalpn" "$TLSALPN_OUT/privkey.pem"`
	hook := params["renew_hook"]
	if hook == "" {
		hook = params["deploy_hook"]
	}
	// certbot runs the executables in renewal-hooks/{pre,deploy,post}
	// (in name order) before the lineage's own hook of each kind: so do
	// these, listed when each runs, as certbot lists them.
	hooksDir := filepath.Join(filepath.Dir(filepath.Dir(conf)), "renewal-hooks")
	c.DeployHook = joinHooks(link, dirHooks(filepath.Join(hooksDir, "deploy")), hook)
	c.PreHook = joinHooks(dirHooks(filepath.Join(hooksDir, "pre")), params["pre_hook"])
	c.PostHook = joinHooks(dirHooks(filepath.Join(hooksDir, "post")), params["post_hook"])
	if a := params["authenticator"]; a != "" && a != "standalone" {
		c.Notes = append(c.Notes, "certbot validated it with "+a+"; tlsalpn renews it with TLS-ALPN-01 on port 443")
	}
	return c, id, nil
}

// dirHooks is the shell command that runs the executables in dir as
// certbot's list_hooks finds them (sorted, not ending in '~'), failing at
// the first that fails; "" when dir holds none now.
func dirHooks(dir string) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range ents {
		fi, err := os.Stat(filepath.Join(dir, e.Name()))
		if err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 && !strings.HasSuffix(e.Name(), "~") {
			return `for h in ` + shellQuote(dir) + `/*; do case "$h" in *~) continue ;; esac; if [ -f "$h" ] && [ -x "$h" ]; then "$h" || exit 1; fi; done`
		}
	}
	return ""
}

// readCertbotConf reads a renewal configuration (configobj): the keys
// before the first section, and those of [renewalparams].
func readCertbotConf(path string) (top, params map[string]string, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", path, err)
	}
	top, params = map[string]string{}, map[string]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[] ")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, nil, fmt.Errorf("%s:%d: not a key = value line: %q", path, n, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		switch section {
		case "":
			top[k] = v
		case "renewalparams":
			params[k] = v
		}
	}
	return top, params, sc.Err()
}

// certbotAccounts reads every account under dir/accounts, by id:
// accounts/<host>/<path…>/<id>/{private_key.json,regr.json}.
func certbotAccounts(dir string) (map[string]Account, error) {
	root := filepath.Join(dir, "accounts")
	out := map[string]Account{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("reading certbot's accounts: %w", err)
		}
		if d.IsDir() || d.Name() != "regr.json" {
			return nil
		}
		adir := filepath.Dir(p)
		rel, _ := filepath.Rel(root, filepath.Dir(adir))
		acct := Account{CA: "https://" + filepath.ToSlash(rel), From: adir}
		var regr registration
		data, err := os.ReadFile(p)
		if err == nil {
			err = json.Unmarshal(data, &regr)
		}
		if err != nil {
			return fmt.Errorf("reading account %s: %w", p, err)
		}
		if regr.URI == "" {
			return fmt.Errorf("account %s: regr.json has no account URL", adir)
		}
		acct.Location, acct.Contact, acct.Email = regr.URI, regr.Body.Contact, emailOf(regr.Body.Contact)
		kp := filepath.Join(adir, "private_key.json")
		if data, err = os.ReadFile(kp); err != nil {
			return fmt.Errorf("reading account key: %w", err)
		}
		if acct.Key, err = parseJWK(data); err != nil {
			return fmt.Errorf("reading account key %s: %w", kp, err)
		}
		out[filepath.Base(adir)] = acct
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) && len(out) == 0 {
		return nil, fmt.Errorf("no accounts directory in %s: %w", dir, err)
	}
	return out, err
}

// parseJWK reads a private key in JSON Web Key form (RFC 7517), as
// certbot stores its account keys: RSA or EC.
func parseJWK(data []byte) (crypto.Signer, error) {
	var k struct {
		Kty, Crv            string
		N, E, D, P, Q, X, Y string
		Dp, Dq, Qi          string
	}
	if err := json.Unmarshal(data, &k); err != nil {
		return nil, err
	}
	num := func(s, what string) (*big.Int, error) {
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("JWK member %q is missing or not base64url", what)
		}
		return new(big.Int).SetBytes(b), nil
	}
	var err error
	get := func(s, what string) *big.Int {
		if err != nil {
			return nil
		}
		var v *big.Int
		v, err = num(s, what)
		return v
	}
	switch k.Kty {
	case "RSA":
		key := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: get(k.N, "n")}, D: get(k.D, "d")}
		e := get(k.E, "e")
		p, q := get(k.P, "p"), get(k.Q, "q")
		if err != nil {
			return nil, err
		}
		key.E = int(e.Int64())
		key.Primes = []*big.Int{p, q}
		if err := key.Validate(); err != nil {
			return nil, err
		}
		key.Precompute()
		return key, nil
	case "EC":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("JWK curve %q", k.Crv)
		}
		d := get(k.D, "d")
		if err != nil {
			return nil, err
		}
		b := make([]byte, (curve.Params().BitSize+7)/8)
		return ecdsa.ParseRawPrivateKey(curve, d.FillBytes(b))
	}
	return nil, fmt.Errorf("JWK key type %q", k.Kty)
}
