package etcd

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
)

// TestMeasureLatency reports Put and Get latency on a three-member loopback cluster, for the
// figures in the notes. It runs only with TLSALPN_MEASURE=1:
//
//	TLSALPN_MEASURE=1 go test -count=1 -run TestMeasureLatency -v ./storage/etcd
func TestMeasureLatency(t *testing.T) {
	if os.Getenv("TLSALPN_MEASURE") != "1" {
		t.Skip("set TLSALPN_MEASURE=1 to measure")
	}
	c := etcdtest.Start(t, 3)
	s := open(t, c, "measure")
	ctx := t.Context()
	const n = 300
	value := make([]byte, 4<<10) // about a certificate chain
	measure := func(name string, op func(i int) error) {
		d := make([]time.Duration, n)
		for i := range n {
			start := time.Now()
			if err := op(i); err != nil {
				t.Fatal(err)
			}
			d[i] = time.Since(start)
		}
		slices.Sort(d)
		t.Logf("%-22s n=%d p50=%v p90=%v p99=%v max=%v", name, n, d[n/2], d[n*9/10], d[n*99/100], d[n-1])
	}
	measure("Put 4 KiB public", func(i int) error {
		return s.Put(ctx, fmt.Sprintf("m/%d/cert.pem", i), value, 0o644)
	})
	measure("Put 4 KiB sealed", func(i int) error {
		return s.Put(ctx, fmt.Sprintf("m/%d/key.pem", i), value, 0o600)
	})
	measure("Get 4 KiB public", func(i int) error {
		_, err := s.Get(ctx, fmt.Sprintf("m/%d/cert.pem", i))
		return err
	})
	measure("Get 4 KiB sealed", func(i int) error {
		_, err := s.Get(ctx, fmt.Sprintf("m/%d/key.pem", i))
		return err
	})
	measure("Lock+unlock", func(i int) error {
		unlock, err := s.Lock(ctx, "m")
		if err != nil {
			return err
		}
		return unlock()
	})
	events, err := s.Watch(ctx, "w")
	if err != nil {
		t.Fatal(err)
	}
	measure("Put to watch event", func(i int) error {
		if err := s.Put(ctx, fmt.Sprintf("w/%d", i), value, 0o644); err != nil {
			return err
		}
		<-events
		return nil
	})

	// A store of 10,000 certificates: how long listing and reading it all takes.
	const many = 10000
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < many; i += 16 {
				if err := s.Put(ctx, fmt.Sprintf("many/%05d/cert.pem", i), value, 0o644); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("Put %d x 4 KiB, 16 at a time: %v", many, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	keys, err := s.List(ctx, "many", true)
	if err != nil || len(keys) != many {
		t.Fatalf("List = %d keys, %v", len(keys), err)
	}
	t.Logf("List %d keys: %v", many, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	for _, k := range keys {
		if _, err := s.Get(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("Get %d x 4 KiB one by one: %v", many, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	all, err := s.GetAll(ctx, "many")
	if err != nil || len(all) != many {
		t.Fatalf("GetAll = %d values, %v", len(all), err)
	}
	t.Logf("GetAll %d x 4 KiB: %v", many, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	events2, err := s.Watch(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Watch of the whole store (%d keys, snapshot of keys): %v", many+2*n+n, time.Since(start).Round(time.Millisecond))
	_ = events2
}
