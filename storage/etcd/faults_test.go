package etcd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/internal/syncbuf"
	"github.com/tlsalpn/tlsalpn/storage"
)

// Helper roles: the test binary re-executes itself to hold a lock in a process that a test
// can kill.
const (
	helperEnv      = "TLSALPN_STORAGE_ETCD_HELPER"
	helperEndpoint = "TLSALPN_STORAGE_ETCD_ENDPOINTS"
	helperPrefix   = "TLSALPN_STORAGE_ETCD_PREFIX"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(runHelper(role))
	}
	os.Exit(m.Run())
}

func runHelper(role string) int {
	ctx := context.Background()
	s, err := Open(ctx, Config{
		Endpoints:  strings.Split(os.Getenv(helperEndpoint), ","),
		Prefix:     os.Getenv(helperPrefix),
		SessionTTL: 2 * time.Second,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	switch role {
	case "hold-lock":
		if _, err := s.Lock(ctx, "lineages/example.com"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("locked")
		os.Stdin.Read(make([]byte, 1)) // until killed
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper role", role)
	return 1
}

// TestLockFreedWhenHolderKilled: a holder killed with SIGKILL cannot unlock; its lease expires
// and the lock is free within the session TTL and a little.
func TestLockFreedWhenHolderKilled(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, 3)
	s := open(t, c, "lockkill")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=hold-lock", helperEndpoint+"="+strings.Join(c.Endpoints(), ","),
		helperPrefix+"=lockkill", "GORACE=atexit_sleep_ms=0")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	short, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if _, err := s.Lock(short, "lineages/example.com"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock while the helper holds it = %v, want DeadlineExceeded", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	killed := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second+3*time.Second)
	defer cancel()
	unlock, err := s.Lock(ctx, "lineages/example.com")
	if err != nil {
		t.Fatalf("Lock after the holder was killed: %v (after %v)", err, time.Since(killed))
	}
	defer unlock()
	t.Logf("lock free %v after SIGKILL of its holder (session TTL 2s)", time.Since(killed).Round(10*time.Millisecond))
}

// TestOneMemberKilled: with one member of three gone, the leader at that, every operation
// still works (requests in flight to the dead leader are made again on the new one).
func TestOneMemberKilled(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, 3)
	s := open(t, c, "onekilled")
	ctx := t.Context()
	if err := s.Put(ctx, "a/b", []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}
	leader := c.Leader(t)
	c.Kill(leader)
	start := time.Now()
	for j := range 10 {
		k := fmt.Sprintf("k/%d", j)
		if err := s.Put(ctx, k, []byte(k), 0o600); err != nil {
			t.Fatalf("leader killed: Put: %v", err)
		}
		if got, err := s.Get(ctx, k); err != nil || string(got) != k {
			t.Fatalf("leader killed: Get = %q, %v", got, err)
		}
	}
	t.Logf("10 Put+Get right after the leader was killed: %v", time.Since(start).Round(time.Millisecond))
	if got, err := s.Get(ctx, "a/b"); err != nil || string(got) != "before" {
		t.Fatalf("leader killed: Get of an older key = %q, %v", got, err)
	}
	if keys, err := s.List(ctx, "k", true); err != nil || len(keys) != 10 {
		t.Fatalf("leader killed: List = %q, %v", keys, err)
	}
	unlock, err := s.Lock(ctx, "l")
	if err != nil {
		t.Fatalf("leader killed: Lock: %v", err)
	}
	unlock()
	if err := s.PutIfVersion(ctx, "v", []byte("x"), 0o644, 0); err != nil {
		t.Fatalf("leader killed: PutIfVersion: %v", err)
	}
}

// TestWatchAcrossFailures: a watch survives the member it is connected to being killed, and all
// members being stopped and started again, without missing or repeating a change.
func TestWatchAcrossFailures(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, 3)
	s := open(t, c, "watchfail", func(cfg *Config) { cfg.Endpoints = c.Endpoints()[:1] })
	w := open(t, c, "watchfail") // the writer, on every member
	ctx := t.Context()
	events, err := s.Watch(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{}
	n := 0
	write := func(count int) {
		t.Helper()
		for range count {
			n++
			k := fmt.Sprintf("w/%03d", n)
			if err := w.Put(ctx, k, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			want[k]++
		}
	}
	write(5)
	// The watching Store knows only member 0: killing it cuts the watch. Members 1 and 2 keep
	// the quorum and take writes meanwhile; the watch resumes when member 0 is back.
	c.Kill(0)
	write(5)
	c.Restart(0)
	write(5)
	c.StopAll()
	c.StartAll()
	write(5)
	got := map[string]int{}
	deadline := time.After(20 * time.Second)
	for len(got) < len(want) {
		select {
		case ev := <-events:
			got[ev.Key]++
		case <-deadline:
			t.Fatalf("after 20s, %d of %d events: missing %v", len(got), len(want), missing(want, got))
		}
	}
	// Anything more within a moment is a duplicate.
	select {
	case ev := <-events:
		got[ev.Key]++
	case <-time.After(500 * time.Millisecond):
	}
	for k, v := range got {
		if v != 1 || want[k] != 1 {
			t.Errorf("event for %q seen %d times (want %d)", k, v, want[k])
		}
	}
}

func missing(want, got map[string]int) []string {
	var m []string
	for k := range want {
		if got[k] == 0 {
			m = append(m, k)
		}
	}
	return m
}

// TestWatchCompaction: a watch that falls behind a compaction says so in the log, lists the
// prefix and reports the differences from what it knew, then goes on watching.
func TestWatchCompaction(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, 3)
	var logs syncBuffer
	s := open(t, c, "compact", func(cfg *Config) {
		cfg.Endpoints = c.Endpoints()[:1]
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	w := open(t, c, "compact", func(cfg *Config) { cfg.Endpoints = c.Endpoints()[1:] })
	ctx := t.Context()
	for _, k := range []string{"a/keep", "a/change", "a/delete"} {
		if err := w.Put(ctx, k, []byte("v0"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	events, err := s.Watch(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	// Cut the watching Store off (it knows member 0 only), change things, compact them away.
	c.Kill(0)
	if err := w.Put(ctx, "a/change", []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.Delete(ctx, "a/delete"); err != nil {
		t.Fatal(err)
	}
	if err := w.Put(ctx, "a/new", []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.Put(ctx, "b/outside", []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	raw := c.Client(t)
	r, err := raw.Get(ctx, "compact/a/new")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Compact(ctx, r.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	c.Restart(0)
	want := map[storage.Event]bool{
		{Key: "a/change"}:                true,
		{Key: "a/delete", Deleted: true}: true,
		{Key: "a/new"}:                   true,
	}
	got := map[storage.Event]int{}
	deadline := time.After(20 * time.Second)
	for len(got) < len(want) {
		select {
		case ev := <-events:
			got[ev]++
		case <-deadline:
			t.Fatalf("after 20s, events %v, want %v", got, want)
		}
	}
	// The watch goes on after the resynchronization.
	if err := w.Put(ctx, "a/after", []byte("v"), 0o644); err != nil {
		t.Fatal(err)
	}
	for ev := range events {
		if ev == (storage.Event{Key: "a/after"}) {
			break
		}
		got[ev]++
	}
	for ev, n := range got {
		if !want[ev] || n != 1 {
			t.Errorf("event %+v seen %d times; want once each of %v", ev, n, want)
		}
	}
	if !strings.Contains(logs.String(), "compaction") {
		t.Errorf("no log line about the compaction; log:\n%s", logs.String())
	}
}

// syncBuffer is a log or stderr written beside the test that reads it.
type syncBuffer = syncbuf.Buffer

// TestUnavailable: with etcd gone, calls fail within the request timeout with ErrUnavailable.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, 1)
	s := open(t, c, "unavail", func(cfg *Config) { cfg.RequestTimeout = 2 * time.Second })
	c.Kill(0)
	start := time.Now()
	_, err := s.Get(context.Background(), "a")
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), `"a"`) {
		t.Errorf("Get with etcd down = %v, want ErrUnavailable naming the key", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Get with etcd down took %v, want about the 2s request timeout", d)
	}
	err = s.Put(context.Background(), "a", []byte("x"), 0o644)
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Put with etcd down = %v, want ErrUnavailable", err)
	}
	// A PutEphemeral waiting for a lease does not hold up SessionDone.
	putDone := make(chan error, 1)
	go func() { putDone <- s.PutEphemeral(context.Background(), "cluster/nodes/n", []byte("n")) }()
	time.Sleep(100 * time.Millisecond)
	start = time.Now()
	s.SessionDone()
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("SessionDone waited %v for a session being made", d)
	}
	if err := <-putDone; !errors.Is(err, ErrUnavailable) {
		t.Errorf("PutEphemeral with etcd down = %v, want ErrUnavailable", err)
	}
	start = time.Now()
	_, err = Open(context.Background(), Config{Endpoints: c.Endpoints(), DialTimeout: time.Second})
	if !errors.Is(err, ErrUnavailable) || time.Since(start) > 3*time.Second {
		t.Errorf("Open with etcd down = %v after %v, want ErrUnavailable after the 1s dial timeout", err, time.Since(start))
	}
	c.Restart(0)
	// The Store reconnects on its own, soon: its reconnection backoff is capped at a second.
	back := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Put(ctx, "a", []byte("x"), 0o644); err != nil {
		t.Errorf("Put after etcd came back: %v", err)
	}
	if d := time.Since(back); d > 2*time.Second {
		t.Errorf("Put after etcd came back took %v, want a reconnection within about a second", d)
	}
	t.Logf("first Put after etcd came back: %v", time.Since(back).Round(time.Millisecond))
}

// TestEphemeralSessionLost: when the session's lease is gone, its keys are gone, SessionDone
// closes, and the next PutEphemeral makes a new session.
func TestEphemeralSessionLost(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := open(t, c, "eph")
	ctx := t.Context()
	events, err := s.Watch(ctx, "cluster")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cluster/nodes/n1", "cluster/challenges/n1/example.com"} {
		if err := s.PutEphemeral(ctx, k, []byte("n1")); err != nil {
			t.Fatal(err)
		}
	}
	done := s.SessionDone()
	raw := c.Client(t)
	s.eph.mu.Lock()
	lease := s.eph.sess.Lease()
	s.eph.mu.Unlock()
	if _, err := raw.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	// The lease's keys go in one revision: the watch reports each.
	gone := map[storage.Event]bool{}
	for len(gone) < 2 {
		select {
		case ev := <-events:
			if ev.Deleted {
				gone[ev] = true
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("deletions seen after the lease was revoked: %v; want both keys", gone)
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("SessionDone not closed 5s after the lease was revoked")
	}
	if _, err := s.Get(ctx, "cluster/nodes/n1"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Get of the ephemeral key after the session was lost = %v, want ErrNotExist", err)
	}
	if err := s.PutEphemeral(ctx, "cluster/nodes/n1", []byte("again")); err != nil {
		t.Fatalf("PutEphemeral after the session was lost: %v", err)
	}
	select {
	case <-s.SessionDone():
		t.Error("the new session's SessionDone is closed")
	default:
	}
	// Close revokes the lease: the key goes at once, and SessionDone says so.
	done = s.SessionDone()
	s.Close()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Error("SessionDone not closed by Close")
	}
	r, err := raw.Get(ctx, "eph/cluster/nodes/n1")
	if err != nil || len(r.Kvs) != 0 {
		t.Errorf("after Close, the ephemeral key: %v, %v", r.Kvs, err)
	}
}

// TestWatchQuorumLost: the member the watch is on loses its leader (both others killed); etcd
// ends the watch ("no leader") and Watch makes it again, from the revision after the last one
// seen, until the quorum is back: changes made then are all reported, once.
func TestWatchQuorumLost(t *testing.T) {
	t.Parallel()
	c := etcdtest.Start(t, 3)
	var logs syncBuffer
	s := open(t, c, "quorum", func(cfg *Config) {
		cfg.Endpoints = c.Endpoints()[:1]
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	w := open(t, c, "quorum", func(cfg *Config) { cfg.Endpoints = c.Endpoints()[1:] })
	ctx := t.Context()
	events, err := s.Watch(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(1)
	c.Kill(2)
	// Member 0 notices it has no leader within an election timeout or two.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "watch ended") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "watch ended") {
		t.Fatalf("the watch did not end without a leader; log:\n%s", logs.String())
	}
	c.StartAll()
	want := map[string]bool{}
	for i := range 10 {
		k := fmt.Sprintf("q/%d", i)
		if err := w.Put(ctx, k, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		want[k] = true
	}
	got := map[string]int{}
	timeout := time.After(20 * time.Second)
	for len(got) < len(want) {
		select {
		case ev := <-events:
			got[ev.Key]++
		case <-timeout:
			t.Fatalf("after 20s, events %v; want each of %v", got, want)
		}
	}
	select {
	case ev := <-events:
		got[ev.Key]++
	case <-time.After(300 * time.Millisecond):
	}
	for k, n := range got {
		if !want[k] || n != 1 {
			t.Errorf("event for %q seen %d times", k, n)
		}
	}
}

// TestLockLostIsLogged: a holder whose lease is gone (here revoked from outside, as etcd does
// when the holder was cut off for longer than the TTL) hears of it in the log, and the lock is
// free for others.
func TestLockLostIsLogged(t *testing.T) {
	c := etcdtest.Start(t, 1)
	var logs syncBuffer
	s := open(t, c, "lost", func(cfg *Config) { cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	ctx := t.Context()
	unlock, err := s.Lock(ctx, "l")
	if err != nil {
		t.Fatal(err)
	}
	s.lockMu.Lock()
	var lease clientv3.LeaseID
	for sess := range s.lockSessions {
		lease = sess.Lease()
	}
	s.lockMu.Unlock()
	if _, err := c.Client(t).Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	other := open(t, c, "lost")
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	u2, err := other.Lock(lctx, "l")
	if err != nil {
		t.Fatalf("Lock after the holder's lease was revoked: %v", err)
	}
	u2()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "lock lost") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "lock lost") || !strings.Contains(logs.String(), "lock=l") {
		t.Errorf("no log line saying the lock was lost; log:\n%s", logs.String())
	}
	unlock() // an error or not: the lock is gone either way; it must not panic or hang
}
