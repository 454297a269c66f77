package responder

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
)

func TestServeStopsWhenContextEnds(t *testing.T) {
	r := New() // default HandshakeTimeout: only the context can end the idle client
	ln := listenLoopback(t, "tcp")
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- r.Serve(ctx, ln) }()

	// A client in the middle of a handshake that will never finish.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.Write(halfClientHello(t))
	time.Sleep(50 * time.Millisecond) // let Serve accept it

	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve returned %v after cancel, want nil", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Serve took %v to stop", d)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("listener still accepts after Serve returned")
	}
	idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.Copy(io.Discard, idle); isTimeout(err) {
		t.Error("in-flight connection was not closed when Serve stopped")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestIdleClientDropped(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(t *testing.T) []byte
	}{
		{"sends nothing", func(*testing.T) []byte { return nil }},
		{"half a ClientHello", halfClientHello},
		{"record header only", func(*testing.T) []byte { return []byte{0x16, 0x03, 0x01, 0x01, 0x00} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New()
			r.handshakeTimeout = 300 * time.Millisecond
			addr := serveStandalone(t, r)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if b := tc.send(t); len(b) > 0 {
				if _, err := c.Write(b); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.Copy(io.Discard, c)
			if isTimeout(err) {
				t.Fatal("connection not dropped after the handshake timeout")
			}
			if d := time.Since(start); d < 200*time.Millisecond || d > 3*time.Second {
				t.Errorf("dropped after %v, want about 300ms", d)
			}
		})
	}
}

// halfClientHello is the start of a real acme-tls/1 ClientHello: the record
// header and half of its body.
func halfClientHello(t *testing.T) []byte {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	go tls.Client(c1, &tls.Config{ServerName: "example.com", NextProtos: acmeOnly}).Handshake()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(c2, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(c2, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body[:len(body)/2]...)
}

func TestGarbageDoesNotBlockOthers(t *testing.T) {
	id, cert := challengeCert(t, "example.com")
	r := New() // default HandshakeTimeout: stalled clients stay stalled throughout
	r.Publish(context.Background(), "example.com", cert)
	addr := serveStandalone(t, r)

	random := make([]byte, 4096)
	rand.Read(random)
	payloads := map[string][]byte{
		"HTTP request":       []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
		"random bytes":       random,
		"half ClientHello":   halfClientHello(t),
		"oversized record":   {0x16, 0x03, 0x01, 0xff, 0xff, 0x01},
		"SSLv2 hello":        {0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10},
		"alert":              {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28},
		"empty handshake":    {0x16, 0x03, 0x01, 0x00, 0x00},
		"application data":   {0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5},
		"nothing then close": nil,
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 3 {
		for name, p := range payloads {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			conns = append(conns, c)
			c.Write(p)
			if p == nil {
				c.Close()
			}
		}
	}
	// Stalled and garbage connections are all open now; a validation
	// handshake must still be answered at once.
	for range 3 {
		start := time.Now()
		checkOutcome(t, handshake(t, addr, "example.com", acmeOnly, nil), served, id, nil)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("validation handshake took %v among garbage connections", d)
		}
	}
	// The garbage was answered with an alert or a close, not left hanging.
	for name, p := range payloads {
		if p == nil || name == "half ClientHello" || name == "empty handshake" {
			continue
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(p)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = io.Copy(io.Discard, c)
		c.Close()
		if isTimeout(err) {
			t.Errorf("%s: connection left open", name)
		}
	}
}

// flakyListener fails its first Accept calls with err.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
	err   error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, l.err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

func TestServeAcceptErrors(t *testing.T) {
	id, cert := challengeCert(t, "example.com")
	for _, tc := range []struct {
		name      string
		err       error
		temporary bool
	}{
		{"EMFILE", acceptErr(syscall.EMFILE), true},
		{"ENFILE", acceptErr(syscall.ENFILE), true},
		{"ECONNABORTED", acceptErr(syscall.ECONNABORTED), true},
		{"timeout", acceptErr(syscall.EAGAIN), true},
		{"permanent", errors.New("listener broke"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New()
			r.Publish(context.Background(), "example.com", cert)
			tcp := listenLoopback(t, "tcp")
			addr := tcp.Addr().String()
			ln := &flakyListener{Listener: tcp, fails: 3, err: tc.err}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- r.Serve(ctx, ln) }()
			if tc.temporary {
				checkOutcome(t, handshake(t, addr, "example.com", acmeOnly, nil), served, id, nil)
				cancel()
				if err := <-errc; err != nil {
					t.Errorf("Serve: %v", err)
				}
				return
			}
			select {
			case err := <-errc:
				if !errors.Is(err, tc.err) {
					t.Errorf("Serve returned %v, want %v", err, tc.err)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("Serve did not return on a permanent accept error")
			}
			// The listener must not stay bound with nobody answering:
			// a CA would hang until its timeout.
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Error("listener still bound after Serve returned")
			}
		})
	}
}

// TestConcurrentPublishAndHandshakes publishes and withdraws challenges
// while clients handshake, in both modes; run it with -race.
func TestConcurrentPublishAndHandshakes(t *testing.T) {
	names := []string{"a.example", "b.example", "c.example"}
	ids := map[string]challenge.Identifier{}
	certs := map[string]*tls.Certificate{}
	for _, n := range names {
		ids[n], certs[n] = challengeCert(t, n)
	}
	for _, mode := range []string{"standalone", "hook"} {
		t.Run(mode, func(t *testing.T) {
			r := New(WithObserver(func(Event) {}))
			var addr string
			if mode == "standalone" {
				r.handshakeTimeout = 2 * time.Second
				addr = serveStandalone(t, r)
			} else {
				base, _ := hookBase(t)
				addr = serveHook(t, r, base)
			}
			ctx := context.Background()
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // publisher
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					n := names[i%len(names)]
					if i%2 == 0 {
						if _, err := r.Publish(ctx, n, certs[n]); err != nil {
							t.Error(err)
						}
					} else {
						r.Unpublish(ctx, n)
					}
					r.Pending()
					time.Sleep(time.Millisecond)
				}
			}()
			var servedCount atomic.Int32
			var clients sync.WaitGroup
			for c := range 4 {
				clients.Add(1)
				go func() {
					defer clients.Done()
					for i := range 15 {
						n := names[(c+i)%len(names)]
						alpn := acmeOnly
						if i%3 == 2 {
							alpn = []string{"h2"}
						}
						res := handshake(t, addr, n, alpn, nil)
						if res.acmeCertSeen() && alpn[0] != challenge.ALPNProto {
							t.Errorf("client offering %q got a validation certificate", alpn)
						}
						if res.err != nil {
							continue
						}
						if alpn[0] == challenge.ALPNProto {
							servedCount.Add(1)
							if err := challenge.Verify(res.state.PeerCertificates[0], ids[n], testKeyAuth); err != nil {
								t.Errorf("validation for %s got a wrong certificate: %v", n, err)
							}
						} else if mode == "standalone" {
							t.Errorf("standalone listener completed a %q handshake", alpn)
						}
					}
				}()
			}
			clients.Wait()
			close(stop)
			wg.Wait()
			t.Logf("%d validation handshakes served", servedCount.Load())
		})
	}
}

func TestDefaultHandshakeTimeout(t *testing.T) {
	if got := New().handshakeTimeout; got != HandshakeTimeout {
		t.Errorf("New().handshakeTimeout = %v, want HandshakeTimeout (%v)", got, HandshakeTimeout)
	}
}
