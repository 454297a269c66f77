package fs

import (
	"bufio"
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"
)

// TestLockProcesses runs a helper process that holds the lock, checks that another process and
// this one are kept out, then ends the holder by unlocking or by SIGKILL and checks that the
// lock can be taken again.
func TestLockProcesses(t *testing.T) {
	tests := []struct {
		name string
		end  func(cmd *exec.Cmd, stdinClose func() error) error
	}{
		{"holder unlocks", func(cmd *exec.Cmd, stdinClose func() error) error {
			return stdinClose()
		}},
		{"holder is killed", func(cmd *exec.Cmd, _ func() error) error {
			return cmd.Process.Kill()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFS(t)
			ctx := t.Context()
			const name = "certificates/ca/example.com"

			holder := helper(t, "hold-lock", f.Root())
			stdin, err := holder.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := holder.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := holder.Start(); err != nil {
				t.Fatal(err)
			}
			defer holder.Process.Kill()
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil || line != "locked\n" {
				t.Fatalf("holder said %q, %v", line, err)
			}

			// Another process cannot take it (exit code 3 = timed out)...
			var exitErr *exec.ExitError
			if err := helper(t, "try-lock", f.Root()).Run(); !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
				t.Fatalf("second process: %v, want exit status 3", err)
			}
			// ...and neither can this one.
			short, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
			_, err = f.Lock(short, name)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Lock while another process holds it = %v", err)
			}

			// A waiter blocked in Lock gets it once the holder goes away.
			got := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				unlock, err := f.Lock(ctx, name)
				if err == nil {
					err = unlock()
				}
				got <- err
			}()
			time.Sleep(100 * time.Millisecond) // let it start waiting
			if err := tt.end(holder, stdin.Close); err != nil {
				t.Fatal(err)
			}
			holder.Wait()
			if err := <-got; err != nil {
				t.Fatalf("Lock after the holder ended: %v", err)
			}
			if err := helper(t, "try-lock", f.Root()).Run(); err != nil {
				t.Fatalf("another process after release: %v", err)
			}
		})
	}
}
