package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// Polling an authorization: the first poll comes right after the responder
// has served the CA (seenDelay later, to let the CA record its result), or
// after firstPoll when nothing is seen (another node answered, or the CA is
// slow to connect); later polls back off from minBackoff to maxBackoff unless
// the CA says Retry-After, which always wins.
const (
	seenDelay  = 10 * time.Millisecond
	firstPoll  = 250 * time.Millisecond
	minBackoff = 50 * time.Millisecond
	maxBackoff = 3 * time.Second
)

// authorize solves every authorization of order, concurrently: one
// certificate for ten names costs about as much as one for a single name.
func (iss *Issuer) authorize(ctx context.Context, acct acme.Account, order acme.Order) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(order.Authorizations))
	var wg sync.WaitGroup
	for i, u := range order.Authorizations {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := iss.solve(ctx, acct, u); err != nil {
				errs[i] = err
				cancel() // one failed identifier fails the order: stop the rest
			}
		}()
	}
	wg.Wait()
	// Report the real failures, not the cancellations they caused.
	var real []error
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			real = append(real, err)
		}
	}
	if len(real) == 0 {
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}
	return errors.Join(real...)
}

func (iss *Issuer) solve(ctx context.Context, acct acme.Account, authzURL string) error {
	authz, err := iss.client.GetAuthorization(ctx, acct, authzURL)
	if err != nil {
		return fmt.Errorf("fetching authorization %s: %w", authzURL, err)
	}
	name := authz.IdentifierValue()
	switch authz.Status {
	case acme.StatusValid:
		iss.step(Step{Kind: StepValid, Identifier: name, Detail: "authorization already valid (reused by the CA; no validation needed)"})
		return nil
	case acme.StatusPending:
	default:
		return fmt.Errorf("authorization for %s is %s, cannot be solved", name, authz.Status)
	}
	var chal *acme.Challenge
	offered := make([]string, 0, len(authz.Challenges))
	for i := range authz.Challenges {
		c := &authz.Challenges[i]
		offered = append(offered, c.Type)
		if c.Type == acme.ChallengeTypeTLSALPN01 && chal == nil {
			chal = c
		}
	}
	if chal == nil {
		return fmt.Errorf("the CA does not offer tls-alpn-01 for %s (it offers %s): use a CA that does, or another tool for %s",
			name, strings.Join(offered, ", "), strings.Join(offered, "/"))
	}
	if chal.Token == "" {
		return fmt.Errorf("the CA's tls-alpn-01 challenge for %s has no token", name)
	}
	id := challenge.Identifier{Type: challenge.IdentifierType(authz.Identifier.Type), Value: authz.Identifier.Value}
	keyAuth, err := challenge.KeyAuthorization(chal.Token, acct.PrivateKey.Public())
	if err != nil {
		return fmt.Errorf("key authorization for %s: %w", name, err)
	}
	cert, err := challenge.Build(id, keyAuth)
	if err != nil {
		return fmt.Errorf("building challenge certificate for %s: %w", name, err)
	}
	sum := sha256.Sum256([]byte(keyAuth))
	sni := challenge.ServerName(id)
	iss.step(Step{Kind: StepChallenge, Identifier: name, Detail: fmt.Sprintf(
		"challenge certificate built for SNI %s; key authorization %s; acmeIdentifier = SHA-256(key authorization) = %s", sni, keyAuth, hex.EncodeToString(sum[:]))})

	seen, err := iss.cfg.Publisher.Publish(ctx, sni, cert)
	if err != nil {
		return fmt.Errorf("publishing challenge for %s: %w", name, err)
	}
	defer func() {
		// Withdraw even when ctx is done: a stale validation certificate
		// must not stay up.
		if err := iss.cfg.Publisher.Unpublish(context.WithoutCancel(ctx), sni); err != nil {
			iss.logger.Warn("withdrawing challenge", "identifier", name, "error", err)
		}
	}()
	if iss.cfg.Preflight != nil {
		checked, err := iss.cfg.Preflight.Preflight(ctx, id, keyAuth)
		if err != nil {
			return &PreflightError{Identifier: name, Err: err}
		}
		// The preflight's own handshake must not count as the CA's.
		select {
		case <-seen:
		default:
		}
		iss.step(Step{Kind: StepReady, Identifier: name, Detail: "preflight passed: " + checked})
	}
	iss.step(Step{Kind: StepReady, Identifier: name, Detail: "responder ready; asking the CA to validate " + chal.URL})

	iss.hints.watch(authzURL)
	defer iss.hints.forget(authzURL)
	if _, err := iss.client.InitiateChallenge(ctx, acct, *chal); err != nil {
		return fmt.Errorf("asking the CA to validate %s: %w", name, err)
	}
	return iss.poll(ctx, acct, authzURL, name, seen)
}

func (iss *Issuer) poll(ctx context.Context, acct acme.Account, authzURL, name string, seen <-chan struct{}) error {
	deadline := time.Now().Add(iss.cfg.PollTimeout)
	wait, backoff := firstPoll, minBackoff
	timer := time.NewTimer(wait)
	defer timer.Stop()
	wake := seen // nil while a Retry-After from the CA is being honoured
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the CA to validate %s: %w", name, ctx.Err())
		case <-wake:
			// The CA has its answer; give it a moment to record it.
			select {
			case <-time.After(seenDelay):
			case <-ctx.Done():
				return fmt.Errorf("waiting for the CA to validate %s: %w", name, ctx.Err())
			}
		case <-timer.C:
		}
		authz, err := iss.client.GetAuthorization(ctx, acct, authzURL)
		if err != nil {
			return fmt.Errorf("polling authorization for %s: %w", name, err)
		}
		switch authz.Status {
		case acme.StatusValid:
			iss.step(Step{Kind: StepValid, Identifier: name, Detail: "authorization valid"})
			return nil
		case acme.StatusPending, acme.StatusProcessing:
		default:
			return authzFailure(name, authz)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the CA did not finish validating %s within %s", name, iss.cfg.PollTimeout)
		}
		if ra, ok := iss.hints.take(authzURL); ok {
			// Retry-After: 0, or a date already past, must not turn
			// this loop into a busy one.
			wait, wake = max(ra, minBackoff), nil
		} else {
			wait, backoff, wake = backoff, min(2*backoff, maxBackoff), seen
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// authzFailure explains a failed authorization with the CA's own words.
func authzFailure(name string, authz acme.Authorization) error {
	for _, c := range authz.Challenges {
		if c.Type == acme.ChallengeTypeTLSALPN01 && c.Error != nil {
			return &ValidationError{Identifier: name, Problem: *c.Error}
		}
	}
	return fmt.Errorf("authorization for %s became %s without a reason from the CA", name, authz.Status)
}

// PreflightError means the preflight found that the CA would fail to
// validate; the CA was not asked, so no failed authorization was counted.
type PreflightError struct {
	Identifier string
	Err        error
}

func (e *PreflightError) Error() string {
	return fmt.Sprintf("preflight for %s failed, so the CA was not asked to validate (no failed attempt counted against its limits): %v", e.Identifier, e.Err)
}

func (e *PreflightError) Unwrap() error { return e.Err }

// ValidationError is the CA's verdict on a failed tls-alpn-01 validation.
type ValidationError struct {
	Identifier string
	Problem    acme.Problem
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("the CA could not validate %s over tls-alpn-01: %s", e.Identifier, e.Problem.Detail)
}

func (e *ValidationError) Unwrap() error { return e.Problem }

// retryAfterRecorder remembers the Retry-After each response for a watched
// URL carried, so that authorization polling can honour it: acmez exposes
// no response headers for POST-as-GET on an authorization. Only watched
// URLs are recorded, so that the hints on orders, finalisation and renewal
// information, which nothing here takes, do not pile up in a long-running
// process.
type retryAfterRecorder struct {
	next    http.RoundTripper
	mu      sync.Mutex
	after   map[string]time.Duration
	watched map[string]int // URL -> number of pollers
	status  map[string]int // URL -> last HTTP status, for watched URLs
	// lastError is the Retry-After of the latest error response (a rate
	// limit, a 503): how long the CA asks to be left alone. Concurrent
	// orders share it, which errs on the side of waiting.
	lastError time.Duration
}

func (r *retryAfterRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil || resp == nil {
		return resp, err
	}
	u := req.URL.String()
	r.mu.Lock()
	if r.watched[u] > 0 {
		r.status[u] = resp.StatusCode
	}
	r.mu.Unlock()
	if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		r.mu.Lock()
		if r.watched[u] > 0 {
			r.after[u] = d
		}
		if resp.StatusCode >= 400 {
			r.lastError = d
		}
		r.mu.Unlock()
	}
	return resp, err
}

// watch starts recording Retry-After for url; forget undoes one watch.
func (r *retryAfterRecorder) watch(url string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watched[url]++
}

func (r *retryAfterRecorder) forget(url string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watched[url]--; r.watched[url] <= 0 {
		delete(r.watched, url)
		delete(r.after, url)
		delete(r.status, url)
	}
}

// lastStatus returns the HTTP status of the last response for a watched
// url, or 0: acmez reports an error without a problem document (Pebble's
// 404 for an unknown order) only as text.
func (r *retryAfterRecorder) lastStatus(url string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status[url]
}

// take returns and forgets the last Retry-After seen for url.
func (r *retryAfterRecorder) take(url string) (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.after[url]
	delete(r.after, url)
	return d, ok
}

// takeErrorHint returns and forgets the Retry-After of the latest error.
func (r *retryAfterRecorder) takeErrorHint() (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.lastError
	r.lastError = 0
	return d, d > 0
}

// RetryError is an Obtain failure during which the CA said, with
// Retry-After, when to try again; a scheduler must not retry sooner.
type RetryError struct {
	Err   error
	After time.Duration
}

func (e *RetryError) Error() string {
	return fmt.Sprintf("%v (the CA asks to retry after %s)", e.Err, e.After)
}

func (e *RetryError) Unwrap() error { return e.Err }

// parseRetryAfter reads delay-seconds or an HTTP-date (RFC 9110 §10.2.3),
// capped at an hour so a broken header cannot stall an order forever.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if secs, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		if secs < 0 {
			return 0, false
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
		if d < 0 {
			d = 0
		}
	} else {
		return 0, false
	}
	return min(d, time.Hour), true
}
