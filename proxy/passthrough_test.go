package proxy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/clienthello"
)

// writeChunks writes b in pieces of size n (all at once when n is 0),
// pausing between them so that each piece leaves as its own TCP segment.
func writeChunks(c net.Conn, b []byte, n int) error {
	if n <= 0 {
		n = len(b)
	}
	for len(b) > 0 {
		k := min(n, len(b))
		if _, err := c.Write(b[:k]); err != nil {
			return err
		}
		b = b[k:]
		if len(b) > 0 {
			time.Sleep(100 * time.Microsecond)
		}
	}
	return nil
}

// TestPassthroughBytes checks that the backend receives exactly what the
// client sent, however the ClientHello is cut into records and segments.
func TestPassthroughBytes(t *testing.T) {
	got := make(chan []byte, 1)
	be := startBackend(t, recordHandler(got))
	p := startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)

	msg := helloMsg("example.com", []string{"h2", "http/1.1"}, 0)
	big := helloMsg("example.com", []string{"h2"}, 12000)
	oneByteRecords := make([]int, len(msg))
	for i := range oneByteRecords {
		oneByteRecords[i] = 1
	}
	ccs := []byte{0x14, 3, 3, 0, 1, 1}
	appData := make([]byte, 3000)
	rand.NewChaCha8([32]byte{1}).Read(appData)
	tests := []struct {
		name  string
		wire  []byte
		chunk int // TCP write size; 0 = one write
	}{
		{"one record, one write", records(msg), 0},
		{"one record, 1-byte writes", records(msg), 1},
		{"one record, 7-byte writes", records(msg), 7},
		{"split header", records(msg), 3},
		{"five records", records(msg, 1, 10, 4, 50), 0},
		{"five records, 5-byte writes", records(msg, 1, 10, 4, 50), 5},
		{"1-byte records", records(msg, oneByteRecords...), 0},
		{"1-byte records, 11-byte writes", records(msg, oneByteRecords...), 11},
		{"12 KiB hello in 4 KiB records, 1000-byte writes", records(big, 4096, 4096), 1000},
		{"no SNI", hello(""), 0},
		{"hello then CCS and data in one write", cat(records(msg), ccs, appData), 0},
		{"fragmented hello then data, 100-byte writes", cat(records(msg, 30, 30), ccs, appData), 100},
		{"hello then data at once, 1-byte records", cat(records(msg, oneByteRecords...), appData), 4096},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseWire(tt.wire); err != nil {
				t.Fatalf("test input: %v", err)
			}
			c := dial(t, p.addr)
			if err := writeChunks(c, tt.wire, tt.chunk); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			select {
			case b := <-got:
				if !bytes.Equal(b, tt.wire) {
					t.Fatalf("backend received %d bytes, not the %d the client sent (first difference at %d)", len(b), len(tt.wire), firstDiff(b, tt.wire))
				}
			case <-time.After(prompt):
				t.Fatal("backend received nothing")
			}
			// The backend closed after EOF; the client sees EOF too.
			expectClosed(t, c, prompt)
		})
	}
}

// parseWire checks that the hello at the start of b parses.
func parseWire(b []byte) (int, error) {
	r := bytes.NewReader(b)
	_, err := clienthello.Read(r)
	return len(b) - r.Len(), err
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestPassthroughLarge moves 8 MiB each way at once and compares checksums.
func TestPassthroughLarge(t *testing.T) {
	const size = 8 << 20
	h := hello("big.example", "h2")
	type result struct {
		sum   [32]byte
		n     int64
		hello bool
	}
	res := make(chan result, 1)
	payload := func(seed byte) io.Reader {
		return io.LimitReader(rand.NewChaCha8([32]byte{seed}), size)
	}
	be := startBackend(t, func(c net.Conn) {
		got := make([]byte, len(h))
		_, err := io.ReadFull(c, got)
		r := result{hello: err == nil && bytes.Equal(got, h)}
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			io.Copy(c, payload(2))
			c.(*net.TCPConn).CloseWrite()
		}()
		hash := sha256.New()
		r.n, _ = io.Copy(hash, c)
		copy(r.sum[:], hash.Sum(nil))
		<-wrote
		res <- r
	})
	p := startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)

	c := dial(t, p.addr)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(h); err != nil {
		t.Fatal(err)
	}
	go func() {
		io.Copy(c, payload(1))
		c.CloseWrite()
	}()
	hash := sha256.New()
	n, err := io.Copy(hash, c)
	if err != nil {
		t.Fatalf("client read after %d bytes: %v", n, err)
	}
	want := func(seed byte) [32]byte {
		h := sha256.New()
		io.Copy(h, payload(seed))
		var s [32]byte
		copy(s[:], h.Sum(nil))
		return s
	}
	var sum [32]byte
	copy(sum[:], hash.Sum(nil))
	if n != size || sum != want(2) {
		t.Errorf("client received %d bytes, checksum match %v; want %d bytes", n, sum == want(2), size)
	}
	select {
	case r := <-res:
		if !r.hello {
			t.Error("backend did not receive the hello first")
		}
		if r.n != size || r.sum != want(1) {
			t.Errorf("backend received %d bytes, checksum match %v; want %d bytes", r.n, r.sum == want(1), size)
		}
	case <-time.After(prompt):
		t.Fatal("backend did not finish")
	}
}

// TestPassthroughHalfClose checks that a direction that ends is
// half-closed, and the other keeps flowing.
func TestPassthroughHalfClose(t *testing.T) {
	h := hello("half.example")
	t.Run("client closes first", func(t *testing.T) {
		be := startBackend(t, func(c net.Conn) {
			b, err := io.ReadAll(c) // until the client's half-close arrives
			if err != nil {
				return
			}
			io.WriteString(c, "reply to "+string(b[len(h):]))
		})
		p := startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)
		c := dial(t, p.addr)
		c.Write(cat(h, []byte("request")))
		if err := c.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(prompt))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "reply to request" {
			t.Fatalf("client got %q, %v; want the reply, then EOF", got, err)
		}
	})
	t.Run("backend closes first", func(t *testing.T) {
		got := make(chan string, 1)
		be := startBackend(t, func(c net.Conn) {
			io.ReadFull(c, make([]byte, len(h)))
			io.WriteString(c, "banner")
			c.(*net.TCPConn).CloseWrite()
			b, _ := io.ReadAll(c)
			got <- string(b)
		})
		p := startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)
		c := dial(t, p.addr)
		c.Write(h)
		c.SetReadDeadline(time.Now().Add(prompt))
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "banner" {
			t.Fatalf("client got %q, %v; want the banner, then EOF", b, err)
		}
		c.Write([]byte("still talking"))
		c.CloseWrite()
		select {
		case s := <-got:
			if s != "still talking" {
				t.Fatalf("backend got %q after its half-close", s)
			}
		case <-time.After(prompt):
			t.Fatal("backend got nothing after its half-close")
		}
	})
}

// TestPassthroughReset checks that a reset on one side ends the other
// promptly.
func TestPassthroughReset(t *testing.T) {
	h := hello("rst.example")
	t.Run("backend resets", func(t *testing.T) {
		be := startBackend(t, func(c net.Conn) {
			io.ReadFull(c, make([]byte, len(h)))
			c.(*net.TCPConn).SetLinger(0)
			c.Close() // RST
		})
		p := startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)
		c := dial(t, p.addr)
		c.Write(h)
		expectClosed(t, c, prompt)
		p.waitActive(t, 0)
	})
	t.Run("client resets", func(t *testing.T) {
		ended := make(chan error, 1)
		gotHello := make(chan struct{})
		be := startBackend(t, func(c net.Conn) {
			io.ReadFull(c, make([]byte, len(h)))
			close(gotHello)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := c.Read(make([]byte, 10))
			ended <- err
		})
		p := startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)
		c := dial(t, p.addr)
		c.Write(h)
		<-gotHello
		c.SetLinger(0)
		c.Close()
		select {
		case err := <-ended:
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("backend still open")
			}
		case <-time.After(prompt):
			t.Fatal("backend still open")
		}
		p.waitActive(t, 0)
	})
}

// TestBackendUnreachable checks that a client is closed at once when its
// backend refuses the connection.
func TestBackendUnreachable(t *testing.T) {
	p := startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: closedPort(t)}}, DialTimeout: 30 * time.Second}, nil, nil)
	c := dial(t, p.addr)
	c.Write(hello("down.example"))
	if took := expectClosed(t, c, prompt); took > time.Second {
		t.Errorf("closed after %v", took)
	}
	p.waitActive(t, 0)
}

// TestPassthroughLargestHello checks that a ClientHello of the largest
// accepted size passes, byte for byte.
func TestPassthroughLargestHello(t *testing.T) {
	got := make(chan []byte, 1)
	be := startBackend(t, recordHandler(got))
	p := startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil)
	for _, wire := range [][]byte{records(helloOfBodyLen(16384), 16000), records(helloOfBodyLen(16380))} {
		if _, err := parseWire(wire); err != nil {
			t.Fatal(err)
		}
		c := dial(t, p.addr)
		c.Write(wire)
		c.CloseWrite()
		select {
		case b := <-got:
			if !bytes.Equal(b, wire) {
				t.Fatalf("backend got %d bytes, want %d", len(b), len(wire))
			}
		case <-time.After(prompt):
			t.Fatal("backend got nothing")
		}
	}
}
