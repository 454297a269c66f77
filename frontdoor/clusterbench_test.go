package frontdoor_test

// Benchmarks of cluster mode (issue 11) with real parts: a three-member etcd, serve nodes as
// processes of their own, HAProxy and Pebble. Each reports its figures as custom metrics;
// bench/cluster.sh runs them all.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tlsalpn/tlsalpn/cluster"
	"github.com/tlsalpn/tlsalpn/internal/backend"
	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/storage"
	"github.com/tlsalpn/tlsalpn/storage/etcd"
)

// BenchmarkCatchUp measures a fresh node catching up 1,000 and 10,000 certificates: the
// time from starting a serve process (a node of its own, on a three-member etcd, keeping
// every certificate) until it serves the last of them to a normal client, and that process's
// resident memory (VmHWM, its peak, and VmRSS, from /proc/PID/status: the node is a process
// of its own, so the figure is its alone). Serve loads every certificate from etcd into its
// cache before it accepts a connection, so the first handshake that succeeds shows the
// catch-up done. The certificates are real ones (P-256, signed with crypto/x509 by a CA made
// for the benchmark: issuing 10,000 from Pebble would take too long), stored by the setup as
// the manager stores them (key, chain, record). The time is also given in two parts: parsing
// the configuration (which lists every certificate), and from then until serving the last
// certificate (loading every certificate from etcd into the cache). The bytes they take in etcd are reported
// too: keys plus values as stored (private keys encrypted), and the growth of etcd's database
// file, per certificate. The node's ACME CA is a closed loopback port: nothing is due for
// renewal, and nothing is ordered.
//
//	go test -run '^$' -bench CatchUp -benchtime 1x ./frontdoor/
func BenchmarkCatchUp(b *testing.B) {
	etcdc := etcdtest.Start(b, 3)
	for _, n := range []int{1000, 10000} {
		b.Run(strconv.Itoa(n)+"-certs", func(b *testing.B) {
			for b.Loop() {
				r := catchUp(b, etcdc, fmt.Sprintf("catchup-%d-%d", n, time.Now().UnixNano()), n)
				b.ReportMetric(r.took.Seconds(), "start-to-serving-s")
				b.ReportMetric(r.configLoad.Seconds(), "config-parse-s")
				b.ReportMetric(r.catchUp.Seconds(), "etcd-to-serving-s")
				b.ReportMetric(float64(r.hwm)/(1<<20), "VmHWM-MiB")
				b.ReportMetric(float64(r.rss)/(1<<20), "VmRSS-MiB")
				b.ReportMetric(r.storedPerCert, "etcd-kv-bytes/cert")
				b.ReportMetric(r.dbPerCert, "etcd-db-bytes/cert")
				b.ReportMetric(float64(r.nodeValue), "node-registration-bytes")
			}
		})
	}
}

// TestCatchUp is the benchmark's setup, small: a fresh node serves the 20 certificates
// stored before it started.
func TestCatchUp(t *testing.T) {
	etcdc := etcdtest.Start(t, 1)
	r := catchUp(t, etcdc, "catchup-test", 20)
	t.Logf("serving 20 certificates %s after start (configuration parsed after %s); VmHWM %d KiB; %.0f bytes per certificate in etcd", r.took.Round(time.Millisecond), r.configLoad.Round(time.Millisecond), r.hwm>>10, r.storedPerCert)
}

type catchUpResult struct {
	took          time.Duration // from the process's start to serving the last certificate
	configLoad    time.Duration // from the process's start to its configuration parsed
	catchUp       time.Duration // from then to serving the last certificate: etcd to cache
	hwm, rss      int64         // bytes
	storedPerCert float64
	dbPerCert     float64
	nodeValue     int // bytes of the node's registration, which lists what it keeps
}

func catchUp(tb testing.TB, etcdc *etcdtest.Cluster, prefix string, n int) catchUpResult {
	// Generous: at 10,000 certificates parsing the configuration alone takes minutes on a
	// busy machine.
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	dir := tb.TempDir()
	ca := newBenchCA(tb)
	caRoot := filepath.Join(dir, "ca-root.pem")
	if err := os.WriteFile(caRoot, ca.pem, 0o644); err != nil {
		tb.Fatal(err)
	}
	const caURL = "https://127.0.0.1:1/dir" // closed: nothing is ordered
	addr := "127.0.0.1:" + strconv.Itoa(freePort(tb))
	var names [][]string
	for i := range n {
		names = append(names, []string{fmt.Sprintf("c%05d.catchup.test", i)})
	}
	cfgFile := filepath.Join(dir, "node.yaml")
	if err := os.WriteFile(cfgFile, []byte(nodeConfig(addr, caURL, caRoot, "127.0.0.1:9", names)), 0o644); err != nil {
		tb.Fatal(err)
	}
	store, err := etcd.Open(ctx, etcd.Config{Endpoints: etcdc.Endpoints(), Prefix: prefix, EncryptionKey: testKey, SessionTTL: 2 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	defer store.Close()
	cli := etcdc.Client(tb)
	dbBefore := dbSize(ctx, tb, cli, etcdc.Endpoints()[0])
	// The spec is the one serve makes of the configuration (frontdoor's manager), so that the
	// node finds each stored certificate as its own and changes nothing.
	template := manager.Spec{CA: caURL, CARoot: caRoot, Email: "ops@cluster.test", KeyType: issuer.EC256, Listen: addr}
	serials := make([]string, n)
	var (
		wg       sync.WaitGroup
		next     atomic.Int64
		firstErr error
		errOnce  sync.Once
	)
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				spec := template
				spec.Names = names[i]
				serial, err := ca.store(ctx, store, spec)
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				serials[i] = serial
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		tb.Fatalf("storing %d certificates: %v", n, firstErr)
	}
	var r catchUpResult
	lineages := prefix + "/" + storage.LineagesPrefix + "/"
	stored, keys := prefixBytes(ctx, tb, cli, lineages)
	if keys != 3*n {
		tb.Fatalf("%d keys under %s; want %d (key, chain and record of %d certificates)", keys, lineages, 3*n, n)
	}
	r.storedPerCert = float64(stored) / float64(n)
	r.dbPerCert = float64(dbSize(ctx, tb, cli, etcdc.Endpoints()[0])-dbBefore) / float64(n)

	start := time.Now()
	node := startNodeProcess(tb, "fresh", addr, cfgFile, etcdc, prefix)
	last := names[n-1][0]
	for {
		serial, err := servedSerial(addr, last)
		if err == nil && serial == serials[n-1] {
			break
		}
		select {
		case <-node.done:
			tb.Fatalf("the node exited before serving %s", last)
		case <-ctx.Done():
			tb.Fatalf("the node did not serve %s: %q, %v", last, serial, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	served := time.Now()
	r.took = served.Sub(start)
	r.hwm, r.rss = procMemory(tb, node.cmd.Process.Pid)
	loaded := configLoadedAt(tb, node.log)
	r.configLoad, r.catchUp = loaded.Sub(start), served.Sub(loaded)
	// Not only the last: a hundred certificates across the range, each with its own serial.
	for i := 0; i < n; i += max(1, n/100) {
		if serial, err := servedSerial(addr, names[i][0]); err != nil || serial != serials[i] {
			tb.Fatalf("%s: served %q (%v), stored %q", names[i][0], serial, err, serials[i])
		}
	}
	// The node's registration lists the certificates it keeps: one etcd value, growing with them.
	// The node's registration lists the certificates it keeps: one etcd value (sealed: read
	// through the store, measured as etcd holds it), growing with them.
	for deadline := time.Now().Add(10 * time.Second); ; {
		v, err := store.Get(ctx, storage.ClusterNodeKey("fresh"))
		if err == nil && strings.Contains(string(v), `"`+last+`"`) {
			resp, err := cli.Get(ctx, prefix+"/"+storage.ClusterNodeKey("fresh"))
			if err != nil || len(resp.Kvs) != 1 {
				tb.Fatalf("the node's registration: %v %v", resp, err)
			}
			r.nodeValue = len(resp.Kvs[0].Value)
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the node's registration never listed %s: %v", last, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

// benchCA signs certificates as a CA would, for storing many of them quickly.
type benchCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newBenchCA(tb testing.TB) *benchCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tlsalpn bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &benchCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// store issues a 90-day certificate for spec's names and stores it as the manager does: key
// and chain under a version named by the serial, then the record pointing at them. It
// returns the serial, in hex as the manager records it.
func (ca *benchCA) store(ctx context.Context, st storage.Storage, spec manager.Spec) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return "", err
	}
	now := time.Now().UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: serial, DNSNames: spec.Names, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return "", err
	}
	keyPEM, err := issuer.EncodeKeyPEM(key)
	if err != nil {
		return "", err
	}
	chainPEM := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.pem...)
	rec := manager.Record{Spec: spec, Serial: serial.Text(16), Issuer: ca.cert.Subject.CommonName,
		NotBefore: tmpl.NotBefore, NotAfter: tmpl.NotAfter, ObtainedAt: now}
	rec.Version = rec.Serial
	id := spec.ID()
	if err := st.Put(ctx, storage.LineageKey(id, rec.Version, storage.KeyFile), keyPEM, 0o600); err != nil {
		return "", fmt.Errorf("storing the key of %s: %w", id, err)
	}
	if err := st.Put(ctx, storage.LineageKey(id, rec.Version, storage.CertFile), chainPEM, 0o644); err != nil {
		return "", fmt.Errorf("storing the chain of %s: %w", id, err)
	}
	data, err := json.MarshalIndent(&rec, "", "  ")
	if err != nil {
		return "", err
	}
	if err := st.Put(ctx, storage.LineageMetaKey(id), data, 0o644); err != nil {
		return "", fmt.Errorf("storing the record of %s: %w", id, err)
	}
	return rec.Serial, nil
}

// prefixBytes is the bytes (keys and values, as etcd holds them) and the number of keys under
// prefix, read in pages.
func prefixBytes(ctx context.Context, tb testing.TB, cli *clientv3.Client, prefix string) (bytes int64, keys int) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		resp, err := cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(1000))
		if err != nil {
			tb.Fatalf("reading %s: %v", prefix, err)
		}
		for _, kv := range resp.Kvs {
			bytes += int64(len(kv.Key) + len(kv.Value))
			keys++
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return bytes, keys
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// dbSize is the size of an etcd member's database file.
func dbSize(ctx context.Context, tb testing.TB, cli *clientv3.Client, endpoint string) int64 {
	st, err := cli.Status(ctx, endpoint)
	if err != nil {
		tb.Fatalf("status of %s: %v", endpoint, err)
	}
	return st.DbSize
}

// configLoadedAt is when the node process logged its configuration parsed (the node's log is
// slog's text, with millisecond times from the same clock).
func configLoadedAt(tb testing.TB, logPath string) time.Time {
	data, err := os.ReadFile(logPath)
	if err != nil {
		tb.Fatalf("the node's log: %v", err)
	}
	for line := range strings.Lines(string(data)) {
		if !strings.Contains(line, `msg="configuration loaded"`) {
			continue
		}
		v, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			tb.Fatalf("the node's log: %q: %v", line, err)
		}
		return t
	}
	tb.Fatalf("the node's log has no \"configuration loaded\" line")
	return time.Time{}
}

// procMemory reads a process's peak and current resident memory (VmHWM, VmRSS), in bytes.
func procMemory(tb testing.TB, pid int) (hwm, rss int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatalf("the node's memory: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		field, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || (field != "VmHWM" && field != "VmRSS") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		if err != nil {
			tb.Fatalf("/proc/%d/status: %s: %v", pid, sc.Text(), err)
		}
		if field == "VmHWM" {
			hwm = kb << 10
		} else {
			rss = kb << 10
		}
	}
	if hwm == 0 || rss == 0 {
		tb.Fatalf("/proc/%d/status has no VmHWM or VmRSS", pid)
	}
	return hwm, rss
}

// BenchmarkEtcdRequestsPerIssuance counts, from etcd's own /metrics on each of three members,
// the requests one certificate costs when three serve nodes (processes, behind HAProxy in
// roundrobin, Pebble validating through it) are told to keep it (a configuration reload on
// each, as when a certificate is added; the first node first, the other two once it stored
// the certificate): the nodes register that they keep it, the first locks and orders it,
// publishes the challenge, every node loads and acknowledges it, the first stores the
// certificate, and the other two load it from etcd. The counters
// are summed over the three members, read before and after (when every node serves the new
// certificate, and a second later for what follows: unpublishing, deployment records); what
// the idle cluster does over the same time (lease keep-alives, measured just before at the
// same rate) is subtracted. Reads are Range; writes Txn, Put and DeleteRange; watch requests
// are watch creations and cancellations; watch events are the events etcd sent to watchers;
// lease requests are grants, keep-alives, revocations and TTL queries; proposals are Raft
// proposals committed (the leader's count). Then the same for a renewal of that certificate
// (the renewal-* metrics), ordered from outside the nodes as "tlsalpn renew" does while they
// are live: published to the three nodes, stored, taken up by each through its watch.
//
//	go test -run '^$' -bench EtcdRequestsPerIssuance -benchtime 1x ./frontdoor/
func BenchmarkEtcdRequestsPerIssuance(b *testing.B) {
	for b.Loop() {
		d := etcdRequestsPerIssuance(b)
		for _, k := range []string{"reads", "writes", "watch-requests", "watch-events", "lease-requests", "proposals"} {
			b.ReportMetric(d[k], k)
			b.ReportMetric(d["renewal-"+k], "renewal-"+k)
		}
	}
}

func etcdRequestsPerIssuance(b *testing.B) map[string]float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	etcdc := etcdtest.Start(b, 3)
	const prefix = "requests-bench"
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "backend") }))
	defer be.Close()
	var addrs []string
	for range 3 {
		addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(freePort(b)))
	}
	bal := backend.StartBalancer(b, addrs)
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
		b.Fatal(err)
	}
	defer ca.Close()
	dir := b.TempDir()
	caRoot := filepath.Join(dir, "ca-root.pem")
	if err := os.WriteFile(caRoot, ca.RootsPEM(), 0o644); err != nil {
		b.Fatal(err)
	}
	const name = "one.requests.test"
	nodes := make([]*node, 3)
	for i := range nodes {
		cfgFile := filepath.Join(dir, fmt.Sprintf("n%d.yaml", i+1))
		// No certificate kept yet: a route of another name, passed through, so that the node
		// starts.
		cfg := fmt.Sprintf("listen: %q\nacme:\n  ca: %q\n  ca_root: %q\n  email: ops@cluster.test\n  agree_tos: true\n"+
			"proxy:\n  steer: off\nroutes:\n  - names: [other.requests.test]\n    backend: %s\n", addrs[i], ca.DirectoryURL(), caRoot, be.Listener.Addr())
		if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
			b.Fatal(err)
		}
		nodes[i] = startNodeProcess(b, fmt.Sprintf("n%d", i+1), addrs[i], cfgFile, etcdc, prefix)
	}
	store, err := etcd.Open(ctx, etcd.Config{Endpoints: etcdc.Endpoints(), Prefix: prefix, EncryptionKey: testKey, SessionTTL: 2 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	for {
		for _, n := range nodes {
			select {
			case <-n.done:
				b.Fatalf("node %s exited", n.id)
			default:
			}
		}
		got, err := cluster.Nodes(ctx, store)
		if err == nil && len(got) == 3 {
			break
		}
		select {
		case <-ctx.Done():
			b.Fatalf("three nodes never registered: %+v %v", got, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	// The benchmark's own store is idle from here on: what is counted is the nodes'.
	time.Sleep(time.Second)
	idle0, t0 := scrapeEtcd(ctx, b, etcdc), time.Now()
	time.Sleep(2 * time.Second)
	idle1, t1 := scrapeEtcd(ctx, b, etcdc), time.Now()

	// n1 is told first and orders; n2 and n3 are told once it stored the certificate, and
	// take it from etcd. (Told at the same moment, two nodes may each order it: the second
	// to take the lock finds no record to replace, as manager.Obtain reads it, and orders.)
	keep := func(i int) {
		cfg := nodeConfig(addrs[i], ca.DirectoryURL(), caRoot, be.Listener.Addr().String(), [][]string{{name}})
		if err := os.WriteFile(nodes[i].config, []byte(cfg), 0o644); err != nil {
			b.Fatal(err)
		}
		nodes[i].cmd.Process.Signal(syscall.SIGHUP)
	}
	keep(0)
	m := manager.New(store, (&manager.Pool{Store: store}).Get, nil)
	var serial string
	for serial == "" {
		if s, err := m.Load(ctx, name); err == nil {
			serial = s.Serial
			break
		}
		select {
		case <-ctx.Done():
			b.Fatalf("%s never stored", name)
		case <-time.After(20 * time.Millisecond):
		}
	}
	keep(1)
	keep(2)
	servedEverywhere := func(serial string) {
		for _, n := range nodes {
			for {
				got, err := servedSerial(n.addr, name)
				if err == nil && got == serial {
					break
				}
				select {
				case <-ctx.Done():
					b.Fatalf("node %s never served %s %s: %q %v", n.id, name, serial, got, err)
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		time.Sleep(time.Second)
	}
	servedEverywhere(serial)
	after, t2 := scrapeEtcd(ctx, b, etcdc), time.Now()
	if got := orders.Load(); got != 1 {
		b.Fatalf("Pebble received %d orders; want one", got)
	}
	// The idle rate, over the idle interval, is subtracted from what changed over [from, to].
	net := func(prefix string, before, after map[string]float64, from, to time.Time, into map[string]float64) {
		scale := to.Sub(from).Seconds() / t1.Sub(t0).Seconds()
		for k, v := range after {
			into[prefix+k] = v - before[k] - scale*(idle1[k]-idle0[k])
		}
	}
	d := map[string]float64{}
	net("", idle1, after, t1, t2, d)

	// A renewal, as "tlsalpn renew" on a machine that reaches etcd does it while nodes are
	// live: it orders with the stored settings, publishes the challenge to the three nodes
	// (the CA reaches them through HAProxy), stores the certificate; the nodes take it up
	// through their watch.
	pub, err := cluster.NewPublisher(cluster.PublisherConfig{Storage: store, Self: "renew@bench"})
	if err != nil {
		b.Fatal(err)
	}
	pool := &manager.Pool{Store: store, Publisher: pub, AgreeTOS: true}
	pool.SetHTTPClient(caRoot, ca.HTTPClient())
	cur, err := m.Load(ctx, name)
	if err != nil {
		b.Fatal(err)
	}
	rm := manager.New(store, pool.Get, nil)
	rec, err := rm.Obtain(ctx, cur.Spec, cur.Chain[0])
	if err != nil {
		b.Fatalf("renewing %s through the nodes: %v", name, err)
	}
	servedEverywhere(rec.Serial)
	renewed, t3 := scrapeEtcd(ctx, b, etcdc), time.Now()
	if got := orders.Load(); got != 2 {
		b.Fatalf("Pebble received %d orders for one issuance and one renewal; want two", got)
	}
	net("renewal-", after, renewed, t2, t3, d)
	b.Logf("issuance over %s, renewal over %s (idle rate over %s subtracted): %v", t2.Sub(t1).Round(time.Millisecond), t3.Sub(t2).Round(time.Millisecond), t1.Sub(t0).Round(time.Millisecond), d)
	return d
}

// scrapeEtcd reads each member's /metrics and sums, over the members, the counters
// BenchmarkEtcdRequestsPerIssuance reports; "proposals" is the largest member's (the leader
// commits every proposal, each follower applies the same ones).
func scrapeEtcd(ctx context.Context, tb testing.TB, etcdc *etcdtest.Cluster) map[string]float64 {
	group := map[string]string{
		"Range": "reads", "Txn": "writes", "Put": "writes", "DeleteRange": "writes", "Watch": "watch-requests",
		"LeaseGrant": "lease-requests", "LeaseKeepAlive": "lease-requests", "LeaseRevoke": "lease-requests", "LeaseTimeToLive": "lease-requests",
	}
	out := map[string]float64{}
	for _, ep := range etcdc.Endpoints() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ep+"/metrics", nil)
		if err != nil {
			tb.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			tb.Fatalf("etcd metrics of %s: %v", ep, err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			i := strings.LastIndexByte(line, ' ')
			if i < 0 || strings.HasPrefix(line, "#") {
				continue
			}
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err != nil {
				continue
			}
			metric := line[:i]
			switch {
			case strings.HasPrefix(metric, "grpc_server_msg_received_total{"):
				_, rest, _ := strings.Cut(metric, `grpc_method="`)
				method, _, _ := strings.Cut(rest, `"`)
				if g, ok := group[method]; ok {
					out[g] += v
				}
			case metric == "etcd_debugging_mvcc_events_total":
				out["watch-events"] += v
			case metric == "etcd_server_proposals_committed_total":
				out["proposals"] = max(out["proposals"], v)
			}
		}
		resp.Body.Close()
		if err := sc.Err(); err != nil {
			tb.Fatalf("etcd metrics of %s: %v", ep, err)
		}
	}
	return out
}
