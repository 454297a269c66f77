package proxy

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// TestClientHelloTimeout checks that clients that do not finish their
// ClientHello in time are dropped, however they dawdle, and never reach a
// backend.
func TestClientHelloTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	h := hello("slow.example", "h2")
	tests := []struct {
		name string
		send func(c net.Conn) // runs in its own goroutine until it fails
	}{
		{"silent", func(net.Conn) {}},
		{"1 byte per 50 ms", func(c net.Conn) {
			for _, b := range h {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}},
		{"all but the last byte", func(c net.Conn) { c.Write(h[:len(h)-1]) }},
		{"record header only", func(c net.Conn) { c.Write(h[:5]) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			be := startBackend(t, echoHandler)
			p := startProxy(t, Config{ClientHelloTimeout: timeout, Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)
			c := dial(t, p.addr)
			go tt.send(c)
			took := expectClosed(t, c, 10*timeout)
			if took < timeout-50*time.Millisecond {
				t.Errorf("closed after %v, before the %v timeout", took, timeout)
			}
			p.waitActive(t, 0)
			if n := be.accepted.Load(); n != 0 {
				t.Errorf("backend dialled %d times", n)
			}
		})
	}
}

// TestIdleTimeout checks that a proxied connection is closed when neither
// side sends anything for the idle timeout, and kept while either does.
func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	h := hello("idle.example")
	trickle := func(w io.Writer) { // 12 bytes over 1.2 s, four times the timeout
		for range 12 {
			if _, err := w.Write([]byte{'.'}); err != nil {
				return
			}
			time.Sleep(idle / 3)
		}
	}
	tests := []struct {
		name    string
		backend func(c net.Conn) // after the hello
		client  func(c net.Conn) // after the hello
		// client wants 12 dots from the backend before the close, or
		// the backend wants them from the client.
		clientWants, backendWants bool
	}{
		{"both silent", func(net.Conn) {}, func(net.Conn) {}, false, false},
		{"backend trickles", func(c net.Conn) { trickle(c) }, func(net.Conn) {}, true, false},
		{"client trickles", func(net.Conn) {}, func(c net.Conn) { trickle(c) }, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			backendGot := make(chan int, 1)
			be := startBackend(t, func(c net.Conn) {
				if _, err := io.ReadFull(c, make([]byte, len(h))); err != nil {
					return
				}
				go tt.backend(c)
				c.SetReadDeadline(time.Now().Add(20 * idle))
				b, _ := io.ReadAll(c) // until the proxy closes
				backendGot <- len(b)
			})
			p := startProxy(t, Config{IdleTimeout: idle, Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)
			c := dial(t, p.addr)
			start := time.Now()
			c.Write(h)
			go tt.client(c)
			c.SetReadDeadline(time.Now().Add(20 * idle))
			b, err := io.ReadAll(c)
			took := time.Since(start)
			if err != nil {
				t.Fatalf("client: %v after %v (want EOF from the idle close)", err, took)
			}
			minLife := idle - 50*time.Millisecond
			if tt.clientWants || tt.backendWants {
				minLife = 4*idle - 50*time.Millisecond // the trickle's length
			}
			if took < minLife || took > minLife+6*idle {
				t.Errorf("closed after %v, want about %v", took, minLife+idle)
			}
			if tt.clientWants && len(b) != 12 {
				t.Errorf("client got %d of 12 bytes", len(b))
			}
			select {
			case n := <-backendGot:
				if tt.backendWants && n != 12 {
					t.Errorf("backend got %d of 12 bytes", n)
				}
			case <-time.After(prompt):
				t.Error("backend connection not closed")
			}
		})
	}
}

// TestMaxConns checks that when every slot is held by a connection that
// has sent its ClientHello, the connection over the limit is closed at once
// (those are never evicted to make room, whatever their age), and that a
// slot that frees up can be used again. The eviction of connections still
// waiting for their hello is TestEvictOldestWaiting's.
func TestMaxConns(t *testing.T) {
	const max = 3
	be := startBackend(t, idHandler("backend"))
	p := startProxy(t, Config{MaxConns: max, ClientHelloTimeout: 30 * time.Second, Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)
	var held []net.Conn
	for i := range max {
		c := dial(t, p.addr)
		c.SetDeadline(time.Now().Add(prompt))
		c.Write(hello("held.example"))
		if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "backend\n" {
			t.Fatalf("held connection %d: %q, %v", i, line, err)
		}
		c.SetDeadline(time.Time{})
		held = append(held, c)
	}
	over := dial(t, p.addr)
	if took := expectClosed(t, over, prompt); took > time.Second {
		t.Errorf("connection over the limit closed after %v", took)
	}
	if _, err := whichBackend(p.addr, "a.example"); err == nil {
		t.Error("a connection over the limit reached the backend")
	}
	for i, c := range held {
		if err := echoRoundTrip(c, "kept"); err != nil {
			t.Errorf("held connection %d: %v", i, err)
		}
	}
	held[0].Close()
	p.waitActive(t, max-1)
	if got, err := whichBackend(p.addr, "a.example"); err != nil || got != "backend" {
		t.Fatalf("after a slot freed: %q, %v", got, err)
	}
	if n := be.accepted.Load(); n != max+1 {
		t.Errorf("backend accepted %d connections, want %d", n, max+1)
	}
}
