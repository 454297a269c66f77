package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/check"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage"
	"github.com/tlsalpn/tlsalpn/storage/etcd"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// openStore opens a Store of its own (its own session: as another process would) on c.
func openStore(t testing.TB, c *etcdtest.Cluster, prefix string) *etcd.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := etcd.Open(ctx, etcd.Config{Endpoints: c.Endpoints(), Prefix: prefix, EncryptionKey: testKey, SessionTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testNode is a node as serve runs it: a store of its own, a responder answering on a loopback
// listener, and the cluster node on top.
type testNode struct {
	store *etcd.Store
	r     *responder.Responder
	addr  string
	node  *Node
}

func startNode(t testing.TB, c *etcdtest.Cluster, prefix, id string) *testNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := responder.New()
	served := make(chan struct{})
	go func() { r.Serve(ctx, ln); close(served) }()
	tn := &testNode{store: openStore(t, c, prefix), r: r, addr: ln.Addr().String()}
	tn.node, err = Start(ctx, Config{Storage: tn.store, Info: Info{ID: id, Addr: tn.addr, Version: "test"}, Local: r,
		Publisher: PublisherConfig{AckTimeout: 3 * time.Second}})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.node.Stop(); cancel(); <-served })
	return tn
}

func testChallenge(t testing.TB, name string) (*tls.Certificate, string) {
	t.Helper()
	keyAuth := "token-" + name + ".thumbprint"
	cert, err := challenge.Build(challenge.Identifier{Type: challenge.DNS, Value: name}, keyAuth)
	if err != nil {
		t.Fatal(err)
	}
	return cert, keyAuth
}

// validate checks addr as the CA would, with the key authorization.
func validate(ctx context.Context, addr, name, keyAuth string) *check.Report {
	host, port, _ := net.SplitHostPort(addr)
	ap, _ := net.ResolveTCPAddr("tcp", net.JoinHostPort(host, port))
	c := &check.Checker{Addresses: nil, Timeout: 3 * time.Second, SkipProduction: true}
	c.Addresses = append(c.Addresses, ap.AddrPort().Addr())
	return c.Check(ctx, check.Target{ID: challenge.Identifier{Type: challenge.DNS, Value: name}, Port: ap.Port, KeyAuthorization: keyAuth})
}

// eventually polls cond every 20 ms for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCluster(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	tests := []struct {
		name string
		run  func(t *testing.T, prefix string)
	}{
		{"published to every node, served, withdrawn", func(t *testing.T, prefix string) {
			nodes := []*testNode{startNode(t, c, prefix, "n1"), startNode(t, c, prefix, "n2"), startNode(t, c, prefix, "n3")}
			got, err := Nodes(ctx, nodes[0].store)
			if err != nil || len(got) != 3 || got[0].ID != "n1" || got[2].Addr != nodes[2].addr || got[1].Version != "test" {
				t.Fatalf("Nodes = %+v, %v", got, err)
			}
			cert, keyAuth := testChallenge(t, "a.example")
			// No checks of the nodes' addresses here: only the validation below may say "served".
			pub, err := NewPublisher(PublisherConfig{Storage: nodes[0].store, Self: "n1", CheckTimeout: -1})
			if err != nil {
				t.Fatal(err)
			}
			seen, err := pub.Publish(ctx, "a.example", cert)
			if err != nil {
				t.Fatal(err)
			}
			// Publish returned: every node holds it already, none waits for storage.
			for i, n := range nodes {
				if !n.r.IsPending("a.example") {
					t.Fatalf("node %d does not hold the challenge when Publish returned", i+1)
				}
			}
			select {
			case <-seen:
				t.Fatal("served before any validation")
			default:
			}
			if rep := validate(ctx, nodes[2].addr, "a.example", keyAuth); !rep.CA.Pass {
				t.Fatalf("node 3 fails validation: %s", rep.CA.Problem)
			}
			select {
			case <-seen:
			case <-time.After(5 * time.Second):
				t.Fatal("a validation served by node 3 was not relayed to the publisher on node 1")
			}
			if err := pub.Unpublish(ctx, "a.example"); err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, "every node withdraws", func() bool {
				for _, n := range nodes {
					if n.r.IsPending("a.example") {
						return false
					}
				}
				return true
			})
			left, _ := nodes[0].store.List(ctx, storage.ClusterPrefix, true)
			for _, k := range left {
				if !strings.HasPrefix(k, storage.ClusterNodesPrefix+"/") {
					t.Errorf("left in storage after Unpublish: %s", k)
				}
			}
		}},
		{"two challenges for one name take turns", func(t *testing.T, prefix string) {
			n1 := startNode(t, c, prefix, "n1")
			pub := n1.node.Publisher()
			first, _ := testChallenge(t, "f.example")
			second, keyAuth2 := testChallenge(t, "f.example")
			second, _ = challenge.Build(challenge.Identifier{Type: challenge.DNS, Value: "f.example"}, keyAuth2+"2")
			if _, err := pub.Publish(ctx, "f.example", first); err != nil {
				t.Fatal(err)
			}
			published := make(chan error, 1)
			go func() {
				_, err := pub.Publish(ctx, "f.example", second)
				published <- err
			}()
			select {
			case err := <-published:
				t.Fatalf("second Publish for a pending name returned (%v) before the first was withdrawn", err)
			case <-time.After(300 * time.Millisecond):
			}
			pub.Unpublish(ctx, "f.example")
			if err := <-published; err != nil {
				t.Fatal(err)
			}
			if rep := validate(ctx, n1.addr, "f.example", keyAuth2+"2"); !rep.CA.Pass {
				t.Fatalf("the second challenge is not the one served: %s", rep.CA.Problem)
			}
			pub.Unpublish(ctx, "f.example")
		}},
		{"a challenge the responder refused once is loaded again", func(t *testing.T, prefix string) {
			n1 := startNode(t, c, prefix, "n1")
			// n2's responder refuses its first challenge, as when steering cannot be turned to
			// relay at that moment.
			var refused atomic.Bool
			r := responder.New(responder.WithPendingHook(func(ctx context.Context, pending bool) error {
				if pending && refused.CompareAndSwap(false, true) {
					return errors.New("steering could not be turned to relay")
				}
				return nil
			}))
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			sctx, stop := context.WithCancel(ctx)
			defer stop()
			go r.Serve(sctx, ln)
			n2, err := Start(sctx, Config{Storage: openStore(t, c, prefix), Info: Info{ID: "n2", Addr: ln.Addr().String()}, Local: r})
			if err != nil {
				t.Fatal(err)
			}
			defer n2.Stop()
			cert, _ := testChallenge(t, "i.example")
			if _, err := n1.node.Publisher().Publish(ctx, "i.example", cert); err != nil {
				t.Fatalf("with n2 refusing once: %v", err)
			}
			if !refused.Load() || !r.IsPending("i.example") {
				t.Fatalf("refused %v, pending on n2 %v", refused.Load(), r.IsPending("i.example"))
			}
			n1.node.Publisher().Unpublish(ctx, "i.example")
		}},
		{"a node that starts later catches up before Start returns", func(t *testing.T, prefix string) {
			n1 := startNode(t, c, prefix, "n1")
			cert, _ := testChallenge(t, "b.example")
			if _, err := n1.node.Publisher().Publish(ctx, "b.example", cert); err != nil {
				t.Fatal(err)
			}
			n2 := startNode(t, c, prefix, "n2")
			if !n2.r.IsPending("b.example") {
				t.Fatal("a node started after Publish does not hold the challenge when Start returns")
			}
		}},
		{"what a dead publisher published is withdrawn", func(t *testing.T, prefix string) {
			n1 := startNode(t, c, prefix, "n1")
			cli := openStore(t, c, prefix)
			pub, err := NewPublisher(PublisherConfig{Storage: cli, Self: "issue@test"})
			if err != nil {
				t.Fatal(err)
			}
			cert, _ := testChallenge(t, "c.example")
			if _, err := pub.Publish(ctx, "c.example", cert); err != nil {
				t.Fatal(err)
			}
			if !n1.r.IsPending("c.example") {
				t.Fatal("not held after Publish")
			}
			cli.Close() // the publishing process ends without Unpublish: its lease goes
			eventually(t, 5*time.Second, "the node withdraws the dead publisher's challenge", func() bool { return !n1.r.IsPending("c.example") })
		}},
		{"members follow nodes coming and going, from memory", func(t *testing.T, prefix string) {
			n1 := startNode(t, c, prefix, "n1")
			if got := n1.node.Members(); !slices.Equal(got, []string{"n1"}) {
				t.Fatalf("Members = %v", got)
			}
			select {
			case <-n1.node.MembersChanged(): // the first list
			default:
			}
			n2 := startNode(t, c, prefix, "n2")
			eventually(t, 5*time.Second, "n1 sees n2", func() bool { return slices.Equal(n1.node.Members(), []string{"n1", "n2"}) })
			select {
			case <-n1.node.MembersChanged():
			case <-time.After(time.Second):
				t.Fatal("no change delivered when n2 came")
			}
			// Who keeps which certificate, for spreading each one's renewal over its keepers.
			if err := n1.node.SetKeeps(ctx, []string{"b.example", "a.example"}); err != nil {
				t.Fatal(err)
			}
			if err := n2.node.SetKeeps(ctx, []string{"b.example"}); err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, "n1 sees what n2 keeps", func() bool { return slices.Equal(n1.node.Keepers("b.example"), []string{"n1", "n2"}) })
			if got := n1.node.Keepers("a.example"); !slices.Equal(got, []string{"n1"}) {
				t.Errorf("Keepers(a.example) = %v", got)
			}
			if got := n2.node.Keepers("c.example"); len(got) != 0 {
				t.Errorf("Keepers(c.example) = %v", got)
			}
			select {
			case <-n1.node.MembersChanged():
			case <-time.After(time.Second):
				t.Fatal("no change delivered when what the nodes keep changed")
			}
			n2.node.Stop()
			eventually(t, 5*time.Second, "n1 sees n2 go", func() bool { return slices.Equal(n1.node.Members(), []string{"n1"}) })
			if got := n1.node.Keepers("b.example"); !slices.Equal(got, []string{"n1"}) {
				t.Errorf("Keepers(b.example) after n2 left = %v", got)
			}
		}},
		{"a second live node with the same id refuses to start", func(t *testing.T, prefix string) {
			n1 := startNode(t, c, prefix, "n1")
			_, err := Start(ctx, Config{Storage: openStore(t, c, prefix), Info: Info{ID: "n1", Addr: "127.0.0.1:1"}, Local: responder.New(), DuplicateWait: 300 * time.Millisecond})
			var dup *DuplicateNodeError
			if !errors.As(err, &dup) || dup.Other.Addr != n1.addr {
				t.Fatalf("second n1: err = %v, want a DuplicateNodeError naming %s", err, n1.addr)
			}
		}},
		{"a node that does not acknowledge is named, and nothing stays published", func(t *testing.T, prefix string) {
			n1 := startNode(t, c, prefix, "n1")
			ghost := openStore(t, c, prefix) // registered, follows nothing
			if err := ghost.PutEphemeral(ctx, storage.ClusterNodeKey("ghost"), []byte(`{"id":"ghost","addr":"127.0.0.1:1"}`)); err != nil {
				t.Fatal(err)
			}
			pub, _ := NewPublisher(PublisherConfig{Storage: n1.store, Self: "n1", AckTimeout: 700 * time.Millisecond})
			cert, _ := testChallenge(t, "d.example")
			_, err := pub.Publish(ctx, "d.example", cert)
			var nr *NotReadyError
			if !errors.As(err, &nr) || len(nr.Missing) != 1 || nr.Missing[0] != "ghost" || !strings.Contains(err.Error(), "ghost") {
				t.Fatalf("err = %v, want a NotReadyError naming ghost", err)
			}
			if _, err := n1.store.Get(ctx, storage.ClusterChallengeKey("d.example")); !errors.Is(err, storage.ErrNotExist) {
				t.Fatalf("challenge still stored after a failed Publish: %v", err)
			}
			eventually(t, 5*time.Second, "n1 withdraws it", func() bool { return !n1.r.IsPending("d.example") })
		}},
		{"a node that dies while its acknowledgement is awaited is not waited for, nor checked", func(t *testing.T, prefix string) {
			n1 := startNode(t, c, prefix, "n1")
			ghost := openStore(t, c, prefix)
			if err := ghost.PutEphemeral(ctx, storage.ClusterNodeKey("ghost"), []byte(`{"id":"ghost","addr":"127.0.0.1:1"}`)); err != nil {
				t.Fatal(err)
			}
			time.AfterFunc(300*time.Millisecond, func() { ghost.Close() })
			pub, _ := NewPublisher(PublisherConfig{Storage: n1.store, Self: "n1", AckTimeout: 5 * time.Second})
			cert, _ := testChallenge(t, "h.example")
			if _, err := pub.Publish(ctx, "h.example", cert); err != nil {
				t.Fatalf("with the unacknowledging node gone: %v", err)
			}
			pub.Unpublish(ctx, "h.example")
		}},
		{"a node whose address does not answer fails the check, named", func(t *testing.T, prefix string) {
			startNode(t, c, prefix, "n1")
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			dead := ln.Addr().String()
			ln.Close()
			st := openStore(t, c, prefix)
			nctx, ncancel := context.WithCancel(ctx)
			defer ncancel()
			wrong, err := Start(nctx, Config{Storage: st, Info: Info{ID: "wrong-addr", Addr: dead}, Local: responder.New()})
			if err != nil {
				t.Fatal(err)
			}
			defer wrong.Stop()
			cert, _ := testChallenge(t, "e.example")
			_, err = wrong.Publisher().Publish(ctx, "e.example", cert)
			var nr *NotReadyError
			if !errors.As(err, &nr) || nr.Failed["wrong-addr"] == "" || nr.Failed["n1"] != "" {
				t.Fatalf("err = %v, want a NotReadyError with the check of wrong-addr failed and n1 passed", err)
			}
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, "cluster-test/"+string(rune('a'+i))) })
	}
}

// TestNodeSessionLoss: etcd gone for longer than the session's TTL takes the node's record with
// it; once etcd is back, the node registers again on its own.
func TestNodeSessionLoss(t *testing.T) {
	c := etcdtest.Start(t, 1)
	n := startNode(t, c, "session-loss", "n1")
	lost := n.store.SessionDone()
	c.Kill(0)
	select {
	case <-lost:
	case <-time.After(15 * time.Second):
		t.Fatal("session not lost with etcd down")
	}
	c.Restart(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	other := openStore(t, c, "session-loss")
	eventually(t, 20*time.Second, "n1 registered again", func() bool {
		got, err := Nodes(ctx, other)
		return err == nil && len(got) == 1 && got[0].ID == "n1"
	})
	// And it is the new session's record: it outlives the old lease's TTL.
	time.Sleep(3 * time.Second)
	if got, err := Nodes(ctx, other); err != nil || len(got) != 1 {
		t.Fatalf("after the old TTL: %v, %v", got, err)
	}
}

// TestHandshakeWithoutStorage: a node answers a published challenge from memory; with every
// etcd member down, the validation still passes.
func TestHandshakeWithoutStorage(t *testing.T) {
	c := etcdtest.Start(t, 1)
	n := startNode(t, c, "no-storage", "n1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cert, keyAuth := testChallenge(t, "g.example")
	if _, err := n.node.Publisher().Publish(ctx, "g.example", cert); err != nil {
		t.Fatal(err)
	}
	c.Kill(0)
	if rep := validate(ctx, n.addr, "g.example", keyAuth); !rep.CA.Pass {
		t.Fatalf("with etcd down: %s", rep.CA.Problem)
	}
	c.Restart(0) // so that the node leaves soon, not after its timeouts
}
