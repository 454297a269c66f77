//go:build linux

package proxy

import (
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
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
