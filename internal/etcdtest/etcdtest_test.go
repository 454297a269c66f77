package etcdtest

import (
	"context"
	"testing"
	"time"
)

func TestCluster(t *testing.T) {
	c := Start(t, 3)
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v1"); err != nil {
		t.Fatal(err)
	}
	leader := c.Leader(t)
	c.Kill(leader)
	// A Put forwarded to a leader that just died waits for etcd's own request timeout and
	// fails; the next one reaches the new leader.
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Put(pctx, "k", "v2")
		pcancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("put with one member of three killed: %v", err)
		}
	}
	c.Restart(leader)
	c.StopAll()
	c.StartAll()
	r, err := cli.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v2" {
		t.Fatalf("after restart of all members: %v", r.Kvs)
	}
}

func TestTLSAndAuth(t *testing.T) {
	c := Start(t, 1, WithTLS(), WithAuth("alice", "secret"))
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	ca, cert, key := c.ClientTLS()
	if ca == "" || cert == "" || key == "" {
		t.Fatal("ClientTLS: empty file names")
	}
	// With auth on, a restarted member is waited for as root.
	c.Restart(0)
	if _, err := cli.Get(ctx, "k"); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}
