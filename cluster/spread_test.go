package cluster

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

func nodeNames(n int) []string {
	nodes := make([]string, n)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("node-%02d.example.net", i)
	}
	return nodes
}

func certIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("www%d.customer%d.example.com", i%97, i)
	}
	return ids
}

// TestOwnerSpread: 10,000 certificates over 3, 5 and 50 nodes land within
// a few percent of an equal share (the bound is four standard deviations
// of a fair binomial draw, so a skewed hash fails and a fair one does
// not; a chi-squared test of the whole spread backs it), and when a node leaves only its certificates move, spread over all
// the others.
func TestOwnerSpread(t *testing.T) {
	ids := certIDs(10000)
	tests := []struct {
		nodes int
		// maxDev is the largest allowed deviation from an equal share,
		// as a fraction of that share: four standard deviations of a
		// fair draw, 5.7% for 3 nodes, 8% for 5, 28% for 50 (an equal
		// share of 200 varies by ±14 by chance alone).
		maxDev float64
	}{
		{nodes: 3, maxDev: 4 * math.Sqrt(10000*(1./3)*(2./3)) / (10000. / 3)},
		{nodes: 5, maxDev: 4 * math.Sqrt(10000*(1./5)*(4./5)) / (10000. / 5)},
		{nodes: 50, maxDev: 4 * math.Sqrt(10000*(1./50)*(49./50)) / (10000. / 50)},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d nodes", tt.nodes), func(t *testing.T) {
			nodes := nodeNames(tt.nodes)
			owner := map[string]string{}
			count := map[string]int{}
			for _, id := range ids {
				o := Owner(id, nodes)
				owner[id] = o
				count[o]++
			}
			share := float64(len(ids)) / float64(tt.nodes)
			worst := 0.0
			for _, n := range nodes {
				dev := math.Abs(float64(count[n])-share) / share
				worst = max(worst, dev)
				if dev > tt.maxDev {
					t.Errorf("%s renews %d certificates; an equal share is %.0f (off by %.1f%%, allowed %.0f%%)",
						n, count[n], share, 100*dev, 100*tt.maxDev)
				}
			}
			if len(count) != tt.nodes {
				t.Errorf("owners %v; want each of the %d nodes", count, tt.nodes)
			}
			// Pearson's chi-squared over all nodes, against its
			// degrees of freedom k plus five standard deviations
			// (sqrt(2k)): far beyond that, the hash favours nodes.
			chi2 := 0.0
			for _, n := range nodes {
				d := float64(count[n]) - share
				chi2 += d * d / share
			}
			k := float64(tt.nodes - 1)
			if chi2 > k+5*math.Sqrt(2*k) {
				t.Errorf("chi-squared %.1f over %d nodes (%v): the spread is not fair", chi2, tt.nodes, count)
			}
			t.Logf("largest deviation from an equal share: %.1f%%; chi-squared %.1f with %.0f degrees of freedom", 100*worst, chi2, k)

			// The order of the list does not matter.
			rev := slices.Clone(nodes)
			slices.Reverse(rev)
			for _, id := range ids[:500] {
				if got := Owner(id, rev); got != owner[id] {
					t.Fatalf("Owner(%q) = %q with the list reversed, %q before", id, got, owner[id])
				}
			}

			// A node leaves: only its certificates move, and they
			// spread over every remaining node.
			gone := nodes[len(nodes)/2]
			left := slices.Delete(slices.Clone(nodes), len(nodes)/2, len(nodes)/2+1)
			heirs := map[string]int{}
			for _, id := range ids {
				o := Owner(id, left)
				switch {
				case owner[id] == gone:
					heirs[o]++
				case o != owner[id]:
					t.Fatalf("%s moved from %s to %s when %s left", id, owner[id], o, gone)
				}
			}
			if len(heirs) != len(left) && count[gone] >= 10*len(left) {
				t.Errorf("%s's %d certificates went to %d of the %d remaining nodes: %v", gone, count[gone], len(heirs), len(left), heirs)
			}

			// It comes back: it takes exactly its certificates again.
			for _, id := range ids {
				if o := Owner(id, nodes); o != owner[id] {
					t.Fatalf("%s owned by %s after %s came back, %s before", id, o, gone, owner[id])
				}
			}
		})
	}
}

func TestOwnerEdges(t *testing.T) {
	tests := []struct {
		name  string
		id    string
		nodes []string
		want  string
	}{
		{name: "no nodes", id: "a.example", nodes: nil, want: ""},
		{name: "one node", id: "a.example", nodes: []string{"n1"}, want: "n1"},
		{name: "duplicates", id: "a.example", nodes: []string{"n1", "n1"}, want: "n1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Owner(tt.id, tt.nodes); got != tt.want {
				t.Errorf("Owner(%q, %q) = %q; want %q", tt.id, tt.nodes, got, tt.want)
			}
		})
	}
	// The separator between the two halves of the pair: "ab"+"c" and
	// "a"+"bc" are different pairs.
	if weight("ab", "c") == weight("a", "bc") {
		t.Error(`weight("ab", "c") == weight("a", "bc")`)
	}
}
