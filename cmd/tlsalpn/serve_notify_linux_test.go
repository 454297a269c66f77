package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// notifySocket is the service manager's end of sd_notify: a real unixgram
// socket, as systemd binds it, whose datagrams the test reads.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string // one datagram each
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	// A short path: sun_path holds 108 bytes, and t.TempDir's can be longer.
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ns := &notifySocket{path: filepath.Join(dir, "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := c.ReadFromUnix(buf)
			if err != nil {
				return
			}
			ns.mu.Lock()
			ns.msgs = append(ns.msgs, string(buf[:n]))
			ns.mu.Unlock()
		}
	}()
	return ns
}

// states returns the datagrams received so far other than watchdog pings,
// and how many pings there were.
func (ns *notifySocket) states() (states []string, pings int) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for _, m := range ns.msgs {
		if m == "WATCHDOG=1\n" {
			pings++
			continue
		}
		states = append(states, m)
	}
	return states, pings
}

// TestServeSystemdNotify: serve under a Type=notify unit tells systemd
// READY=1 once it listens, RELOADING=1 with MONOTONIC_USEC on SIGHUP and
// READY=1 when the reload is done, STOPPING=1 when it drains, and pings
// the watchdog at half of WATCHDOG_USEC.
func TestServeSystemdNotify(t *testing.T) {
	ns := listenNotify(t)
	backend := echoTLSBackend(t, "backend.example")
	listen := "127.0.0.1:" + itoa(freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	environ := map[string]string{
		"NOTIFY_SOCKET": ns.path,
		"WATCHDOG_USEC": "200000", // a ping every 100ms
		"WATCHDOG_PID":  strconv.Itoa(os.Getpid()),
	}
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	e := &env{stdout: stdout, stderr: stderr, getenv: func(k string) string { return environ[k] }}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, e, []string{"serve", "--listen", listen, "--backend", backend, "--steer", "off",
			"--storage", filepath.Join(t.TempDir(), "store")})
	}()
	has := func(i int, want ...string) func() bool {
		return func() bool {
			s, _ := ns.states()
			if len(s) <= i {
				return false
			}
			for _, w := range want {
				if !strings.Contains(s[i], w) {
					t.Fatalf("notification %d = %q, want %q in it", i, s[i], w)
				}
			}
			return true
		}
	}
	waitFor(t, "READY=1", 10*time.Second, has(0, "READY=1\n", "STATUS=listening on "+listen))
	// The listener is up when READY=1 arrives.
	c, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatalf("READY=1 sent before the listener accepts: %v", err)
	}
	c.Close()
	waitFor(t, "watchdog pings", 5*time.Second, func() bool { _, p := ns.states(); return p >= 3 })

	var before unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &before)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "RELOADING=1", 10*time.Second, has(1, "RELOADING=1\n", "MONOTONIC_USEC="))
	s, _ := ns.states()
	var usec uint64
	for _, l := range strings.Split(s[1], "\n") {
		if v, ok := strings.CutPrefix(l, "MONOTONIC_USEC="); ok {
			usec, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	if b := uint64(before.Sec)*1e6 + uint64(before.Nsec)/1e3; usec < b || usec > b+10e6 {
		t.Errorf("MONOTONIC_USEC=%d, want CLOCK_MONOTONIC of the SIGHUP, just after %d", usec, b)
	}
	waitFor(t, "READY=1 after the reload", 10*time.Second, has(2, "READY=1\n"))

	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
	waitFor(t, "STOPPING=1", 5*time.Second, has(3, "STOPPING=1\n"))
	if s, _ := ns.states(); len(s) != 4 {
		t.Errorf("notifications %q, want READY, RELOADING, READY, STOPPING", s)
	}
}
