package manager

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/responder"
	"github.com/tlsalpn/tlsalpn/storage/etcd"
)

// The helper process of TestNodeDiesMidOrder: the test binary run again
// with these variables set (see TestMain).
const (
	helperEnv      = "TLSALPN_MANAGER_HELPER"
	helperEtcdEnv  = "TLSALPN_MANAGER_HELPER_ETCD"  // endpoints, comma-separated
	helperCAEnv    = "TLSALPN_MANAGER_HELPER_CA"    // directory URL
	helperRootsEnv = "TLSALPN_MANAGER_HELPER_ROOTS" // PEM file the CA's HTTPS chains to
	helperPortEnv  = "TLSALPN_MANAGER_HELPER_PORT"  // the port the CA validates on
	helperNameEnv  = "TLSALPN_MANAGER_HELPER_NAME"  // the certificate
)

// deathTTL is the etcd session TTL of both nodes: how long a dead node's
// lock outlives it.
const deathTTL = 2 * time.Second

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "stall-after-order" {
		if err := stallAfterOrder(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// stallAfterOrder is a node that renews the certificate, holding its lock,
// and stalls once the CA has issued, before storing anything: it prints
// "ordered SERIAL" and waits to be killed.
func stallAfterOrder() error {
	ctx := context.Background()
	st, err := etcd.Open(ctx, etcd.Config{Endpoints: strings.Split(os.Getenv(helperEtcdEnv), ","), Prefix: "tlsalpn",
		EncryptionKey: []byte("0123456789abcdef0123456789abcdef"), SessionTTL: deathTTL})
	if err != nil {
		return err
	}
	roots, err := os.ReadFile(os.Getenv(helperRootsEnv))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv(helperPortEnv))
	if err != nil {
		return err
	}
	r := responder.New()
	go r.Serve(ctx, ln)
	ca := os.Getenv(helperCAEnv)
	iss, err := issuer.New(issuer.Config{Directory: ca, HTTPClient: hc, AgreeTOS: true, Storage: st, Publisher: r})
	if err != nil {
		return err
	}
	obtained := make(chan *issuer.Result, 1)
	held := stallForever{Issuer: iss, obtained: obtained}
	m := New(st, func(context.Context, Spec) (Issuer, error) { return held, nil }, nil)
	name := os.Getenv(helperNameEnv)
	s, err := m.Load(ctx, name)
	if err != nil {
		return err
	}
	go func() {
		res := <-obtained
		fmt.Printf("ordered %s\n", serialHex(res.Leaf))
	}()
	_, err = m.Obtain(ctx, Spec{Names: []string{name}, CA: ca, KeyType: issuer.EC256, Profile: "shortlived"}, s.Chain[0])
	return err
}

// stallForever is a real issuer that, once the CA has issued, hands the
// result to obtained and never returns.
type stallForever struct {
	Issuer
	obtained chan<- *issuer.Result
}

func (h stallForever) Obtain(ctx context.Context, req issuer.Request) (*issuer.Result, error) {
	res, err := h.Issuer.Obtain(ctx, req)
	if err != nil {
		return nil, err
	}
	h.obtained <- res
	select {}
}

// TestNodeDiesMidOrder: a node renewing a certificate on etcd is killed
// (SIGKILL) after the CA issued, before it stored anything, while another
// node waits to renew the same certificate. Within the lock's TTL plus a
// few seconds the other node has the lock and completes the renewal, with
// the certificate the dead node ordered (the order journal in etcd hands
// it over): one order at the CA, not two, and nothing lost.
func TestNodeDiesMidOrder(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var orders atomic.Int32
	// The port the CA validates on: the dying node listens there, then
	// this one once it is dead.
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	ca, err := democa.Start(ctx, democa.Options{TLSPort: port, NoSleep: true, Strict: true, Handler: countOrders(&orders)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ca.HTTPClient().CloseIdleConnections(); ca.Close() }()
	roots := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(roots, ca.RootsPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	c := etcdtest.Start(t, 1)
	st, err := etcd.Open(ctx, etcd.Config{Endpoints: c.Endpoints(), Prefix: "tlsalpn",
		EncryptionKey: []byte("0123456789abcdef0123456789abcdef"), SessionTTL: deathTTL})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := responder.New()
	serveOn := func() (stop func()) {
		var ln net.Listener
		for range 100 { // the dead node's socket is closed by the kernel, at once
			if ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); r.Serve(sctx, ln) }()
		return func() { cancel(); <-done }
	}
	iss, err := issuer.New(issuer.Config{Directory: ca.DirectoryURL(), HTTPClient: ca.HTTPClient(), AgreeTOS: true, Storage: st, Publisher: r})
	if err != nil {
		t.Fatal(err)
	}
	m := New(st, func(context.Context, Spec) (Issuer, error) { return iss, nil }, nil)
	const name = "dies.spread.example.test"
	spec := Spec{Names: []string{name}, CA: ca.DirectoryURL(), KeyType: issuer.EC256, Profile: "shortlived"}
	stop := serveOn()
	first, err := m.Obtain(ctx, spec, nil)
	stop()
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.Load(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	before := orders.Load()

	// The node that dies.
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=stall-after-order", helperEtcdEnv+"="+strings.Join(c.Endpoints(), ","),
		helperCAEnv+"="+ca.DirectoryURL(), helperRootsEnv+"="+roots, helperPortEnv+"="+strconv.Itoa(port), helperNameEnv+"="+name)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	dyingSerial, ok := strings.CutPrefix(strings.TrimSpace(line), "ordered ")
	if err != nil || !ok {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the dying node did not order: %q, %v; its stderr:\n%s", line, err, stderr.String())
	}

	// The other node waits for the lock meanwhile.
	type result struct {
		rec *Record
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		rec, err := m.Obtain(ctx, spec, s.Chain[0])
		done <- result{rec, err, time.Now()}
	}()
	select {
	case r := <-done:
		t.Fatalf("the other node renewed while the dying one held the lock: %+v", r)
	case <-time.After(500 * time.Millisecond):
	}
	killed := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	defer serveOn()()

	var got result
	select {
	case got = <-done:
	case <-ctx.Done():
		t.Fatal("the other node did not complete the renewal")
	}
	if got.err != nil {
		t.Fatal(got.err)
	}
	took := got.at.Sub(killed)
	t.Logf("the other node completed the renewal %v after the lock holder was killed (TTL %v)", took.Round(time.Millisecond), deathTTL)
	if took > deathTTL+5*time.Second {
		t.Errorf("the renewal was completed %v after the lock holder died; want within the TTL %v + 5 s", took, deathTTL)
	}
	stored, err := m.Load(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Serial == first.Serial || got.rec.Serial != stored.Serial {
		t.Errorf("stored serial %s, returned %s; want a renewed certificate (first %s)", stored.Serial, got.rec.Serial, first.Serial)
	}
	if stored.Serial != dyingSerial {
		t.Errorf("stored serial %s; want %s, the certificate the dead node ordered (its order resumed, not ordered again)", stored.Serial, dyingSerial)
	}
	if n := orders.Load() - before; n != 1 {
		t.Errorf("%d orders at the CA for one renewal; want 1", n)
	}
}
