package importer

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
)

// Traefik reads Traefik's ACME storage (acme.json): for each certificate
// resolver, its Account (Email, Registration.uri, PrivateKey as base64
// DER) and Certificates (domain main and sans, certificate and key as
// base64 PEM). acme.json does not record the CA's directory URL (it is in
// Traefik's static configuration), so it is opts.CA or the CA tlsalpn
// knows at the account's host. Traefik keeps no files and no hooks: the
// caller chooses the output, and Traefik is to be pointed at it (a file
// provider) or moved behind tlsalpn serve.
func Traefik(file string, opts Options) (*Source, error) {
	src := &Source{Tool: "traefik", Path: file}
	refuse := func(err error) (*Source, error) { return nil, &RefusedError{Tool: "traefik", Path: file, Err: err} }
	data, err := os.ReadFile(file)
	if err != nil {
		return refuse(err)
	}
	resolvers, err := traefikResolvers(data)
	if err != nil {
		return refuse(err)
	}
	names := make([]string, 0, len(resolvers))
	for n := range resolvers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, rn := range names {
		r := resolvers[rn]
		if r == nil || len(r.Certificates) == 0 {
			continue
		}
		where := fmt.Sprintf("resolver %q", rn)
		acct, err := traefikAccount(where, r, opts)
		if err != nil {
			return refuse(err)
		}
		src.Accounts = append(src.Accounts, acct)
		for i, tc := range r.Certificates {
			c := Certificate{CertName: certName(tc.Domain.Main), CA: acct.CA, Email: acct.Email,
				ChainPEM: tc.Certificate, KeyPEM: tc.Key, From: fmt.Sprintf("%s certificate %d (%s)", where, i, tc.Domain.Main)}
			if tc.Domain.Main != "" {
				c.Names = append([]string{tc.Domain.Main}, tc.Domain.SANs...)
			}
			if err := certificate(&c); err != nil {
				return refuse(err)
			}
			src.Certificates = append(src.Certificates, c)
		}
	}
	if len(src.Certificates) == 0 {
		return refuse(errors.New("no certificates in it"))
	}
	return src, nil
}

// traefikResolver is one certificate resolver's section of acme.json.
// Its Account is lego's (Traefik obtains certificates with lego).
type traefikResolver struct {
	Account *struct {
		Email        string
		Registration *registration
		PrivateKey   []byte
	}
	Certificates []struct {
		Domain struct {
			Main string   `json:"main"`
			SANs []string `json:"sans"`
		} `json:"domain"`
		Certificate []byte `json:"certificate"`
		Key         []byte `json:"key"`
	}
}

// traefikResolvers reads acme.json by resolver name. Traefik v1's file,
// one flat list, would read as no resolvers at all: it is refused by
// name instead of as "no certificates".
func traefikResolvers(data []byte) (map[string]*traefikResolver, error) {
	var v1 struct{ DomainsCertificate json.RawMessage }
	if json.Unmarshal(data, &v1) == nil && v1.DomainsCertificate != nil {
		return nil, errors.New("this is Traefik v1's acme.json (DomainsCertificate): only v2 and later (one section per certificate resolver) can be imported")
	}
	var resolvers map[string]*traefikResolver
	if err := json.Unmarshal(data, &resolvers); err != nil {
		return nil, fmt.Errorf("not Traefik's acme.json (v2 or later): %w", err)
	}
	return resolvers, nil
}

// traefikAccount reads the account of resolver r (named where in
// errors), at the CA of its registration's host: acme.json records no
// directory URL.
func traefikAccount(where string, r *traefikResolver, opts Options) (Account, error) {
	if r.Account == nil || r.Account.Registration == nil || r.Account.Registration.URI == "" {
		return Account{}, fmt.Errorf("%s has certificates but no registered account", where)
	}
	a := r.Account
	key, err := parseDERKey(a.PrivateKey)
	if err != nil {
		return Account{}, fmt.Errorf("%s: account key: %w", where, err)
	}
	host, err := hostOf(a.Registration.URI)
	if err != nil {
		return Account{}, fmt.Errorf("%s: %w", where, err)
	}
	ca, err := directoryForHost(host, opts)
	if err != nil {
		return Account{}, fmt.Errorf("%s: %w", where, err)
	}
	email := a.Email
	if email == "" {
		email = emailOf(a.Registration.Body.Contact)
	}
	return Account{CA: ca, Email: email, Location: a.Registration.URI,
		Contact: a.Registration.Body.Contact, Key: key, From: where}, nil
}

// parseDERKey reads a private key in DER: PKCS #1 (what Traefik writes),
// PKCS #8 or SEC 1.
func parseDERKey(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, errors.New("not an RSA or EC private key in DER")
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T cannot sign", k)
	}
	return s, nil
}
