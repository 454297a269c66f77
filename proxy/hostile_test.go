package proxy

import (
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// TestHostileInput sends what is not a usable ClientHello and checks that
// the connection is closed, nothing reaches a backend, and a normal client
// keeps being served meanwhile.
func TestHostileInput(t *testing.T) {
	garbage := make([]byte, 4096)
	rand.NewChaCha8([32]byte{3}).Read(garbage)
	garbage[0] = 0x42
	msg := helloMsg("hostile.example", []string{"h2"}, 0)
	good := records(msg)
	tinyRecords := make([]int, 3100)
	for i := range tinyRecords {
		tinyRecords[i] = 1
	}
	tests := []struct {
		name  string
		in    []byte
		close bool // the client closes its side after sending
	}{
		{"random garbage", garbage, false},
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: hostile.example\r\n\r\n"), false},
		{"HTTP/2 preface", []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), false},
		{"SSH banner", []byte("SSH-2.0-OpenSSH_9.6\r\n"), false},
		{"PROXY header from an untrusted client", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), false},
		{"alert record", []byte{0x15, 3, 3, 0, 2, 2, 40}, false},
		{"SSLv2 hello", cat([]byte{0x80, 0x2e, 0x01, 0x03, 0x01}, make([]byte, 0x2b)), false},
		{"ServerHello", records(cat([]byte{2}, msg[1:])), false},
		{"empty record", cat([]byte{0x16, 3, 1, 0, 0}, good), false},
		{"record over 16 KiB", cat([]byte{0x16, 3, 1, 0x40, 0x01}, make([]byte, 0x4001)), false},
		{"record length 0xffff", cat([]byte{0x16, 3, 1, 0xff, 0xff}, msg), false},
		{"handshake length 0xffffff", records([]byte{1, 0xff, 0xff, 0xff, 3, 3}), false},
		{"body of 16385 bytes", records(helloOfBodyLen(16385), 16384), false},
		{"1-byte records past MaxBytes", records(helloMsg("a.example", nil, 3000), tinyRecords...), false},
		{"trailing byte in the record", records(cat(msg, []byte{0})), false},
		{"alert between fragments", cat(records(msg[:10]), []byte{0x15, 3, 3, 0, 2, 2, 40}, records(msg[10:])), false},
		{"duplicate extension", records(helloWithExts(cat(sniExt("a.example"), sniExt("a.example")))), false},
		{"largest body, 16384 bytes, cut short", records(helloOfBodyLen(16384), 16000)[:16100], true},
		{"truncated, then EOF", good[:len(good)/2], true},
		{"truncated, kept open", good[:len(good)/2], false},
		{"header only, then EOF", good[:5], true},
		{"one byte, then EOF", good[:1], true},
		{"nothing, then EOF", nil, true},
	}
	be := startBackend(t, idHandler("backend"))
	// Every client here comes from 127.0.0.1, 124 of them at once at
	// most, close to the per-source limit (flood_test.go tests that).
	p := startProxy(t, Config{ClientHelloTimeout: 500 * time.Millisecond, MaxHelloWaitsPerSource: 1000, Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)

	// A normal client, all along, while 100 slow senders dribble hellos.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var normal, failures int
	var slowest time.Duration
	enough := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil || normal < 20 {
			start := time.Now()
			got, err := whichBackend(p.addr, "normal.example")
			slowest = max(slowest, time.Since(start))
			normal++
			if err != nil || got != "backend" {
				failures++
			}
			if normal == 20 {
				close(enough)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for range 100 {
		c := dial(t, p.addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, b := range good {
				if ctx.Err() != nil {
					return
				}
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := net.DialTimeout("tcp", p.addr, prompt)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(tt.in) // may fail part way: the proxy hangs up early
			if tt.close {
				c.(*net.TCPConn).CloseWrite()
			}
			if took := expectClosed(t, c, prompt); took > time.Second {
				t.Errorf("closed after %v", took)
			}
		})
	}
	t.Cleanup(func() { // after the parallel subtests
		<-enough
		cancel()
		wg.Wait()
		if failures > 0 || slowest > time.Second {
			t.Errorf("normal client: %d of %d round trips failed; slowest took %v", failures, normal, slowest)
		}
		p.waitActive(t, 0)
		if n := be.accepted.Load(); n != int64(normal) {
			t.Errorf("backend accepted %d connections, but only %d normal ones were made", n, normal)
		}
		t.Logf("%d normal round trips alongside, slowest %v", normal, slowest)
	})
}
