package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage"
)

// ErrNotCluster is returned when the storage cannot hold keys that live with the process
// (storage.Ephemeral): a directory cannot tell a dead node from a live one.
var ErrNotCluster = errors.New("cluster: the storage keeps no ephemeral keys; cluster mode needs etcd")

// Info describes a live node, as it registers itself.
type Info struct {
	ID string `json:"id"`
	// Addr is the host:port the node is reached at: where the balancer sends connections, and
	// where a publisher checks that the node answers a challenge.
	Addr    string    `json:"addr"`
	Version string    `json:"version,omitempty"`
	Started time.Time `json:"started"`
	// Instance is random per process, so that a node tells its own record (put again after its
	// session was lost) from another process's with the same id.
	Instance string `json:"instance"`
	// Keeps are the certificates (manager.Spec.ID) the node keeps: a certificate's renewal is
	// spread over the nodes that keep it (see Keepers), since one that does not never orders it.
	Keeps []string `json:"keeps,omitempty"`
}

// DuplicateNodeError means another live process is registered with the node id asked for:
// two nodes with one id would acknowledge challenges for each other.
type DuplicateNodeError struct {
	ID    string
	Other Info
}

func (e *DuplicateNodeError) Error() string {
	return fmt.Sprintf("cluster: node id %q is taken by a live node (address %s, started %s): give this node another id",
		e.ID, e.Other.Addr, e.Other.Started.Format(time.RFC3339))
}

// Config configures a Node.
type Config struct {
	// Storage is the shared storage; it must implement storage.Ephemeral.
	Storage storage.Storage
	// Info is this node; ID and Addr are required, Started and Instance are filled in.
	Info Info
	// Local publishes on this node's own responder (a *responder.Responder).
	Local issuer.Publisher
	// Logger nil discards.
	Logger *slog.Logger
	// DuplicateWait is how long a node waits for a record with its id left by a process that
	// died (its key lives until the session's TTL ends) before it refuses to start; 0 means
	// 10 s.
	DuplicateWait time.Duration
	// Publisher configures the node's publisher; its Storage, Self and Logger are set here.
	Publisher PublisherConfig
}

// Node is this process as a member of the cluster: registered, following the published
// challenges, and publishing its own through Publisher.
type Node struct {
	cfg      Config
	eph      storage.Ephemeral
	infoMu   sync.Mutex // guards info.Keeps, which SetKeeps changes
	info     Info
	follower *Follower
	pub      *Publisher
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once

	// members are the ids of the live nodes, kept from a watch so that deciding who renews
	// what reads no storage; changed delivers (once, not blocking) when they change.
	membersMu sync.Mutex
	members   []Info
	changed   chan struct{}
}

// ValidateID reports whether id can name a node: one storage key segment, as Segment leaves it.
func ValidateID(id string) error {
	if id == "" {
		return errors.New("cluster: empty node id")
	}
	if storage.Segment(id) != id {
		return fmt.Errorf("cluster: node id %q: only letters, digits, '.', '-', '_' and '@' (not first or last '.')", id)
	}
	return nil
}

// Start registers the node, loads every challenge already published into the local responder
// (catch-up: call it before the node accepts connections), and keeps both up to date until ctx
// ends or Stop. It refuses, with a *DuplicateNodeError, when another live node has the id.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	eph, ok := cfg.Storage.(storage.Ephemeral)
	if !ok {
		return nil, ErrNotCluster
	}
	if err := ValidateID(cfg.Info.ID); err != nil {
		return nil, err
	}
	if cfg.Info.Addr == "" {
		return nil, fmt.Errorf("cluster: node %s: no address to be reached at", cfg.Info.ID)
	}
	if cfg.Local == nil {
		return nil, fmt.Errorf("cluster: node %s: no local responder", cfg.Info.ID)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DuplicateWait == 0 {
		cfg.DuplicateWait = 10 * time.Second
	}
	info := cfg.Info
	if info.Started.IsZero() {
		info.Started = time.Now().UTC()
	}
	info.Instance = randomID()
	n := &Node{cfg: cfg, eph: eph, info: info, done: make(chan struct{}), changed: make(chan struct{}, 1)}
	if err := n.register(ctx); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	nodeEvents, err := cfg.Storage.Watch(rctx, storage.ClusterNodesPrefix)
	if err != nil {
		cancel()
		n.deregister()
		return nil, fmt.Errorf("cluster: following the nodes: %w", err)
	}
	if err := n.refreshMembers(ctx); err != nil {
		cancel()
		n.deregister()
		return nil, err
	}
	f, err := Follow(rctx, cfg.Storage, info.ID, cfg.Local, cfg.Logger)
	if err != nil {
		cancel()
		n.deregister()
		return nil, err
	}
	n.follower = f
	pc := cfg.Publisher
	pc.Storage, pc.Self, pc.Logger = cfg.Storage, info.ID, cfg.Logger
	if n.pub, err = NewPublisher(pc); err != nil {
		cancel()
		n.deregister()
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() { n.keepRegistered(rctx) })
	wg.Go(func() { n.followMembers(rctx, nodeEvents) })
	go func() {
		wg.Wait()
		close(n.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			n.Stop()
		case <-n.done: // stopped
		}
	}()
	return n, nil
}

// Info returns the node as registered.
func (n *Node) Info() Info {
	n.infoMu.Lock()
	defer n.infoMu.Unlock()
	info := n.info
	info.Keeps = slices.Clone(info.Keeps)
	return info
}

// SetKeeps records which certificates this node keeps (it changes with serve's configuration)
// in its registration, for the other nodes' Keepers.
func (n *Node) SetKeeps(ctx context.Context, certIDs []string) error {
	ids := slices.Clone(certIDs)
	slices.Sort(ids)
	n.infoMu.Lock()
	n.info.Keeps = slices.Compact(ids)
	n.infoMu.Unlock()
	return n.put(ctx)
}

// Publisher returns the publisher for this node's orders.
func (n *Node) Publisher() *Publisher { return n.pub }

// Stop withdraws the node: it stops following, withdraws what it loaded, and deletes its
// record (which its death would also do, after the session's TTL).
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		n.cancel()
		<-n.done
		n.follower.Wait()
		n.deregister()
	})
}

func (n *Node) deregister() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.cfg.Storage.Delete(ctx, storage.ClusterNodeKey(n.info.ID)); err != nil {
		n.cfg.Logger.Warn("cluster: removing this node's record (it goes with the session anyway)", "node", n.info.ID, "error", err)
	}
}

// register puts the node's record, after making sure no other live process holds the id. A
// record left by a process of this id that died lives until its session's TTL ends, so one is
// waited for, up to DuplicateWait, before refusing.
func (n *Node) register(ctx context.Context) error {
	key := storage.ClusterNodeKey(n.info.ID)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch, werr := n.cfg.Storage.Watch(wctx, key)
	deadline := time.Now().Add(n.cfg.DuplicateWait)
	for {
		other, err := readInfo(ctx, n.cfg.Storage, key)
		if errors.Is(err, storage.ErrNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("cluster: registering node %s: %w", n.info.ID, err)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return &DuplicateNodeError{ID: n.info.ID, Other: other}
		}
		n.cfg.Logger.Info("cluster: a node with this id is registered; waiting for it to go (a process that died leaves it for the session's TTL)",
			"node", n.info.ID, "other_addr", other.Addr, "other_started", other.Started, "up_to", wait.Round(time.Second))
		t := time.NewTimer(min(wait, time.Second))
		if werr != nil {
			watch = nil
		}
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("cluster: registering node %s: %w", n.info.ID, ctx.Err())
		case <-watch:
		case <-t.C:
		}
		t.Stop()
	}
	if err := n.put(ctx); err != nil {
		return err
	}
	return nil
}

func (n *Node) put(ctx context.Context) error {
	n.infoMu.Lock()
	b, err := json.Marshal(n.info)
	n.infoMu.Unlock()
	if err != nil {
		return err
	}
	if err := n.eph.PutEphemeral(ctx, storage.ClusterNodeKey(n.info.ID), b); err != nil {
		return fmt.Errorf("cluster: registering node %s: %w", n.info.ID, err)
	}
	return nil
}

// keepRegistered puts the record, and the acknowledgements, again whenever the session is
// lost (storage unreachable for longer than its TTL), once storage answers again.
func (n *Node) keepRegistered(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.eph.SessionDone():
		}
		n.cfg.Logger.Warn("cluster: session with storage lost; this node's record and acknowledgements are gone until storage answers again", "node", n.info.ID)
		for backoff := 200 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := n.put(pctx)
			if err == nil {
				n.follower.Resync(pctx)
			}
			cancel()
			if err == nil {
				n.cfg.Logger.Info("cluster: registered again", "node", n.info.ID)
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}
}

// Members returns the ids of the live nodes, sorted, this one included, as last seen: from
// memory, kept up to date by a watch.
func (n *Node) Members() []string {
	n.membersMu.Lock()
	defer n.membersMu.Unlock()
	ids := make([]string, len(n.members))
	for i, m := range n.members {
		ids[i] = m.ID
	}
	return ids
}

// Keepers returns the ids of the live nodes that keep the certificate certID (Info.Keeps),
// sorted, from memory: those its renewal is spread over (package cluster's Owner).
func (n *Node) Keepers(certID string) []string {
	n.membersMu.Lock()
	defer n.membersMu.Unlock()
	return Keepers(certID, n.members)
}

// Keepers returns the ids of the nodes of nodes that keep the certificate certID (Info.Keeps),
// in the order of nodes.
func Keepers(certID string, nodes []Info) []string {
	var ids []string
	for _, m := range nodes {
		if slices.Contains(m.Keeps, certID) {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// Renewer returns the node of nodes (the live ones) that renews the certificate certID: the
// Owner among those that keep it. It returns "" when none keeps it: then every keeper of a
// node that has it configured may order it (a node's registration of what it keeps lags a
// reload by a moment), the certificate's lock letting only one order at a time. Serve's
// keeper and "tlsalpn list" both decide by it, so that list names the node that does.
func Renewer(certID string, nodes []Info) string {
	return Owner(certID, Keepers(certID, nodes))
}

// MembersChanged delivers when Members or Keepers may have changed: a node came or went, or
// changed what it keeps. A change already pending is not repeated; it is meant for one
// receiver.
func (n *Node) MembersChanged() <-chan struct{} { return n.changed }

func (n *Node) refreshMembers(ctx context.Context) error {
	infos, err := Nodes(ctx, n.cfg.Storage)
	if err != nil {
		return err
	}
	n.membersMu.Lock()
	same := slices.EqualFunc(infos, n.members, func(a, b Info) bool { return a.ID == b.ID && slices.Equal(a.Keeps, b.Keeps) })
	n.members = infos
	n.membersMu.Unlock()
	if !same {
		select {
		case n.changed <- struct{}{}:
		default:
		}
	}
	return nil
}

// followMembers keeps Members up to date until ctx ends.
func (n *Node) followMembers(ctx context.Context, events <-chan storage.Event) {
	for {
		if events != nil { // nil after a failed Watch
			for range events {
				if err := n.refreshMembers(ctx); err != nil && ctx.Err() == nil {
					n.cfg.Logger.Warn("cluster: reading the live nodes failed; the last list stays", "error", err)
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		// The watch ended without ctx: watch again, and read what was missed.
		var err error
		if events, err = n.cfg.Storage.Watch(ctx, storage.ClusterNodesPrefix); err != nil {
			events = nil
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		if err := n.refreshMembers(ctx); err != nil && ctx.Err() == nil {
			n.cfg.Logger.Warn("cluster: reading the live nodes failed; the last list stays", "error", err)
		}
	}
}

// Nodes lists the live nodes, by id.
func Nodes(ctx context.Context, st storage.Storage) ([]Info, error) {
	keys, err := st.List(ctx, storage.ClusterNodesPrefix, false)
	if err != nil {
		return nil, fmt.Errorf("cluster: listing nodes: %w", err)
	}
	out := make([]Info, 0, len(keys))
	for _, k := range keys {
		info, err := readInfo(ctx, st, k)
		if errors.Is(err, storage.ErrNotExist) {
			continue // gone since the list
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: listing nodes: %w", err)
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func readInfo(ctx context.Context, st storage.Storage, key string) (Info, error) {
	b, err := st.Get(ctx, key)
	if err != nil {
		return Info{}, err
	}
	var info Info
	if err := json.Unmarshal(b, &info); err != nil {
		return Info{}, fmt.Errorf("node record %s: %w", key, err)
	}
	return info, nil
}

func randomID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}
