package acceptretry

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		temporary bool
	}{
		{"EMFILE", acceptErr(syscall.EMFILE), true},
		{"ENFILE", acceptErr(syscall.ENFILE), true},
		{"ENOBUFS", acceptErr(syscall.ENOBUFS), true},
		{"ECONNABORTED", acceptErr(syscall.ECONNABORTED), true},
		{"timeout", acceptErr(syscall.EAGAIN), true},
		{"closed", net.ErrClosed, false},
		{"permanent", errors.New("listener broke"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Backoff
			var pauses []time.Duration
			for range 10 {
				p, ok := b.Next(tt.err)
				if ok != tt.temporary {
					t.Fatalf("Next(%v) temporary = %v, want %v", tt.err, ok, tt.temporary)
				}
				pauses = append(pauses, p)
			}
			if !tt.temporary {
				return
			}
			want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
			for i, p := range pauses {
				if p != want[i]*time.Millisecond {
					t.Fatalf("pauses = %v, want %v ms", pauses, want)
				}
			}
			b.Reset()
			if p, _ := b.Next(tt.err); p != 5*time.Millisecond {
				t.Errorf("after Reset the pause is %v, want 5ms", p)
			}
		})
	}
}
