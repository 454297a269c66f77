package clienthello

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

var serverNames = []string{"a.example", "b.example", "c.example", "d.example", "www.example.com", "secret.example", "public.example"}

// fragConn re-frames the ClientHello record of the first Write into records
// and sends them as separate writes: whole records, or a byte per write.
type fragConn struct {
	net.Conn
	t       testing.TB
	rng     *mrand.Rand
	records int  // 0: leave the hello alone
	bytes   bool // one byte per write
	done    bool
}

func (f *fragConn) Write(p []byte) (int, error) {
	if f.done || f.records == 0 {
		return f.Conn.Write(p)
	}
	f.done = true
	if len(p) < 5 || p[0] != 0x16 || int(p[3])<<8|int(p[4]) != len(p)-5 {
		f.t.Errorf("first write is not one handshake record: % x", p[:min(len(p), 8)])
		return f.Conn.Write(p)
	}
	wire := randomFragment(f.rng, p[5:], f.records)
	step := len(wire)
	if f.bytes {
		step = 1
	}
	for i := 0; i < len(wire); i += step {
		if _, err := f.Conn.Write(wire[i:min(i+step, len(wire))]); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestPeekEndToEnd peeks real handshakes over loopback TCP, plain and
// fragmented, and hands the connection to a crypto/tls server, which must
// complete the handshake and exchange data as if nothing had been read.
func TestPeekEndToEnd(t *testing.T) {
	cert := certificate(t, serverNames...)
	roots := x509.NewCertPool()
	roots.AddCert(mustParse(t, cert.Certificate[0]))
	list, echKey := echKeys(t)
	serverCfg := &tls.Config{
		Certificates:             []tls.Certificate{cert},
		NextProtos:               []string{"acme-tls/1", "h2", "http/1.1", "x-custom"},
		MinVersion:               tls.VersionTLS12,
		EncryptedClientHelloKeys: []tls.EncryptedClientHelloKey{echKey},
	}
	rng := mrand.New(mrand.NewPCG(5, 6))
	modes := []struct {
		name    string
		records int
		bytes   bool
	}{
		{"one-record", 0, false},
		{"3-records", 3, false},
		{"40-records-bytewise", 40, true},
	}
	for _, c := range clientCases(list) {
		for _, m := range modes {
			t.Run(c.name+"/"+m.name, func(t *testing.T) {
				ln := listen(t)
				type result struct {
					info  *Info
					state tls.ConnectionState
					err   error
				}
				done := make(chan result, 1)
				go func() {
					conn, err := ln.Accept()
					if err != nil {
						done <- result{err: err}
						return
					}
					defer conn.Close()
					conn.SetDeadline(time.Now().Add(10 * time.Second))
					info, pc, err := Peek(conn)
					if err != nil {
						done <- result{info: info, err: err}
						return
					}
					if _, ok := pc.(*Conn).NetConn().(*net.TCPConn); !ok {
						t.Errorf("NetConn is %T", pc.(*Conn).NetConn())
					}
					srv := tls.Server(pc, serverCfg)
					if err := srv.Handshake(); err != nil {
						done <- result{info: info, err: err}
						return
					}
					buf := make([]byte, 4)
					if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != "ping" {
						done <- result{info: info, err: errors.New("no ping")}
						return
					}
					srv.Write([]byte("pong"))
					done <- result{info: info, state: srv.ConnectionState()}
				}()

				raw, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer raw.Close()
				raw.SetDeadline(time.Now().Add(10 * time.Second))
				cfg := c.cfg()
				cfg.RootCAs = roots
				client := tls.Client(&fragConn{Conn: raw, t: t, rng: rng, records: m.records, bytes: m.bytes}, cfg)
				if err := client.Handshake(); err != nil {
					t.Fatalf("client handshake: %v", err)
				}
				client.Write([]byte("ping"))
				buf := make([]byte, 4)
				if _, err := io.ReadFull(client, buf); err != nil || string(buf) != "pong" {
					t.Fatalf("client read %q, %v", buf, err)
				}
				r := <-done
				if r.err != nil {
					t.Fatalf("server: %v", r.err)
				}
				checkInfo(t, r.info, c)
				if c.wantECH && !r.state.ECHAccepted {
					t.Errorf("server did not accept ECH")
				}
				if want := c.cfg().ServerName; want != "" && r.state.ServerName != want {
					t.Errorf("server saw SNI %q, want %q", r.state.ServerName, want)
				}
			})
		}
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPeekProxy splices a peeked connection to a TLS backend with io.Copy
// both ways, as tlsalpn serve does in proxy mode, and moves data through it
// in both directions with half-closes.
func TestPeekProxy(t *testing.T) {
	cert := certificate(t, "backend.example")
	roots := x509.NewCertPool()
	roots.AddCert(mustParse(t, cert.Certificate[0]))

	backend := tls.NewListener(listen(t), &tls.Config{Certificates: []tls.Certificate{cert}})
	go func() {
		conn, err := backend.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		io.Copy(conn, conn) // echo until the client's close_notify
	}()

	front := listen(t)
	proxied := make(chan *Info, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		conn, err := front.Accept()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		info, pc, err := Peek(conn)
		if err != nil {
			t.Errorf("Peek: %v", err)
			return
		}
		proxied <- info
		up, err := net.Dial("tcp", backend.Addr().String())
		if err != nil {
			t.Error(err)
			return
		}
		defer up.Close()
		var copies sync.WaitGroup
		copies.Go(func() {
			if _, err := io.Copy(up, pc); err != nil {
				t.Errorf("client to backend: %v", err)
			}
			up.(*net.TCPConn).CloseWrite()
		})
		if _, err := io.Copy(pc, up); err != nil {
			t.Errorf("backend to client: %v", err)
		}
		if err := pc.(*Conn).CloseWrite(); err != nil {
			t.Errorf("CloseWrite: %v", err)
		}
		copies.Wait()
	})

	conn, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	client := tls.Client(conn, &tls.Config{ServerName: "backend.example", RootCAs: roots, NextProtos: []string{"h2"}})
	if err := client.Handshake(); err != nil {
		t.Fatalf("handshake through the proxy: %v", err)
	}
	if info := <-proxied; info.ServerName != "backend.example" || len(info.ALPN) != 1 || info.ALPN[0] != "h2" {
		t.Errorf("proxy saw %+v", info)
	}
	payload := make([]byte, 256<<10)
	rand.Read(payload)
	go func() {
		client.Write(payload)
		client.CloseWrite()
	}()
	echo, err := io.ReadAll(client)
	if err != nil || !bytes.Equal(echo, payload) {
		t.Fatalf("echo of %d bytes: got %d, %v", len(payload), len(echo), err)
	}
}

// TestPeekNotTLS: plain HTTP is refused with ErrPlainHTTP, and the conn
// Peek returns still replays it, for a caller that answers it.
func TestPeekNotTLS(t *testing.T) {
	ln := listen(t)
	request := "GET /index.html HTTP/1.1\r\nHost: a.example\r\n\r\n"
	go func() {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer conn.Close()
		conn.Write([]byte(request))
		io.Copy(io.Discard, conn)
	}()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	info, pc, err := Peek(conn)
	if !errors.Is(err, ErrPlainHTTP) || !errors.Is(err, ErrNotTLS) {
		t.Fatalf("Peek: %v, want ErrPlainHTTP", err)
	}
	t.Log(err)
	if string(info.Raw) != "GET /" {
		t.Errorf("Raw = %q, want the 5 bytes read", info.Raw)
	}
	got := make([]byte, len(request))
	if _, err := io.ReadFull(pc, got); err != nil || string(got) != request {
		t.Errorf("replayed %q, %v", got, err)
	}
}

// TestPeekDeadline: a client that stalls mid-hello is cut off by the
// caller's deadline, which Peek reports as such, not as ErrTruncated.
func TestPeekDeadline(t *testing.T) {
	ln := listen(t)
	wire := synth{exts: []ext{hostExt("slow.example")}}.wire()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer conn.Close()
		conn.Write(wire[:20])
		<-stop
	}()
	conn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	info, _, err := Peek(conn)
	if !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ErrTruncated) {
		t.Fatalf("Peek: %v, want a deadline error", err)
	}
	t.Log(err)
	if !bytes.Equal(info.Raw, wire[:20]) {
		t.Errorf("Raw = % x, want the 20 bytes sent", info.Raw)
	}
}

// TestConnRead checks the replay: small reads return Raw in pieces and
// never block on the socket while replayed bytes remain.
func TestConnRead(t *testing.T) {
	wire := synth{exts: []ext{hostExt("a.example"), alpnExt("h2")}}.wire()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	go func() {
		c1.Write(wire)
		c1.Write([]byte("after"))
	}()
	info, pc, err := Peek(c2)
	if err != nil {
		t.Fatal(err)
	}
	c := pc.(*Conn)
	if !bytes.Equal(c.Buffered(), wire) || !bytes.Equal(info.Raw, wire) {
		t.Fatalf("Buffered = % x", c.Buffered())
	}
	var got []byte
	buf := make([]byte, 7)
	for len(got) < len(wire) {
		n, err := c.Read(buf)
		if err != nil || n == 0 {
			t.Fatalf("Read: %d, %v", n, err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, wire) || c.Buffered() != nil {
		t.Fatalf("replayed % x, %d left", got, len(c.Buffered()))
	}
	rest := make([]byte, 5)
	if _, err := io.ReadFull(c, rest); err != nil || string(rest) != "after" {
		t.Fatalf("then read %q, %v", rest, err)
	}
	if c.NetConn() != c2 {
		t.Errorf("NetConn is not the peeked conn")
	}
	if err := c.CloseWrite(); err == nil {
		t.Errorf("CloseWrite on a pipe: no error")
	}
}

// TestConnWriteTo: io.Copy from a Conn writes Raw first, then the rest.
func TestConnWriteTo(t *testing.T) {
	wire := synth{exts: []ext{hostExt("a.example")}}.wire()
	c1, c2 := net.Pipe()
	go func() {
		c1.Write(append(wire, "tail"...))
		c1.Close()
	}()
	_, pc, err := Peek(c2)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	n, err := io.Copy(&out, pc)
	if err != nil || n != int64(len(wire)+4) || !bytes.Equal(out.Bytes(), append(wire, "tail"...)) {
		t.Fatalf("io.Copy = %d, %v: % x", n, err, out.Bytes())
	}
}
