package backend

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NginxOptions change the server StartNginx runs.
type NginxOptions struct {
	// ProxyProtocol makes the listener expect a PROXY protocol (v1 or v2)
	// header before the TLS handshake, as behind tlsalpn with PROXY
	// emission; the access log then shows the header's source address.
	ProxyProtocol bool
	// SessionCacheOff disables session resumption (no cache, no tickets),
	// so every connection makes a full handshake: for handshake benchmarks.
	SessionCacheOff bool
	// NoAccessLog turns the access log off, for throughput benchmarks.
	NoAccessLog bool
	// Workers is the number of worker processes; 0 means 1.
	Workers int
}

// Nginx is an nginx started by StartNginx.
type Nginx struct {
	Addr      string // 127.0.0.1:port, TLS
	Dir       string // prefix: configuration, logs, pid file and html/
	Config    string // the configuration file
	AccessLog string // one line per request, see LogFormat
	ErrorLog  string
	CertFile  string // ssl_certificate, read again on each reload
	KeyFile   string // ssl_certificate_key
	Pid       int    // the master process
	Workers   int    // how many worker processes it runs

	proc *process
}

// LogFormat is the access log's format: the connection's address, the
// PROXY protocol source ("proxy=:" without one), the SNI, the request,
// status and body size.
const LogFormat = `$remote_addr proxy=$proxy_protocol_addr:$proxy_protocol_port sni=$ssl_server_name "$request" $status $body_bytes_sent`

// OneK is the size of the static file nginx serves at /1k.
const OneK = 1024

// Page is the body nginx returns for "/", naming the server.
const Page = "nginx\n"

// StartNginx starts nginx serving TLS on a free 127.0.0.1 port with the
// certificate and key in certFile and keyFile (read again on Reload), a
// 1 KiB static file at /1k and Page at "/". t.Cleanup stops it. When nginx
// is not installed the test is skipped, or fails if $CI is set.
func StartNginx(t testing.TB, certFile, keyFile string, opts NginxOptions) *Nginx {
	t.Helper()
	bin := findBinary(t, "nginx")
	dir := t.TempDir()
	n := &Nginx{
		Dir:       dir,
		Config:    filepath.Join(dir, "nginx.conf"),
		AccessLog: filepath.Join(dir, "access.log"),
		ErrorLog:  filepath.Join(dir, "error.log"),
		CertFile:  certFile,
		KeyFile:   keyFile,
		Workers:   max(opts.Workers, 1),
	}
	for _, sub := range []string{"html", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "html", "1k"), bytes.Repeat([]byte("0123456789abcdef"), OneK/16), 0o644); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		n.Addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		if err := os.WriteFile(n.Config, []byte(n.config(opts)), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Remove(n.ErrorLog) // so that an earlier attempt's errors do not count
		n.proc = startProcess(t, "nginx", bin,
			[]string{"-p", dir + "/", "-c", n.Config, "-e", n.ErrorLog},
			filepath.Join(dir, "stderr.log"), n.ErrorLog)
		n.Pid = n.proc.pid()
		err := n.proc.waitFor("workers listening", func() error {
			w, err := n.workerPids()
			if err != nil {
				return err
			}
			if len(w) < n.Workers {
				return fmt.Errorf("%d of %d workers started", len(w), n.Workers)
			}
			return dialable(n.Addr)
		})
		if err == nil {
			break
		}
		n.proc.stop(t, sigStop)
		if err != errAddrInUse || attempt == 3 {
			t.Fatalf("starting nginx: %v", err)
		}
	}
	t.Cleanup(func() { n.proc.stop(t, sigStop) })
	return n
}

func (n *Nginx) config(opts NginxOptions) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	if os.Geteuid() == 0 {
		// Workers must read the test's 0700 temporary directory.
		p("user root;")
		p("worker_rlimit_nofile 65536;")
	}
	p("daemon off;")
	p("master_process on;")
	p("worker_processes %d;", n.Workers)
	p("pid %s;", quoteNginx(filepath.Join(n.Dir, "nginx.pid")))
	p("error_log %s notice;", quoteNginx(n.ErrorLog))
	p("events { worker_connections 16384; }")
	p("http {")
	p("  log_format tlsalpn '%s';", LogFormat)
	if opts.NoAccessLog {
		p("  access_log off;")
	} else {
		p("  access_log %s tlsalpn;", quoteNginx(n.AccessLog))
	}
	for _, tmp := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		p("  %s_temp_path %s;", tmp, quoteNginx(filepath.Join(n.Dir, "tmp", tmp)))
	}
	p("  default_type application/octet-stream;")
	p("  keepalive_requests 1000000;")
	p("  server {")
	listen := n.Addr + " ssl"
	if opts.ProxyProtocol {
		listen += " proxy_protocol"
	}
	p("    listen %s;", listen)
	p("    server_name _;")
	p("    ssl_certificate %s;", quoteNginx(n.CertFile))
	p("    ssl_certificate_key %s;", quoteNginx(n.KeyFile))
	if opts.SessionCacheOff {
		p("    ssl_session_cache off;")
		p("    ssl_session_tickets off;")
	}
	p("    root %s;", quoteNginx(filepath.Join(n.Dir, "html")))
	p("    location = / { default_type text/plain; return 200 %s; }", quoteNginx(Page))
	p("  }")
	p("}")
	return b.String()
}

// Reload makes nginx read its configuration and certificate files again,
// as "nginx -s reload" does (SIGHUP to the master), and returns once the
// new workers serve and the old ones have gone. A configuration or
// certificate nginx refuses fails the test with nginx's error.
func (n *Nginx) Reload(t testing.TB) {
	t.Helper()
	since := n.Generation(t)
	n.proc.signal(t, sigReloadNginx)
	n.WaitReloaded(t, since)
}

// ReloadCommand returns a shell command that reloads this nginx, for a
// deploy hook. It returns before the reload is done: take a Generation
// before the hook runs and call WaitReloaded after.
func (n *Nginx) ReloadCommand() string { return fmt.Sprintf("kill -HUP %d", n.Pid) }

// Generation identifies the running configuration: its worker processes,
// which a reload replaces, and how far the error log went.
type Generation struct {
	Workers  []int
	logBytes int64
}

// Generation returns the current Generation, to pass to WaitReloaded.
func (n *Nginx) Generation(t testing.TB) Generation {
	t.Helper()
	w, err := n.workerPids()
	if err != nil {
		t.Fatalf("listing nginx workers: %v", err)
	}
	g := Generation{Workers: w}
	if fi, err := os.Stat(n.ErrorLog); err == nil {
		g.logBytes = fi.Size()
	}
	return g
}

// WaitReloaded waits until a reload after since has applied: new workers
// run and none of the old ones is left. nginx keeps old workers while they
// finish requests in progress; if one outlives the wait it is only logged,
// since it stopped accepting connections when the reload began. A reload
// nginx refused fails the test with nginx's error.
func (n *Nginx) WaitReloaded(t testing.TB, since Generation) {
	t.Helper()
	err := n.proc.waitFor("reload", func() error {
		if msg := n.newErrors(since.logBytes); msg != "" {
			return failed{fmt.Errorf("nginx refused the reload: %s", msg)}
		}
		w, err := n.workerPids()
		if err != nil {
			return err
		}
		if fresh := len(w) - countIn(w, since.Workers); fresh < n.Workers {
			return fmt.Errorf("%d of %d new workers started", fresh, n.Workers)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reloading nginx: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		w, _ := n.workerPids()
		left := countIn(w, since.Workers)
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Logf("nginx reloaded; %d old workers still finish requests", left)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newErrors returns the [emerg] lines written to the error log after
// offset.
func (n *Nginx) newErrors(offset int64) string {
	data, err := os.ReadFile(n.ErrorLog)
	if err != nil || int64(len(data)) < offset {
		return ""
	}
	var lines []string
	for _, line := range strings.Split(string(data[offset:]), "\n") {
		if strings.Contains(line, "[emerg]") {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "; ")
}

// WaitAccessLog waits (up to 5 seconds) for a line of the access log
// containing s and returns it: nginx writes the line when the response is
// done, possibly after the client has read it.
func (n *Nginx) WaitAccessLog(t testing.TB, s string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(n.AccessLog)
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, s) {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line with %q in nginx's access log:\n%s", s, data)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// workerPids lists the master's children from /proc: the workers (this
// configuration has no cache manager).
func (n *Nginx) workerPids() ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 || f[0] == "Z" {
			continue // exited, not yet reaped
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == n.Pid {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

func countIn(pids, set []int) int {
	n := 0
	for _, p := range pids {
		if slices.Contains(set, p) {
			n++
		}
	}
	return n
}
