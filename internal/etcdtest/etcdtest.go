// Package etcdtest runs a real etcd cluster for tests: etcd's own server, at the version go.mod
// pins as a tool, started as one process per member on loopback, so that a test can kill a
// member (SIGKILL), stop it, restart it, or stop and restart them all, and watch what the code
// under test makes of it. A mock cannot show how the real client behaves across a lost leader,
// a compaction, a quota alarm or a request too large; this can.
//
// Everything listens on 127.0.0.1 on ports picked free at start. Members are killed when the
// test ends (t.Cleanup) and, on Linux, also when the test binary dies without running its
// cleanups (the parent-death signal). Data directories are under t.TempDir, and Restart keeps
// them, so a restarted member comes back with its data.
//
// The first Start of a version builds the server (see Binary); later ones reuse it.
package etcdtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const (
	// startTimeout bounds waiting for a cluster, or a restarted member, to become healthy.
	startTimeout = 30 * time.Second
	// stopTimeout bounds waiting for a member to exit after SIGTERM before it is killed.
	stopTimeout = 10 * time.Second
	// startAttempts: picking a free port and etcd binding it race with other processes; a
	// cluster whose member lost that race is started again on other ports.
	startAttempts = 3
)

// Option configures Start.
type Option func(*options)

type options struct {
	tls             bool
	user, password  string
	quota           int64
	maxRequestBytes int
}

// WithTLS serves clients over TLS with client-certificate authentication
// (--client-cert-auth); the files are given by Cluster.ClientTLS.
func WithTLS() Option { return func(o *options) { o.tls = true } }

// WithAuth enables etcd authentication with a root user (password from RootPassword) and user
// with password, whose role may read and write every key.
func WithAuth(user, password string) Option {
	return func(o *options) { o.user, o.password = user, password }
}

// WithQuota sets --quota-backend-bytes, to provoke "database space exceeded".
func WithQuota(bytes int64) Option { return func(o *options) { o.quota = bytes } }

// WithMaxRequestBytes sets --max-request-bytes, to provoke "request is too large".
func WithMaxRequestBytes(n int) Option { return func(o *options) { o.maxRequestBytes = n } }

// Cluster is a running etcd cluster. Its methods may be called from several goroutines, but
// Kill, Stop and Restart of one member must not race each other.
type Cluster struct {
	t        testing.TB
	bin      string
	dir      string
	opts     options
	token    string
	rootPass string
	tlsFiles struct{ ca, cert, key, clientCert, clientKey string }
	tlsConf  *tls.Config

	mu      sync.Mutex
	members []*member
	authOn  bool
}

type member struct {
	name       string
	dataDir    string
	logPath    string
	clientPort int
	peerPort   int
	cmd        *exec.Cmd
	exited     chan struct{} // closed when cmd has been waited for
}

// Start starts a cluster of the given number of members (1 or more) and waits until it is
// healthy: every member answers a linearizable read.
func Start(t testing.TB, members int, opts ...Option) *Cluster {
	t.Helper()
	if members < 1 {
		t.Fatalf("etcdtest: %d members", members)
	}
	c := &Cluster{t: t, dir: t.TempDir(), rootPass: "root-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	for _, o := range opts {
		o(&c.opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout+startTimeout)
	defer cancel()
	var err error
	if c.bin, err = Binary(ctx); err != nil {
		t.Fatal(err)
	}
	if c.opts.tls {
		if err := c.makeTLS(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(c.cleanup)
	for attempt := 1; ; attempt++ {
		err = c.startNew(members, attempt)
		if err == nil {
			break
		}
		c.killAll()
		if attempt == startAttempts || !errors.Is(err, errPortTaken) {
			t.Fatalf("etcdtest: start %d members: %v", members, err)
		}
		t.Logf("etcdtest: %v; starting again on other ports", err)
	}
	if c.opts.user != "" {
		if err := c.enableAuth(); err != nil {
			t.Fatalf("etcdtest: enable auth: %v", err)
		}
	}
	return c
}

var errPortTaken = errors.New("a port was taken by another process")

func (c *Cluster) startNew(n, attempt int) error {
	c.mu.Lock()
	c.members = nil
	c.token = fmt.Sprintf("tlsalpn-%d-%d-%d", os.Getpid(), time.Now().UnixNano(), attempt)
	// Every member's ports in one call: ports picked one member at a time are released in
	// between, and the kernel may hand a released one out again (seen: "initial cluster
	// m0=http://127.0.0.1:43167,m1=http://127.0.0.1:43167,… has duplicate url").
	ports, err := freePorts(2 * n)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	for i := range n {
		base := filepath.Join(c.dir, fmt.Sprintf("try%d-m%d", attempt, i))
		c.members = append(c.members, &member{
			name:       fmt.Sprintf("m%d", i),
			dataDir:    base + ".data",
			logPath:    base + ".log",
			clientPort: ports[2*i],
			peerPort:   ports[2*i+1],
		})
	}
	c.mu.Unlock()
	for i := range n {
		if err := c.startMember(i, "new"); err != nil {
			return err
		}
	}
	return c.waitHealthy(context.Background(), allMembers(n))
}

func allMembers(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// freePorts returns n distinct ports that were free on 127.0.0.1 a moment ago.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (c *Cluster) scheme() string {
	if c.opts.tls {
		return "https"
	}
	return "http"
}

func (m *member) peerURL() string { return fmt.Sprintf("http://127.0.0.1:%d", m.peerPort) }

func (c *Cluster) startMember(i int, state string) error {
	c.mu.Lock()
	m := c.members[i]
	var initial []string
	for _, o := range c.members {
		initial = append(initial, o.name+"="+o.peerURL())
	}
	c.mu.Unlock()
	clientURL := fmt.Sprintf("%s://127.0.0.1:%d", c.scheme(), m.clientPort)
	args := []string{
		"--name", m.name,
		"--data-dir", m.dataDir,
		"--listen-client-urls", clientURL,
		"--advertise-client-urls", clientURL,
		"--listen-peer-urls", m.peerURL(),
		"--initial-advertise-peer-urls", m.peerURL(),
		"--initial-cluster", strings.Join(initial, ","),
		"--initial-cluster-state", state,
		"--initial-cluster-token", c.token,
		// Loopback: short heartbeats make a new leader come within a second of a kill.
		"--heartbeat-interval", "50",
		"--election-timeout", "500",
		// Test data need not survive a power loss; fsync on a shared disk is slow.
		"--unsafe-no-fsync",
		"--log-level", "warn",
		"--logger", "zap",
		"--log-outputs", "stderr",
	}
	if c.opts.tls {
		args = append(args, "--cert-file", c.tlsFiles.cert, "--key-file", c.tlsFiles.key,
			"--trusted-ca-file", c.tlsFiles.ca, "--client-cert-auth")
	}
	if c.opts.quota > 0 {
		args = append(args, "--quota-backend-bytes", strconv.FormatInt(c.opts.quota, 10))
	}
	if c.opts.maxRequestBytes > 0 {
		args = append(args, "--max-request-bytes", strconv.Itoa(c.opts.maxRequestBytes))
	}
	logf, err := os.OpenFile(m.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(c.bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start member %s: %w", m.name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	c.mu.Lock()
	m.cmd, m.exited = cmd, exited
	c.mu.Unlock()
	return nil
}

// waitHealthy waits until each of the members answers a linearizable read, or one of them
// exits (then the error says why, wrapping errPortTaken if it could not bind its port).
func (c *Cluster) waitHealthy(ctx context.Context, which []int) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	for _, i := range which {
		c.mu.Lock()
		m := c.members[i]
		c.mu.Unlock()
		if err := c.waitMember(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// waitMember waits until m answers a linearizable read (with auth on, the client itself
// needs the member up to log in, so it is made again until it can).
func (c *Cluster) waitMember(ctx context.Context, m *member) error {
	var cli *clientv3.Client
	defer func() {
		if cli != nil {
			cli.Close()
		}
	}()
	for {
		select {
		case <-m.exited:
			return m.exitError()
		default:
		}
		var err error
		if cli == nil {
			cli, err = c.newClient([]string{m.endpoint()}, true)
		}
		if cli != nil {
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			_, err = cli.Get(rctx, "etcdtest-health")
			rcancel()
			if err == nil {
				return nil
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("member %s not healthy after %v: %v\n%s", m.name, startTimeout, err, m.logTail())
		}
		select {
		case <-ctx.Done():
		case <-m.exited:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (m *member) endpoint() string { return fmt.Sprintf("127.0.0.1:%d", m.clientPort) }

func (m *member) exitError() error {
	tail := m.logTail()
	if strings.Contains(tail, "address already in use") {
		return fmt.Errorf("member %s: %w\n%s", m.name, errPortTaken, tail)
	}
	return fmt.Errorf("member %s exited: %s\n%s", m.name, m.cmd.ProcessState, tail)
}

// logTail returns the end of a member's log, for error messages.
func (m *member) logTail() string {
	b, _ := os.ReadFile(m.logPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// newClient returns a client for endpoints with the cluster's TLS, and, when asRoot and auth is
// on, the root user.
func (c *Cluster) newClient(endpoints []string, asRoot bool) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 2 * time.Second,
		TLS:         c.tlsConf,
		Logger:      zap.NewNop(),
	}
	if asRoot && c.authEnabled() {
		cfg.Username, cfg.Password = "root", c.rootPass
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("client for %v: %w", endpoints, err)
	}
	return cli, nil
}

func (c *Cluster) authEnabled() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opts.user != "" && c.rootPass != "" && c.authOn
}

// Client returns a client of the whole cluster, as root when auth is on, closed when the test
// ends: for tests that look at what the code under test stored.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := c.newClient(c.Endpoints(), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// RootPassword returns the password of etcd's root user (meaningful with WithAuth).
func (c *Cluster) RootPassword() string { return c.rootPass }

// Endpoints returns the members' client addresses, HOST:PORT.
func (c *Cluster) Endpoints() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.endpoint())
	}
	return eps
}

// URL returns the etcd:// URL of the cluster with the given key prefix, as --storage takes it.
func (c *Cluster) URL(prefix string) string {
	return "etcd://" + strings.Join(c.Endpoints(), ",") + "/" + prefix
}

// ClientTLS returns the files a client needs with WithTLS: the CA that signed the servers'
// certificates, and a client certificate and its key signed by the CA the servers trust.
func (c *Cluster) ClientTLS() (ca, cert, key string) {
	if !c.opts.tls {
		c.t.Fatal("etcdtest: ClientTLS without WithTLS")
	}
	return c.tlsFiles.ca, c.tlsFiles.clientCert, c.tlsFiles.clientKey
}

// Leader returns the index of the member that is the leader now, for tests that kill it: a
// leader's death is the case that makes requests in flight time out.
func (c *Cluster) Leader(t testing.TB) int {
	t.Helper()
	eps := c.Endpoints()
	cli, err := c.newClient(eps, true)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		for i, ep := range eps {
			sctx, scancel := context.WithTimeout(ctx, time.Second)
			st, err := cli.Status(sctx, ep)
			scancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				return i
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("etcdtest: no leader within %v", startTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill kills member i with SIGKILL and waits until it is gone.
func (c *Cluster) Kill(i int) { c.signal(i, syscall.SIGKILL) }

// Stop stops member i with SIGTERM (SIGKILL after a bounded wait) and waits until it is gone.
func (c *Cluster) Stop(i int) { c.signal(i, syscall.SIGTERM) }

func (c *Cluster) signal(i int, sig syscall.Signal) {
	c.t.Helper()
	c.mu.Lock()
	m := c.members[i]
	c.mu.Unlock()
	if m.cmd == nil {
		return
	}
	select {
	case <-m.exited:
		return
	default:
	}
	m.cmd.Process.Signal(sig)
	select {
	case <-m.exited:
	case <-time.After(stopTimeout):
		m.cmd.Process.Kill()
		<-m.exited
	}
}

// Restart starts member i again (after Kill or Stop; a running member is stopped first) with
// its data directory, and waits until it is healthy, which needs a quorum of members running.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Stop(i)
	if err := c.startMember(i, "existing"); err != nil {
		c.t.Fatalf("etcdtest: restart: %v", err)
	}
	if err := c.waitHealthy(context.Background(), []int{i}); err != nil {
		c.t.Fatalf("etcdtest: restart: %v", err)
	}
}

// StopAll stops every member.
func (c *Cluster) StopAll() {
	c.t.Helper()
	var wg sync.WaitGroup
	for i := range c.Endpoints() {
		wg.Go(func() { c.Stop(i) })
	}
	wg.Wait()
}

// StartAll starts every member that is not running, with its data, and waits until the
// cluster is healthy.
func (c *Cluster) StartAll() {
	c.t.Helper()
	n := len(c.Endpoints())
	for i := range n {
		c.mu.Lock()
		m := c.members[i]
		c.mu.Unlock()
		select {
		case <-m.exited:
		default:
			continue
		}
		if err := c.startMember(i, "existing"); err != nil {
			c.t.Fatalf("etcdtest: start all: %v", err)
		}
	}
	if err := c.waitHealthy(context.Background(), allMembers(n)); err != nil {
		c.t.Fatalf("etcdtest: start all: %v", err)
	}
}

func (c *Cluster) killAll() {
	c.mu.Lock()
	ms := c.members
	c.mu.Unlock()
	for _, m := range ms {
		if m.cmd == nil {
			continue
		}
		m.cmd.Process.Kill()
		<-m.exited
	}
}

func (c *Cluster) cleanup() {
	c.killAll()
	if c.t.Failed() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, m := range c.members {
			c.t.Logf("etcdtest: log of member %s (%s):\n%s", m.name, m.logPath, m.logTail())
		}
	}
}

// enableAuth creates root and the user (with a role on every key) and turns auth on.
func (c *Cluster) enableAuth() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cli, err := c.newClient(c.Endpoints(), false)
	if err != nil {
		return err
	}
	defer cli.Close()
	steps := []struct {
		what string
		do   func() error
	}{
		{"add user root", func() error { _, err := cli.UserAdd(ctx, "root", c.rootPass); return err }},
		{"add role root", func() error { _, err := cli.RoleAdd(ctx, "root"); return err }},
		{"grant root", func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err }},
		{"add role tlsalpn", func() error { _, err := cli.RoleAdd(ctx, "tlsalpn"); return err }},
		{"grant every key to tlsalpn", func() error {
			_, err := cli.RoleGrantPermission(ctx, "tlsalpn", "\x00", "\x00", clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		}},
		{"add user " + c.opts.user, func() error { _, err := cli.UserAdd(ctx, c.opts.user, c.opts.password); return err }},
		{"grant tlsalpn to " + c.opts.user, func() error { _, err := cli.UserGrantRole(ctx, c.opts.user, "tlsalpn"); return err }},
		{"enable auth", func() error { _, err := cli.AuthEnable(ctx); return err }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	c.mu.Lock()
	c.authOn = true
	c.mu.Unlock()
	return nil
}

// TLSConfig returns a client TLS configuration with the client certificate (nil without WithTLS).
func (c *Cluster) TLSConfig() *tls.Config {
	if c.tlsConf == nil {
		return nil
	}
	return c.tlsConf.Clone()
}
