package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/tlsalpn/tlsalpn/deploy"
	"github.com/tlsalpn/tlsalpn/internal/backend"
	"github.com/tlsalpn/tlsalpn/internal/democa"
)

// clientLoop requests "/" through the front door every few milliseconds
// until stopped, counting failures and remembering the certificates seen.
type clientLoop struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	lastErr    error
	issuers    map[string]int
	stop       chan struct{}
	done       chan struct{}
}

func startClientLoop(t *testing.T, addr, name string) *clientLoop {
	l := &clientLoop{issuers: map[string]int{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			// Every kind of normal client, including one that offers
			// acme-tls/1 among others (nginx here speaks no h2, so each also offers
			// http/1.1): none may ever get a validation
			// certificate, even while a challenge is pending.
			proto := [][]string{{"http/1.1"}, nil, {"h2", "http/1.1"}, {"acme-tls/1", "http/1.1"}, {"h2", "http/1.1", "acme-tls/1"}}[i%5]
			issuer, err := getThrough(addr, name, proto)
			l.mu.Lock()
			if err != nil {
				l.failed.Add(1)
				l.lastErr = err
			} else {
				l.ok.Add(1)
				l.issuers[issuer]++
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(l.halt)
	return l
}

func (l *clientLoop) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

func (l *clientLoop) sawIssuer(substr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for is := range l.issuers {
		if strings.Contains(is, substr) {
			return true
		}
	}
	return false
}

// getThrough makes one HTTP/1.1 request over a fresh TLS connection and
// returns the issuer of the certificate it was served.
func getThrough(addr, name string, alpn []string) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true, ServerName: name, NextProtos: alpn})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", name)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	leaf := c.ConnectionState().PeerCertificates[0]
	for _, ext := range leaf.Extensions {
		if ext.Id.String() == "1.3.6.1.5.5.7.1.31" {
			return "", fmt.Errorf("a client offering %q was served a validation certificate", alpn)
		}
	}
	return leaf.Issuer.CommonName, nil
}

// TestServeNginxZeroDowntime: nginx keeps serving TLS behind the front
// door while tlsalpn obtains a certificate through it, deploys it to
// nginx's files and reloads nginx with the hook; clients never fail and
// then see the new certificate. With steering (the default) the kernel
// hands clients straight to nginx, which sees their real address, and the
// CA's validation still reaches the front door; with --steer off every
// connection is relayed.
func TestServeNginxZeroDowntime(t *testing.T) {
	for _, tc := range []struct {
		steer string
		// the address nginx logs for a client on 127.0.0.2: its own when
		// steered, the front door's when relayed
		wantRemote string
		wantLog    string
	}{
		{"auto", "127.0.0.2", "steering: while no challenge is pending"},
		{"off", "127.0.0.1", "steering off"},
	} {
		t.Run("steer="+tc.steer, func(t *testing.T) {
			ca := startCLICA(t, democa.Options{})
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			certPEM, keyPEM := backend.SelfSigned(t, "example.com")
			if _, err := deploy.Write(out, deploy.Files{Cert: certPEM, FullChain: certPEM, Key: keyPEM}); err != nil {
				t.Fatal(err)
			}
			ngx := backend.StartNginx(t, filepath.Join(out, "fullchain.pem"), filepath.Join(out, "key.pem"), backend.NginxOptions{})

			_, stderr, stop := startServe(t, "--listen", ca.listen, "--backend", ngx.Addr, "-d", "example.com",
				"--ca", ca.DirectoryURL(), "--ca-root", ca.root, "--email", "ops@example.com", "--agree-tos",
				"--storage", filepath.Join(dir, "store"), "--out", out, "--deploy-hook", ngx.ReloadCommand(), "--profile", "default",
				"--steer", tc.steer)
			waitForPort(t, ca.listen, 10*time.Second)
			waitFor(t, "serve to log its steering", 10*time.Second, func() bool { return strings.Contains(stderr.String(), "steering") })
			if tc.steer == "auto" && steeringForbidden(stderr.String()) {
				t.Skipf("steering not permitted here: %s", stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.wantLog) {
				t.Fatalf("serve's log does not say %q:\n%s", tc.wantLog, stderr.String())
			}
			loop := startClientLoop(t, ca.listen, "example.com")
			waitFor(t, "clients to see the CA's certificate through nginx", 30*time.Second, func() bool { return loop.sawIssuer("Pebble") })
			time.Sleep(100 * time.Millisecond) // a few more requests after the switch
			loop.halt()
			if f := loop.failed.Load(); f != 0 {
				t.Errorf("%d of %d client requests failed during issuance and reload; last: %v", f, f+loop.ok.Load(), loop.lastErr)
			}
			t.Logf("%d requests, issuers seen: %v", loop.ok.Load(), loop.issuers)
			verifyChain(t, ca, filepath.Join(out, "fullchain.pem"), "example.com")
			checkRemote(t, ngx, ca.listen, "/after-issuance", tc.wantRemote)
			if code := stop(); code != exitOK {
				t.Errorf("serve exited %d: %s", code, stderr.String())
			}
		})
	}
}

// steeringForbidden reports whether serve's log says this machine does not
// let it steer at all (no BPF, or no right to take nginx's socket), as
// opposed to a fault in steering itself, which must fail the test.
func steeringForbidden(log string) bool {
	return strings.Contains(log, "kernel steering unavailable") || strings.Contains(log, "needs root or CAP_SYS_PTRACE")
}

// checkRemote requests path from 127.0.0.2 through the front door at addr
// and checks the client address nginx logs for it.
func checkRemote(t *testing.T, ngx *backend.Nginx, addr, path, want string) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	request(t, raw, path)
	if line := ngx.WaitAccessLog(t, path); !strings.HasPrefix(line, want+" ") {
		t.Errorf("nginx logged %q for a client on 127.0.0.2; want the address %s", line, want)
	}
}

// TestServeSteeringReload: SIGHUP turns steering off and on again without
// dropping the connection that is open.
func TestServeSteeringReload(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := backend.SelfSigned(t, "example.com")
	os.WriteFile(filepath.Join(dir, "c.pem"), certPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "k.pem"), keyPEM, 0o600)
	ngx := backend.StartNginx(t, filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"), backend.NginxOptions{})
	listen := "127.0.0.1:" + itoa(freePort(t))
	cfg := filepath.Join(dir, "serve.yaml")
	write := func(steer string) {
		os.WriteFile(cfg, []byte(fmt.Sprintf("listen: %q\nstorage: %s\nproxy: {steer: %s}\nroutes:\n  - names: [\"*\"]\n    backend: %s\n",
			listen, filepath.Join(dir, "store"), steer, ngx.Addr)), 0o644)
	}
	write("auto")
	_, stderr, stop := startServe(t, "--config", cfg)
	waitFor(t, "serve to log its steering", 10*time.Second, func() bool { return strings.Contains(stderr.String(), "steering") })
	if steeringForbidden(stderr.String()) {
		t.Skipf("steering not permitted here: %s", stderr.String())
	}
	checkRemote(t, ngx, listen, "/steered", "127.0.0.2")

	// A connection opened now, steered, outlives both reloads.
	open, err := tls.Dial("tcp", listen, &tls.Config{InsecureSkipVerify: true, ServerName: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	br := bufio.NewReader(open)
	keepAlive := func(path string) {
		t.Helper()
		open.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(open, "GET %s HTTP/1.1\r\nHost: example.com\r\n\r\n", path)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %s on the open connection: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	keepAlive("/open-1")

	for i, step := range []struct{ steer, log, remote string }{
		{"off", "steering off", "127.0.0.1"},
		{"auto", "steering: while no challenge is pending", "127.0.0.2"},
	} {
		write(step.steer)
		before := strings.Count(stderr.String(), step.log)
		if self, err := os.FindProcess(os.Getpid()); err == nil {
			self.Signal(syscall.SIGHUP)
		}
		waitFor(t, "the reload to log "+step.log, 10*time.Second, func() bool { return strings.Count(stderr.String(), step.log) > before })
		checkRemote(t, ngx, listen, fmt.Sprintf("/reload-%d", i), step.remote)
		keepAlive(fmt.Sprintf("/open-%d", i+2))
	}
	if code := stop(); code != exitOK {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
}

// TestServeHAProxyRuntimeAPI: the new certificate goes live in HAProxy
// through its runtime API, with no reload, configured by file or by flags.
func TestServeHAProxyRuntimeAPI(t *testing.T) {
	for _, byFlags := range []bool{false, true} {
		t.Run(map[bool]string{false: "config", true: "flags"}[byFlags], func(t *testing.T) {
			ca := startCLICA(t, democa.Options{})
			dir := t.TempDir()
			certPEM, keyPEM := backend.SelfSigned(t, "example.com")
			hap := backend.StartHAProxy(t, append(certPEM, keyPEM...), backend.HAProxyOptions{Mode: "http"})
			before := hap.Worker(t)
			args := []string{"--listen", ca.listen, "--backend", hap.Addr, "-d", "example.com", "--storage", filepath.Join(dir, "store"),
				"--ca", ca.DirectoryURL(), "--ca-root", ca.root, "--email", "ops@example.com", "--agree-tos", "--profile", "default",
				"--haproxy-socket", hap.AdminSocket, "--haproxy-cert", hap.CertPath}
			if !byFlags {
				cfg := filepath.Join(dir, "serve.yaml")
				os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: %q
storage: %s
acme: {ca: %q, ca_root: %s, email: ops@example.com, agree_tos: true, profile: default}
routes:
  - names: ["*"]
    backend: %s
certificates:
  - names: [example.com]
    haproxy: {socket: %s, cert: %s}
`, ca.listen, filepath.Join(dir, "store"), ca.DirectoryURL(), ca.root, hap.Addr, hap.AdminSocket, hap.CertPath)), 0o644)
				args = []string{"--config", cfg}
			}
			_, stderr, stop := startServe(t, args...)
			waitForPort(t, ca.listen, 10*time.Second)
			loop := startClientLoop(t, ca.listen, "example.com")
			waitFor(t, "HAProxy to serve the CA's certificate", 30*time.Second, func() bool { return loop.sawIssuer("Pebble") })
			loop.halt()
			if f := loop.failed.Load(); f != 0 {
				t.Errorf("%d client requests failed; last: %v", f, loop.lastErr)
			}
			show := hap.Command(t, "show ssl cert "+hap.CertPath)
			if !strings.Contains(show, "Pebble") {
				t.Errorf("show ssl cert does not show the new certificate:\n%s", show)
			}
			hap.CheckNotReloaded(t, before)
			if code := stop(); code != exitOK {
				t.Errorf("serve exited %d: %s", code, stderr.String())
			}
		})
	}
}

// TestServeProxyProtocol: PROXY v2 to nginx carries the client's address
// (nginx logs it); a PROXY header from an untrusted address is refused, and
// one from the trusted balancer is passed on.
func TestServeProxyProtocol(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := backend.SelfSigned(t, "example.com")
	os.WriteFile(filepath.Join(dir, "c.pem"), certPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "k.pem"), keyPEM, 0o600)
	ngx := backend.StartNginx(t, filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"), backend.NginxOptions{ProxyProtocol: true})
	listen := "127.0.0.1:" + itoa(freePort(t))
	cfg := filepath.Join(dir, "serve.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`listen: %q
storage: %s
proxy: {trusted_proxies: [127.0.0.3]}
routes:
  - names: ["*"]
    backend: %s
    send_proxy: 2
`, listen, filepath.Join(dir, "store"), ngx.Addr)), 0o644)
	_, stderr, stop := startServe(t, "--config", cfg)
	waitForPort(t, listen, 10*time.Second)

	// A client on 127.0.0.2: nginx must log 127.0.0.2 (the proxy itself
	// connects from 127.0.0.1).
	dialFrom := func(src string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		return d.Dial("tcp", listen)
	}
	raw, err := dialFrom("127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	request(t, raw, "/from-client")
	if line := ngx.WaitAccessLog(t, "/from-client"); !strings.Contains(line, "proxy=127.0.0.2:") {
		t.Errorf("nginx did not log the client's address: %s", line)
	}

	// An untrusted client sending a PROXY header is refused.
	raw, err = dialFrom("127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	hdr := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("203.0.113.9"), Port: 5555}, &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 443})
	hdr.WriteTo(raw)
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: "example.com"})
	if err := tc.Handshake(); err == nil {
		t.Error("a PROXY header from an untrusted address was accepted")
	}
	raw.Close()

	// The trusted balancer's header is passed on.
	raw, err = dialFrom("127.0.0.3")
	if err != nil {
		t.Fatal(err)
	}
	hdr.WriteTo(raw)
	request(t, raw, "/from-balancer")
	if line := ngx.WaitAccessLog(t, "/from-balancer"); !strings.Contains(line, "proxy=203.0.113.9:5555") {
		t.Errorf("nginx did not log the address the trusted balancer gave: %s", line)
	}
	if code := stop(); code != exitOK {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
}

func request(t *testing.T, raw net.Conn, path string) {
	t.Helper()
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: "example.com"})
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(tc, "GET %s HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatalf("request %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}
