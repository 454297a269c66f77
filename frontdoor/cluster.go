package frontdoor

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/tlsalpn/tlsalpn/check"
	"github.com/tlsalpn/tlsalpn/cluster"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/storage"
)

// ClusterMode reports whether serve on st runs as a cluster node: when the storage can hold
// keys that live with the process (etcd), so that a node that dies disappears from it.
func ClusterMode(st storage.Storage) bool {
	_, ok := st.(storage.Ephemeral)
	return ok
}

// DefaultNodeID is the node id when none is given: the host name.
func DefaultNodeID() (string, error) {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "", fmt.Errorf("no node id given, and the host name is unknown: %v", err)
	}
	return h, nil
}

// NodeAddress is the address a node is reached at when none is given: the listener's, with an
// unspecified host ("0.0.0.0", "::") replaced by this host's first address that is not a
// loopback one (or loopback, when it has no other), since that is what the other nodes and
// the balancer can dial.
func NodeAddress(listen net.Addr) (string, error) {
	ap, err := netip.ParseAddrPort(listen.String())
	if err != nil {
		return "", fmt.Errorf("node address from the listener %s: %w", listen, err)
	}
	if !ap.Addr().IsUnspecified() {
		return ap.String(), nil
	}
	addrs, err := check.HostAddrs()
	if err != nil {
		return "", fmt.Errorf("node address: this host's addresses: %w", err)
	}
	for _, want4 := range []bool{true, false} {
		for _, a := range addrs {
			if a.Is4() == want4 && !a.IsLoopback() && !a.IsLinkLocalUnicast() {
				return netip.AddrPortFrom(a, ap.Port()).String(), nil
			}
		}
	}
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ap.Port()).String(), nil
}

// joinCluster registers this serve as a node, loads every pending challenge into its responder
// (before the listener is served: catch-up), and makes the node's publisher the one every
// order of this serve uses. The node leaves when ctx ends.
func (rt *runtime) joinCluster(ctx context.Context, c Config, listen net.Addr) error {
	id := c.NodeID
	if id == "" {
		var err error
		if id, err = DefaultNodeID(); err != nil {
			return &ConfigError{err}
		}
	}
	if err := cluster.ValidateID(id); err != nil {
		return &ConfigError{fmt.Errorf("node id: %w", err)}
	}
	addr := c.NodeAddress
	if addr == "" {
		var err error
		if addr, err = NodeAddress(listen); err != nil {
			return &ConfigError{err}
		}
	} else if _, _, err := net.SplitHostPort(addr); err != nil {
		return &ConfigError{fmt.Errorf("node address %q: %w", addr, err)}
	}
	var pc cluster.PublisherConfig
	if rt.newPool != nil && rt.newPool().Preflight == nil {
		// serve --no-preflight: no check of each node's address either.
		pc.CheckTimeout = -1
	}
	node, err := cluster.Start(ctx, cluster.Config{
		Storage:   rt.store,
		Info:      cluster.Info{ID: id, Addr: addr, Version: c.Version},
		Local:     rt.r,
		Logger:    rt.logger,
		Publisher: pc,
	})
	if err != nil {
		return fmt.Errorf("joining the cluster as node %s: %w", id, err)
	}
	rt.node = node
	// The serve lease is per node: nodes may share a host name. So are
	// deployments: each node deploys to its own outputs what any node stored.
	rt.host, rt.deployAs = id, id
	rt.logger.Info("cluster node registered; pending challenges loaded", "node", id, "address", addr)
	return nil
}

// ownership spreads renewals over the live nodes that keep each certificate (rendezvous
// hashing, so a node's death moves only its own certificates): the keeper orders only what
// this node owns, and looks again when the set of nodes changes. A certificate no live node
// is registered as keeping yet (registration lags a reload by a moment) is owned by every
// keeper: the per-certificate lock still lets only one of them order it.
func (rt *runtime) ownership(opts *manager.KeepOptions) {
	if rt.node == nil {
		return
	}
	self := rt.node.Info().ID
	opts.Owns = func(certID string) bool {
		// The rule of cluster.Renewer, which "tlsalpn list" shows.
		owner := cluster.Owner(certID, rt.node.Keepers(certID))
		return owner == "" || owner == self
	}
	opts.OwnersChanged = rt.node.MembersChanged()
}

// announceKeeps records in this node's registration which certificates it keeps, so that each
// certificate's renewal can be spread over the nodes that keep it (cluster.Node.Keepers).
func (rt *runtime) announceKeeps(ctx context.Context, specs []manager.Spec) {
	if rt.node == nil {
		return
	}
	ids := make([]string, len(specs))
	for i, s := range specs {
		ids[i] = s.ID()
	}
	if err := rt.node.SetKeeps(ctx, ids); err != nil {
		// Loud: until the registration is written again (the next reload,
		// or the session renewed), renewals are spread as if this node
		// kept none of its certificates.
		rt.logger.Error("cluster: the certificates this node keeps are not registered; the other nodes will not count it among their keepers until the next reload (SIGHUP) or the session is renewed",
			"node", rt.node.Info().ID, "certificates", len(ids), "error", err)
	}
}
