package cluster

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
)

// BenchmarkPublishReady measures the time from "order placed" to "ready": how long Publish
// takes to return (every live node loaded the challenge and acknowledged it in etcd, and the
// preflight validated each node on its own address) with 1, 3 and 5 nodes, each a node with a
// store (a session) and a responder of its own, on a three-member etcd. It is the cost a
// cluster adds to each order, next to the CA's own work (about a second). p50, p99 and max
// are over 50 publications. Run it alone:
//
//	go test -run '^$' -bench PublishReady -benchtime 1x ./cluster/
func BenchmarkPublishReady(b *testing.B) {
	c := etcdtest.Start(b, 3)
	for _, nodes := range []int{1, 3, 5} {
		b.Run(strconv.Itoa(nodes)+"-nodes", func(b *testing.B) {
			for b.Loop() {
				took := publishReady(b, c, fmt.Sprintf("ready-bench/%d-%d", nodes, time.Now().UnixNano()), nodes, 50)
				slices.Sort(took)
				p := func(q float64) time.Duration { return took[min(len(took)-1, int(q*float64(len(took))))] }
				b.ReportMetric(float64(p(0.50).Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99-ms")
				b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
			}
		})
	}
}

// TestPublishReady is the benchmark's setup, small: with three nodes, Publish says ready
// twice. (How long it takes is the benchmark's business, not a test's: wall-clock time on a
// shared machine is no pass/fail criterion.)
func TestPublishReady(t *testing.T) {
	c := etcdtest.Start(t, 1)
	for i, took := range publishReady(t, c, "ready-test", 3, 2) {
		t.Logf("publication %d ready after %s", i+1, took.Round(100*time.Microsecond))
	}
}

// publishReady starts nodes nodes under prefix and returns how long each of rounds
// publications by the first node took to be ready; each challenge is unpublished before the
// next.
func publishReady(tb testing.TB, c *etcdtest.Cluster, prefix string, nodes, rounds int) []time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second+time.Duration(rounds)*2*time.Second)
	defer cancel()
	var ns []*testNode
	for i := range nodes {
		ns = append(ns, startNode(tb, c, prefix, "n"+strconv.Itoa(i+1)))
	}
	// Every node sees every other before the first publication: a node still unknown to the
	// publisher would not be waited for.
	for _, n := range ns {
		for len(n.node.Members()) != nodes {
			select {
			case <-ctx.Done():
				tb.Fatalf("node %s sees %d members, want %d", n.node.Info().ID, len(n.node.Members()), nodes)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	pub := ns[0].node.Publisher()
	var times []time.Duration
	for i := range rounds {
		name := fmt.Sprintf("r%d.example", i)
		cert, _ := testChallenge(tb, name)
		start := time.Now()
		if _, err := pub.Publish(ctx, name, cert); err != nil {
			tb.Fatalf("publication %d with %d nodes: %v", i+1, nodes, err)
		}
		times = append(times, time.Since(start))
		pub.Unpublish(ctx, name)
	}
	return times
}
