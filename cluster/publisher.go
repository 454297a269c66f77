package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/check"
	"github.com/tlsalpn/tlsalpn/storage"
)

// ErrNoNodes is returned by Publish when no node is live: nothing would answer the CA.
var ErrNoNodes = errors.New("cluster: no live node to answer the CA")

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Storage is the shared storage; it must implement storage.Ephemeral.
	Storage storage.Storage
	// Self names the publisher in what it stores: the node id, or for a command run outside
	// the cluster, a description such as "issue@host". "" means "pid@host".
	Self string
	// AckTimeout bounds the wait for every live node's acknowledgement; 0 means 10 s.
	AckTimeout time.Duration
	// CheckTimeout bounds each node's validation check, connect and handshake together; 0
	// means 3 s. A negative value skips the checks (the acknowledgements remain).
	CheckTimeout time.Duration
	// Resolver resolves node addresses given as names; nil means the system's.
	Resolver check.Resolver
	Logger   *slog.Logger
}

// Publisher is the issuer.Publisher of cluster mode: it publishes a challenge to every live
// node, and returns only once each has acknowledged it and answered a validation handshake
// on its own address as the CA would see it.
type Publisher struct {
	cfg PublisherConfig
	eph storage.Ephemeral

	mu      sync.Mutex
	pending map[string]*publication // by normalised server name
}

// publication is one Publish not yet unpublished.
type publication struct {
	name   string
	cancel context.CancelFunc // ends the "served" relay
	done   chan struct{}
}

// NewPublisher returns a publisher on cfg.Storage.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	eph, ok := cfg.Storage.(storage.Ephemeral)
	if !ok {
		return nil, ErrNotCluster
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = 3 * time.Second
	}
	if cfg.Self == "" {
		host, _ := os.Hostname()
		cfg.Self = strconv.Itoa(os.Getpid()) + "@" + host
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Publisher{cfg: cfg, eph: eph, pending: map[string]*publication{}}, nil
}

// NotReadyError names the nodes that did not acknowledge a challenge in time, or failed the
// check of their own address: the CA was not told, so no failed validation was counted.
type NotReadyError struct {
	ServerName string
	// Missing are the nodes that did not acknowledge; Failed maps a node to what its check
	// found.
	Missing []string
	Failed  map[string]string
	Err     error // the wait's end when it was ctx's
}

func (e *NotReadyError) Error() string {
	var parts []string
	if len(e.Missing) > 0 {
		parts = append(parts, "not acknowledged by "+strings.Join(e.Missing, ", "))
	}
	ids := make([]string, 0, len(e.Failed))
	for id := range e.Failed {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		parts = append(parts, fmt.Sprintf("node %s: %s", id, e.Failed[id]))
	}
	msg := fmt.Sprintf("cluster: challenge for %s not ready on every node: %s", e.ServerName, strings.Join(parts, "; "))
	if e.Err != nil {
		msg += " (" + e.Err.Error() + ")"
	}
	return msg
}

func (e *NotReadyError) Unwrap() error { return e.Err }

// Publish implements issuer.Publisher: it stores the challenge certificate and its throwaway
// key in a key that lives with this process, waits until every live node has acknowledged it,
// and checks each node's own address with a validation handshake. The returned channel
// receives when a node reports it served a validation (the checks' own handshakes may count).
// On failure nothing stays published.
func (p *Publisher) Publish(ctx context.Context, serverName string, cert *tls.Certificate) (<-chan struct{}, error) {
	name := challenge.NormalizeServerName(serverName)
	if name == "" {
		return nil, fmt.Errorf("cluster: publishing challenge for %q: not a valid server name", serverName)
	}
	id, err := identifierOf(cert)
	if err != nil {
		return nil, fmt.Errorf("cluster: publishing challenge for %s: %w", name, err)
	}
	recID := randomID()
	rec, err := encodePublished(recID, name, p.cfg.Self, cert)
	if err != nil {
		return nil, fmt.Errorf("cluster: publishing challenge for %s: %w", name, err)
	}
	// Challenges for one name take turns, as on a responder: a validation handshake cannot
	// say which of two it is for (see responder.Responder).
	pub := &publication{name: name, done: make(chan struct{})}
	for {
		p.mu.Lock()
		cur := p.pending[name]
		if cur == nil {
			p.pending[name] = pub
			p.mu.Unlock()
			break
		}
		p.mu.Unlock()
		select {
		case <-cur.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: publishing challenge for %s: waited for another pending challenge for that name to be withdrawn: %w", name, ctx.Err())
		}
	}

	// Watch before writing, so that no acknowledgement or "served" mark is missed.
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	pub.cancel = cancel
	acks, err := p.cfg.Storage.Watch(rctx, storage.ClusterAcksDir(name))
	if err == nil {
		var served <-chan storage.Event
		served, err = p.cfg.Storage.Watch(rctx, storage.ClusterServedDir(name))
		if err == nil {
			seen := make(chan struct{}, 1)
			go p.relayServed(served, seen, pub.done)
			err = p.publish(ctx, name, id, recID, rec, cert, acks)
			if err == nil {
				return seen, nil
			}
		}
	}
	p.Unpublish(context.WithoutCancel(ctx), name)
	return nil, err
}

func (p *Publisher) publish(ctx context.Context, name string, id challenge.Identifier, recID string, rec []byte, cert *tls.Certificate, acks <-chan storage.Event) error {
	nodes, err := Nodes(ctx, p.cfg.Storage)
	if err != nil {
		return fmt.Errorf("cluster: publishing challenge for %s: %w", name, err)
	}
	if len(nodes) == 0 {
		return fmt.Errorf("publishing challenge for %s: %w", name, ErrNoNodes)
	}
	if err := p.eph.PutEphemeral(ctx, storage.ClusterChallengeKey(name), rec); err != nil {
		return fmt.Errorf("cluster: publishing challenge for %s: %w", name, err)
	}
	acked, err := p.waitAcks(ctx, name, recID, leafHash(cert), nodes, acks)
	if err != nil {
		return err
	}
	if p.cfg.CheckTimeout < 0 {
		return nil
	}
	return p.checkNodes(ctx, name, id, acked)
}

// waitAcks waits until each of nodes has acknowledged the challenge recID, or is no longer
// live (a node that died cannot be reached by the CA either, once the balancer notices), and
// returns the nodes that acknowledged.
func (p *Publisher) waitAcks(ctx context.Context, name, recID, leaf string, nodes []Info, acks <-chan storage.Event) ([]Info, error) {
	wctx, cancel := context.WithTimeout(ctx, p.cfg.AckTimeout)
	defer cancel()
	missing, gone := map[string]bool{}, map[string]bool{}
	for _, n := range nodes {
		missing[n.ID] = true
	}
	lookAck := func(node string) {
		b, err := p.cfg.Storage.Get(wctx, storage.ClusterAckKey(name, node))
		if err != nil {
			return
		}
		if a, err := decodeAck(b); err == nil && a.ID == recID && a.Leaf == leaf {
			delete(missing, node)
		}
	}
	for n := range missing {
		lookAck(n)
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for len(missing) > 0 {
		select {
		case ev, ok := <-acks:
			if !ok {
				acks = nil
				continue
			}
			if !ev.Deleted {
				lookAck(pathBase(ev.Key))
			}
		case <-tick.C:
			// Acknowledgements are also looked for on a timer, and nodes that died meanwhile
			// are no longer waited for.
			live, err := Nodes(wctx, p.cfg.Storage)
			if err == nil {
				alive := map[string]bool{}
				for _, n := range live {
					alive[n.ID] = true
				}
				for n := range missing {
					if !alive[n] {
						p.cfg.Logger.Warn("cluster: node went away while its acknowledgement was awaited", "node", n, "server_name", name)
						delete(missing, n)
						gone[n] = true
					}
				}
			}
			for n := range missing {
				lookAck(n)
			}
		case <-wctx.Done():
			e := &NotReadyError{ServerName: name, Missing: sortedKeys(missing)}
			if ctx.Err() != nil {
				e.Err = ctx.Err()
			} else {
				e.Err = fmt.Errorf("waited %s", p.cfg.AckTimeout)
			}
			return nil, e
		}
	}
	acked := make([]Info, 0, len(nodes))
	for _, n := range nodes {
		if !gone[n.ID] {
			acked = append(acked, n)
		}
	}
	return acked, nil
}

// checkNodes validates the challenge on each node's own address, concurrently, as the CA
// does (package check): a node that acknowledged but cannot be reached, or answers with
// something else, is found before the CA counts a failed validation.
func (p *Publisher) checkNodes(ctx context.Context, name string, id challenge.Identifier, nodes []Info) error {
	var mu sync.Mutex
	failed := map[string]string{}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			if problem := p.checkNode(ctx, id, n); problem != "" {
				mu.Lock()
				failed[n.ID] = problem
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		return &NotReadyError{ServerName: name, Failed: failed, Err: ctx.Err()}
	}
	return nil
}

func (p *Publisher) checkNode(ctx context.Context, id challenge.Identifier, n Info) string {
	host, portStr, err := net.SplitHostPort(n.Addr)
	if err != nil {
		return fmt.Sprintf("address %q: %v", n.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return fmt.Sprintf("address %q: no port", n.Addr)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := p.cfg.Resolver.LookupNetIP(ctx, "ip", host)
		if lerr != nil || len(ips) == 0 {
			return fmt.Sprintf("address %q does not resolve: %v", n.Addr, lerr)
		}
		addr = ips[0]
	}
	c := &check.Checker{Addresses: []netip.Addr{addr}, Timeout: p.cfg.CheckTimeout, SkipProduction: true, Concurrency: 1}
	rep := c.Check(ctx, check.Target{ID: id, Port: port})
	if !rep.CA.Pass {
		return fmt.Sprintf("at %s: %s", n.Addr, rep.CA.Problem)
	}
	return ""
}

// relayServed turns "served" marks into receives on seen until done.
func (p *Publisher) relayServed(served <-chan storage.Event, seen chan<- struct{}, done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case ev, ok := <-served:
			if !ok {
				return
			}
			if ev.Deleted {
				continue
			}
			select {
			case seen <- struct{}{}:
			default:
			}
		}
	}
}

// Unpublish implements issuer.Publisher: it deletes the challenge (every node withdraws it),
// its acknowledgements and its "served" marks.
func (p *Publisher) Unpublish(ctx context.Context, serverName string) error {
	name := challenge.NormalizeServerName(serverName)
	p.mu.Lock()
	pub := p.pending[name]
	delete(p.pending, name)
	p.mu.Unlock()
	if pub == nil {
		return nil
	}
	close(pub.done)
	if pub.cancel != nil {
		pub.cancel()
	}
	var errs []error
	if err := p.cfg.Storage.Delete(ctx, storage.ClusterChallengeKey(name)); err != nil {
		errs = append(errs, err)
	}
	for _, dir := range []string{storage.ClusterAcksDir(name), storage.ClusterServedDir(name)} {
		keys, err := p.cfg.Storage.List(ctx, dir, true)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, k := range keys {
			if err := p.cfg.Storage.Delete(ctx, k); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster: withdrawing challenge for %s: %w", name, err)
	}
	return nil
}

// identifierOf returns the identifier a challenge certificate is for: its one SAN.
func identifierOf(cert *tls.Certificate) (challenge.Identifier, error) {
	if cert == nil || len(cert.Certificate) == 0 {
		return challenge.Identifier{}, errors.New("no certificate")
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = parseLeaf(cert.Certificate[0]); err != nil {
			return challenge.Identifier{}, err
		}
	}
	switch {
	case len(leaf.DNSNames) == 1 && len(leaf.IPAddresses) == 0:
		return challenge.Identifier{Type: challenge.DNS, Value: leaf.DNSNames[0]}, nil
	case len(leaf.IPAddresses) == 1 && len(leaf.DNSNames) == 0:
		return challenge.Identifier{Type: challenge.IP, Value: leaf.IPAddresses[0].String()}, nil
	}
	return challenge.Identifier{}, errors.New("not a challenge certificate: it must name exactly one identifier")
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
