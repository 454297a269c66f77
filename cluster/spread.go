package cluster

import "hash/fnv"

// Owner returns the node of nodes that renews the certificate certID, by
// rendezvous (highest random weight) hashing: every node gets a weight
// computed from the pair (certID, node) alone, and the heaviest wins.
//
// Rendezvous hashing rather than a ring or "index modulo count" because
// every node computes the same answer from the same list with no
// coordination and no state, the certificates spread evenly without
// virtual nodes, and when a node leaves only the certificates it owned
// move (each to whichever remaining node weighs most for it), while a node
// that joins takes only the certificates it now wins. A renewal is never
// handed from one live node to another because a third one died.
//
// The order of nodes does not matter, and neither do duplicates. Owner
// returns "" when nodes is empty. Equal weights (a 64-bit collision) go to
// the node whose name sorts first, so that every node still agrees.
func Owner(certID string, nodes []string) string {
	var best string
	var bestWeight uint64
	for i, n := range nodes {
		w := weight(certID, n)
		if i == 0 || w > bestWeight || w == bestWeight && n < best {
			best, bestWeight = n, w
		}
	}
	return best
}

// weight is the pair's weight: FNV-1a over certID, a NUL (which neither
// a certificate name nor a node id contains, so "a"+"bc" and "ab"+"c"
// differ) and the node, then the MurmurHash3 finaliser, since FNV's high
// bits alone mix too little for the comparison to be fair.
func weight(certID, node string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(certID))
	h.Write([]byte{0})
	h.Write([]byte(node))
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
