package proxy

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// failingListener fails its first fails Accepts with err.
type failingListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
	err   error
}

func (l *failingListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, l.err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// TestServeAcceptErrors checks the front door's accept policy, the one
// the responder uses too: it keeps serving through errors that pass with
// time (out of descriptors, a client that gave up before it was accepted)
// and returns on any other.
func TestServeAcceptErrors(t *testing.T) {
	acceptErr := func(errno syscall.Errno) error {
		return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
	}
	be := startBackend(t, idHandler("be"))
	tests := []struct {
		name      string
		err       error
		temporary bool
	}{
		{"EMFILE", acceptErr(syscall.EMFILE), true},
		{"ENFILE", acceptErr(syscall.ENFILE), true},
		{"ECONNABORTED", acceptErr(syscall.ECONNABORTED), true},
		{"timeout", acceptErr(syscall.EAGAIN), true},
		{"permanent", errors.New("listener broke"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Config{Routes: []Route{{Names: []string{"*"}, Backend: be.addr}}}, nil, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			tcp, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer tcp.Close()
			ln := &failingListener{Listener: tcp, fails: 3, err: tt.err}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			served := make(chan error, 1)
			go func() { served <- s.Serve(ctx, ln) }()
			if !tt.temporary {
				select {
				case err := <-served:
					if !errors.Is(err, tt.err) {
						t.Errorf("Serve returned %v, want %v", err, tt.err)
					}
				case <-time.After(prompt):
					t.Fatal("Serve did not return on a permanent accept error")
				}
				return
			}
			if got, err := whichBackend(tcp.Addr().String(), "a.example"); err != nil || got != "be" {
				t.Errorf("through the front door after %d failed accepts: %q, %v", 3, got, err)
			}
			cancel()
			select {
			case err := <-served:
				if !errors.Is(err, ErrServerClosed) {
					t.Errorf("Serve returned %v, want ErrServerClosed", err)
				}
			case <-time.After(prompt):
				t.Fatal("Serve did not return when its context ended")
			}
		})
	}
}
