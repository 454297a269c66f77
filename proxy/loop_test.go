//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/syncbuf"
)

// TestBackendByName checks that a route whose backend is a host name,
// which the event loops do not resolve, is served by a goroutine, which
// does.
func TestBackendByName(t *testing.T) {
	be := startBackend(t, idHandler("named"))
	_, port, _ := net.SplitHostPort(be.addr)
	p := startProxy(t, Config{Routes: []Route{{Names: []string{"*"}, Backend: net.JoinHostPort("localhost", port)}}}, nil, nil)
	for range 3 {
		if got, err := whichBackend(p.addr, "named.example"); err != nil || got != "named" {
			t.Fatalf("backend by name: got %q, %v", got, err)
		}
	}
	p.waitActive(t, 0)
}

// TestBackendDialTimeout checks that a backend that never answers the
// connect (its accept queue is full, so the kernel drops the SYN) costs
// the client its connection after DialTimeout, counted as unreachable,
// and nothing else.
func TestBackendDialTimeout(t *testing.T) {
	addr := fullBacklog(t)
	const timeout = 300 * time.Millisecond
	o := newTally()
	paddr := startObserved(t, Config{DialTimeout: timeout, Routes: []Route{{Names: []string{"*"}, Backend: addr}}}, nil, o)
	c := dial(t, paddr)
	c.Write(hello("slow.example"))
	took := expectClosed(t, c, 20*timeout)
	if took < timeout-50*time.Millisecond {
		t.Errorf("closed after %v, before the %v dial timeout", took, timeout)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.refused[RefusedBackendDown] != 1 {
		t.Errorf("refusals %v, want one %s", o.refused, RefusedBackendDown)
	}
}

// fullBacklog returns the address of a listening socket that takes no
// more connections: its accept queue (backlog 0: one connection) is held
// by a connection nobody accepts.
func fullBacklog(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	// Fill the queue; then check that a connect really hangs.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			if i == 0 {
				t.Fatalf("filling the accept queue: %v", err)
			}
			return addr
		}
		t.Cleanup(func() { c.Close() })
		if i == 4 {
			t.Skip("this kernel accepts connections past a full backlog; cannot make a backend that never answers")
		}
	}
}

// The out-of-descriptors test runs the proxy in a child process (this test
// binary again, running TestOutOfDescriptorsHelper) whose descriptor limit
// is low, so that its accepts fail with EMFILE while the test's own
// clients and backend are untouched. The child prints "proxy ADDR" and
// exits when its stdin closes. Its environment holds the backend's address
// and the number of descriptors to leave it above those it has at start.
const emfileEnv = "TLSALPN_PROXY_EMFILE_HELPER"

func TestOutOfDescriptorsHelper(t *testing.T) {
	if os.Getenv(emfileEnv) == "" {
		t.Skip("helper for TestOutOfDescriptors")
	}
	fail := func(err error) {
		fmt.Println("error", err)
		os.Exit(1)
	}
	backend, spare, _ := strings.Cut(os.Getenv(emfileEnv), ",")
	room, err := strconv.Atoi(spare)
	if err != nil {
		fail(err)
	}
	s, err := New(Config{Routes: []Route{{Names: []string{"*"}, Backend: backend}}}, nil, nil,
		slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		fail(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	go s.Serve(context.Background(), ln)
	// One connection through first, and gone: the loop, its epoll and
	// the listener's handover to it (which closes the Go listener) all
	// take or free descriptors, so they are counted only once in place,
	// and room is exactly what connections may use.
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		fail(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(hello("warm.example"))
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || line != "backend\n" {
		fail(fmt.Errorf("warm-up connection: %q, %v", line, err))
	}
	c.Close()
	for i := 0; s.Active() != 0; i++ {
		if i == 500 {
			fail(fmt.Errorf("the warm-up connection is still open"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The loops may take connections a moment before Serve closes the
	// Go listener.
	for i := 0; ; i++ {
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := ln.Accept(); errors.Is(err, net.ErrClosed) {
			break
		}
		if i == 500 {
			fail(fmt.Errorf("the Go listener is still open"))
		}
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		fail(err)
	}
	// ReadDir's own descriptor is among those listed, and closed now.
	lim := syscall.Rlimit{Cur: uint64(len(fds) - 1 + room), Max: uint64(len(fds) - 1 + room)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fail(err)
	}
	fmt.Println("proxy", ln.Addr())
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// TestOutOfDescriptors checks that a front door out of file descriptors
// refuses cleanly and rests its listener (accepting again at once would
// spin on the error, or take waiting clients only to close them), says so
// in its log, and serves again once descriptors are free, without a
// restart. A relayed connection takes two descriptors, so the parity of
// the room left decides whether accept4 or the backend's socket is the
// call that fails.
func TestOutOfDescriptors(t *testing.T) {
	const (
		acceptFailed = "accept failed; retrying"
		socketFailed = "out of file descriptors; accepting again later"
	)
	// Each room is run: one of them leaves an odd descriptor for accept4
	// and none for the backend's socket. Which one does is not exact (a
	// descriptor of the runtime's may come and go), so each must show
	// either failure, and the test says which it saw.
	for _, room := range []int{9, 10} {
		t.Run(fmt.Sprintf("room=%d", room), func(t *testing.T) {
			logs := outOfDescriptors(t, room)
			switch {
			case strings.Contains(logs, socketFailed):
				t.Logf("the backend's socket failed first")
			case strings.Contains(logs, acceptFailed):
				t.Logf("accept4 failed first")
			default:
				t.Errorf("no failure to accept or to make a socket in the log:\n%s", logs)
			}
		})
	}
}

// outOfDescriptors runs the out-of-descriptors test on a child with room
// descriptors to spare and returns the child's log.
func outOfDescriptors(t *testing.T, room int) string {
	be := startBackend(t, idHandler("backend"))
	cmd := exec.Command(os.Args[0], "-test.run=^TestOutOfDescriptorsHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d", emfileEnv, be.addr, room))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	var addr string
	if _, err := fmt.Fscanf(stdout, "proxy %s\n", &addr); err != nil {
		t.Fatalf("child: %v (log: %s)", err, logs.String())
	}

	// Clients until the proxy runs out: those it relayed are held open.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	served := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		line, err := bufio.NewReader(c).ReadString('\n')
		c.SetReadDeadline(time.Time{})
		return err == nil && line == "backend\n"
	}
	refused := 0
	for i := 0; i < 40 && refused < 3; i++ {
		c := dial(t, addr)
		c.Write(hello("many.example"))
		if served(c) {
			held = append(held, c)
			continue
		}
		refused++
		c.Close()
	}
	if refused == 0 || len(held) == 0 {
		t.Fatalf("%d clients served and %d refused; want some of each from a proxy with a few descriptors", len(held), refused)
	}
	// Out of descriptors, with a client waiting in the listen queue, the
	// child must rest, not spin.
	waiting := dial(t, addr)
	defer waiting.Close()
	waiting.Write(hello("waiting.example"))
	before := cpuTime(t, cmd.Process.Pid)
	time.Sleep(time.Second)
	if used := cpuTime(t, cmd.Process.Pid) - before; used > 300*time.Millisecond {
		t.Errorf("the proxy used %v of CPU in 1 s while out of descriptors: spinning on accept", used)
	}
	// Descriptors freed: served again.
	for _, c := range held {
		c.Close()
	}
	held = nil
	deadline := time.Now().Add(prompt)
	for {
		c := dial(t, addr)
		c.Write(hello("again.example"))
		ok := served(c)
		c.Close()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not served again after descriptors were freed; log:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return logs.String()
}

// cpuTime is the user and system time process pid has used.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// lockedBuffer is a log or stderr written beside the test that reads it.
type lockedBuffer = syncbuf.Buffer

// TestShutdownWhileAccepting checks that Shutdown returns while new
// connections keep coming: closing a loop's listener waits for the loop,
// which must not be waiting, in its turn, for a lock Shutdown holds.
func TestShutdownWhileAccepting(t *testing.T) {
	be := startBackend(t, idHandler("backend"))
	for range 20 {
		s, err := New(Config{Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- s.Serve(context.Background(), ln) }()
		stop := make(chan struct{})
		var dialers sync.WaitGroup
		for range 4 {
			dialers.Add(1)
			go func() {
				defer dialers.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
						c.Close()
					}
				}
			}()
		}
		time.Sleep(20 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		done := make(chan struct{})
		go func() { s.Shutdown(ctx); close(done) }()
		select {
		case <-done:
		case <-time.After(prompt):
			t.Fatal("Shutdown did not return while connections were being accepted")
		}
		cancel()
		close(stop)
		dialers.Wait()
		if err := <-served; err != ErrServerClosed {
			t.Fatalf("Serve: %v, want ErrServerClosed", err)
		}
	}
}

// TestLoopsOwnListener checks that once the event loops accept on a
// listener, the Go listener is closed (out of the runtime's poller, whose
// thread would otherwise wake at each new connection for nothing) while
// its socket, held by the loops, goes on serving, and its Addr stays.
func TestLoopsOwnListener(t *testing.T) {
	be := startBackend(t, idHandler("loops"))
	s, err := New(Config{Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background(), ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-served
	}()
	if got, err := whichBackend(addr, "a.example"); err != nil || got != "loops" {
		t.Fatalf("before: got %q, %v", got, err)
	}
	// Serve closes it just after handing the socket to the loops.
	for deadline := time.Now().Add(prompt); ; {
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			break
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) || time.Now().After(deadline) {
			t.Fatalf("Accept on the Go listener: %v, want it closed while the loops accept", err)
		}
	}
	if ln.Addr().String() != addr {
		t.Errorf("Addr = %v after the handover, want %v", ln.Addr(), addr)
	}
	for range 3 {
		if got, err := whichBackend(addr, "b.example"); err != nil || got != "loops" {
			t.Fatalf("after: got %q, %v", got, err)
		}
	}
}
