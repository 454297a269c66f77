package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/cluster"
	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/storage/etcd"
)

// sectionBlocks returns the bodies of the fenced blocks of section whose info string is lang.
func sectionBlocks(t *testing.T, section, lang string) []string {
	t.Helper()
	var out []string
	open := "```" + lang + "\n"
	for rest := section; ; {
		i := strings.Index(rest, open)
		if i < 0 {
			return out
		}
		rest = rest[i+len(open):]
		j := strings.Index(rest, "```\n")
		if j < 0 {
			t.Fatalf("README: unterminated %s block", lang)
		}
		out = append(out, rest[:j])
		rest = rest[j:]
	}
}

// TestREADMEClusterNodes runs the README's three-node example as written: three real
// "tlsalpn serve --config FILE --node-id … --node-address …" processes (the binary built from
// this tree) with the README's configuration file (storage: a mapping on a real three-member
// etcd, encryption_key_file), behind HAProxy run with the README's configuration, Pebble
// validating through HAProxy. The certificate is ordered once and served by every node; the
// README's list shows which node renews it and the nodes. With every etcd member stopped the
// nodes keep serving it; a certificate added then (SIGHUP) is paused on every node, with the
// reason logged; when etcd returns the nodes are registered again and it is obtained, once.
//
// Substitutions, all here: each node's files live under a directory of its own (three hosts);
// the etcd endpoints 10.0.0.N:2379 become member N's; the node addresses 10.0.0.1N:443 and the
// listen and bind ":443" become loopback ports; the backend 127.0.0.1:8080 an HTTP server of
// the test's; the CA's URL Pebble's, with its root (acme.ca_root) on the next line.
func TestREADMEClusterNodes(t *testing.T) {
	section := readmeSection(t, "### Three nodes behind one address")
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i+1] // the next section
	}
	yamls, haproxys, shs, texts := sectionBlocks(t, section, "yaml"), sectionBlocks(t, section, "haproxy"), sectionBlocks(t, section, "sh"), sectionBlocks(t, section, "text")
	if len(yamls) != 1 || len(haproxys) != 1 || len(shs) != 2 || len(texts) != 1 {
		t.Fatalf("README three-node example: %d yaml, %d haproxy, %d sh, %d text blocks; want 1, 1, 2, 1", len(yamls), len(haproxys), len(shs), len(texts))
	}
	bin := filepath.Join(buildBinaries(t), "tlsalpn")
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		haproxy = "/usr/sbin/haproxy"
	}
	ca := startCLICA(t, democa.Options{})
	etcdc := etcdtest.Start(t, 3)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "backend") }))
	defer be.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	nodeAddr := make([]string, 3)
	for i := range nodeAddr {
		nodeAddr[i] = "127.0.0.1:" + itoa(freePort(t))
	}
	key := make([]byte, 32)
	rand.Read(key)
	roots := make([]string, 3)
	for i := range roots {
		roots[i] = t.TempDir()
		if err := os.MkdirAll(filepath.Join(roots[i], "etc", "tlsalpn"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(roots[i], "etc", "tlsalpn", "storage.key"), key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// substitute makes s what it is on node i (-1: the machine running list).
	substitute := func(s string, i int) string {
		for m, ep := range etcdc.Endpoints() {
			s = strings.ReplaceAll(s, "10.0.0."+itoa(m+1)+":2379", ep)
		}
		for n, a := range nodeAddr {
			s = strings.ReplaceAll(s, "10.0.0.1"+itoa(n+1)+":443", a)
		}
		root := roots[max(i, 0)]
		s = strings.ReplaceAll(s, "/etc/tlsalpn/", filepath.Join(root, "etc", "tlsalpn")+"/")
		s = strings.ReplaceAll(s, "127.0.0.1:8080", be.Listener.Addr().String())
		s = strings.ReplaceAll(s, "  ca: https://acme-v02.api.letsencrypt.org/directory\n",
			"  ca: "+ca.DirectoryURL()+"\n  ca_root: "+ca.root+"\n")
		if i >= 0 {
			s = strings.ReplaceAll(s, `listen: ":443"`, fmt.Sprintf("listen: %q", nodeAddr[i]))
		}
		return s
	}
	for i := range roots {
		cfg := substitute(yamls[0], i)
		if strings.Contains(cfg, "10.0.0.") || strings.Contains(cfg, "letsencrypt") {
			t.Fatalf("README config not fully substituted:\n%s", cfg)
		}
		if err := os.WriteFile(filepath.Join(roots[i], "etc", "tlsalpn", "serve.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// HAProxy with the README's configuration, bound where Pebble validates.
	hcfg := substitute(haproxys[0], -1)
	hcfg = strings.ReplaceAll(hcfg, "bind :443", "bind "+ca.listen)
	hfile := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(hfile, []byte(hcfg), 0o644); err != nil {
		t.Fatal(err)
	}
	hp := exec.Command(haproxy, "-db", "-f", hfile)
	var hlog bytes.Buffer
	hp.Stdout, hp.Stderr = &hlog, &hlog
	if err := hp.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { hp.Process.Signal(syscall.SIGTERM); hp.Wait() }()
	waitForPort(t, ca.listen, 10*time.Second)

	// The three nodes, with the README's commands.
	var serveLines []string
	for _, l := range strings.Split(shs[0], "\n") {
		if l = strings.TrimSpace(l); l != "" {
			serveLines = append(serveLines, l)
		}
	}
	if len(serveLines) != 3 {
		t.Fatalf("README: %d serve lines, want 3: %q", len(serveLines), serveLines)
	}
	type proc struct {
		id   string
		cmd  *exec.Cmd
		log  *syncBuf
		done chan struct{}
	}
	procs := make([]*proc, 3)
	for i, l := range serveLines {
		args := tlsalpnArgs(t, shellWords(t, l))
		for j := range args {
			args[j] = substitute(args[j], i)
		}
		p := &proc{id: fmt.Sprintf("web%d", i+1), cmd: exec.Command(bin, args...), log: &syncBuf{}, done: make(chan struct{})}
		p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { p.cmd.Wait(); close(p.done) }()
		procs[i] = p
		t.Cleanup(func() {
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				p.cmd.Process.Kill()
				<-p.done
			}
			if t.Failed() {
				t.Logf("node %s (%s) log:\n%s", p.id, l, tailOf(p.log.String(), 3000))
			}
		})
	}
	alive := func() {
		t.Helper()
		for _, p := range procs {
			select {
			case <-p.done:
				t.Fatalf("node %s exited: %v", p.id, p.cmd.ProcessState)
			default:
			}
		}
	}

	store, err := etcd.Open(ctx, etcd.Config{Endpoints: etcdc.Endpoints(), Prefix: "tlsalpn", EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	nodesAre := func(want []string) func() bool {
		return func() bool {
			alive()
			got, err := cluster.Nodes(ctx, store)
			var ids []string
			for _, n := range got {
				ids = append(ids, n.ID)
			}
			return err == nil && slices.Equal(ids, want)
		}
	}
	ids := []string{"web1", "web2", "web3"}
	waitFor(t, "three nodes registered", 30*time.Second, nodesAre(ids))
	m := manager.New(store, nil, nil)
	var serial string
	waitFor(t, "the certificate stored", 60*time.Second, func() bool {
		alive()
		s, err := m.Load(ctx, "example.com")
		if err == nil {
			serial = s.Serial
		}
		return err == nil
	})
	servesAll := func(what string) {
		t.Helper()
		for _, a := range append(slices.Clone(nodeAddr), ca.listen) {
			for _, name := range []string{"example.com", "www.example.com"} {
				waitFor(t, fmt.Sprintf("%s: %s serves %s", what, a, name), 20*time.Second, func() bool {
					got, err := servedSerialAt(a, name)
					return err == nil && got == serial
				})
			}
		}
	}
	servesAll("issued")
	if got := ca.orders.Load(); got != 1 {
		t.Errorf("Pebble received %d orders for one certificate kept by three nodes; want 1", got)
	}

	// The README's list, from "another machine".
	listLine := strings.TrimSpace(shs[1])
	args := tlsalpnArgs(t, shellWords(t, listLine))
	for j := range args {
		args[j] = substitute(args[j], -1)
	}
	code, stdout, stderr := runCLI(t, ctx, args...)
	if code != exitOK {
		t.Fatalf("README %q: exit %d\n%s%s", listLine, code, stdout, stderr)
	}
	t.Logf("%s:\n%s", listLine, stdout)
	infos, err := cluster.Nodes(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	renewer := cluster.Renewer("example.com", infos)
	if !regexp.MustCompile(`(?m)^example\.com\s.*\sok\s+` + renewer + `$`).MatchString(stdout) {
		t.Errorf("list does not say %s renews example.com:\n%s", renewer, stdout)
	}
	// The README's sample has the same columns and rows, node for node.
	shape := func(s string) []string {
		var out []string
		for _, l := range lines(s) {
			if f := strings.Fields(l); len(f) > 0 {
				out = append(out, f[0])
			}
		}
		return out
	}
	if got, want := shape(stdout), shape(texts[0]); !slices.Equal(got, want) {
		t.Errorf("list prints rows %q; the README shows %q", got, want)
	}
	for _, header := range []string{"CERTIFICATE", "NODE"} {
		if got, want := headerLine(stdout, header), headerLine(texts[0], header); got != want {
			t.Errorf("list header %q; the README shows %q", got, want)
		}
	}

	// Every etcd member stopped: each node and the balancer go on serving the certificate.
	etcdc.StopAll()
	stopped := time.Now()
	for time.Since(stopped) < 3*time.Second {
		alive()
		for _, a := range append(slices.Clone(nodeAddr), ca.listen) {
			if got, err := servedSerialAt(a, "example.com"); err != nil || got != serial {
				t.Fatalf("etcd down %s: %s serves %q (%v), want %s", time.Since(stopped).Round(time.Millisecond), a, got, err, serial)
			}
			if body, err := getBodyThrough(a, "example.com"); err != nil || body != "backend" {
				t.Fatalf("etcd down %s: GET https://example.com/ through %s: %q, %v; want the backend's answer", time.Since(stopped).Round(time.Millisecond), a, body, err)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A certificate falls due meanwhile: the operator adds one to every node's configuration
	// and reloads it (SIGHUP). Each node's keeper finds etcd away and pauses, saying so.
	for i, p := range procs {
		f := filepath.Join(roots[i], "etc", "tlsalpn", "serve.yaml")
		cfg, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, append(cfg, "  - names: [new.example.com]\n"...), 0o644); err != nil {
			t.Fatal(err)
		}
		p.cmd.Process.Signal(syscall.SIGHUP)
	}
	// Bounded generously: while etcd is away each storage read of the
	// reload waits out the 10 s etcd request timeout before the keeper
	// pauses (under -race and a loaded machine, more than 20 s).
	const paused = "storage unreachable: renewal paused"
	waitFor(t, "every node to log that the new certificate's renewal is paused", 60*time.Second, func() bool {
		alive()
		for _, p := range procs {
			if !regexp.MustCompile(paused + `.*(name=|"name":")new\.example\.com`).MatchString(p.log.String()) {
				return false
			}
		}
		return true
	})
	for _, l := range lines(procs[0].log.String()) {
		if strings.Contains(l, paused) {
			t.Logf("web1 during the outage: %s", l)
			break
		}
	}
	if got := ca.orders.Load(); got != 1 {
		t.Errorf("Pebble received %d orders during the outage; want none", got-1)
	}
	if remaining := 7*time.Second - time.Since(stopped); remaining > 0 {
		time.Sleep(remaining) // past the nodes' session TTL (5 s): their registrations are gone
	}
	etcdc.StartAll()
	back := time.Now()
	waitFor(t, "the three nodes registered again after etcd's return", 60*time.Second, nodesAre(ids))
	t.Logf("etcd down %s; the nodes registered again %s after its return", back.Sub(stopped).Round(time.Millisecond), time.Since(back).Round(time.Millisecond))
	// What each node keeps, changed by the reload while etcd was away, is registered with it.
	waitFor(t, "every node registered as keeping both certificates", 30*time.Second, func() bool {
		got, err := cluster.Nodes(ctx, store)
		if err != nil || len(got) != 3 {
			return false
		}
		for _, n := range got {
			if !slices.Equal(n.Keeps, []string{"example.com", "new.example.com"}) {
				return false
			}
		}
		return true
	})
	servesAll("after the outage")
	waitFor(t, "the paused certificate obtained after etcd's return", 60*time.Second, func() bool {
		alive()
		_, err := m.Load(ctx, "new.example.com")
		return err == nil
	})
	t.Logf("the paused certificate was obtained %s after etcd's return", time.Since(back).Round(time.Millisecond))
	for _, p := range procs {
		if !strings.Contains(p.log.String(), "storage answers again: renewal resumed") {
			t.Errorf("node %s did not log that the renewal resumed", p.id)
		}
	}
	time.Sleep(time.Second) // any second order would be placed by now
	if got := ca.orders.Load(); got != 2 {
		t.Errorf("Pebble received %d orders for two certificates kept by three nodes; want 2", got)
	}
}

// getBodyThrough GETs https://name/ by way of addr, and returns the body.
func getBodyThrough(addr, name string) (string, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig: &tls.Config{ServerName: name, InsecureSkipVerify: true},
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 3 * time.Second}
	resp, err := c.Get("https://" + name + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// headerLine is the first line of s that begins with word, its spaces collapsed.
func headerLine(s, word string) string {
	for _, l := range lines(s) {
		if strings.HasPrefix(l, word) {
			return strings.Join(strings.Fields(l), " ")
		}
	}
	return ""
}

// servedSerialAt is the serial (hex, as manager records it) of the certificate addr serves to a
// normal client for name.
func servedSerialAt(addr, name string) (string, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: name, NextProtos: []string{"http/1.1"}, InsecureSkipVerify: true})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16), nil
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// syncBuf is a buffer a process and the test share.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
