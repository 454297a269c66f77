package democa

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mholt/acmez/v3/acme"
)

// TestConcurrentRequestsOnOneOrder fetches one order and its authorization
// from several clients at once, as cluster nodes sharing an account do.
// Pebble's handlers take an authorization's lock and then its order's,
// while fetching an order takes the order's and then its
// authorizations', and then the order's for writing: with both under way,
// Pebble stopped answering every request, its store's lock held by a
// waiting fetch. The CA serves one request at a time to keep out of that
// cycle (see serial).
func TestConcurrentRequestsOnOneOrder(t *testing.T) {
	r := newALPNResponder(t)
	c := startCA(t, Options{TLSPort: r.port()})
	ctx := testContext(t)
	client := &acme.Client{Directory: c.DirectoryURL(), HTTPClient: c.HTTPClient()}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	acct, err := client.NewAccount(ctx, acme.Account{PrivateKey: key, TermsOfServiceAgreed: true})
	if err != nil {
		t.Fatalf("new account: %v", err)
	}
	order, err := client.NewOrder(ctx, acct, acme.Order{Identifiers: []acme.Identifier{{Type: "dns", Value: "one.example.com"}}})
	if err != nil {
		t.Fatalf("new order: %v", err)
	}
	authzURL, orderURL := order.Authorizations[0], order.Location

	const workers, requests = 4, 300
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers)
	for i := range 2 * workers {
		wg.Go(func() {
			for range requests {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				var err error
				if i%2 == 0 {
					_, err = client.GetOrder(rctx, acct, acme.Order{Location: orderURL})
				} else {
					_, err = client.GetAuthorization(rctx, acct, authzURL)
				}
				cancel()
				if err != nil {
					if errors.Is(err, context.DeadlineExceeded) {
						err = errors.New("no answer in 10s: the CA has stopped answering (a lock cycle in Pebble)")
					}
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
