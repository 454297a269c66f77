package issuer

// The order flow: a fresh order, or one journaled before a crash or a CA
// error resumed, through authorization, finalize and download.

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/storage"
)

// accountGone reports whether the CA answered accountDoesNotExist.
func accountGone(err error) bool {
	var problem acme.Problem
	return errors.As(err, &problem) && problem.Type == acme.ProblemTypeAccountDoesNotExist
}

// order is what obtain knows of one request while it runs.
type order struct {
	req     Request
	names   []string
	label   string
	profile string
	acct    acme.Account
	j       journal
}

func (iss *Issuer) obtain(ctx context.Context, req Request) (*Result, error) {
	if len(req.Identifiers) == 0 {
		return nil, errors.New("obtaining certificate: no identifiers")
	}
	names := identifierValues(req.Identifiers)
	label := strings.Join(names, ", ")
	if iss.cfg.Publisher == nil {
		return nil, fmt.Errorf("obtaining certificate for %s: no challenge publisher configured", label)
	}
	if req.Key == nil && !req.KeyType.valid() {
		// Before the CA is asked for anything.
		return nil, fmt.Errorf("obtaining certificate for %s: unknown key type %q", label, req.KeyType)
	}
	if err := iss.checkWritable(ctx, label); err != nil {
		return nil, err
	}
	acct, err := iss.Account(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := iss.Directory(ctx)
	if err != nil {
		return nil, err
	}
	var offered map[string]string
	if dir.Meta != nil {
		offered = dir.Meta.Profiles
	}
	profile, err := ChooseProfile(offered, req.Profile)
	if err != nil {
		return nil, fmt.Errorf("obtaining certificate for %s: %w", label, err)
	}
	o := &order{req: req, names: names, label: label, profile: profile, acct: acct, j: iss.journalFor(req, profile)}

	// Two Obtains for the same request (two processes on one storage)
	// never drive the same journaled order at once.
	unlock, err := iss.cfg.Storage.Lock(ctx, o.j.lock)
	if err != nil {
		return nil, fmt.Errorf("locking the order journal for %s: %w", label, err)
	}
	defer unlock()

	res, err := iss.resume(ctx, o)
	if res != nil || err != nil {
		return res, err
	}
	return iss.fresh(ctx, o, dir)
}

// resume finishes the journaled order of o, if there is one that the CA
// still accepts. It returns nil, nil when there is nothing to resume; then
// the journal entry, if any, has been removed.
func (iss *Issuer) resume(ctx context.Context, o *order) (*Result, error) {
	entry, key, err := o.j.load(ctx)
	switch {
	case errors.Is(err, storage.ErrNotExist):
		return nil, nil
	case errors.Is(err, errJournalDamaged):
		iss.logger.Warn("removing a damaged order journal entry; ordering afresh", "names", o.label, "error", err)
		return nil, iss.drop(ctx, o)
	case err != nil:
		return nil, fmt.Errorf("reading the order journal for %s: %w", o.label, err)
	}
	if entry.Account != o.acct.Location {
		// The account was registered again: the old one's orders are
		// out of reach.
		iss.logger.Warn("journaled order belongs to another account; ordering afresh",
			"names", o.label, "order", entry.Order, "account", entry.Account)
		return nil, iss.drop(ctx, o)
	}
	iss.hints.watch(entry.Order)
	ord, err := iss.client.GetOrder(ctx, o.acct, acme.Order{Location: entry.Order})
	status := iss.hints.lastStatus(entry.Order)
	iss.hints.forget(entry.Order)
	if err != nil {
		if accountGone(err) {
			// Registered again, the account may reach this order still.
			return nil, err
		}
		if refused(err) || status == http.StatusNotFound || status == http.StatusGone {
			iss.logger.Warn("the CA no longer serves the journaled order; ordering afresh", "names", o.label, "order", entry.Order, "error", err)
			return nil, iss.drop(ctx, o)
		}
		// The CA may be down for a moment: the order (and the
		// certificate it may hold) is kept for the next attempt.
		return nil, fmt.Errorf("resuming order %s for %s: %w", entry.Order, o.label, err)
	}
	ord.Location = entry.Order
	switch ord.Status {
	case acme.StatusReady, acme.StatusProcessing, acme.StatusValid:
	default:
		// Pending: nothing was issued and the validation in flight died
		// with the process that started it; invalid or expired: the CA
		// will issue nothing for it.
		iss.logger.Info("journaled order cannot be resumed; ordering afresh", "names", o.label, "order", entry.Order, "status", ord.Status)
		return nil, iss.drop(ctx, o)
	}
	iss.logger.Info("resuming an order an earlier run did not finish", "names", o.label, "order", entry.Order, "status", ord.Status)
	iss.step(Step{Kind: StepOrder, Identifier: o.label, Detail: "resuming " + entry.Order + " (" + ord.Status + "), created " +
		entry.Created.UTC().Format(time.RFC3339) + " by a run that did not finish"})
	res, err := iss.complete(ctx, o, ord, key)
	if err != nil {
		if refused(err) && !accountGone(err) {
			iss.logger.Warn("the CA refused to complete the journaled order; ordering afresh", "names", o.label, "order", entry.Order, "error", err)
			return nil, iss.drop(ctx, o)
		}
		return nil, fmt.Errorf("resuming order %s for %s: %w", entry.Order, o.label, err)
	}
	if o.req.Replaces != nil && res.Leaf.SerialNumber.Cmp(o.req.Replaces.SerialNumber) == 0 {
		// The order was seen through and stored, only its entry was not
		// removed: this is the certificate being renewed, not a new one.
		return nil, iss.drop(ctx, o)
	}
	res.Resumed = true
	return res, nil
}

// refused reports whether err is the CA's refusal of a request (a problem
// document with a 4xx status other than a rate limit), as opposed to a
// failure that may pass: a network error, a 5xx, a cancelled context.
func refused(err error) bool {
	var problem acme.Problem
	if !errors.As(err, &problem) {
		return false
	}
	return problem.Status >= 400 && problem.Status < 500 && problem.Type != acme.ProblemTypeRateLimited
}

func (iss *Issuer) drop(ctx context.Context, o *order) error {
	if err := o.j.remove(ctx); err != nil {
		return fmt.Errorf("obtaining certificate for %s: %w", o.label, err)
	}
	return nil
}

// fresh creates a new order for o, journals it and sees it through.
func (iss *Issuer) fresh(ctx context.Context, o *order, dir acme.Directory) (*Result, error) {
	iss.pruneJournal(ctx)
	key := o.req.Key
	if key == nil {
		var err error
		if key, err = o.req.KeyType.Generate(); err != nil {
			return nil, err
		}
	}
	ids := make([]acme.Identifier, len(o.req.Identifiers))
	for i, id := range o.req.Identifiers {
		ids[i] = acme.Identifier{Type: string(id.Type), Value: id.Value}
	}
	ord := acme.Order{Identifiers: ids, Profile: o.profile}
	if o.req.Replaces != nil && dir.RenewalInfo != "" {
		certID, err := acme.ARIUniqueIdentifier(o.req.Replaces)
		if err == nil {
			ord.Replaces = certID
		}
	}
	ord, err := iss.client.NewOrder(ctx, o.acct, ord)
	var problem acme.Problem
	if err != nil && errors.As(err, &problem) && problem.Type == acme.ProblemTypeAlreadyReplaced {
		// Another client (or an earlier run that crashed after ordering)
		// already renewed it: order afresh rather than fail.
		iss.logger.Warn("certificate already replaced; ordering without replaces", "names", o.label)
		ord = acme.Order{Identifiers: ids, Profile: o.profile}
		ord, err = iss.client.NewOrder(ctx, o.acct, ord)
	} else if err != nil && errors.As(err, &problem) && problem.Type == acme.ProblemTypeUnauthorized && ord.Replaces != "" {
		// The CA accepts "replaces" only from the account that ordered
		// the certificate (Boulder, Pebble). One taken over from another
		// client (tlsalpn import) may have been ordered by an account
		// other than the one imported: without this it would never renew.
		iss.logger.Warn("the CA refused to let this account replace the certificate (another account ordered it); ordering without replaces",
			"names", o.label, "account", o.acct.Location, "error", err)
		ord = acme.Order{Identifiers: ids, Profile: o.profile}
		ord, err = iss.client.NewOrder(ctx, o.acct, ord)
	}
	if err != nil {
		return nil, fmt.Errorf("creating order for %s at %s: %w", o.label, iss.cfg.Directory, err)
	}
	entry := journalEntry{
		Order: ord.Location, Account: o.acct.Location, Directory: iss.cfg.Directory, Identifiers: ids,
		Profile: o.profile, KeyType: keyTypeName(o.req.KeyType), Created: time.Now().UTC(),
	}
	if err := o.j.save(ctx, entry, key); err != nil {
		// Never finalise an order that a crash could lose.
		return nil, fmt.Errorf("not finalizing order %s for %s: %w", ord.Location, o.label, err)
	}
	detail := ord.Location
	if o.profile != "" {
		detail += " (profile " + o.profile + ")"
	}
	if ord.Replaces != "" {
		detail += " replacing " + ord.Replaces
	}
	iss.step(Step{Kind: StepOrder, Identifier: o.label, Detail: detail})
	iss.logger.Info("order created", "names", o.names, "order", ord.Location, "profile", o.profile, "replaces", ord.Replaces)
	return iss.complete(ctx, o, ord, key)
}

// complete takes ord from wherever it is to a downloaded, checked
// certificate for key: authorizations if pending, finalisation if ready,
// polling if processing, download once valid.
func (iss *Issuer) complete(ctx context.Context, o *order, ord acme.Order, key crypto.Signer) (res *Result, err error) {
	// One line for the order's outcome, with its names and URL, so that
	// a log search for either finds how it ended, in serve's keeper as
	// in issue and renew.
	location := ord.Location
	defer func() {
		if err != nil {
			iss.logger.Info("order failed", "names", o.names, "order", location, "outcome", "failed", "error", err)
			return
		}
		iss.logger.Info("certificate issued", "names", o.names, "order", location, "outcome", "issued",
			"serial", fmt.Sprintf("%x", res.Leaf.SerialNumber), "not_after", res.Leaf.NotAfter, "certificate", res.URL)
	}()
	if ord.Status == acme.StatusPending {
		if err := iss.authorize(ctx, o.acct, ord); err != nil {
			// Nothing issued: the entry would only be dropped next time.
			if rerr := o.j.remove(context.WithoutCancel(ctx)); rerr != nil {
				iss.logger.Warn("removing the order journal entry of a failed order", "names", o.label, "error", rerr)
			}
			return nil, err
		}
		ord.Status = acme.StatusReady
	}
	switch ord.Status {
	case acme.StatusReady:
		csr, err := acmez.NewCSR(key, o.names)
		if err != nil {
			return nil, fmt.Errorf("making CSR for %s: %w", o.label, err)
		}
		location := ord.Location
		ord, err = iss.client.FinalizeOrder(ctx, o.acct, ord, csr.Raw)
		if err != nil {
			return nil, fmt.Errorf("finalizing order %s for %s: %w", location, o.label, err)
		}
		iss.step(Step{Kind: StepFinalize, Identifier: o.label, Detail: "order " + ord.Status + ", certificate at " + ord.Certificate})
	case acme.StatusProcessing:
		if ord, err = iss.pollOrder(ctx, o, ord); err != nil {
			return nil, err
		}
	case acme.StatusValid:
	default:
		return nil, fmt.Errorf("order %s for %s is %s, cannot be completed", ord.Location, o.label, ord.Status)
	}
	if ord.Certificate == "" {
		return nil, fmt.Errorf("order %s for %s is %s but names no certificate", ord.Location, o.label, ord.Status)
	}

	chains, err := iss.client.GetCertificateChain(ctx, o.acct, ord.Certificate)
	if err != nil {
		return nil, fmt.Errorf("downloading certificate for %s from %s: %w", o.label, ord.Certificate, err)
	}
	chosen, chain, err := pickChain(chains, o.req.PreferredChain)
	if err == nil {
		err = checkLeaf(chain[0], key, o.names)
	}
	if err != nil {
		// Resuming would download the same unusable certificate again
		// and fail every later run: the next one orders afresh.
		if rerr := o.j.remove(context.WithoutCancel(ctx)); rerr != nil {
			iss.logger.Warn("removing the order journal entry of an unusable certificate", "names", o.label, "error", rerr)
		}
		return nil, fmt.Errorf("certificate for %s from %s: %w", o.label, ord.Certificate, err)
	}
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return nil, err
	}
	iss.step(Step{Kind: StepCertificate, Identifier: o.label, Detail: fmt.Sprintf("serial %x, issued by %q, valid until %s",
		chain[0].SerialNumber, chain[0].Issuer.CommonName, chain[0].NotAfter.UTC().Format(time.RFC3339))})
	j := o.j
	var ri *acme.RenewalInfo
	if r := chosen.RenewalInfo; r != nil && !r.SuggestedWindow.Start.IsZero() && !r.SuggestedWindow.End.IsZero() {
		// acmez attaches an empty answer when asking failed (and logs
		// why): that is no window, and the caller asks again.
		ri = r
	}
	return &Result{
		Leaf: chain[0], Chain: chain, ChainPEM: chosen.ChainPEM, Key: key, KeyPEM: keyPEM,
		URL: chosen.URL, Profile: o.profile, Account: o.acct.Location, RenewalInfo: ri,
		done: func(ctx context.Context) error { return j.remove(ctx) },
	}, nil
}

// pollOrder waits for a processing order to become valid, honouring the
// CA's Retry-After, for at most PollTimeout.
func (iss *Issuer) pollOrder(ctx context.Context, o *order, ord acme.Order) (acme.Order, error) {
	location := ord.Location
	iss.hints.watch(location)
	defer iss.hints.forget(location)
	deadline := time.Now().Add(iss.cfg.PollTimeout)
	wait := minBackoff
	for {
		select {
		case <-ctx.Done():
			return ord, fmt.Errorf("waiting for the CA to issue the certificate of order %s for %s: %w", location, o.label, ctx.Err())
		case <-time.After(wait):
		}
		next, err := iss.client.GetOrder(ctx, o.acct, acme.Order{Location: location})
		if err != nil {
			return ord, fmt.Errorf("polling order %s for %s: %w", location, o.label, err)
		}
		next.Location = location
		ord = next
		switch ord.Status {
		case acme.StatusValid:
			return ord, nil
		case acme.StatusProcessing:
		default:
			if ord.Error != nil {
				return ord, fmt.Errorf("order %s for %s became %s while the CA was issuing: %w", location, o.label, ord.Status, *ord.Error)
			}
			return ord, fmt.Errorf("order %s for %s became %s while the CA was issuing, without a reason from the CA", location, o.label, ord.Status)
		}
		if time.Now().After(deadline) {
			return ord, fmt.Errorf("the CA did not issue the certificate of order %s for %s within %s", location, o.label, iss.cfg.PollTimeout)
		}
		if ra, ok := iss.hints.take(location); ok {
			wait = max(ra, minBackoff)
		} else {
			wait = min(2*wait, maxBackoff)
		}
	}
}
