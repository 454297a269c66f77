package frontdoor_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/check"
	"github.com/tlsalpn/tlsalpn/cluster"
	"github.com/tlsalpn/tlsalpn/config"
	"github.com/tlsalpn/tlsalpn/frontdoor"
	"github.com/tlsalpn/tlsalpn/internal/backend"
	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/internal/freeport"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/storage"
	"github.com/tlsalpn/tlsalpn/storage/etcd"
)

// A cluster node in these tests is this test binary run again as a process of its own, with
// the environment below: the serve daemon (package frontdoor, what "tlsalpn serve" runs) on
// etcd, with its configuration file, SIGHUP to reload and SIGTERM to stop, as serve has.
const (
	envNode      = "TLSALPN_TEST_CLUSTER_NODE" // the node id; set: run as a node
	envEndpoints = "TLSALPN_TEST_ETCD_ENDPOINTS"
	envPrefix    = "TLSALPN_TEST_ETCD_PREFIX"
	envConfig    = "TLSALPN_TEST_CONFIG"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func TestMain(m *testing.M) {
	if id := os.Getenv(envNode); id != "" {
		os.Exit(runNode(id))
	}
	os.Exit(m.Run())
}

// runNode is a serve process: what cmd/tlsalpn's serve does, on etcd.
func runNode(id string) int {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	path := os.Getenv(envConfig)
	cfg, err := config.Load(path)
	if err != nil {
		logger.Error("config", "error", err)
		return 2
	}
	logger.Info("configuration loaded", "certificates", len(cfg.Certificates)) // BenchmarkCatchUp times it
	octx, cancel := context.WithTimeout(ctx, 20*time.Second)
	store, err := etcd.Open(octx, etcd.Config{Endpoints: strings.Split(os.Getenv(envEndpoints), ","), Prefix: os.Getenv(envPrefix),
		EncryptionKey: testKey, SessionTTL: 2 * time.Second, Logger: logger})
	cancel()
	if err != nil {
		logger.Error("storage", "error", err)
		return 1
	}
	defer store.Close()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		logger.Error("listen", "error", err)
		return 1
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			reload <- struct{}{}
		}
	}()
	d, err := frontdoor.New(frontdoor.Config{Config: cfg, Storage: store, Logger: logger, Reload: reload,
		Load: func() (*config.Config, error) { return config.Load(path) }, NodeID: id, Version: "test"})
	if err != nil {
		logger.Error("serve", "error", err)
		return 1
	}
	if err := d.Serve(ctx, ln); err != nil {
		logger.Error("serve", "error", err)
		return 1
	}
	return 0
}

// node is a node process started by a test.
type node struct {
	id, addr, config, log string
	cmd                   *exec.Cmd
	done                  chan struct{}
}

func startNodeProcess(t testing.TB, id, addr, cfgFile string, etcdc *etcdtest.Cluster, prefix string) *node {
	t.Helper()
	n := &node{id: id, addr: addr, config: cfgFile, log: filepath.Join(t.TempDir(), id+".log"), done: make(chan struct{})}
	logf, err := os.Create(n.log)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(os.Args[0], "-test.run=^$")
	n.cmd.Env = append(os.Environ(), envNode+"="+id, envEndpoints+"="+strings.Join(etcdc.Endpoints(), ","), envPrefix+"="+prefix, envConfig+"="+cfgFile)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.cmd.Wait(); logf.Close(); close(n.done) }()
	t.Cleanup(func() {
		n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			n.cmd.Process.Kill()
			<-n.done
		}
		b, _ := os.ReadFile(n.log)
		if strings.Contains(string(b), "DATA RACE") {
			t.Errorf("node %s: the race detector reported a race (see its log)", id)
		}
		if t.Failed() {
			t.Logf("node %s log (last 3000 bytes):\n%s", id, tail(string(b), 3000))
		}
	})
	return n
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	return freeport.Pick(t)
}

// nodeConfig is a serve configuration: listen on addr, terminate TLS for every name (a route to
// backend), keep the certificates named, steering off.
func nodeConfig(addr, caURL, caRoot, backendAddr string, certs [][]string) string {
	var routeNames []string
	for _, c := range certs {
		routeNames = append(routeNames, c...)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %q\nacme:\n  ca: %q\n  ca_root: %q\n  email: ops@cluster.test\n  agree_tos: true\n", addr, caURL, caRoot)
	fmt.Fprintf(&b, "proxy:\n  steer: off\nroutes:\n  - names: [%s]\n    backend: %s\n    mode: tcp\n", strings.Join(routeNames, ", "), backendAddr)
	if len(certs) > 0 {
		b.WriteString("certificates:\n")
		for _, c := range certs {
			fmt.Fprintf(&b, "  - names: [%s]\n", strings.Join(c, ", "))
		}
	}
	return b.String()
}

// TestClusterThreeNodes is issue 11's test with real parts: a three-member etcd, three serve
// nodes (processes), HAProxy balancing connections over them in turn, and Pebble validating
// through HAProxy. Each node first keeps a third of the certificates, so each node orders
// some; every validation lands on whichever node HAProxy picks. Then every node keeps all of
// them: each must serve each certificate without a new order.
func TestClusterThreeNodes(t *testing.T) {
	certs := 20
	if s := os.Getenv("TLSALPN_CLUSTER_CERTS"); s != "" {
		certs, _ = strconv.Atoi(s)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	etcdc := etcdtest.Start(t, 3)
	const prefix = "cluster-test"
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "backend") }))
	defer be.Close()
	beAddr := be.Listener.Addr().String()

	var addrs []string
	for range 3 {
		addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(freePort(t)))
	}
	bal := backend.StartBalancer(t, addrs)
	_, balPort, _ := net.SplitHostPort(bal.Addr)
	tlsPort, _ := strconv.Atoi(balPort)
	var orders atomic.Int32
	ca, err := democa.Start(ctx, democa.Options{TLSPort: tlsPort, NoSleep: true, Handler: func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
				orders.Add(1)
			}
			next.ServeHTTP(w, r)
		})
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	dir := t.TempDir()
	caRoot := filepath.Join(dir, "ca-root.pem")
	if err := os.WriteFile(caRoot, ca.RootsPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	var names [][]string
	for i := range certs {
		names = append(names, []string{fmt.Sprintf("c%d.cluster.test", i)})
	}
	nodes := make([]*node, 3)
	for i := range nodes {
		var mine [][]string
		for j, n := range names {
			if j%3 == i {
				mine = append(mine, n)
			}
		}
		cfgFile := filepath.Join(dir, fmt.Sprintf("n%d.yaml", i+1))
		if err := os.WriteFile(cfgFile, []byte(nodeConfig(addrs[i], ca.DirectoryURL(), caRoot, beAddr, mine)), 0o644); err != nil {
			t.Fatal(err)
		}
		nodes[i] = startNodeProcess(t, fmt.Sprintf("n%d", i+1), addrs[i], cfgFile, etcdc, prefix)
	}

	store, err := etcd.Open(ctx, etcd.Config{Endpoints: etcdc.Endpoints(), Prefix: prefix, EncryptionKey: testKey, SessionTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	waitFor(t, ctx, 30*time.Second, "three nodes registered", func() (bool, string) {
		for _, n := range nodes {
			select {
			case <-n.done:
				t.Fatalf("node %s exited", n.id)
			default:
			}
		}
		got, err := cluster.Nodes(ctx, store)
		return err == nil && len(got) == 3, fmt.Sprintf("%+v %v", got, err)
	})

	// Normal clients, on every node, all along: never a validation certificate.
	probeCtx, stopProbes := context.WithCancel(ctx)
	var probes sync.WaitGroup
	var leaks, probed atomic.Int32
	var leakMu sync.Mutex
	var leakDetail string
	for _, n := range nodes {
		host, port, _ := net.SplitHostPort(n.addr)
		p, _ := strconv.Atoi(port)
		ap, _ := net.ResolveTCPAddr("tcp", net.JoinHostPort(host, port))
		probes.Go(func() {
			c := &check.Checker{Addresses: nil, Timeout: 2 * time.Second, SkipProduction: true}
			c.Addresses = append(c.Addresses, ap.AddrPort().Addr())
			for i := 0; probeCtx.Err() == nil; i++ {
				id := challenge.Identifier{Type: challenge.DNS, Value: names[i%len(names)][0]}
				rep := c.Check(probeCtx, check.Target{ID: id, Port: p})
				for _, a := range rep.Addresses {
					for _, r := range a.Results {
						if r.Rule == check.RuleNoLeak {
							probed.Add(1)
							if !r.Pass {
								leaks.Add(1)
								leakMu.Lock()
								leakDetail = n.id + " " + id.Value + ": " + r.Detail
								leakMu.Unlock()
							}
						}
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}

	m := manager.New(store, (&manager.Pool{Store: store}).Get, nil)
	stored := func() map[string]string {
		list, _, err := m.List(ctx)
		if err != nil {
			return nil
		}
		out := map[string]string{}
		for _, s := range list {
			out[s.Names[0]] = s.Serial
		}
		return out
	}
	issued := time.Now()
	waitFor(t, ctx, 60*time.Second, fmt.Sprintf("%d certificates stored", certs), func() (bool, string) {
		s := stored()
		return len(s) == certs, fmt.Sprintf("%d stored, %d orders", len(s), orders.Load())
	})
	t.Logf("%d certificates issued through three nodes in %s", certs, time.Since(issued).Round(time.Millisecond))
	serials := stored()

	// Every node keeps every certificate now: each serves each, without a new order.
	for i, n := range nodes {
		if err := os.WriteFile(n.config, []byte(nodeConfig(addrs[i], ca.DirectoryURL(), caRoot, beAddr, names)), 0o644); err != nil {
			t.Fatal(err)
		}
		n.cmd.Process.Signal(syscall.SIGHUP)
	}
	waitFor(t, ctx, 10*time.Second, "every node registered as keeping every certificate", func() (bool, string) {
		got, err := cluster.Nodes(ctx, store)
		if err != nil || len(got) != 3 {
			return false, fmt.Sprint(got, err)
		}
		for _, in := range got {
			if len(in.Keeps) != certs {
				return false, fmt.Sprintf("%s keeps %d", in.ID, len(in.Keeps))
			}
		}
		return true, ""
	})
	for _, n := range nodes {
		for _, nm := range names {
			waitFor(t, ctx, 20*time.Second, n.id+" serves "+nm[0], func() (bool, string) {
				serial, err := servedSerial(n.addr, nm[0])
				return err == nil && serial == serials[nm[0]], fmt.Sprintf("serves %q (%v), stored %q", serial, err, serials[nm[0]])
			})
		}
	}
	// A command run outside the cluster (tlsalpn issue on a machine that reaches etcd) binds
	// no listener: it publishes to the nodes, which the CA reaches through HAProxy. One etcd
	// member of three is lost meanwhile: no effect.
	etcdc.Kill(0)
	pub, err := cluster.NewPublisher(cluster.PublisherConfig{Storage: store, Self: "issue@test"})
	if err != nil {
		t.Fatal(err)
	}
	pool := &manager.Pool{Store: store, Publisher: pub, AgreeTOS: true}
	pool.SetHTTPClient(caRoot, ca.HTTPClient())
	cliSpec := manager.Spec{Names: []string{"cli.cluster.test"}, CA: ca.DirectoryURL(), CARoot: caRoot, Email: "ops@cluster.test"}
	cliStart := time.Now()
	if _, err := manager.New(store, pool.Get, nil).Obtain(ctx, cliSpec, nil); err != nil {
		t.Fatalf("issuing from outside the cluster through its nodes, one etcd member down: %v", err)
	}
	t.Logf("issued from outside the cluster, one etcd member of three down, in %s", time.Since(cliStart).Round(time.Millisecond))
	certs++
	stopProbes()
	probes.Wait()

	// A node killed (SIGKILL) leaves the cluster within the session's TTL, and HAProxy stops
	// sending it connections: the others go on issuing without it.
	nodes[2].cmd.Process.Kill()
	killed := time.Now()
	waitFor(t, ctx, 10*time.Second, "the killed node gone from the cluster", func() (bool, string) {
		got, err := cluster.Nodes(ctx, store)
		return err == nil && len(got) == 2, fmt.Sprintf("%+v %v", got, err)
	})
	t.Logf("killed node gone after %s", time.Since(killed).Round(time.Millisecond))
	afterKill := manager.Spec{Names: []string{"after-kill.cluster.test"}, CA: ca.DirectoryURL(), CARoot: caRoot, Email: "ops@cluster.test"}
	if _, err := manager.New(store, pool.Get, nil).Obtain(ctx, afterKill, nil); err != nil {
		t.Fatalf("issuing with one node killed: %v", err)
	}
	certs++

	if got := orders.Load(); got != int32(certs) {
		t.Errorf("Pebble received %d orders for %d certificates; want exactly one each", got, certs)
	}
	if leaks.Load() > 0 {
		t.Errorf("%d of %d leak probes got a validation certificate; last: %s", leaks.Load(), probed.Load(), leakDetail)
	}
	if probed.Load() == 0 {
		t.Error("no leak probe completed")
	}
	// HAProxy sent the CA's validations to every node in turn (its log has a line per
	// connection, naming the server).
	balLog, _ := os.ReadFile(bal.Log)
	for i := range nodes {
		if n := strings.Count(string(balLog), fmt.Sprintf(" fe nodes/node%d ", i+1)); n == 0 {
			t.Errorf("HAProxy sent no validation to node %d; its log:\n%s", i+1, balLog)
		} else {
			t.Logf("validations through HAProxy to node %d: %d", i+1, n)
		}
	}
	if left, _ := store.List(ctx, storage.ClusterChallengesPrefix, true); len(left) > 0 {
		t.Errorf("challenges left published: %v", left)
	}
	t.Logf("leak probes: %d; total time %s", probed.Load(), time.Since(start).Round(time.Millisecond))
}

// servedSerial is the serial (hex, as manager records it) of the certificate addr serves to a
// normal client for name.
func servedSerial(addr, name string) (string, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: name, NextProtos: []string{"http/1.1"}, InsecureSkipVerify: true})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return fmt.Sprintf("%x", c.ConnectionState().PeerCertificates[0].SerialNumber), nil
}

// waitFor polls cond every 50 ms until it holds, for up to d.
func waitFor(t *testing.T, ctx context.Context, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			logPebbleGoroutines(t)
			t.Fatalf("not within %s: %s (%s)", d, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logPebbleGoroutines logs the goroutines of the in-process Pebble: under
// load it has been seen to stop answering every request at once (orders,
// authorizations and challenges all time out), and its stacks say where
// it waits.
func logPebbleGoroutines(t *testing.T) {
	buf := make([]byte, 32<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out strings.Builder
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "letsencrypt/pebble") && out.Len() < 64<<10 {
			out.WriteString(g)
			out.WriteString("\n\n")
		}
	}
	t.Logf("Pebble's goroutines:\n%s", out.String())
}
