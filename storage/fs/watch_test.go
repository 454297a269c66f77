package fs

import (
	"context"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/storage"
)

func TestWatch(t *testing.T) {
	f := newFS(t, WithPollInterval(10*time.Millisecond))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	const prefix = "certificates/ca/example.com"
	put := func(key, value string) {
		if err := f.Put(ctx, key, []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	put(prefix+"/cert.pem", "v0") // exists before Watch: not reported by itself
	events, err := f.Watch(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	next := func() (storage.Event, bool) {
		select {
		case ev, ok := <-events:
			return ev, ok
		case <-time.After(5 * time.Second):
			t.Fatal("no event within 5s")
			return storage.Event{}, false
		}
	}

	tests := []struct {
		name   string
		change func()
		want   storage.Event
	}{
		{"create", func() { put(prefix+"/key.pem", "k") }, storage.Event{Key: prefix + "/key.pem"}},
		// Same size, likely same timestamp: the new inode gives it away.
		{"modify, same size", func() { put(prefix+"/cert.pem", "v1") }, storage.Event{Key: prefix + "/cert.pem"}},
		{"delete", func() { f.Delete(ctx, prefix+"/key.pem") }, storage.Event{Key: prefix + "/key.pem", Deleted: true}},
	}
	for _, tt := range tests {
		// Outside the prefix, including a name that is only a string prefix match.
		put("certificates/ca/example.com.au/cert.pem", tt.name)
		tt.change()
		if ev, ok := next(); !ok || ev != tt.want {
			t.Errorf("%s: got %+v (open %v), want %+v", tt.name, ev, ok, tt.want)
		}
	}
	cancel()
	for {
		ev, ok := next()
		if !ok {
			break
		}
		t.Errorf("unexpected event %+v", ev)
	}
}
