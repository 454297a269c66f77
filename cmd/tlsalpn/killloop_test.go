package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage"
)

// issueCounter counts, in front of Pebble, the finalize requests Pebble
// accepted: each one is a certificate the CA issues (Pebble signs it
// asynchronously, whatever becomes of the client). It also delays each
// certificate download by slowDownload, as a CA under load does, which
// widens the moment between issuance and storage where a crash loses a
// certificate.
type issueCounter struct {
	slowDownload time.Duration
	// onIssue, if set, is called after each finalize Pebble accepted.
	onIssue func()
	mu      sync.Mutex
	issued  int
}

func (c *issueCounter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/certZ/") {
			time.Sleep(c.slowDownload)
		}
		if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/finalize-order/") {
			next.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		if sw.code == http.StatusOK {
			c.mu.Lock()
			c.issued++
			c.mu.Unlock()
			if c.onIssue != nil {
				c.onIssue()
			}
		}
	})
}

func (c *issueCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.issued
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// storedSerials adds to seen the serial of every leaf certificate found in
// PEM files under dirs (storage and output directory): whatever layout
// the storage has, a certificate that was stored is found there.
func storedSerials(t *testing.T, seen map[string]bool, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() || !strings.HasSuffix(p, ".pem") {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil || !bytes.Contains(data, []byte("CERTIFICATE")) {
				return nil
			}
			chain, err := issuer.ParseChainPEM(data)
			if err != nil || chain[0].IsCA {
				return nil
			}
			seen[hex.EncodeToString(chain[0].SerialNumber.Bytes())] = true
			return nil
		})
	}
}

// TestKillLoopKeepsIssuedCertificates runs "tlsalpn renew --force" and
// kills it with SIGKILL at random moments, then lets one run finish, and
// compares the certificates Pebble issued with those that reached storage.
// A certificate the CA has issued must never be thrown away: a run killed
// after finalisation leaves the order journaled, and the next run resumes
// it (downloads that certificate) instead of ordering another one.
func TestKillLoopKeepsIssuedCertificates(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := filepath.Join(buildBinaries(t), "tlsalpn")
	counter := issueCounter{slowDownload: 150 * time.Millisecond}
	ca := startCountingCA(t, &counter)
	dir := t.TempDir()
	store, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	run := func(kill time.Duration, args ...string) (time.Duration, string) {
		cmd := exec.CommandContext(ctx, bin, args...)
		var outb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &outb, &outb
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var timer *time.Timer
		if kill > 0 {
			timer = time.AfterFunc(kill, func() { cmd.Process.Signal(syscall.SIGKILL) })
		}
		err := cmd.Wait()
		if timer != nil {
			timer.Stop()
		}
		if kill == 0 && err != nil {
			t.Fatalf("tlsalpn %s: %v\n%s", strings.Join(args, " "), err, outb.String())
		}
		return time.Since(start), outb.String()
	}

	seen := map[string]bool{}
	issueArgs := ca.issueArgs(store, out, "killed.example.com")
	issueArgs = append(issueArgs[:0:0], issueArgs...)
	run(0, issueArgs...)
	storedSerials(t, seen, store, out)
	renew := []string{"renew", "--force", "--storage", store}
	// One uninterrupted renewal measures how long a run takes; kills land
	// anywhere in that span.
	took, _ := run(0, renew...)
	storedSerials(t, seen, store, out)
	t.Logf("a renewal takes %v", took)

	const loops = 25
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	// A run after a killed one may take longer (it looks at what the
	// killed one left): kills land in one and a half times the span.
	killed, journaled, resumed := 0, 0, 0
	step := func(kill time.Duration) string {
		issuedBefore, storedBefore := counter.count(), len(seen)
		d, output := run(kill, renew...)
		if kill > 0 && d >= kill {
			killed++
		}
		if m, _ := filepath.Glob(filepath.Join(store, storage.OrdersPrefix, "*", "*", "order.json")); len(m) > 0 {
			journaled++ // an order for the next run to resume
		}
		storedSerials(t, seen, store, out)
		if len(seen) > storedBefore && counter.count() == issuedBefore {
			resumed++ // stored a certificate an earlier, killed run had ordered
		}
		return output
	}
	for range loops {
		step(time.Duration(rng.Int64N(int64(took*3/2))) + 10*time.Millisecond)
	}
	// The final run completes whatever a killed run left.
	final := step(0)
	// Temporary files of a killed Put may stay (storage/fs removes them
	// once 15 minutes old); a journaled order or key must not.
	for _, name := range []string{"order.json", "key.pem"} {
		if m, _ := filepath.Glob(filepath.Join(store, storage.OrdersPrefix, "*", "*", name)); len(m) > 0 {
			t.Errorf("order journal after a completed run holds %q, want nothing (stored certificates are forgotten)", m)
		}
	}
	issued := counter.count()
	t.Logf("%d kill -9 loops (%d killed in flight, %d left a journaled order): Pebble issued %d certificates, %d reached storage, %d of them by a later run that resumed the order\nfinal run:\n%s",
		loops, killed, journaled, issued, len(seen), resumed, final)
	if issued != len(seen) {
		serials := slices.Sorted(func(yield func(string) bool) {
			for s := range seen {
				if !yield(s) {
					return
				}
			}
		})
		t.Errorf("Pebble issued %d certificates but only %d reached storage (%v): issued certificates were thrown away",
			issued, len(seen), serials)
	}
}

// startCountingCA starts the embedded Pebble for the binary, with counter
// in front of its ACME API.
func startCountingCA(t *testing.T, counter *issueCounter) *cliCA {
	t.Helper()
	c := &cliCA{}
	port := freePort(t)
	c.listen = "127.0.0.1:" + itoa(port)
	ca, err := democa.Start(context.Background(), democa.Options{TLSPort: port, NoSleep: true, Strict: true, Handler: counter.wrap})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close() })
	c.CA = ca
	c.root = filepath.Join(t.TempDir(), "ca-root.pem")
	if err := os.WriteFile(c.root, ca.RootsPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}
