// Package storagetest is a conformance suite for storage.Storage backends, in the spirit of
// testing/fstest: every backend runs the same cases, so that state written through one behaves
// the same through another (tlsalpn storage copy moves it between them) and the issuer and
// manager never need to know which one they have. The reference is storage/fs, the first
// backend; its behaviour is what the storage package documents.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/storage"
)

// eventWait bounds waiting for a watch event; polling backends need a short poll interval.
const eventWait = 10 * time.Second

// Run runs the conformance cases as subtests. open must return empty storage, a fresh one for
// each call, and clean it up with t.Cleanup. Cases for storage.Versioned and storage.Ephemeral
// run when the storage implements them.
func Run(t *testing.T, open func(t *testing.T) storage.Storage) {
	cases := []struct {
		name string
		fn   func(*testing.T, storage.Storage)
	}{
		{"PutGet", testPutGet},
		{"InvalidArguments", testInvalidArguments},
		{"Missing", testMissing},
		{"KeyAndPrefix", testKeyAndPrefix},
		{"Delete", testDelete},
		{"List", testList},
		{"ConcurrentPutGet", testConcurrentPutGet},
		{"LockExclusive", testLockExclusive},
		{"LockContext", testLockContext},
		{"Watch", testWatch},
		{"WatchWholeStoreAndSingleKey", testWatchWholeStoreAndSingleKey},
		{"Versioned", testVersioned},
		{"Ephemeral", testEphemeral},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, open(t)) })
	}
}

func put(t *testing.T, s storage.Storage, key, value string, mode os.FileMode) {
	t.Helper()
	if err := s.Put(t.Context(), key, []byte(value), mode); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func testPutGet(t *testing.T, s storage.Storage) {
	ctx := t.Context()
	tests := []struct {
		key   string
		mode  os.FileMode
		value []byte
	}{
		{"lineages/example.com/1/key.pem", 0o600, []byte("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")},
		{"lineages/example.com/1/cert.pem", 0o644, []byte("cert")},
		{"lineages/example.com/meta.json", 0, []byte(`{"zero mode":"0600"}`)},
		{"x/read-only", 0o400, []byte("r")},
		{"x/empty", 0o644, []byte{}},
		{"x/binary", 0o644, []byte{0, 1, 2, 0xff, '\n'}},
		{"x/large", 0o644, bytes.Repeat([]byte("L"), 256<<10)},
	}
	for _, tt := range tests {
		if err := s.Put(ctx, tt.key, []byte("old"), tt.mode); err != nil {
			t.Fatalf("Put(%q, mode %#o): %v", tt.key, tt.mode, err)
		}
		before := time.Now().Add(-2 * time.Second)
		if err := s.Put(ctx, tt.key, tt.value, tt.mode); err != nil {
			t.Fatalf("Put(%q) again: %v", tt.key, err)
		}
		got, err := s.Get(ctx, tt.key)
		if err != nil || !bytes.Equal(got, tt.value) {
			t.Errorf("Get(%q) = %d bytes, %v; want %d bytes", tt.key, len(got), err, len(tt.value))
		}
		info, err := s.Stat(ctx, tt.key)
		if err != nil || info.Key != tt.key || info.Size != int64(len(tt.value)) ||
			info.Modified.Before(before) || info.Modified.After(time.Now().Add(2*time.Second)) {
			t.Errorf("Stat(%q) = %+v, %v; want size %d, modified about now", tt.key, info, err, len(tt.value))
		}
	}
}

func testInvalidArguments(t *testing.T, s storage.Storage) {
	ctx := t.Context()
	for _, key := range []string{"", "/abs", "../escape", "a/../../b", "a//b", `a\b`, "a\x00", ".tmp-x", "a/.hidden", "locks/x", "trailing/"} {
		if err := s.Put(ctx, key, []byte("v"), 0o644); err == nil {
			t.Errorf("Put(%q) succeeded", key)
		}
		if _, err := s.Get(ctx, key); err == nil || errors.Is(err, storage.ErrNotExist) {
			t.Errorf("Get(%q) = %v, want a validation error", key, err)
		}
		if _, err := s.Stat(ctx, key); err == nil {
			t.Errorf("Stat(%q) succeeded", key)
		}
		if err := s.Delete(ctx, key); err == nil {
			t.Errorf("Delete(%q) succeeded", key)
		}
		if _, err := s.Watch(ctx, key); err == nil && key != "" {
			t.Errorf("Watch(%q) succeeded", key)
		}
		if _, err := s.List(ctx, key, true); err == nil && key != "" {
			t.Errorf("List(%q) succeeded", key)
		}
	}
	if err := s.Put(ctx, "k", nil, os.ModeSetuid|0o600); err == nil {
		t.Error("Put with setuid mode succeeded")
	}
	if _, err := s.Lock(ctx, "../x"); err == nil {
		t.Error(`Lock("../x") succeeded`)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Put(canceled, "k", nil, 0o644); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with canceled context = %v, want context.Canceled", err)
	}
	if _, err := s.Lock(canceled, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Lock with canceled context = %v, want context.Canceled", err)
	}
	if keys, err := s.List(ctx, "", true); err != nil || len(keys) != 0 {
		t.Errorf("after invalid calls, List = %q, %v; want nothing stored", keys, err)
	}
}

func testMissing(t *testing.T, s storage.Storage) {
	ctx := t.Context()
	put(t, s, "a/file", "x", 0o644)
	for _, key := range []string{
		"missing",
		"a/missing",
		"a",            // a prefix, not a key
		"a/file/below", // below a key
		"a/fil",        // a string prefix of a key
	} {
		if _, err := s.Get(ctx, key); !errors.Is(err, storage.ErrNotExist) || !strings.Contains(err.Error(), key) {
			t.Errorf("Get(%q) = %v, want ErrNotExist naming the key", key, err)
		}
		if _, err := s.Stat(ctx, key); !errors.Is(err, storage.ErrNotExist) {
			t.Errorf("Stat(%q) = %v, want ErrNotExist", key, err)
		}
	}
}

// testKeyAndPrefix: a key cannot also be a prefix of other keys (a file system cannot hold
// both "a/b" and "a/b/c"), so both orders of Put fail and leave what was there.
func testKeyAndPrefix(t *testing.T, s storage.Storage) {
	ctx := t.Context()
	put(t, s, "a/b", "key", 0o644)
	if err := s.Put(ctx, "a/b/c", []byte("below a key"), 0o644); err == nil {
		t.Error(`Put("a/b/c") below the key "a/b" succeeded`)
	}
	if err := s.Put(ctx, "a", []byte("above a key"), 0o644); err == nil {
		t.Error(`Put("a") above the key "a/b" succeeded`)
	}
	if got, err := s.Get(ctx, "a/b"); err != nil || string(got) != "key" {
		t.Errorf(`Get("a/b") = %q, %v`, got, err)
	}
	if keys, err := s.List(ctx, "", true); err != nil || !slices.Equal(keys, []string{"a/b"}) {
		t.Errorf("List = %q, %v; want [a/b]", keys, err)
	}
	// A sibling whose name merely begins with the key is a different key.
	put(t, s, "a/b.c", "sibling", 0o644)
	put(t, s, "a/b-c/d", "sibling dir", 0o644)
}

func testDelete(t *testing.T, s storage.Storage) {
	ctx := t.Context()
	keys := []string{"lineages/a.example/meta.json", "lineages/b.example/meta.json"}
	for _, k := range keys {
		put(t, s, k, "x", 0o644)
	}
	for _, k := range []string{"missing/key", "lineages", "lineages/a.example"} {
		if err := s.Delete(ctx, k); err != nil {
			t.Errorf("Delete(%q) of a missing key or a prefix = %v, want nil", k, err)
		}
	}
	if got, err := s.List(ctx, "", true); err != nil || !slices.Equal(got, keys) {
		t.Fatalf("after deleting non-keys, List = %q, %v; want %q", got, err, keys)
	}
	if err := s.Delete(ctx, keys[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, keys[0]); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Get after Delete = %v, want ErrNotExist", err)
	}
	if got, err := s.List(ctx, "lineages", false); err != nil || !slices.Equal(got, []string{"lineages/b.example"}) {
		t.Errorf(`List("lineages") after Delete = %q, %v`, got, err)
	}
	if err := s.Delete(ctx, keys[1]); err != nil {
		t.Fatal(err)
	}
	if got, err := s.List(ctx, "", false); err != nil || len(got) != 0 {
		t.Errorf("List after deleting everything = %q, %v; want nothing", got, err)
	}
	// A deleted key's place can become a prefix, and the other way round.
	put(t, s, "lineages/a.example/meta.json/x", "now a prefix", 0o644)
}

func testList(t *testing.T, s storage.Storage) {
	ctx := t.Context()
	keys := []string{
		"accounts/ca/admin@example.com/account.json",
		"accounts/ca/admin@example.com/key.pem",
		"certificates/ca/example.com/cert.pem",
		"certificates/ca/example.com/key.pem",
		"certificates/ca/example.com.au/cert.pem",
		"certificates/ca/example.com-x",
		"certificates/other/x.example/cert.pem",
		"top",
	}
	slices.Sort(keys) // byte order: "example.com-x" and "example.com.au/" before "example.com/"
	for _, k := range keys {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(k, "key.pem") {
			mode = 0o600
		}
		put(t, s, k, k, mode)
	}
	// A lock is not a key.
	unlock, err := s.Lock(ctx, "certificates/ca/example.com")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	tests := []struct {
		prefix    string
		recursive bool
		want      []string
	}{
		{"", true, keys},
		{"", false, []string{"accounts", "certificates", "top"}},
		{"certificates", false, []string{"certificates/ca", "certificates/other"}},
		{"certificates/ca", false, []string{"certificates/ca/example.com", "certificates/ca/example.com-x", "certificates/ca/example.com.au"}},
		{"certificates/ca/example.com", false, []string{"certificates/ca/example.com/cert.pem", "certificates/ca/example.com/key.pem"}},
		{"certificates/ca/example.com", true, []string{"certificates/ca/example.com/cert.pem", "certificates/ca/example.com/key.pem"}},
		{"accounts", true, keys[:2]},
		{"top", false, []string{"top"}},
		{"top", true, []string{"top"}},
		{"missing", true, nil},
		{"missing", false, nil},
		{"top/below", false, nil},
		{"to", false, nil},
	}
	for _, tt := range tests {
		got, err := s.List(ctx, tt.prefix, tt.recursive)
		if err != nil {
			t.Errorf("List(%q, %v) = %v", tt.prefix, tt.recursive, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("List(%q, %v) = %q, want %q", tt.prefix, tt.recursive, got, tt.want)
		}
		for _, k := range got {
			if !storage.HasPrefix(k, tt.prefix) {
				t.Errorf("List(%q, %v) returned %q, not covered by the prefix", tt.prefix, tt.recursive, k)
			}
		}
	}
}

// testConcurrentPutGet: readers racing with writers only ever see whole values.
func testConcurrentPutGet(t *testing.T, s storage.Storage) {
	ctx := t.Context()
	const key = "lineages/example.com/1/cert.pem"
	values := [][]byte{bytes.Repeat([]byte("a"), 32<<10), bytes.Repeat([]byte("b"), 48<<10)}
	if err := s.Put(ctx, key, values[0], 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := range 20 {
				if err := s.Put(ctx, key, values[(w+i)%2], 0o644); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range 40 {
				got, err := s.Get(ctx, key)
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(got, values[0]) && !bytes.Equal(got, values[1]) {
					t.Errorf("torn read: %d bytes", len(got))
					return
				}
			}
		})
	}
	wg.Wait()
}

func testLockExclusive(t *testing.T, s storage.Storage) {
	ctx := t.Context()
	const name = "certificates/ca/example.com"
	var held, maxHeld atomic.Int32
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 3 {
				unlock, err := s.Lock(ctx, name)
				if err != nil {
					t.Error(err)
					return
				}
				n := held.Add(1)
				if n > maxHeld.Load() {
					maxHeld.Store(n)
				}
				time.Sleep(2 * time.Millisecond)
				held.Add(-1)
				if err := unlock(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if m := maxHeld.Load(); m != 1 {
		t.Errorf("up to %d holders at once", m)
	}
}

func testLockContext(t *testing.T, s storage.Storage) {
	ctx := t.Context()
	unlock, err := s.Lock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	// Other names are independent, also one below it.
	for _, other := range []string{"b", "a/b", "a.b"} {
		u, err := s.Lock(ctx, other)
		if err != nil {
			t.Fatalf("Lock(%q) while %q is held: %v", other, "a", err)
		}
		u()
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = s.Lock(short, "a")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock while held = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("Lock gave up after %v", d)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if err := unlock(); err != nil {
		t.Errorf("second unlock = %v, want nil", err)
	}
	unlock, err = s.Lock(ctx, "a")
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	unlock()
}

// next returns the next event, failing the test if none comes in time.
func next(t *testing.T, events <-chan storage.Event) (storage.Event, bool) {
	t.Helper()
	select {
	case ev, ok := <-events:
		return ev, ok
	case <-time.After(eventWait):
		t.Fatalf("no event within %v", eventWait)
		return storage.Event{}, false
	}
}

func testWatch(t *testing.T, s storage.Storage) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const prefix = "lineages/example.com"
	put(t, s, prefix+"/meta.json", "v0", 0o644) // exists before Watch: not reported by itself
	events, err := s.Watch(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func()
		want   storage.Event
	}{
		{"create", func() { put(t, s, prefix+"/1/key.pem", "k", 0o600) }, storage.Event{Key: prefix + "/1/key.pem"}},
		{"modify, same size", func() { put(t, s, prefix+"/meta.json", "v1", 0o644) }, storage.Event{Key: prefix + "/meta.json"}},
		{"delete", func() { s.Delete(ctx, prefix+"/1/key.pem") }, storage.Event{Key: prefix + "/1/key.pem", Deleted: true}},
	}
	for i, tt := range tests {
		// Outside the prefix, including names that only match it as a string.
		put(t, s, "lineages/example.com.au/meta.json", tt.name, 0o644)
		put(t, s, fmt.Sprintf("lineages/example.com-%d", i), tt.name, 0o644)
		tt.change()
		if ev, ok := next(t, events); !ok || ev != tt.want {
			t.Errorf("%s: got %+v (open %v), want %+v", tt.name, ev, ok, tt.want)
		}
	}
	cancel()
	for {
		ev, ok := next(t, events)
		if !ok {
			break
		}
		t.Errorf("unexpected event %+v", ev)
	}
}

func testWatchWholeStoreAndSingleKey(t *testing.T, s storage.Storage) {
	ctx := t.Context()
	all, err := s.Watch(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	one, err := s.Watch(ctx, "a/b")
	if err != nil {
		t.Fatal(err)
	}
	put(t, s, "a/b", "x", 0o644)
	for _, ch := range []<-chan storage.Event{all, one} {
		if ev, _ := next(t, ch); ev != (storage.Event{Key: "a/b"}) {
			t.Errorf("event %+v", ev)
		}
	}
	// Locks are not keys.
	unlock, err := s.Lock(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	select {
	case ev := <-all:
		t.Errorf("event for a lock: %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
}

func testVersioned(t *testing.T, s storage.Storage) {
	v, ok := s.(storage.Versioned)
	if !ok {
		t.Skip("not storage.Versioned")
	}
	ctx := t.Context()
	const key = "lineages/example.com/meta.json"
	if _, _, err := v.GetVersion(ctx, key); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("GetVersion of a missing key = %v, want ErrNotExist", err)
	}
	if err := v.PutIfVersion(ctx, key, []byte("one"), 0o644, 0); err != nil {
		t.Fatalf("PutIfVersion(version 0) of a missing key: %v", err)
	}
	if err := v.PutIfVersion(ctx, key, []byte("again"), 0o644, 0); !errors.Is(err, storage.ErrModified) {
		t.Fatalf("PutIfVersion(version 0) of an existing key = %v, want ErrModified", err)
	}
	got, ver, err := v.GetVersion(ctx, key)
	if err != nil || string(got) != "one" || ver == 0 {
		t.Fatalf("GetVersion = %q, %d, %v", got, ver, err)
	}
	if err := v.PutIfVersion(ctx, key, []byte("two"), 0o600, ver); err != nil {
		t.Fatalf("PutIfVersion with the current version: %v", err)
	}
	if err := v.PutIfVersion(ctx, key, []byte("stale"), 0o644, ver); !errors.Is(err, storage.ErrModified) {
		t.Fatalf("PutIfVersion with a stale version = %v, want ErrModified", err)
	}
	got, ver2, err := v.GetVersion(ctx, key)
	if err != nil || string(got) != "two" || ver2 == ver {
		t.Fatalf("GetVersion after = %q, %d (before %d), %v", got, ver2, ver, err)
	}
	// A plain Put changes the version too.
	put(t, s, key, "three", 0o644)
	if err := v.PutIfVersion(ctx, key, []byte("stale"), 0o644, ver2); !errors.Is(err, storage.ErrModified) {
		t.Fatalf("PutIfVersion after a Put = %v, want ErrModified", err)
	}
}

func testEphemeral(t *testing.T, s storage.Storage) {
	e, ok := s.(storage.Ephemeral)
	if !ok {
		t.Skip("not storage.Ephemeral")
	}
	ctx := t.Context()
	events, err := s.Watch(ctx, "cluster")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.PutEphemeral(ctx, "cluster/nodes/n1", []byte("node")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, "cluster/nodes/n1"); err != nil || string(got) != "node" {
		t.Fatalf("Get of an ephemeral key = %q, %v", got, err)
	}
	if ev, _ := next(t, events); ev != (storage.Event{Key: "cluster/nodes/n1"}) {
		t.Errorf("event %+v", ev)
	}
	select {
	case <-e.SessionDone():
		t.Error("SessionDone closed while the session is live")
	default:
	}
	if err := s.Delete(ctx, "cluster/nodes/n1"); err != nil {
		t.Fatal(err)
	}
	if ev, _ := next(t, events); ev != (storage.Event{Key: "cluster/nodes/n1", Deleted: true}) {
		t.Errorf("event %+v", ev)
	}
}
