// Package cluster runs several tlsalpn serve nodes behind one address (a DNS round robin, an L4
// balancer, anycast) on shared storage that keeps ephemeral keys (storage.Ephemeral: etcd).
//
// The CA's validation connections land on whichever node the balancer picks, so every node must
// be able to answer every pending challenge, and none may read storage while it answers: a
// handshake that waits on etcd is a validation that times out when etcd is slow. So challenges
// travel ahead of the CA instead:
//
//   - Every node registers itself (Node: id, the address it is reached at, version, start
//     time, the certificates it keeps) in a key that lives as long as the process: a node
//     that dies disappears. Each node follows the others in memory (Members, Keepers), which
//     is what renewals are spread over.
//   - The node that orders publishes each challenge certificate, with its throwaway key (never
//     the account key), in such a key (Publisher). It tells the issuer "published" only when
//     every live node has acknowledged it and a validation handshake against each node's own
//     address, done as the CA does it (package check), has passed.
//   - Every node follows the published challenges (Follower): it loads each into its own
//     responder's memory, where handshakes find it as they would on one host (and the
//     responder's pending hook turns steering to relay), acknowledges it, withdraws what was
//     deleted or whose publisher died, and says in storage when it served the CA, which the
//     publisher relays to the issuer so that it polls the CA at once.
//
// What a node keeps is in memory; storage is read when it changes (a watch), never during a
// handshake.
package cluster
