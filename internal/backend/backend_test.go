package backend_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/tlsalpn/tlsalpn/deploy"
	"github.com/tlsalpn/tlsalpn/internal/backend"
)

// writeCert writes a new self-signed certificate for names to cert.pem and
// key.pem in dir (replacing them atomically) and returns it.
func writeCert(t *testing.T, dir string, names ...string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()
	certPEM, keyPEM := backend.SelfSigned(t, names...)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := deploy.WriteFileAtomic(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := deploy.WriteFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, backend.ParseCert(t, certPEM)
}

func bundle(t *testing.T, names ...string) ([]byte, *x509.Certificate) {
	certPEM, keyPEM := backend.SelfSigned(t, names...)
	return append(certPEM, keyPEM...), backend.ParseCert(t, certPEM)
}

func checkServes(t *testing.T, addr, sni string, want *x509.Certificate) {
	t.Helper()
	got := backend.PeerCert(t, addr, sni)
	if !got.Equal(want) {
		t.Fatalf("%s serves %v (serial %x), want %v (serial %x)", addr, got.DNSNames, got.SerialNumber, want.DNSNames, want.SerialNumber)
	}
}

// get makes one HTTPS request over conn (already through any PROXY
// header) and returns the body, and whether the TLS session was resumed.
func get(t *testing.T, conn net.Conn, cache tls.ClientSessionCache, path string) (body string, resumed bool) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(conn, &tls.Config{ServerName: "backend.test", InsecureSkipVerify: true, ClientSessionCache: cache})
	defer tc.Close()
	fmt.Fprintf(tc, "GET %s HTTP/1.1\r\nHost: backend.test\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s, %v", path, resp.Status, err)
	}
	io.Copy(io.Discard, tc) // let TLS 1.3 tickets arrive
	return string(b), tc.ConnectionState().DidResume
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNginx(t *testing.T) {
	tests := []struct {
		name        string
		opts        backend.NginxOptions
		wantResumed bool
	}{
		{"default", backend.NginxOptions{}, true},
		{"session cache off", backend.NginxOptions{SessionCacheOff: true}, false},
		{"two workers", backend.NginxOptions{Workers: 2}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certFile, keyFile, cert := writeCert(t, t.TempDir(), "backend.test")
			n := backend.StartNginx(t, certFile, keyFile, tt.opts)
			checkServes(t, n.Addr, "backend.test", cert)
			if got := len(n.Generation(t).Workers); got != max(tt.opts.Workers, 1) {
				t.Errorf("%d workers, want %d", got, max(tt.opts.Workers, 1))
			}
			cache := tls.NewLRUClientSessionCache(4)
			if body, _ := get(t, dial(t, n.Addr), cache, "/"); body != backend.Page {
				t.Errorf("GET / = %q, want %q", body, backend.Page)
			}
			body, resumed := get(t, dial(t, n.Addr), cache, "/1k")
			if len(body) != backend.OneK {
				t.Errorf("GET /1k: %d bytes, want %d", len(body), backend.OneK)
			}
			if resumed != tt.wantResumed {
				t.Errorf("second connection resumed: %v, want %v", resumed, tt.wantResumed)
			}
			n.WaitAccessLog(t, `"GET /1k HTTP/1.1" 200 1024`)
		})
	}
}

func TestNginxReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, first := writeCert(t, dir, "first.test")
	n := backend.StartNginx(t, certFile, keyFile, backend.NginxOptions{Workers: 2})
	checkServes(t, n.Addr, "", first)

	_, _, second := writeCert(t, dir, "second.test")
	n.Reload(t)
	checkServes(t, n.Addr, "", second)

	// As a deploy hook would.
	_, _, third := writeCert(t, dir, "third.test")
	since := n.Generation(t)
	if _, err := (deploy.Hook{Command: n.ReloadCommand(), Timeout: 5 * time.Second}).Run(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	n.WaitReloaded(t, since)
	checkServes(t, n.Addr, "", third)
	if got := n.Generation(t).Workers; len(got) != 2 {
		t.Errorf("workers after reloads: %v, want 2", got)
	}
}

// fatalTB records a Fatalf and ends the goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestNginxReloadRefused(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, first := writeCert(t, dir, "first.test")
	n := backend.StartNginx(t, certFile, keyFile, backend.NginxOptions{})
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Reload(f)
	}()
	<-done
	if !strings.Contains(f.msg, "refused the reload") || !strings.Contains(f.msg, certFile) {
		t.Errorf("Reload with a broken certificate: %q", f.msg)
	}
	checkServes(t, n.Addr, "", first) // nginx keeps the old configuration
}

func TestNginxProxyProtocol(t *testing.T) {
	certFile, keyFile, _ := writeCert(t, t.TempDir(), "backend.test")
	n := backend.StartNginx(t, certFile, keyFile, backend.NginxOptions{ProxyProtocol: true})
	for _, tt := range []struct {
		version byte
		src     string
	}{
		{2, "203.0.113.7:4242"},
		{1, "198.51.100.9:5353"},
		{2, "[2001:db8::5]:6464"},
	} {
		conn := dial(t, n.Addr)
		src := net.TCPAddrFromAddrPort(netip.MustParseAddrPort(tt.src))
		dst := conn.RemoteAddr()
		if src.IP.To4() == nil {
			dst = &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 443}
		}
		if _, err := proxyproto.HeaderProxyFromAddrs(tt.version, src, dst).WriteTo(conn); err != nil {
			t.Fatal(err)
		}
		if body, _ := get(t, conn, nil, "/?v"+tt.src); body != backend.Page {
			t.Errorf("GET /: %q", body)
		}
		host, port, _ := net.SplitHostPort(tt.src)
		line := n.WaitAccessLog(t, "/?v"+tt.src)
		if want := "proxy=" + host + ":" + port + " "; !strings.Contains(line, want) {
			t.Errorf("PROXY v%d from %s: access log line %q lacks %q", tt.version, tt.src, line, want)
		}
	}

	// Without a header nginx drops the connection: no handshake.
	conn := dial(t, n.Addr)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}).Handshake(); err == nil {
		t.Error("handshake without a PROXY header succeeded")
	}
}

func TestHAProxy(t *testing.T) {
	for _, mode := range []string{"http", "tcp"} {
		t.Run(mode, func(t *testing.T) {
			b, cert := bundle(t, "haproxy.test")
			h := backend.StartHAProxy(t, b, backend.HAProxyOptions{Mode: mode, Threads: 1})
			checkServes(t, h.Addr, "haproxy.test", cert)
			if body, _ := get(t, dial(t, h.Addr), nil, "/"); body != backend.HAProxyPage {
				t.Errorf("GET / = %q, want %q", body, backend.HAProxyPage)
			}
			if w := h.Worker(t); w.Pid == 0 || w.Pid == h.Pid {
				t.Errorf("worker %+v, master %d", w, h.Pid)
			}
		})
	}
}

// TestHAProxyHotUpdate is the point of the HAProxy runtime API: the new
// certificate is served with no reload, and survives one because Deploy
// wrote the file too.
func TestHAProxyHotUpdate(t *testing.T) {
	b, first := bundle(t, "first.test")
	extra, extraCert := bundle(t, "extra.test")
	h := backend.StartHAProxy(t, b, backend.HAProxyOptions{CertName: "a b;c.pem", ExtraCerts: [][]byte{extra}})
	checkServes(t, h.Addr, "first.test", first)
	checkServes(t, h.Addr, "extra.test", extraCert)
	before := h.Worker(t)

	next, second := bundle(t, "first.test")
	api := deploy.HAProxy{Socket: h.AdminSocket}
	if err := api.Deploy(context.Background(), h.CertPath, next); err != nil {
		t.Fatal(err)
	}
	checkServes(t, h.Addr, "first.test", second)
	checkServes(t, h.Addr, "extra.test", extraCert)
	h.CheckNotReloaded(t, before)
	show, err := api.ShowCert(context.Background(), h.CertPath)
	if err != nil {
		t.Fatal(err)
	}
	// HAProxy prints the DER integer's bytes: maybe a leading 0.
	if want := fmt.Sprintf("%X", second.SerialNumber); !strings.Contains(show, "Serial: "+want+"\n") && !strings.Contains(show, "Serial: 0"+want+"\n") {
		t.Errorf("show ssl cert:\n%s\nlacks serial %s", show, want)
	}
	if fi, err := os.Stat(h.CertPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("deployed file: %v, %v; want mode 0600", fi.Mode(), err)
	}

	h.Reload(t)
	if w := h.Worker(t); w.Pid == before.Pid {
		t.Errorf("worker %d unchanged by Reload", w.Pid)
	}
	checkServes(t, h.Addr, "first.test", second)
}

func TestHAProxyAcceptProxy(t *testing.T) {
	b, _ := bundle(t, "haproxy.test")
	h := backend.StartHAProxy(t, b, backend.HAProxyOptions{AcceptProxy: true, Threads: 1})
	conn := dial(t, h.Addr)
	src := &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 4242}
	if _, err := proxyproto.HeaderProxyFromAddrs(2, src, conn.RemoteAddr()).WriteTo(conn); err != nil {
		t.Fatal(err)
	}
	if body, _ := get(t, conn, nil, "/"); body != backend.HAProxyPage {
		t.Errorf("GET / = %q", body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(h.Log)
		if strings.Contains(string(data), "203.0.113.9:4242") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy's log lacks the PROXY source:\n%s", data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSelfSigned(t *testing.T) {
	certPEM, keyPEM := backend.SelfSigned(t, "a.test", "127.0.0.1", "::1")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c := pair.Leaf
	if len(c.DNSNames) != 1 || c.DNSNames[0] != "a.test" || len(c.IPAddresses) != 2 {
		t.Errorf("names %v %v", c.DNSNames, c.IPAddresses)
	}
	if err := c.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if time.Until(c.NotAfter) < time.Hour || time.Since(c.NotBefore) < 0 {
		t.Errorf("validity %v – %v", c.NotBefore, c.NotAfter)
	}
}
