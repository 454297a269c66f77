package backend

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// HAProxyOptions change the server StartHAProxy runs.
type HAProxyOptions struct {
	// Mode is "http" (the default: HAProxy answers HAProxyPage itself) or
	// "tcp" (HAProxy terminates TLS and passes the plaintext to Backend).
	Mode string
	// Backend is the plaintext TCP address HAProxy forwards to in tcp
	// mode; when empty, a loopback HTTP server answering HAProxyPage is
	// started for it.
	Backend string
	// AcceptProxy makes the listener expect a PROXY protocol header
	// (bind … accept-proxy); the log then shows the header's source.
	AcceptProxy bool
	// CertName is the crt file's name in the server's directory; default
	// "site.pem". Names with spaces or ';' test the runtime API's escaping.
	CertName string
	// ExtraCerts are more cert+key bundles on the same listener, at
	// ExtraCertPaths, chosen by SNI.
	ExtraCerts [][]byte
	// Threads is HAProxy's nbthread; 0 leaves HAProxy's default (one per
	// CPU).
	Threads int
}

// HAProxy is an HAProxy started by StartHAProxy, in master-worker mode
// like Debian's service: a reload (Reload, or SIGUSR2 to Pid) starts a new
// worker that reads the configuration and the crt files again.
type HAProxy struct {
	Addr           string   // 127.0.0.1:port, TLS
	AdminSocket    string   // unix socket of the runtime API, level admin
	MasterSocket   string   // unix socket of the master CLI ("show proc", "reload")
	CertPath       string   // the crt bundle, as the configuration names it
	ExtraCertPaths []string // HAProxyOptions.ExtraCerts
	Dir            string
	Config         string
	Log            string // HAProxy's output, with one line per connection or request
	Pid            int    // the master process

	proc *process
}

// HAProxyPage is the body HAProxy's response carries, in both modes.
const HAProxyPage = "haproxy"

// StartHAProxy starts HAProxy terminating TLS on a free 127.0.0.1 port
// with bundlePEM (certificate chain and key) at CertPath and the runtime
// API on AdminSocket. t.Cleanup stops it. When HAProxy is not installed the
// test is skipped, or fails if $CI is set.
func StartHAProxy(t testing.TB, bundlePEM []byte, opts HAProxyOptions) *HAProxy {
	t.Helper()
	bin := findBinary(t, "haproxy")
	switch opts.Mode {
	case "":
		opts.Mode = "http"
	case "http", "tcp":
	default:
		t.Fatalf("StartHAProxy: mode %q, want http or tcp", opts.Mode)
	}
	if opts.CertName == "" {
		opts.CertName = "site.pem"
	}
	if opts.Mode == "tcp" && opts.Backend == "" {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, HAProxyPage)
		}))
		t.Cleanup(srv.Close) // after HAProxy's cleanup, registered later
		opts.Backend = srv.Listener.Addr().String()
	}
	dir := t.TempDir()
	h := &HAProxy{
		AdminSocket:  filepath.Join(dir, "admin.sock"),
		MasterSocket: filepath.Join(dir, "master.sock"),
		CertPath:     filepath.Join(dir, opts.CertName),
		Dir:          dir,
		Config:       filepath.Join(dir, "haproxy.cfg"),
		Log:          filepath.Join(dir, "haproxy.log"),
	}
	if err := os.WriteFile(h.CertPath, bundlePEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for i, extra := range opts.ExtraCerts {
		p := filepath.Join(dir, fmt.Sprintf("extra%d.pem", i+1))
		if err := os.WriteFile(p, extra, 0o600); err != nil {
			t.Fatal(err)
		}
		h.ExtraCertPaths = append(h.ExtraCertPaths, p)
	}
	for attempt := 1; ; attempt++ {
		h.Addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		if err := os.WriteFile(h.Config, []byte(h.config(t, opts)), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Truncate(h.Log, 0)
		h.proc = startProcess(t, "haproxy", bin, []string{"-W", "-db", "-S", h.MasterSocket, "-f", h.Config}, h.Log)
		h.Pid = h.proc.pid()
		err := h.proc.waitFor("master CLI, runtime API and listener", func() error {
			// The master answers once it handles signals (a SIGUSR2
			// earlier is lost), the worker once it serves.
			if _, err := cliCommand(h.MasterSocket, "show proc"); err != nil {
				return err
			}
			if _, err := h.command("show info"); err != nil {
				return err
			}
			return dialable(h.Addr)
		})
		if err == nil {
			break
		}
		h.proc.stop(t, sigStop)
		if err != errAddrInUse || attempt == 3 {
			t.Fatalf("starting HAProxy: %v", err)
		}
	}
	t.Cleanup(func() { h.proc.stop(t, sigStop) })
	return h
}

func (h *HAProxy) config(t testing.TB, opts HAProxyOptions) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("global")
	p("  stats socket %s mode 600 level admin", quoteHAProxy(t, h.AdminSocket))
	p("  stats timeout 1m")
	p("  log stdout format raw local0 info")
	p("  tune.ssl.default-dh-param 2048")
	if opts.Threads > 0 {
		p("  nbthread %d", opts.Threads)
	}
	p("defaults")
	p("  log global")
	p("  timeout connect 5s")
	p("  timeout client 1m")
	p("  timeout server 1m")
	p("frontend fe")
	p("  mode %s", opts.Mode)
	p("  option %slog", opts.Mode)
	bind := "  bind " + h.Addr + " ssl crt " + quoteHAProxy(t, h.CertPath)
	for _, extra := range h.ExtraCertPaths {
		bind += " crt " + quoteHAProxy(t, extra)
	}
	if opts.AcceptProxy {
		bind += " accept-proxy"
	}
	p("%s", bind)
	if opts.Mode == "http" {
		p("  http-request return status 200 content-type text/plain string %q", HAProxyPage)
	} else {
		p("  default_backend be")
		p("backend be")
		p("  mode tcp")
		p("  server s1 %s", opts.Backend)
	}
	return b.String()
}

// Worker identifies HAProxy's worker process, which a reload replaces.
type Worker struct {
	Pid    int
	Uptime time.Duration // as "show info" reports it, to the second
}

// Worker returns the running worker, from "show info".
func (h *HAProxy) Worker(t testing.TB) Worker {
	t.Helper()
	info := h.Info(t)
	pid, err1 := strconv.Atoi(info["Pid"])
	up, err2 := strconv.Atoi(info["Uptime_sec"])
	if err1 != nil || err2 != nil {
		t.Fatalf("HAProxy's show info has Pid %q, Uptime_sec %q", info["Pid"], info["Uptime_sec"])
	}
	return Worker{Pid: pid, Uptime: time.Duration(up) * time.Second}
}

// CheckNotReloaded fails the test if HAProxy's worker is not the one in
// before, or was restarted (its uptime went back): the proof that a
// certificate went live with no reload.
func (h *HAProxy) CheckNotReloaded(t testing.TB, before Worker) {
	t.Helper()
	now := h.Worker(t)
	if now.Pid != before.Pid || now.Uptime < before.Uptime {
		t.Errorf("HAProxy was reloaded: worker %+v, was %+v", now, before)
	}
	if h.proc.exited() {
		t.Errorf("HAProxy's master exited: %v", h.proc.err)
	}
}

// Reload reloads HAProxy as its service does (SIGUSR2 to the master) and
// returns once a new worker answers on the runtime API.
func (h *HAProxy) Reload(t testing.TB) {
	t.Helper()
	before := h.Worker(t)
	h.proc.signal(t, sigReloadHAProxy)
	err := h.proc.waitFor("new worker", func() error {
		answer, err := h.command("show info")
		if err != nil {
			return err
		}
		if pid := infoField(answer, "Pid"); pid == strconv.Itoa(before.Pid) {
			return fmt.Errorf("worker %s still the one answering", pid)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reloading HAProxy: %v", err)
	}
}

// ReloadCommand returns a shell command that reloads this HAProxy, for a
// deploy hook.
func (h *HAProxy) ReloadCommand() string { return fmt.Sprintf("kill -USR2 %d", h.Pid) }

// Info returns "show info" as a map.
func (h *HAProxy) Info(t testing.TB) map[string]string {
	t.Helper()
	answer := h.Command(t, "show info")
	info := make(map[string]string)
	for _, line := range strings.Split(answer, "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			info[k] = v
		}
	}
	return info
}

// Command sends one runtime API command and returns the answer.
func (h *HAProxy) Command(t testing.TB, cmd string) string {
	t.Helper()
	answer, err := h.command(cmd)
	if err != nil {
		t.Fatalf("HAProxy runtime API %q: %v", cmd, err)
	}
	return answer
}

func (h *HAProxy) command(cmd string) (string, error) { return cliCommand(h.AdminSocket, cmd) }

// cliCommand sends one command to an HAProxy CLI socket, which answers and
// closes.
func cliCommand(socket, cmd string) (string, error) {
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, cmd+"\n"); err != nil {
		return "", err
	}
	// The master CLI answers only once the client has finished sending.
	conn.(*net.UnixConn).CloseWrite()
	answer, err := io.ReadAll(conn)
	if err != nil {
		return "", err
	}
	if len(answer) == 0 {
		return "", fmt.Errorf("no answer")
	}
	return strings.TrimRight(string(answer), "\n"), nil
}

func infoField(answer, key string) string {
	for _, line := range strings.Split(answer, "\n") {
		if v, ok := strings.CutPrefix(line, key+": "); ok {
			return v
		}
	}
	return ""
}
