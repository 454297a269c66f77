package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/freeport"
)

// binaries built once per test run, on demand.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// buildBinaries builds tlsalpn, pebble and pebble-challtestsrv (the latter
// two from the versions pinned in go.mod as tools).
func buildBinaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "tlsalpn-bin-")
		if buildErr != nil {
			return
		}
		for _, pkg := range []string{
			"github.com/tlsalpn/tlsalpn/cmd/tlsalpn",
			"github.com/letsencrypt/pebble/v2/cmd/pebble",
			"github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv",
		} {
			cmd := exec.Command("go", "build", "-o", binDir, pkg)
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = &buildError{pkg, string(out), err}
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

type buildError struct {
	pkg, out string
	err      error
}

func (e *buildError) Error() string { return "building " + e.pkg + ": " + e.err.Error() + "\n" + e.out }

func TestMain(m *testing.M) {
	// The preflight resolves the names it checks; here, with a DNS server
	// on loopback that nothing answers on (refused at once), never the
	// machine's resolver: a test sends nothing off this host. Commands
	// run as processes inherit it.
	if os.Getenv(envDNSServer) == "" {
		os.Setenv(envDNSServer, closedLoopbackUDP())
	}
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// closedLoopbackUDP returns a loopback UDP address that nothing listens on.
func closedLoopbackUDP() string {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:9"
	}
	addr := c.LocalAddr().String()
	c.Close()
	return addr
}

// runCLI runs the command in-process and returns exit code, stdout, stderr.
func runCLI(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	code := run(ctx, e, args)
	return code, out.String(), errb.String()
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	return freeport.Pick(t)
}

func itoa(i int) string { return strconv.Itoa(i) }

// treeFiles lists every path below dir (relative), or nil if dir is absent.
func treeFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err == nil && p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func waitForPort(t *testing.T, addr string, d time.Duration) {
	t.Helper()
	waitForListener(t, "tcp", addr, d)
}

// waitForListener waits until something accepts connections on network
// and addr (a Unix socket serve makes after its front door listens, say).
func waitForListener(t *testing.T, network, addr string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout(network, addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not start listening within %s", addr, d)
}

func lines(s string) []string { return strings.Split(strings.TrimRight(s, "\n"), "\n") }
