package issuer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// countingPublisher is the test's responder, counting the challenges
// published at the same moment. Each Publish waits hold before it
// publishes, so that orders allowed to run together are seen together and
// the highest count is the number of orders that ran at once.
type countingPublisher struct {
	Publisher
	hold time.Duration

	mu        sync.Mutex
	now, most int
	published chan struct{} // receives at each Publish
}

func (p *countingPublisher) Publish(ctx context.Context, serverName string, cert *tls.Certificate) (<-chan struct{}, error) {
	p.mu.Lock()
	p.now++
	p.most = max(p.most, p.now)
	p.mu.Unlock()
	select {
	case p.published <- struct{}{}:
	default:
	}
	select {
	case <-time.After(p.hold):
	case <-ctx.Done():
	}
	return p.Publisher.Publish(ctx, serverName, cert)
}

func (p *countingPublisher) Unpublish(ctx context.Context, serverName string) error {
	p.mu.Lock()
	p.now--
	p.mu.Unlock()
	return p.Publisher.Unpublish(ctx, serverName)
}

// TestMaxOrders: an issuer asked for more certificates at once than its
// MaxOrders runs that many orders at a time, and the rest wait their turn
// (all are issued). Unbounded, tlsalpn serve starting with a thousand
// certificates missing placed a thousand orders at once and Pebble issued
// none in three minutes (bench/many.sh).
func TestMaxOrders(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		maxOrders int
		orders    int
		want      int
	}{
		{"two at a time", 2, 6, 2},
		{"the default", 0, DefaultMaxOrders + 3, DefaultMaxOrders},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, democa.Options{})
			pub := &countingPublisher{Publisher: e.resp, hold: 150 * time.Millisecond, published: make(chan struct{}, 1)}
			iss := e.issuer(t, func(c *Config) { c.Publisher, c.MaxOrders = pub, tt.maxOrders })
			errs := make(chan error, tt.orders)
			for i := range tt.orders {
				name := fmt.Sprintf("o%d.max.example.test", i)
				go func() {
					res, err := iss.Obtain(testContext(t), Request{Identifiers: ids(t, name)})
					if err == nil {
						checkResult(t, e, res, []string{name})
					}
					errs <- err
				}()
			}
			for range tt.orders {
				if err := <-errs; err != nil {
					t.Errorf("Obtain: %v", err)
				}
			}
			pub.mu.Lock()
			defer pub.mu.Unlock()
			if pub.most != tt.want {
				t.Errorf("%d orders ran at once, want %d (MaxOrders %d, %d asked for)", pub.most, tt.want, tt.maxOrders, tt.orders)
			}
		})
	}
}

// TestMaxOrdersWaitEnds: an Obtain waiting for a free slot gives up when
// its context ends, says what it waited for, and orders nothing.
func TestMaxOrdersWaitEnds(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, democa.Options{})
	pub := &countingPublisher{Publisher: e.resp, hold: 2 * time.Second, published: make(chan struct{}, 1)}
	iss := e.issuer(t, func(c *Config) { c.Publisher, c.MaxOrders = pub, 1 })
	first := make(chan error, 1)
	go func() {
		_, err := iss.Obtain(testContext(t), Request{Identifiers: ids(t, "first.max.example.test")})
		first <- err
	}()
	select {
	case <-pub.published: // the first order holds the only slot
	case <-testContext(t).Done():
		t.Fatal("the first order never published its challenge")
	}
	ctx, cancel := context.WithTimeout(testContext(t), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := iss.Obtain(ctx, Request{Identifiers: ids(t, "second.max.example.test")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Obtain while the only slot is taken = %v, want context.DeadlineExceeded", err)
	}
	if waited := time.Since(start); waited > time.Second {
		t.Errorf("Obtain gave up after %v, want about 100ms (its context)", waited)
	}
	if err := <-first; err != nil {
		t.Errorf("first Obtain: %v", err)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if pub.most != 1 {
		t.Errorf("%d challenges published at once, want 1: the second order must not start", pub.most)
	}
}

// TestMaxOrdersNegative: a negative bound is refused, not taken as none.
func TestMaxOrdersNegative(t *testing.T) {
	st, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Directory: "https://127.0.0.1:1/dir", Storage: st, MaxOrders: -1}); err == nil {
		t.Fatal("New with MaxOrders -1: no error")
	}
}
