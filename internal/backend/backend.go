// Package backend starts real nginx and HAProxy servers on loopback ports
// for tests, the servers tlsalpn sits in front of and deploys to.
//
// Each server runs as a plain child process of the test (no systemd, no
// daemonizing) from a configuration written into a temporary directory, and
// is stopped by t.Cleanup. When a server's binary is missing the test is
// skipped on a developer's machine but fails when the CI environment
// variable is set: CI installs both (scripts/ci-deps.sh), and a skipped test
// there would hide a regression.
package backend

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startTimeout bounds how long a server may take to start, reload or stop.
const startTimeout = 15 * time.Second

// findBinary returns the path of a server's binary, looking in PATH and in
// the sbin directories a non-root PATH often lacks. When it is missing the
// test is skipped, or fails when $CI is set.
func findBinary(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	msg := fmt.Sprintf("%s is not installed (scripts/ci-deps.sh installs it)", name)
	if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
		t.Fatalf("%s, and CI is set: CI must run this test", msg)
	}
	t.Skip(msg)
	return ""
}

// freePort returns a loopback TCP port that was free a moment ago. The
// server binding it later may lose a race for it; the start functions retry
// with another port when the server says the address is in use.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// process is a server started by a test.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done is closed
	logs []string      // files worth showing when it fails
}

// startProcess starts bin with args in its own process group, its output
// going to outFile.
func startProcess(t testing.TB, name, bin string, args []string, outFile string, logs ...string) *process {
	t.Helper()
	out, err := os.OpenFile(outFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	defer out.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{}), logs: append([]string{outFile}, logs...)}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the server's main process.
func (p *process) signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling %s: %v%s", p.name, err, p.logTail())
	}
}

// stop asks the server to stop with sig and waits for it; after the
// timeout its whole process group is killed, so no worker outlives the
// test holding a port.
func (p *process) stop(t testing.TB, sig os.Signal) {
	if p.exited() {
		return
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(startTimeout):
		t.Errorf("%s did not stop within %s of %v; killing it%s", p.name, startTimeout, sig, p.logTail())
		killGroup(p.cmd)
		<-p.done
	}
	// Workers of a master killed by its signal could linger: make sure.
	killGroup(p.cmd)
}

// logTail returns the end of the server's logs, for failure messages.
func (p *process) logTail() string {
	var b strings.Builder
	for _, f := range p.logs {
		data, err := os.ReadFile(f)
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		if len(data) > 2000 {
			data = data[len(data)-2000:]
		}
		fmt.Fprintf(&b, "\n--- %s:\n%s", f, bytes.TrimSpace(data))
	}
	return b.String()
}

// logContains reports whether any of the server's logs contains s.
func (p *process) logContains(s string) bool {
	for _, f := range p.logs {
		if data, err := os.ReadFile(f); err == nil && bytes.Contains(data, []byte(s)) {
			return true
		}
	}
	return false
}

// errAddrInUse says the server lost the race for its port.
var errAddrInUse = errors.New("address in use")

// failed is returned by a ready function to stop waiting at once.
type failed struct{ error }

// waitFor polls ready every 10ms until it returns nil or a failed, or the
// process exits, or startTimeout passes.
func (p *process) waitFor(what string, ready func() error) error {
	deadline := time.Now().Add(startTimeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if f, ok := err.(failed); ok {
			return fmt.Errorf("%s: %w%s", p.name, f.error, p.logTail())
		}
		if p.exited() {
			if p.logContains("Address already in use") || p.logContains("address already in use") {
				return errAddrInUse
			}
			return fmt.Errorf("%s exited (%v) before %s: %v%s", p.name, p.err, what, err, p.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no %s within %s: %v%s", p.name, what, startTimeout, err, p.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dialable reports whether addr accepts TCP connections.
func dialable(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// SelfSigned returns a self-signed ECDSA P-256 certificate for names (DNS
// names or IP addresses; "localhost" when none), valid from an hour ago for
// a day, and its PKCS#8 private key, both PEM: the initial certificate of a
// server before tlsalpn replaces it.
func SelfSigned(t testing.TB, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	if len(names) == 0 {
		names = []string{"localhost"}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generating key: %v", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("generating serial: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("creating certificate for %v: %v", names, err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("marshalling key: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
}

// PeerCert connects to addr with TLS, sending serverName as SNI (none when
// empty) and verifying nothing, and returns the leaf certificate the
// server presented.
func PeerCert(t testing.TB, addr, serverName string) *x509.Certificate {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS handshake with %s (SNI %q): %v", addr, serverName, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// ParseCert returns the first certificate of certPEM.
func ParseCert(t testing.TB, certPEM []byte) *x509.Certificate {
	t.Helper()
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			t.Fatalf("no CERTIFICATE in PEM")
		}
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatalf("parsing certificate: %v", err)
			}
			return c
		}
	}
}

// quoteNginx quotes s for an nginx configuration file.
func quoteNginx(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// quoteHAProxy quotes s for an HAProxy configuration file: single quotes,
// inside which HAProxy expands nothing.
func quoteHAProxy(t testing.TB, s string) string {
	t.Helper()
	if strings.ContainsAny(s, "'\n") {
		t.Fatalf("path %q cannot be quoted for HAProxy", s)
	}
	return "'" + s + "'"
}
