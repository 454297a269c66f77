package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tlsalpn/tlsalpn/cluster"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/storage"
)

// clusterPublisher returns the publisher of the cluster whose state store holds, when store is
// a cluster's (etcd) and at least one node is live: a command run there (issue, renew) then
// publishes its challenges to the nodes, which the CA reaches, instead of binding a listener
// of its own. It returns nil on other storage and when no node is live (the command then
// answers the CA itself, as on one host).
func clusterPublisher(ctx context.Context, store storage.Storage, logger *slog.Logger, noChecks bool) (*cluster.Publisher, []cluster.Info, error) {
	if _, ok := store.(storage.Ephemeral); !ok {
		return nil, nil, nil
	}
	nodes, err := cluster.Nodes(ctx, store)
	if err != nil {
		return nil, nil, err
	}
	if len(nodes) == 0 {
		return nil, nil, nil
	}
	pc := cluster.PublisherConfig{Storage: store, Logger: logger}
	if noChecks {
		pc.CheckTimeout = -1
	}
	pub, err := cluster.NewPublisher(pc)
	if err != nil {
		return nil, nil, err
	}
	return pub, nodes, nil
}

// useCluster makes the pool publish through the cluster's nodes when store is a cluster's and
// nodes are live, and says so; the nodes' publisher checks each node itself, so the pool's
// preflight of a local listener, which is not bound then, is dropped. It reports whether it
// did.
//
// A pool without a preflight (--no-preflight) makes the publisher skip its checks of each
// node's address too: from a machine outside the nodes' network those may not be reachable.
func useCluster(ctx context.Context, store storage.Storage, is *manager.Pool, logger *slog.Logger) (bool, error) {
	pub, nodes, err := clusterPublisher(ctx, store, logger, is.Preflight == nil)
	if err != nil || pub == nil {
		return false, err
	}
	is.Publisher, is.Preflight = pub, nil
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.ID
	}
	logger.Info("challenges are published to the cluster's nodes, which answer the CA; no listener is bound here", "nodes", ids)
	return true, nil
}

// checkNodeFlags refuses --node-id and --node-address that cannot be used: on storage that is
// not a cluster's (a directory), or malformed, before anything is opened.
func checkNodeFlags(f *serveFlags, storageLoc string) error {
	if f.nodeID == "" && f.nodeAddress == "" {
		return nil
	}
	if !strings.HasPrefix(storageLoc, "etcd://") {
		return usagef("--node-id and --node-address are for cluster mode, on etcd storage (--storage etcd://HOST:PORT/PREFIX); %s is a directory", storageLoc)
	}
	if f.nodeID != "" {
		if err := cluster.ValidateID(f.nodeID); err != nil {
			return usagef("--node-id: %v", err)
		}
	}
	if f.nodeAddress != "" {
		if _, port, err := net.SplitHostPort(f.nodeAddress); err != nil || port == "" {
			return usagef("--node-address %q: want HOST:PORT, the address the balancer and the other nodes reach this node at", f.nodeAddress)
		}
	}
	return nil
}

// printNodes writes the live nodes of the cluster whose state store holds, for people; it
// writes nothing on storage that is not a cluster's.
func printNodes(ctx context.Context, w io.Writer, store storage.Storage) error {
	if _, ok := store.(storage.Ephemeral); !ok {
		return nil
	}
	nodes, err := cluster.Nodes(ctx, store)
	if err != nil {
		return err
	}
	if len(nodes) == 0 {
		fmt.Fprintln(w, "no live cluster node: no tlsalpn serve runs on this storage")
		return nil
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tVERSION\tUP SINCE\tKEEPS")
	for _, n := range nodes {
		keeps := fmt.Sprintf("%d certificates", len(n.Keeps))
		if len(n.Keeps) == 1 {
			keeps = "1 certificate"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.ID, n.Addr, orDash(n.Version), n.Started.Local().Format(time.DateTime), keeps)
	}
	return tw.Flush()
}
