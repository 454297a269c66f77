package responder

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// turn is one challenge for a name: its key authorization and certificate.
// Two turns for one name differ only in the key authorization, as two
// orders' challenges for one name do.
type turn struct {
	keyAuth string
	cert    *tls.Certificate
}

func newTurn(t testing.TB, id challenge.Identifier, keyAuth string) turn {
	t.Helper()
	cert, err := challenge.Build(id, keyAuth)
	if err != nil {
		t.Fatal(err)
	}
	return turn{keyAuth, cert}
}

// servedTurn makes the CA's handshake (ALPN exactly acme-tls/1, SNI the
// challenge's server name) and fails unless it was shown want's certificate.
// It may run on any goroutine.
func servedTurn(t *testing.T, addr string, id challenge.Identifier, want turn) {
	t.Helper()
	res := handshake(t, addr, challenge.ServerName(id), acmeOnly, nil)
	if res.err != nil {
		t.Errorf("validation handshake for %s: %v", id.Value, res.err)
		return
	}
	if got := res.state.NegotiatedProtocol; got != challenge.ALPNProto {
		t.Errorf("negotiated %q, want %q", got, challenge.ALPNProto)
	}
	if err := challenge.Verify(res.state.PeerCertificates[0], id, want.keyAuth); err != nil {
		t.Errorf("validation handshake for %s got another challenge's certificate: %v", id.Value, err)
	}
}

// serveMode serves r standalone or as a hook in a normal server.
func serveMode(t *testing.T, r *Responder, mode string) string {
	t.Helper()
	if mode == "standalone" {
		return serveStandalone(t, r)
	}
	base, _ := hookBase(t)
	return serveHook(t, r, base)
}

type publishResult struct {
	seen <-chan struct{}
	err  error
}

// publishAsync runs r.Publish on its own goroutine.
func publishAsync(ctx context.Context, p interface {
	Publish(context.Context, string, *tls.Certificate) (<-chan struct{}, error)
}, name string, cert *tls.Certificate) <-chan publishResult {
	c := make(chan publishResult, 1)
	go func() {
		seen, err := p.Publish(ctx, name, cert)
		c <- publishResult{seen, err}
	}()
	return c
}

// stillWaiting fails if the Publish behind c has returned within a short while.
func stillWaiting(t *testing.T, c <-chan publishResult) {
	t.Helper()
	select {
	case res := <-c:
		t.Fatalf("second Publish for a pending name returned (%v, %v) without waiting", res.seen, res.err)
	case <-time.After(100 * time.Millisecond):
	}
}

func awaitPublish(t *testing.T, c <-chan publishResult) publishResult {
	t.Helper()
	select {
	case res := <-c:
		return res
	case <-time.After(5 * time.Second):
		t.Fatal("waiting Publish did not return after the pending challenge was withdrawn")
		return publishResult{}
	}
}

// TestPublishSameNameTakesTurns: a second challenge for a pending name
// waits, then replaces the first only once the first is withdrawn, and the
// first's Unpublish does not withdraw the second.
func TestPublishSameNameTakesTurns(t *testing.T) {
	id, _ := challenge.ParseIdentifier("example.com")
	first := newTurn(t, id, "first-token.thumbprint")
	second := newTurn(t, id, "second-token.thumbprint")
	for _, mode := range []string{"standalone", "hook"} {
		t.Run(mode, func(t *testing.T) {
			r := New()
			addr := serveMode(t, r, mode)
			ctx := context.Background()
			seen1, err := r.Publish(ctx, "example.com", first.cert)
			if err != nil {
				t.Fatal(err)
			}
			// The second order names the server as it likes; the
			// responder normalises both to one pending name.
			waiting := publishAsync(ctx, r, "Example.COM.", second.cert)
			stillWaiting(t, waiting)
			servedTurn(t, addr, id, first)
			<-seen1
			if n := r.Pending(); n != 1 {
				t.Errorf("Pending = %d while the second waits, want 1", n)
			}

			if err := r.Unpublish(ctx, "example.com"); err != nil {
				t.Fatal(err)
			}
			res := awaitPublish(t, waiting)
			if res.err != nil {
				t.Fatalf("second Publish: %v", res.err)
			}
			servedTurn(t, addr, id, second)
			select {
			case <-res.seen:
			case <-time.After(5 * time.Second):
				t.Error("the second challenge's seen did not receive after its handshake")
			}
			select {
			case <-seen1:
				t.Error("the withdrawn first challenge's seen received for the second's handshake")
			default:
			}

			if err := r.Unpublish(ctx, "EXAMPLE.com"); err != nil {
				t.Fatal(err)
			}
			if n := r.Pending(); n != 0 {
				t.Errorf("Pending = %d after both withdrew, want 0", n)
			}
			checkOutcome(t, handshake(t, addr, "example.com", acmeOnly, nil), refused, id, nil)
		})
	}
}

// TestPublishWaitEndsWithContext: a waiting Publish whose ctx ends fails,
// says why, and leaves the pending challenge as it was.
func TestPublishWaitEndsWithContext(t *testing.T) {
	id, _ := challenge.ParseIdentifier("example.com")
	first := newTurn(t, id, "first-token.thumbprint")
	second := newTurn(t, id, "second-token.thumbprint")
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"already done", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
	} {
		for _, mode := range []string{"standalone", "hook"} {
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				r := New()
				addr := serveMode(t, r, mode)
				if _, err := r.Publish(context.Background(), "example.com", first.cert); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := tc.ctx()
				defer cancel()
				start := time.Now()
				seen, err := r.Publish(ctx, "example.com", second.cert)
				if d := time.Since(start); d > 3*time.Second {
					t.Errorf("Publish returned %v after its context ended", d)
				}
				if !errors.Is(err, tc.want) || seen != nil {
					t.Fatalf("Publish = (%v, %v), want an error wrapping %v", seen, err, tc.want)
				}
				if msg := err.Error(); !strings.Contains(msg, "example.com") || !strings.Contains(msg, "another pending challenge") {
					t.Errorf("error %q should name the server and say it waited for another pending challenge", msg)
				}
				servedTurn(t, addr, id, first)
				if n := r.Pending(); n != 1 {
					t.Errorf("Pending = %d, want 1", n)
				}
				r.Unpublish(context.Background(), "example.com")
				if n := r.Pending(); n != 0 {
					t.Errorf("Pending = %d after the first withdrew, want 0: the failed Publish left something behind", n)
				}
				checkOutcome(t, handshake(t, addr, "example.com", acmeOnly, nil), refused, id, nil)
			})
		}
	}
}

// TestUnpublishNotPending: withdrawing a name that is not pending neither
// fails nor touches what is pending.
func TestUnpublishNotPending(t *testing.T) {
	id, cert := challengeCert(t, "a.example")
	for _, tc := range []struct {
		name      string
		publish   bool // "a.example" is pending
		unpublish string
	}{
		{"nothing pending", false, "a.example"},
		{"other name", true, "b.example"},
		{"subdomain", true, "www.a.example"},
		{"invalid name", true, "a .example"},
		{"empty name", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New()
			addr := serveStandalone(t, r)
			if tc.publish {
				if _, err := r.Publish(context.Background(), "a.example", cert); err != nil {
					t.Fatal(err)
				}
			}
			for range 2 {
				if err := r.Unpublish(context.Background(), tc.unpublish); err != nil {
					t.Errorf("Unpublish(%q): %v", tc.unpublish, err)
				}
			}
			want, pending := refused, 0
			if tc.publish {
				want, pending = served, 1
			}
			if n := r.Pending(); n != pending {
				t.Errorf("Pending = %d, want %d", n, pending)
			}
			checkOutcome(t, handshake(t, addr, "a.example", acmeOnly, nil), want, id, nil)
		})
	}
}

// TestPublishDifferentNamesDoNotWait: only challenges for one name take turns.
func TestPublishDifferentNamesDoNotWait(t *testing.T) {
	r := New()
	addr := serveStandalone(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ids []challenge.Identifier
	var waits []<-chan publishResult
	for _, s := range []string{"a.example", "b.example", "127.0.0.1"} {
		id, cert := challengeCert(t, s)
		ids = append(ids, id)
		waits = append(waits, publishAsync(ctx, r, challenge.ServerName(id), cert))
	}
	for i, c := range waits {
		select {
		case res := <-c:
			if res.err != nil {
				t.Fatalf("Publish %s: %v", ids[i].Value, res.err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("Publish %s waited although no other challenge for it was pending", ids[i].Value)
		}
	}
	if n := r.Pending(); n != len(ids) {
		t.Errorf("Pending = %d, want %d", n, len(ids))
	}
	for _, id := range ids {
		checkOutcome(t, handshake(t, addr, challenge.ServerName(id), acmeOnly, nil), served, id, nil)
	}
}

// TestPublishManyWaitersOneAtATime: several challenges for one name are
// each published alone, each served its own certificate, and all get
// their turn; run with -race.
func TestPublishManyWaitersOneAtATime(t *testing.T) {
	id, _ := challenge.ParseIdentifier("example.com")
	r := New()
	addr := serveStandalone(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 4
	var inside, turns atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		tu := newTurn(t, id, "token-"+string(rune('a'+i))+".thumbprint")
		wg.Go(func() {
			<-start
			if _, err := r.Publish(ctx, "example.com", tu.cert); err != nil {
				t.Error(err)
				return
			}
			if k := inside.Add(1); k != 1 {
				t.Errorf("%d challenges for one name published at once", k)
			}
			servedTurn(t, addr, id, tu)
			turns.Add(1)
			inside.Add(-1)
			r.Unpublish(ctx, "example.com")
		})
	}
	close(start)
	wg.Wait()
	if got := turns.Load(); got != n {
		t.Errorf("%d of %d challenges had their turn", got, n)
	}
	if r.Pending() != 0 {
		t.Errorf("Pending = %d at the end", r.Pending())
	}
}

// TestOnDemandTakesTurns: through OnDemand, a waiting challenge keeps the
// listener bound, and one whose wait fails releases its hold on it.
func TestOnDemandTakesTurns(t *testing.T) {
	id, _ := challenge.ParseIdentifier("example.com")
	first := newTurn(t, id, "first-token.thumbprint")
	second := newTurn(t, id, "second-token.thumbprint")
	addr := freeAddr(t)
	r := New()
	o := NewOnDemand(r, addr, nil)
	ctx := context.Background()

	if _, err := o.Publish(ctx, "example.com", first.cert); err != nil {
		t.Fatal(err)
	}
	// A wait that ends with its context gives back its hold.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err := o.Publish(short, "example.com", second.cert)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish while another waits = %v, want DeadlineExceeded", err)
	}
	servedTurn(t, addr, id, first)

	// A wait that gets its turn keeps the listener bound across the
	// first's Unpublish.
	waiting := publishAsync(ctx, o, "example.com", second.cert)
	stillWaiting(t, waiting)
	if err := o.Unpublish(ctx, "example.com"); err != nil {
		t.Fatal(err)
	}
	if res := awaitPublish(t, waiting); res.err != nil {
		t.Fatalf("second Publish: %v", res.err)
	}
	if o.Addr() == nil {
		t.Fatal("listener released while the second challenge is pending")
	}
	servedTurn(t, addr, id, second)
	if err := o.Unpublish(ctx, "example.com"); err != nil {
		t.Fatal(err)
	}
	if o.Addr() != nil || !refusesConnections(addr) || r.Pending() != 0 {
		t.Errorf("state left behind after every Publish was withdrawn: the failed wait unbalanced the count (addr %v, refused %v, pending %d)",
			o.Addr(), refusesConnections(addr), r.Pending())
	}
}
