package responder

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
)

// OnDemand publishes challenges on a Responder and keeps a standalone
// listener bound only while at least one challenge is pending: "tlsalpn
// issue" holds :443 for the second or so that validation takes, not for
// its whole run, and not at all when the CA reuses an earlier
// authorization.
type OnDemand struct {
	r    *Responder
	addr string
	// listen opens the listener; net.Listen by default. Tests and the demo
	// pass their own to learn the port or to use a namespace.
	listen func(ctx context.Context, addr string) (net.Listener, error)

	// holds binds on the first pending challenge and closes after the
	// last, by the same count as the responder's pending hook: several
	// OnDemands (one per address) share one responder, so each keeps
	// its own.
	holds holdCount

	mu     sync.Mutex // guards what the hook sets
	ln     net.Listener
	cancel context.CancelFunc
	done   chan struct{}
}

// NewOnDemand returns a publisher that binds addr while challenges are
// pending. listen may be nil.
func NewOnDemand(r *Responder, addr string, listen func(ctx context.Context, addr string) (net.Listener, error)) *OnDemand {
	if listen == nil {
		listen = func(ctx context.Context, addr string) (net.Listener, error) {
			var lc net.ListenConfig
			return lc.Listen(ctx, "tcp", addr)
		}
	}
	o := &OnDemand{r: r, addr: addr, listen: listen}
	o.holds.hook = o.pending
	return o
}

// Publish binds the listener if this is the first pending challenge, then
// publishes cert for serverName, waiting as Responder.Publish does while
// another challenge for serverName is pending. The listener stays bound
// while it waits; if Publish fails it is released as if unpublished.
func (o *OnDemand) Publish(ctx context.Context, serverName string, cert *tls.Certificate) (<-chan struct{}, error) {
	if err := o.holds.acquire(ctx); err != nil {
		return nil, err
	}
	seen, err := o.r.Publish(ctx, serverName, cert)
	if err != nil {
		o.holds.release(ctx, o.r.logger)
		return nil, err
	}
	return seen, nil
}

// Unpublish withdraws serverName and closes the listener after the last
// pending challenge.
func (o *OnDemand) Unpublish(ctx context.Context, serverName string) error {
	err := o.r.Unpublish(ctx, serverName)
	o.holds.release(ctx, o.r.logger)
	return err
}

// pending is o's hook: bind before the first challenge, close after the
// last.
func (o *OnDemand) pending(ctx context.Context, pending bool) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !pending {
		o.cancel()
		<-o.done
		o.ln, o.cancel, o.done = nil, nil, nil
		return nil
	}
	ln, err := o.listen(ctx, o.addr)
	if err != nil {
		return &BindError{Addr: o.addr, Err: err}
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	o.ln, o.cancel, o.done = ln, cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		if err := o.r.Serve(sctx, ln); err != nil {
			o.r.logger.Error("tls-alpn-01 listener stopped; pending validations will fail", "addr", o.addr, "error", err)
		}
	}(o.done)
	return nil
}

// Addr returns the bound address while a challenge is pending, else nil.
func (o *OnDemand) Addr() net.Addr {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ln == nil {
		return nil
	}
	return o.ln.Addr()
}

// BindError is OnDemand failing to bind its address when a challenge
// became pending, so the CA cannot be answered. InUse and Permission say
// why in terms that hold on every system (the socket error codes of Unix
// and Windows differ), for the caller to advise on.
type BindError struct {
	Addr string
	Err  error // from listening
}

func (e *BindError) Error() string {
	return fmt.Sprintf("binding %s to answer the CA: %v", e.Addr, e.Err)
}

func (e *BindError) Unwrap() error { return e.Err }

// InUse reports whether another socket holds the address: another server
// owns the port.
func (e *BindError) InUse() bool { return isAddrInUse(e.Err) }

// Permission reports whether the port needs privileges this process lacks
// (below 1024 without root or CAP_NET_BIND_SERVICE).
func (e *BindError) Permission() bool { return isPermission(e.Err) }
