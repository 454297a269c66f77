package issuer

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"path"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/storage"
)

// accountRecord is what is stored of an account besides its key.
type accountRecord struct {
	Directory string   `json:"directory"`
	Location  string   `json:"location"`
	Contact   []string `json:"contact,omitempty"`
	Status    string   `json:"status"`
}

func (iss *Issuer) accountPrefix() string {
	return storage.AccountDir(iss.cfg.Directory, iss.cfg.Email)
}

// Account returns the ACME account for this CA and email, loading it from
// storage or registering it (once, under a lock shared by every process on
// the same storage).
func (iss *Issuer) Account(ctx context.Context) (acme.Account, error) {
	iss.accountMu.Lock()
	defer iss.accountMu.Unlock()
	if iss.account != nil {
		return *iss.account, nil
	}
	acct, err := iss.loadAccount(ctx)
	if err == nil {
		iss.account = &acct
		return acct, nil
	}
	if !errors.Is(err, storage.ErrNotExist) {
		return acme.Account{}, err
	}
	unlock, err := iss.cfg.Storage.Lock(ctx, storage.AccountLockName(iss.cfg.Directory, iss.cfg.Email))
	if err != nil {
		return acme.Account{}, fmt.Errorf("locking account for %s: %w", iss.cfg.Directory, err)
	}
	defer unlock()
	// Another process may have registered it while we waited.
	if acct, err := iss.loadAccount(ctx); err == nil {
		iss.account = &acct
		return acct, nil
	}
	acct, err = iss.register(ctx, nil)
	if err != nil {
		return acme.Account{}, err
	}
	iss.account = &acct
	return acct, nil
}

// reregister is called when the CA answered accountDoesNotExist (cause) for
// the account in use. A CA that lost its accounts (a private CA restored
// from an old backup, a test CA restarted, an account purged) would
// otherwise fail every renewal for ever. The account is registered again
// with the same key (RFC 8555 §7.3: a CA that still knows the key returns
// its account, one that lost it creates a new one) and stored; the caller
// retries its operation once.
//
// The terms of service are agreed to again without --agree-tos: they were
// agreed to when the account was first registered, and a renewal from cron
// has nobody to ask.
func (iss *Issuer) reregister(ctx context.Context, cause error) error {
	iss.accountMu.Lock()
	defer iss.accountMu.Unlock()
	stale := iss.account
	iss.account = nil
	unlock, err := iss.cfg.Storage.Lock(ctx, storage.AccountLockName(iss.cfg.Directory, iss.cfg.Email))
	if err != nil {
		return fmt.Errorf("locking account for %s: %w", iss.cfg.Directory, err)
	}
	defer unlock()
	cur, err := iss.loadAccount(ctx)
	if errors.Is(err, storage.ErrNotExist) {
		acct, err := iss.register(ctx, nil)
		if err != nil {
			return err
		}
		iss.account = &acct
		return nil
	}
	if err != nil {
		return err
	}
	if stale != nil && cur.Location != stale.Location {
		// Another process registered it again meanwhile.
		iss.account = &cur
		return nil
	}
	acct, err := iss.register(ctx, cur.PrivateKey)
	if err != nil {
		return fmt.Errorf("the CA at %s no longer knows account %s (%v), and registering it again failed: %w",
			iss.cfg.Directory, cur.Location, cause, err)
	}
	iss.logger.Warn("the CA no longer knew the account; registered it again with the same key",
		"ca", iss.cfg.Directory, "old_account", cur.Location, "account", acct.Location, "cause", cause)
	iss.account = &acct
	return nil
}

func (iss *Issuer) loadAccount(ctx context.Context) (acme.Account, error) {
	prefix := iss.accountPrefix()
	data, err := iss.cfg.Storage.Get(ctx, path.Join(prefix, storage.AccountFile))
	if err != nil {
		return acme.Account{}, err
	}
	var rec accountRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return acme.Account{}, fmt.Errorf("reading account %s: %w", prefix, err)
	}
	keyPEM, err := iss.cfg.Storage.Get(ctx, path.Join(prefix, storage.KeyFile))
	if err != nil {
		return acme.Account{}, fmt.Errorf("reading account key %s: %w", prefix, err)
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return acme.Account{}, fmt.Errorf("reading account key %s: %w", prefix, err)
	}
	if rec.Location == "" {
		return acme.Account{}, fmt.Errorf("account %s has no location: %w", prefix, storage.ErrNotExist)
	}
	return acme.Account{Status: acme.StatusValid, Contact: rec.Contact, Location: rec.Location, PrivateKey: key}, nil
}

// register registers an account and stores it. key is the key of an
// account the CA lost, registered again; nil registers a new account with a
// new key.
func (iss *Issuer) register(ctx context.Context, key crypto.Signer) (acme.Account, error) {
	again := key != nil
	dir, err := iss.client.GetDirectory(ctx)
	if err != nil {
		return acme.Account{}, fmt.Errorf("reading the directory of the CA at %s: %w", iss.cfg.Directory, err)
	}
	var tos string
	if dir.Meta != nil {
		tos = dir.Meta.TermsOfService
		if dir.Meta.ExternalAccountRequired && iss.cfg.EAB == nil {
			return acme.Account{}, fmt.Errorf("%s %w", iss.cfg.Directory, ErrEABRequired)
		}
	}
	if tos != "" && !iss.cfg.AgreeTOS && !again {
		return acme.Account{}, fmt.Errorf("%s %w (%s)", iss.cfg.Directory, ErrTOSRequired, tos)
	}
	if !again {
		// The account key is always P-256: it signs every request, and
		// its size does not affect the certificates.
		if key, err = EC256.Generate(); err != nil {
			return acme.Account{}, err
		}
	}
	acct := acme.Account{PrivateKey: key, TermsOfServiceAgreed: iss.cfg.AgreeTOS || again}
	if iss.cfg.Email != "" {
		acct.Contact = []string{"mailto:" + iss.cfg.Email}
	}
	if iss.cfg.EAB != nil {
		if err := acct.SetExternalAccountBinding(ctx, iss.client, *iss.cfg.EAB); err != nil {
			return acme.Account{}, fmt.Errorf("binding external account %q: %w", iss.cfg.EAB.KeyID, err)
		}
	}
	if again {
		iss.step(Step{Kind: StepAccount, Detail: "the CA no longer knows the account: registering it again with " + iss.cfg.Directory})
	} else {
		iss.step(Step{Kind: StepAccount, Detail: "registering a new account with " + iss.cfg.Directory})
	}
	acct, err = iss.client.NewAccount(ctx, acct)
	if err != nil {
		return acme.Account{}, fmt.Errorf("registering an account with the CA at %s: %w", iss.cfg.Directory, err)
	}
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return acme.Account{}, err
	}
	prefix := iss.accountPrefix()
	// Key first: an account.json without its key would be unusable.
	if err := iss.cfg.Storage.Put(ctx, path.Join(prefix, storage.KeyFile), keyPEM, 0o600); err != nil {
		return acme.Account{}, fmt.Errorf("saving account key for %s: %w", acct.Location, err)
	}
	rec, _ := json.MarshalIndent(accountRecord{Directory: iss.cfg.Directory, Location: acct.Location, Contact: acct.Contact, Status: acct.Status}, "", "  ")
	if err := iss.cfg.Storage.Put(ctx, path.Join(prefix, storage.AccountFile), rec, 0o600); err != nil {
		return acme.Account{}, fmt.Errorf("saving account %s: %w", acct.Location, err)
	}
	iss.step(Step{Kind: StepAccount, Detail: "account registered: " + acct.Location})
	return acct, nil
}

// AccountExistsError refuses to import an account over another one stored
// for the same CA and email: renewals would change account silently.
type AccountExistsError struct {
	Directory, Email string
	Location         string // the stored account's
}

func (e *AccountExistsError) Error() string {
	who := e.Email
	if who == "" {
		who = "(no email)"
	}
	return fmt.Sprintf("an account for %s at %s is stored already: %s", who, e.Directory, e.Location)
}

// ImportAccount stores an account registered by another client (certbot,
// lego, acme.sh, Traefik) as the account for directory and email, so that
// orders from this storage use it and register nothing: its key and its
// URL at the CA (location) are taken as they are. The CA is not asked;
// an account it no longer knows is registered again with the same key on
// first use (see reregister).
//
// An account stored already for directory and email with the same
// location is left as it is; with another location it is an
// *AccountExistsError, unless force replaces it.
func ImportAccount(ctx context.Context, store storage.Storage, directory, email string, key crypto.Signer, location string, contact []string, force bool) error {
	if location == "" {
		return fmt.Errorf("importing the account for %s: no account URL", directory)
	}
	prefix := storage.AccountDir(directory, email)
	unlock, err := store.Lock(ctx, storage.AccountLockName(directory, email))
	if err != nil {
		return fmt.Errorf("locking account for %s: %w", directory, err)
	}
	defer unlock()
	data, err := store.Get(ctx, path.Join(prefix, storage.AccountFile))
	switch {
	case err == nil:
		var cur accountRecord
		if json.Unmarshal(data, &cur) == nil && cur.Location == location {
			if _, kerr := store.Get(ctx, path.Join(prefix, storage.KeyFile)); kerr == nil {
				return nil
			}
		} else if !force {
			return &AccountExistsError{Directory: directory, Email: email, Location: cur.Location}
		}
	case !errors.Is(err, storage.ErrNotExist):
		return fmt.Errorf("reading account %s: %w", prefix, err)
	}
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	if err := store.Put(ctx, path.Join(prefix, storage.KeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("saving account key for %s: %w", location, err)
	}
	rec, _ := json.MarshalIndent(accountRecord{Directory: directory, Location: location, Contact: contact, Status: "valid"}, "", "  ")
	if err := store.Put(ctx, path.Join(prefix, storage.AccountFile), rec, 0o600); err != nil {
		return fmt.Errorf("saving account %s: %w", location, err)
	}
	return nil
}

// StoredAccount returns the location of the account stored for directory
// and email, or "" when there is none: what an import would keep or
// replace.
func StoredAccount(ctx context.Context, store storage.Storage, directory, email string) (string, error) {
	data, err := store.Get(ctx, storage.AccountKey(directory, email, storage.AccountFile))
	if errors.Is(err, storage.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the account for %s: %w", directory, err)
	}
	var rec accountRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return "", fmt.Errorf("reading the account for %s: %w", directory, err)
	}
	return rec.Location, nil
}
