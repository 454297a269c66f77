package manager

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage"
)

// ExistsError refuses to import over a certificate name that is stored
// already: the one stored may be the one a server uses, and replacing it
// takes --force.
type ExistsError struct {
	CertName string
	Existing *Record
}

func (e *ExistsError) Error() string {
	return fmt.Sprintf("certificate %s is stored already (serial %s, for %v)", e.CertName, e.Existing.Serial, e.Existing.Names)
}

// Import makes a certificate obtained by another tool (certbot, lego,
// acme.sh, Traefik) a lineage of this storage, without ordering: its chain
// and key become the first version, and spec (names, CA, account email,
// outputs, hooks) says how it is renewed from then on. It is the entry
// point for taking over, so that the next renewal is done here with no
// re-issuance now.
//
// The chain's leaf must cover spec's names and be the key's; spec's key
// type is taken from the key when empty. Nothing is deployed here: the
// record has no deployment yet, so the next "tlsalpn renew" (or serve's
// keeper) writes the same certificate to spec's outputs and runs its hook
// once, and from then on renews it when due. A certificate name stored already
// is an *ExistsError unless force, which replaces its record (its older
// versions are pruned as after a renewal).
func (m *Manager) Import(ctx context.Context, spec Spec, chainPEM, keyPEM []byte, force bool) (*Record, error) {
	_, names, err := canonicalNames(spec.Names)
	if err != nil {
		return nil, err
	}
	spec.Names = names
	if spec.CertName == spec.Names[0] {
		spec.CertName = ""
	}
	id := spec.ID()
	if err := ValidateCertName(id); err != nil {
		return nil, err
	}
	if spec.CA == "" {
		return nil, fmt.Errorf("importing %s: no CA directory URL to renew it from", id)
	}
	chain, err := issuer.ParseChainPEM(chainPEM)
	if err != nil {
		return nil, fmt.Errorf("importing %s: %w", id, err)
	}
	if err := checkPair(chainPEM, keyPEM, ""); err != nil {
		return nil, fmt.Errorf("importing %s: %w", id, err)
	}
	leaf := chain[0]
	if missing := uncovered(leaf, spec.Names); len(missing) > 0 {
		return nil, fmt.Errorf("importing %s: the certificate does not cover %v", id, missing)
	}
	if kt := issuer.KeyTypeOf(leaf.PublicKey); spec.KeyType == "" {
		if kt == "" {
			return nil, fmt.Errorf("importing %s: its key is of a type tlsalpn cannot renew with (%T)", id, leaf.PublicKey)
		}
		spec.KeyType = kt
	}
	if err := m.migrate(ctx); err != nil {
		return nil, err
	}
	unlock, err := m.store.Lock(ctx, certLockName(id))
	if err != nil {
		return nil, fmt.Errorf("locking %s to import it: %w", id, err)
	}
	defer unlock()
	prev, prevVer, prevErr := m.readRecord(ctx, id)
	switch {
	case prevErr == nil && !force:
		return nil, &ExistsError{CertName: id, Existing: prev}
	case prevErr != nil && !errors.Is(prevErr, storage.ErrNotExist) && !force:
		return nil, fmt.Errorf("importing %s: %w", id, prevErr)
	}
	rec := &Record{Spec: spec, ObtainedAt: m.now().UTC(), ver: prevVer}
	fillFromLeaf(rec, leaf)
	var base *Record
	if prevErr == nil {
		base = prev
	}
	if err := m.save(ctx, rec, base, chainPEM, keyPEM); err != nil {
		return nil, fmt.Errorf("importing %s: %w", id, err)
	}
	m.logger.Info("certificate imported", "name", id, "names", spec.Names, "serial", rec.Serial, "ca", spec.CA)
	return rec, nil
}

// uncovered returns the names leaf is not valid for.
func uncovered(leaf *x509.Certificate, names []string) []string {
	var out []string
	for _, n := range names {
		if leaf.VerifyHostname(n) != nil && !slices.Contains(leaf.DNSNames, n) {
			out = append(out, n)
		}
	}
	return out
}
