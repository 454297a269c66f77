package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/clienthello"
	"github.com/tlsalpn/tlsalpn/responder"
)

// prompt bounds what should happen at once (a refusal, a reply): generous,
// so that a loaded machine running -race does not flake, yet far below the
// timeouts (10 s and more) that would be the cause of a failure.
const prompt = 3 * time.Second

// oidACMEIdentifier is the acmeIdentifier extension (RFC 8737 §6.1) that
// marks a validation certificate.
var oidACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

func hasACMEIdentifier(c *x509.Certificate) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oidACMEIdentifier) {
			return true
		}
	}
	return false
}

// ---- ClientHello construction ----

func u16(v int) []byte { return []byte{byte(v >> 8), byte(v)} }

func vec16(b []byte) []byte { return append(u16(len(b)), b...) }

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// helloMsg returns a ClientHello handshake message (header and body) with
// the given SNI ("" for none), ALPN list and pad bytes of padding extension.
func helloMsg(sni string, alpn []string, pad int) []byte {
	var exts []byte
	if sni != "" {
		exts = cat(exts, sniExt(sni))
	}
	if len(alpn) > 0 {
		var list []byte
		for _, p := range alpn {
			list = cat(list, []byte{byte(len(p))}, []byte(p))
		}
		exts = cat(exts, u16(16), vec16(vec16(list)))
	}
	exts = cat(exts, u16(43), vec16([]byte{2, 3, 4})) // supported_versions: TLS 1.3
	if pad > 0 {
		exts = cat(exts, u16(21), vec16(make([]byte, pad)))
	}
	return helloWithExts(exts)
}

// sniExt is a server_name extension for name.
func sniExt(name string) []byte {
	return cat(u16(0), vec16(vec16(cat([]byte{0}, vec16([]byte(name))))))
}

// helloWithExts returns a ClientHello message with the raw extension block exts.
func helloWithExts(exts []byte) []byte {
	random := make([]byte, 32)
	rand.Read(random)
	body := cat(u16(0x0303), random, []byte{0}, vec16(u16(0x1301)), []byte{1, 0}, vec16(exts))
	return cat([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body)
}

// helloOfBodyLen returns a ClientHello message whose body is n bytes.
func helloOfBodyLen(n int) []byte {
	base := len(helloMsg("a.example", nil, 0)) - 4
	return helloMsg("a.example", nil, n-base-4)
}

// records wraps msg in TLS handshake records of the given sizes; the last
// record takes whatever is left (all of msg when sizes is empty).
func records(msg []byte, sizes ...int) []byte {
	var out []byte
	for _, n := range sizes {
		if n >= len(msg) {
			break
		}
		out = cat(out, []byte{0x16, 3, 1}, vec16(msg[:n]))
		msg = msg[n:]
	}
	return cat(out, []byte{0x16, 3, 1}, vec16(msg))
}

// hello returns a one-record ClientHello for sni offering alpn.
func hello(sni string, alpn ...string) []byte { return records(helloMsg(sni, alpn, 0)) }

// ---- certificates ----

// selfSigned returns a fresh P-256 self-signed certificate for names.
func selfSigned(t testing.TB, names ...string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// ---- the proxy under test ----

type testProxy struct {
	*Server
	addr   string
	served chan error // Serve's result
}

func startProxy(t testing.TB, cfg Config, r *responder.Responder, certs CertSource) *testProxy {
	t.Helper()
	return startProxyOn(t, "127.0.0.1:0", cfg, r, certs)
}

func startProxyOn(t testing.TB, addr string, cfg Config, r *responder.Responder, certs CertSource) *testProxy {
	t.Helper()
	return startProxyLogged(t, addr, cfg, r, certs, nil)
}

func startProxyLogged(t testing.TB, addr string, cfg Config, r *responder.Responder, certs CertSource, logger *slog.Logger) *testProxy {
	t.Helper()
	s, err := New(cfg, r, certs, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &testProxy{Server: s, addr: ln.Addr().String(), served: make(chan error, 1)}
	go func() { p.served <- s.Serve(context.Background(), ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		s.Shutdown(ctx)
		select {
		case <-p.served:
		case <-time.After(prompt):
			t.Error("Serve did not return after Shutdown")
		}
	})
	return p
}

// waitActive waits until the proxy handles n connections.
func (p *testProxy) waitActive(t testing.TB, n int64) {
	t.Helper()
	deadline := time.Now().Add(2 * prompt)
	for p.Active() != n {
		if time.Now().After(deadline) {
			t.Fatalf("Active() = %d, want %d", p.Active(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// ---- backends ----

// backend is a loopback TCP server that runs handle on each connection
// and counts the connections it accepted.
type backend struct {
	addr     string
	accepted atomic.Int64
}

func startBackend(t testing.TB, handle func(net.Conn)) *backend {
	t.Helper()
	return startBackendOn(t, "127.0.0.1:0", handle)
}

func startBackendOn(t testing.TB, addr string, handle func(net.Conn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{addr: ln.Addr().String()}
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					c.Close()
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-acceptDone
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return b
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// idHandler reads the ClientHello, announces the backend's name on a line,
// then echoes.
func idHandler(name string) func(net.Conn) {
	return func(c net.Conn) {
		c.SetReadDeadline(time.Now().Add(prompt))
		if _, err := clienthello.Read(c); err != nil {
			return
		}
		c.SetReadDeadline(time.Time{})
		io.WriteString(c, name+"\n")
		io.Copy(c, c)
	}
}

// echoHandler echoes everything, hello included.
func echoHandler(c net.Conn) { io.Copy(c, c) }

// recordHandler reads until EOF and sends what it read.
func recordHandler(got chan<- []byte) func(net.Conn) {
	return func(c net.Conn) {
		b, _ := io.ReadAll(c)
		got <- b
	}
}

// tlsEchoHandler terminates TLS with cert, offering the usual protocols
// and acme-tls/1 (a backend that solves its own challenges), and echoes.
func tlsEchoHandler(cert *tls.Certificate) func(net.Conn) {
	cfg := &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"h2", "http/1.1", "acme-tls/1"}}
	return func(c net.Conn) {
		tc := tls.Server(c, cfg)
		c.SetDeadline(time.Now().Add(30 * time.Second))
		io.Copy(tc, tc)
		tc.Close()
	}
}

// ---- clients ----

func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, prompt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// whichBackend sends a hello for sni and returns the name idHandler
// announced, or an error when the proxy closed the connection.
func whichBackend(addr, sni string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, prompt)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(prompt))
	if _, err := c.Write(hello(sni, "h2")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// tlsDial handshakes through the proxy without verifying the certificate
// (the tests look at it themselves).
func tlsDial(addr, sni string, alpn ...string) (*tls.Conn, error) {
	d := &net.Dialer{Timeout: prompt}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: sni, NextProtos: alpn})
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(prompt))
	return c, nil
}

// echoRoundTrip checks that c echoes a message.
func echoRoundTrip(c io.ReadWriter, msg string) error {
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch: " + string(buf))
	}
	return nil
}

// expectClosed checks that the proxy closes c within d, without sending
// anything, and returns how long that took.
func expectClosed(t testing.TB, c net.Conn, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	buf := make([]byte, 1024)
	n, err := c.Read(buf)
	took := time.Since(start)
	if n > 0 {
		t.Fatalf("got %q from a connection that should have been closed", buf[:n])
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection still open after %v", d)
	}
	return took
}

// mustParse checks that a test hello is one clienthello accepts.
func mustParse(t testing.TB, b []byte) *clienthello.Info {
	t.Helper()
	info, err := clienthello.Parse(b)
	if err != nil {
		t.Fatalf("test hello does not parse: %v", err)
	}
	return info
}
