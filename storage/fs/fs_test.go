package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/storage"
)

// helperEnv selects a helper role when the test binary re-executes itself (see TestMain).
const (
	helperEnv     = "TLSALPN_STORAGE_FS_HELPER"
	helperRootEnv = "TLSALPN_STORAGE_FS_ROOT"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(runHelper(role, os.Getenv(helperRootEnv)))
	}
	os.Exit(m.Run())
}

// runHelper is the body of a helper process. Exit codes: 0 success, 3 lock wait timed out,
// other values are failures explained on stderr.
func runHelper(role, root string) int {
	f, err := New(root)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx := context.Background()
	switch role {
	case "hold-lock":
		// Take the lock, say so, and hold it until stdin closes (or the process is killed).
		unlock, err := f.Lock(ctx, "certificates/ca/example.com")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("locked")
		buf := make([]byte, 1)
		os.Stdin.Read(buf)
		if err := unlock(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case "try-lock":
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		unlock, err := f.Lock(ctx, "certificates/ca/example.com")
		if errors.Is(err, context.DeadlineExceeded) {
			return 3
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		unlock()
		return 0
	case "put-too-big":
		// A file size limit makes write(2) fail with EFBIG part-way, like a full disk does with
		// ENOSPC, without needing a small file system. Go ignores SIGXFSZ.
		if err := limitFileSize(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		err := f.Put(ctx, "certificates/ca/example.com/cert.pem", bytes.Repeat([]byte("n"), 64<<10), 0o644)
		if err == nil {
			fmt.Fprintln(os.Stderr, "Put beyond RLIMIT_FSIZE succeeded")
			return 1
		}
		fmt.Print(err)
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper role", role)
	return 1
}

// helper returns a command that runs the test binary as the helper role on root.
func helper(t *testing.T, role, root string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	// Under -race, the race runtime otherwise sleeps a second at exit.
	cmd.Env = append(os.Environ(), helperEnv+"="+role, helperRootEnv+"="+root, "GORACE=atexit_sleep_ms=0")
	cmd.Stderr = os.Stderr
	return cmd
}

func newFS(t testing.TB, opts ...Option) *FS {
	t.Helper()
	f, err := New(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// withUmask runs fn with the process umask set to mask. Tests using it must not be parallel.
func withUmask(mask int, fn func()) {
	old := setUmask(mask)
	defer setUmask(old)
	fn()
}

// tempFiles returns the Put temporary files anywhere under root.
func tempFiles(t *testing.T, root string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(root, func(p string, d iofs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tempPrefix) {
			found = append(found, p)
		}
		return nil
	})
	return found
}

func TestNew(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T, dir string) string // returns the root to pass to New
		wantErr  string
		wantMode os.FileMode
	}{
		{"missing nested root is created", func(t *testing.T, dir string) string {
			return filepath.Join(dir, "a", "b", "tlsalpn")
		}, "", 0o700},
		{"loose root is tightened", func(t *testing.T, dir string) string {
			r := filepath.Join(dir, "r")
			os.Mkdir(r, 0o755)
			os.Chmod(r, 0o777)
			return r
		}, "", 0o700},
		{"narrower root is left alone", func(t *testing.T, dir string) string {
			r := filepath.Join(dir, "r")
			os.Mkdir(r, 0o500)
			return r
		}, "", 0o500},
		{"symlinked root is resolved", func(t *testing.T, dir string) string {
			r := filepath.Join(dir, "real")
			os.Mkdir(r, 0o700)
			os.Symlink(r, filepath.Join(dir, "link"))
			return filepath.Join(dir, "link")
		}, "", 0o700},
		{"root is a file", func(t *testing.T, dir string) string {
			r := filepath.Join(dir, "file")
			os.WriteFile(r, nil, 0o600)
			return r
		}, "not a directory", 0},
		{"empty root", func(t *testing.T, dir string) string { return "" }, "empty root", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := tt.setup(t, t.TempDir())
			var f *FS
			var err error
			withUmask(0o022, func() { f, err = New(root) })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New(%q) error = %v, want %q", root, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			fi, err := os.Lstat(f.Root())
			if err != nil {
				t.Fatal(err)
			}
			if !fi.IsDir() || fi.Mode().Perm() != tt.wantMode {
				t.Errorf("root %s: mode %v, want directory %v", f.Root(), fi.Mode(), tt.wantMode)
			}
			if !filepath.IsAbs(f.Root()) {
				t.Errorf("Root() = %q, not absolute", f.Root())
			}
		})
	}
}

func TestDefaultRoot(t *testing.T) {
	tests := []struct {
		name            string
		euid            int
		env             map[string]string
		want, wantError string
	}{
		{"user, XDG", 1000, map[string]string{"XDG_DATA_HOME": "/data", "HOME": "/home/u"}, "/data/tlsalpn", ""},
		{"user, relative XDG ignored", 1000, map[string]string{"XDG_DATA_HOME": "relative", "HOME": "/home/u"}, "/home/u/.local/share/tlsalpn", ""},
		{"user, HOME", 1000, map[string]string{"HOME": "/home/u"}, "/home/u/.local/share/tlsalpn", ""},
		{"user, no HOME", 1000, nil, "", "$HOME is not set"},
		{"root ignores HOME and XDG", 0, map[string]string{"XDG_DATA_HOME": "/data", "HOME": "/root"}, "/var/lib/tlsalpn", ""},
		{"root under systemd: no HOME", 0, nil, "/var/lib/tlsalpn", ""},
		{"TLSALPN_STORAGE for root", 0, map[string]string{"TLSALPN_STORAGE": "/srv/tls/"}, "/srv/tls", ""},
		{"TLSALPN_STORAGE for a user", 1000, map[string]string{"TLSALPN_STORAGE": "/srv/tls", "HOME": "/home/u"}, "/srv/tls", ""},
		{"TLSALPN_STORAGE relative", 1000, map[string]string{"TLSALPN_STORAGE": "tls", "HOME": "/home/u"}, "", "is relative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DefaultRootFor(tt.euid, func(k string) string { return tt.env[k] })
			if tt.wantError != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantError) {
					t.Fatalf("DefaultRootFor = %q, %v; want an error containing %q", got, err, tt.wantError)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("DefaultRootFor = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestPutGetModes(t *testing.T) {
	tests := []struct {
		name     string
		key      string
		mode     os.FileMode
		umask    int
		wantMode os.FileMode
	}{
		{"private key, permissive umask", "certificates/ca/example.com/key.pem", 0o600, 0, 0o600},
		{"private key, strict umask", "accounts/ca/a@example.com/key.pem", 0o600, 0o077, 0o600},
		{"public, strict umask does not narrow", "certificates/ca/example.com/cert.pem", 0o644, 0o077, 0o644},
		{"zero mode means 0600", "certificates/ca/example.com/meta.json", 0, 0, 0o600},
		{"read-only", "x/y", 0o400, 0o022, 0o400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFS(t)
			ctx := t.Context()
			want := []byte("value of " + tt.key)
			withUmask(tt.umask, func() {
				if err := f.Put(ctx, tt.key, []byte("old"), tt.mode); err != nil {
					t.Fatal(err)
				}
				if err := f.Put(ctx, tt.key, want, tt.mode); err != nil {
					t.Fatal(err)
				}
			})
			got, err := f.Get(ctx, tt.key)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Get = %q, %v; want %q", got, err, want)
			}
			fi, err := os.Stat(f.Path(tt.key))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != tt.wantMode {
				t.Errorf("file mode %v, want %v", fi.Mode(), tt.wantMode)
			}
			for d := filepath.Dir(f.Path(tt.key)); d != f.Root(); d = filepath.Dir(d) {
				fi, err := os.Stat(d)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o700 {
					t.Errorf("directory %s mode %v, want 0700", d, fi.Mode().Perm())
				}
			}
			if tmp := tempFiles(t, f.Root()); len(tmp) != 0 {
				t.Errorf("temporary files left: %v", tmp)
			}
		})
	}
}

func TestInvalidArguments(t *testing.T) {
	f := newFS(t)
	ctx := t.Context()
	for _, key := range []string{"", "/abs", "../escape", "a/../../b", "a//b", `a\b`, "a\x00", ".tmp-x", "locks/x"} {
		if err := f.Put(ctx, key, []byte("v"), 0o600); err == nil {
			t.Errorf("Put(%q) succeeded", key)
		}
		if _, err := f.Get(ctx, key); err == nil || errors.Is(err, storage.ErrNotExist) {
			t.Errorf("Get(%q) = %v, want a validation error", key, err)
		}
		if _, err := f.Stat(ctx, key); err == nil {
			t.Errorf("Stat(%q) succeeded", key)
		}
		if err := f.Delete(ctx, key); err == nil {
			t.Errorf("Delete(%q) succeeded", key)
		}
		if _, err := f.Watch(ctx, key); err == nil && key != "" {
			t.Errorf("Watch(%q) succeeded", key)
		}
	}
	if err := f.Put(ctx, "k", nil, os.ModeSetuid|0o600); err == nil {
		t.Error("Put with setuid mode succeeded")
	}
	if _, err := f.List(ctx, "../", true); err == nil {
		t.Error(`List("../") succeeded`)
	}
	if _, err := f.Lock(ctx, "../x"); err == nil {
		t.Error(`Lock("../x") succeeded`)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.Put(canceled, "k", nil, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with canceled context = %v", err)
	}
	if _, err := f.Lock(canceled, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Lock with canceled context = %v", err)
	}
	entries, _ := os.ReadDir(f.Root())
	if len(entries) != 0 {
		t.Errorf("root not empty after invalid calls: %v", entries)
	}
}

// TestPutFailureKeepsOldValue forces Put to fail at each stage and checks that the previous
// value survives, the error says what happened to which key, and no temporary file is left.
func TestPutFailureKeepsOldValue(t *testing.T) {
	const oldValue = "old value"
	tests := []struct {
		name     string
		oldKey   string                                      // holds oldValue before the failing Put
		key      string                                      // the Put that must fail
		setup    func(t *testing.T, f *FS)                   // after oldKey is written
		put      func(t *testing.T, f *FS, key string) error // nil means f.Put(key, "new")
		wantErrs []string
	}{
		{
			name:     "parent is a file",
			oldKey:   "certificates/ca/example.com",
			key:      "certificates/ca/example.com/cert.pem",
			wantErrs: []string{"certificates/ca/example.com/cert.pem", "not a directory"},
		},
		{
			name:     "target is a directory",
			oldKey:   "certificates/ca/example.com/cert.pem",
			key:      "certificates/ca/example.com",
			wantErrs: []string{`put "certificates/ca/example.com"`, "rename"},
		},
		{
			name:   "read-only directory",
			oldKey: "certificates/ca/example.com/cert.pem",
			key:    "certificates/ca/example.com/cert.pem",
			setup: func(t *testing.T, f *FS) {
				if os.Geteuid() == 0 {
					t.Skip("root ignores permission bits; the other cases cover failures as root")
				}
				d := filepath.Dir(f.Path("certificates/ca/example.com/cert.pem"))
				os.Chmod(d, 0o500)
				t.Cleanup(func() { os.Chmod(d, 0o700) })
			},
			wantErrs: []string{"create temporary file", "permission denied"},
		},
		{
			name:   "file too large, like a full disk (helper process with RLIMIT_FSIZE)",
			oldKey: "certificates/ca/example.com/cert.pem",
			key:    "certificates/ca/example.com/cert.pem",
			put: func(t *testing.T, f *FS, key string) error {
				out, err := helper(t, "put-too-big", f.Root()).Output()
				if err != nil {
					t.Fatalf("helper: %v", err)
				}
				return errors.New(string(out))
			},
			wantErrs: []string{`put "certificates/ca/example.com/cert.pem": write`, "file too large"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFS(t)
			ctx := t.Context()
			if err := f.Put(ctx, tt.oldKey, []byte(oldValue), 0o644); err != nil {
				t.Fatal(err)
			}
			if tt.setup != nil {
				tt.setup(t, f)
			}
			var err error
			if tt.put != nil {
				err = tt.put(t, f, tt.key)
			} else {
				err = f.Put(ctx, tt.key, []byte("new value"), 0o600)
			}
			if err == nil {
				t.Fatal("Put succeeded")
			}
			for _, w := range tt.wantErrs {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if got, err := f.Get(ctx, tt.oldKey); err != nil || string(got) != oldValue {
				t.Errorf("after failed Put, Get(%q) = %q, %v; want %q", tt.oldKey, got, err, oldValue)
			}
			if tmp := tempFiles(t, f.Root()); len(tmp) != 0 {
				t.Errorf("temporary files left: %v", tmp)
			}
		})
	}
}

// TestConcurrentPutDeleteOneDirectory: keys put and deleted at once in one
// directory (issue --separate probes storage from every order) never fail:
// a Delete that empties the directory removes it under another Delete that
// is about to sync it.
func TestConcurrentPutDeleteOneDirectory(t *testing.T) {
	f := newFS(t)
	ctx := t.Context()
	for round := range 300 {
		keys := make([]string, 8)
		for w := range keys {
			keys[w] = fmt.Sprintf("orders/ca/r%d/probe-%d", round, w)
			if err := f.Put(ctx, keys[w], []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		// All at once: the directory empties under the others.
		var wg sync.WaitGroup
		start := make(chan struct{})
		for _, k := range keys {
			wg.Go(func() {
				<-start
				if err := f.Delete(ctx, k); err != nil {
					t.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
		if t.Failed() {
			return
		}
	}
}

func TestDelete(t *testing.T) {
	f := newFS(t)
	ctx := t.Context()
	for _, k := range []string{"certificates/ca/a.example/cert.pem", "certificates/ca/b.example/cert.pem"} {
		if err := f.Put(ctx, k, []byte("x"), 0); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		key       string
		wantGone  []string // paths relative to root that must not exist afterwards
		wantStill []string
	}{
		{"missing/key", nil, []string{"certificates/ca/a.example/cert.pem"}},
		{"certificates/ca", nil, []string{"certificates/ca/a.example/cert.pem"}}, // a prefix: no-op
		{"certificates/ca/a.example/cert.pem", []string{"certificates/ca/a.example"}, []string{"certificates/ca/b.example/cert.pem"}},
		{"certificates/ca/b.example/cert.pem", []string{"certificates"}, nil},
	}
	for _, tt := range tests {
		if err := f.Delete(ctx, tt.key); err != nil {
			t.Fatalf("Delete(%q) = %v", tt.key, err)
		}
		for _, p := range tt.wantGone {
			if _, err := os.Lstat(f.Path(p)); !errors.Is(err, iofs.ErrNotExist) {
				t.Errorf("after Delete(%q): %s still exists", tt.key, p)
			}
		}
		for _, p := range tt.wantStill {
			if _, err := os.Lstat(f.Path(p)); err != nil {
				t.Errorf("after Delete(%q): %v", tt.key, err)
			}
		}
	}
	if _, err := os.Stat(f.Root()); err != nil {
		t.Errorf("root removed: %v", err)
	}
}

// TestList covers what only a directory tree has: files and directories
// that are not keys (a leftover temporary file, an empty directory, one
// holding only a temporary file, a lock) are never listed. What List
// returns for keys is storagetest's, which TestConformance runs here.
func TestList(t *testing.T) {
	f := newFS(t)
	ctx := t.Context()
	keys := []string{
		"certificates/ca/example.com/cert.pem",
		"certificates/ca/example.com/key.pem",
		"certificates/other/x.example/cert.pem",
		"top",
	}
	for _, k := range keys {
		if err := f.Put(ctx, k, []byte(k), 0); err != nil {
			t.Fatal(err)
		}
	}
	unlock, err := f.Lock(ctx, "certificates/ca/example.com")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	for _, err := range []error{
		os.WriteFile(filepath.Join(f.Path("certificates/ca/example.com"), ".tmp-123"), nil, 0o600),
		os.MkdirAll(f.Path("certificates/empty/dir"), 0o700),
		os.MkdirAll(f.Path("certificates/onlytmp"), 0o700),
		os.WriteFile(filepath.Join(f.Path("certificates/onlytmp"), ".tmp-1"), nil, 0o600),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		prefix    string
		recursive bool
		want      []string
	}{
		{"", true, keys},
		{"", false, []string{"certificates", "top"}},
		{"certificates", false, []string{"certificates/ca", "certificates/other"}},
		{"certificates/ca/example.com", false, keys[:2]},
		{"certificates/empty", true, nil},
		{"certificates/empty", false, nil},
		{"certificates/onlytmp", true, nil},
		{"certificates/onlytmp", false, nil},
	}
	for _, tt := range tests {
		got, err := f.List(ctx, tt.prefix, tt.recursive)
		if err != nil {
			t.Errorf("List(%q, %v) = %v", tt.prefix, tt.recursive, err)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("List(%q, %v) = %q, want %q", tt.prefix, tt.recursive, got, tt.want)
		}
	}
}

func TestRemoveStaleTemp(t *testing.T) {
	f := newFS(t)
	ctx := t.Context()
	if err := f.Put(ctx, "a/b", []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(f.Root(), "a", ".tmp-stale")
	fresh := filepath.Join(f.Root(), ".tmp-fresh")
	for _, p := range []string{stale, fresh} {
		os.WriteFile(p, []byte("partial"), 0o600)
	}
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(stale, old, old)
	n, err := f.RemoveStaleTemp(ctx, time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("RemoveStaleTemp = %d, %v; want 1", n, err)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("stale temporary file kept")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Error("fresh temporary file removed")
	}
	if _, err := f.Get(ctx, "a/b"); err != nil {
		t.Error(err)
	}
}

// TestNewRemovesStaleTemp: opening a storage removes the temporary files a
// killed process left (a certificate key among them), but not one a
// concurrent writer is filling right now, nor anything else.
func TestNewRemovesStaleTemp(t *testing.T) {
	tests := []struct {
		name    string
		file    string // relative to the root
		age     time.Duration
		opts    []Option
		removed bool
	}{
		{"stale key, killed writer", "certificates/ca/example.com/.tmp-123", 20 * time.Minute, nil, true},
		{"stale at the root", ".tmp-9", 24 * time.Hour, nil, true},
		{"concurrent writer", "certificates/ca/example.com/.tmp-456", time.Minute, nil, false},
		{"not a temporary file", "certificates/ca/example.com/key.pem", 24 * time.Hour, nil, false},
		{"other dot file", "certificates/ca/.keep", 24 * time.Hour, nil, false},
		{"cleanup turned off", ".tmp-7", 24 * time.Hour, []Option{WithStaleTempAge(-1)}, false},
		{"shorter age", ".tmp-8", 2 * time.Minute, []Option{WithStaleTempAge(time.Minute)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			p := filepath.Join(root, filepath.FromSlash(tt.file))
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte("-----BEGIN PRIV"), 0o600); err != nil {
				t.Fatal(err)
			}
			when := time.Now().Add(-tt.age)
			if err := os.Chtimes(p, when, when); err != nil {
				t.Fatal(err)
			}
			if _, err := New(root, tt.opts...); err != nil {
				t.Fatal(err)
			}
			_, err := os.Stat(p)
			if gone := errors.Is(err, iofs.ErrNotExist); gone != tt.removed {
				t.Errorf("%s, %v old: removed = %v, want %v", tt.file, tt.age, gone, tt.removed)
			}
		})
	}
}

func BenchmarkPutGet4KiB(b *testing.B) {
	f := newFS(b)
	ctx := context.Background()
	value := bytes.Repeat([]byte("x"), 4096)
	const key = "certificates/ca/example.com/cert.pem"
	b.SetBytes(int64(len(value)))
	for b.Loop() {
		if err := f.Put(ctx, key, value, 0o600); err != nil {
			b.Fatal(err)
		}
		if _, err := f.Get(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
}
