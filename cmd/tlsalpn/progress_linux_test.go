package main

import (
	"context"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
)

// TestProgressOnTerminal: issuing many names and checking many hosts show
// on a terminal's stderr what is being done and how far it is, and the
// line is erased before the results; on anything else, none of it.
func TestProgressOnTerminal(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	cca := newCheckCA(t)
	var hosts []string
	for _, name := range []string{"a.test", "b.test", "c.test"} {
		port := checkResponder(t, name, "tok.thumb", cca.leaf(t, name, 60*24*time.Hour))
		hosts = append(hosts, name+":"+strconv.Itoa(port))
	}
	dir := t.TempDir()
	acmeJSON := filepath.Join(dir, "traefik", "acme.json")
	traefikStore(t, ca, acmeJSON, "traefik.example.com")
	for _, tc := range []struct {
		name string
		args func(i int) []string
		want string
	}{
		{"issue", func(i int) []string {
			return ca.issueArgs(filepath.Join(dir, "store"+itoa(i)), "", "a.example", "b.example", "c.example", "d.example")
		}, "[4/4 names validated]"},
		{"check", func(int) []string {
			return append([]string{"check", "--monitor", "--address", "127.0.0.1", "--ca-root", cca.pemFile, "--timeout", "5s"}, hosts...)
		}, "[3/3 names checked] checked "},
		{"import", func(i int) []string {
			return append([]string{"import", "traefik", acmeJSON, "--ca", ca.DirectoryURL()}, ca.importArgs(filepath.Join(dir, "imported"+itoa(i)))...)
		}, "[1/1 certificates imported] traefik.example.com imported"},
	} {
		t.Run(tc.name+" on a terminal", func(t *testing.T) {
			ptmx, tty := openPTY(t)
			seen := &syncBuffer{}
			go io.Copy(seen, ptmx)
			stdout := &syncBuffer{}
			e := &env{stdout: stdout, stderr: tty, getenv: func(string) string { return "" }}
			if code := run(context.Background(), e, tc.args(0)); code != exitOK {
				t.Fatalf("exit %d: %s %s", code, stdout.String(), seen.String())
			}
			waitFor(t, "the progress line", 5*time.Second, func() bool {
				return strings.Contains(seen.String(), tc.want)
			})
			// The last thing written erases the line.
			waitFor(t, "the line erased", 5*time.Second, func() bool {
				return strings.HasSuffix(seen.String(), "\r\x1b[K")
			})
			if strings.Contains(stdout.String(), "\x1b[") {
				t.Errorf("progress on stdout: %q", stdout.String())
			}
		})
		t.Run(tc.name+" not on a terminal", func(t *testing.T) {
			code, stdout, stderr := runCLI(t, context.Background(), tc.args(1)...)
			if code != exitOK {
				t.Fatalf("exit %d: %s %s", code, stdout, stderr)
			}
			if strings.Contains(stderr+stdout, "\x1b[") || strings.Contains(stderr+stdout, "\r") || strings.Contains(stderr, "names ") || strings.Contains(stderr, "certificates imported") {
				t.Errorf("progress without a terminal: stderr %q", stderr)
			}
		})
	}
}

// TestProgressLogsAbove: a log line written while the progress line is
// shown erases it, goes on a line of its own, and the line is redrawn
// under it.
func TestProgressLogsAbove(t *testing.T) {
	var buf strings.Builder
	p := &progress{w: &buf, unit: "names validated", total: 2}
	p.update("validating a.example", false)
	io.WriteString(p.above(&buf), "level=WARN msg=slow\n")
	p.clear()
	want := "\r\x1b[K[0/2 names validated] validating a.example" +
		"\r\x1b[K" + "level=WARN msg=slow\n" + "\r\x1b[K[0/2 names validated] validating a.example" +
		"\r\x1b[K"
	if buf.String() != want {
		t.Errorf("wrote %q,\nwant  %q", buf.String(), want)
	}
}
