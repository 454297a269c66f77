package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

var names = []string{"cert.pem", "chain.pem", "fullchain.pem", "key.pem"}

// version returns deployment n. Each file repeats its own tag over many
// lines, so a torn or mixed read shows.
func version(n int) Files {
	body := func(kind string) []byte {
		return bytes.Repeat(fmt.Appendf(nil, "%s %06d\n", kind, n), 200)
	}
	return Files{
		Cert:      body("CERT"),
		Chain:     body("CHAIN"),
		FullChain: append(body("CERT"), body("CHAIN")...),
		Key:       body("KEY"),
	}
}

// versionOf returns the deployment number data came from, or an error if
// data is not whole.
func versionOf(data []byte) (int, error) {
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 200 && len(lines) != 400 {
		return 0, fmt.Errorf("%d lines, want 200 or 400", len(lines))
	}
	n := -1
	for _, l := range lines {
		var kind string
		var v int
		if _, err := fmt.Sscanf(l, "%s %d", &kind, &v); err != nil {
			return 0, fmt.Errorf("line %q: %v", l, err)
		}
		if n >= 0 && v != n {
			return 0, fmt.Errorf("mixes versions %d and %d", n, v)
		}
		n = v
	}
	return n, nil
}

func contentOf(f Files, name string) []byte {
	switch name {
	case "cert.pem":
		return f.Cert
	case "chain.pem":
		return f.Chain
	case "fullchain.pem":
		return f.FullChain
	}
	return f.Key
}

// checkDeployed asserts that dir holds deployment n, read through the links.
func checkDeployed(t *testing.T, dir string, n int) {
	t.Helper()
	want := version(n)
	for _, name := range names {
		path := filepath.Join(dir, name)
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			t.Errorf("%s is %v, want a symlink", name, fi.Mode())
		}
		if target, err := os.Readlink(path); err != nil || target != filepath.Join(".tlsalpn", "current", name) {
			t.Errorf("%s -> %q (%v), want the relative link .tlsalpn/current/%s", name, target, err, name)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, contentOf(want, name)) {
			v, err := versionOf(got)
			t.Errorf("%s holds version %d (%v), want %d", name, v, err, n)
		}
		// The file itself (Lstat of the resolved target).
		real, err := filepath.EvalSymlinks(path)
		if err != nil {
			t.Fatal(err)
		}
		tfi, err := os.Lstat(real)
		if err != nil {
			t.Fatal(err)
		}
		wantMode := fs.FileMode(0o644)
		if name == "key.pem" {
			wantMode = 0o600
		}
		if !tfi.Mode().IsRegular() || tfi.Mode().Perm() != wantMode {
			t.Errorf("%s resolves to %s with mode %v, want a regular file %v", name, real, tfi.Mode(), wantMode)
		}
	}
}

// versionDirs lists the version directories kept in dir's state directory.
func versionDirs(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, stateDir))
	if err != nil {
		t.Fatal(err)
	}
	var vs []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "v") {
			vs = append(vs, e.Name())
		}
	}
	return vs
}

// checkNoLeftovers asserts no temporary file or link survived a Write.
func checkNoLeftovers(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		if strings.Contains(d.Name(), ".tmp-") || strings.HasPrefix(d.Name(), ".current-") ||
			slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(d.Name(), "."+n+"-") }) {
			t.Errorf("leftover %s", path)
		}
		return nil
	})
}

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "live", "example.com") // missing parents are created
	p, err := Write(dir, version(1))
	if err != nil {
		t.Fatal(err)
	}
	if p != PathsIn(dir) {
		t.Errorf("Write returned %+v, want %+v", p, PathsIn(dir))
	}
	checkDeployed(t, dir, 1)
	checkNoLeftovers(t, dir)
	cur, err := os.Readlink(filepath.Join(dir, stateDir, currentLink))
	if err != nil || strings.Contains(cur, "/") || !strings.HasPrefix(cur, "v") {
		t.Errorf("current -> %q (%v), want a relative version name", cur, err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm()&0o055 != 0o055 {
		t.Errorf("output directory mode %v (%v): other users' servers must reach cert.pem", fi.Mode(), err)
	}

	// The whole tree can be moved: every link is relative.
	moved := filepath.Join(t.TempDir(), "moved")
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	checkDeployed(t, moved, 1)
}

func TestWriteEmptyFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := Write(dir, Files{Cert: []byte("c"), FullChain: []byte("c"), Key: []byte("k")}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "chain.pem")); err != nil || len(b) != 0 {
		t.Errorf("chain.pem = %q, %v; want an empty file for a certificate with no intermediates", b, err)
	}
}

func TestWriteSequence(t *testing.T) {
	dir := t.TempDir()
	for n := 1; n <= 12; n++ {
		if _, err := Write(dir, version(n)); err != nil {
			t.Fatalf("Write %d: %v", n, err)
		}
		checkDeployed(t, dir, n)
		vs := versionDirs(t, dir)
		if want := min(n, keepVersions); len(vs) != want {
			t.Errorf("after %d writes: %d version directories %q, want %d", n, len(vs), vs, want)
		}
		// The kept versions are the newest ones, complete.
		for _, v := range vs {
			b, err := os.ReadFile(filepath.Join(dir, stateDir, v, "cert.pem"))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := versionOf(b); err != nil || got <= n-keepVersions {
				t.Errorf("after %d writes kept %s holding version %d (%v)", n, v, got, err)
			}
		}
	}
	checkNoLeftovers(t, dir)
}

func TestWriteReplacesExisting(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
	}{
		{"regular files from another tool", func(t *testing.T, dir string) {
			for _, n := range names {
				if err := os.WriteFile(filepath.Join(dir, n), []byte("OTHER TOOL"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"regular cert.pem only", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "cert.pem"), []byte("OTHER TOOL"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"certbot-style links elsewhere", func(t *testing.T, dir string) {
			os.MkdirAll(filepath.Join(dir, "archive"), 0o755)
			for _, n := range names {
				os.WriteFile(filepath.Join(dir, "archive", n), []byte("OLD"), 0o644)
				if err := os.Symlink(filepath.Join("archive", n), filepath.Join(dir, n)); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"dangling links", func(t *testing.T, dir string) {
			for _, n := range names {
				if err := os.Symlink("/nonexistent/"+n, filepath.Join(dir, n)); err != nil {
					t.Fatal(err)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			if _, err := Write(dir, version(7)); err != nil {
				t.Fatal(err)
			}
			checkDeployed(t, dir, 7)
			checkNoLeftovers(t, dir)
		})
	}
}

// TestWriteAtomicUnderReaders deploys 50 times while readers read. Each
// file read through its link is always whole, never missing; and a reader
// that resolves the current version once (as a server reloading should)
// always gets a certificate and key of the same version. (Reading cert.pem
// and then key.pem through their separate links can straddle a swap: the
// layout makes the set switch at once, not a reader's two opens.)
func TestWriteAtomicUnderReaders(t *testing.T) {
	dir := t.TempDir()
	if _, err := Write(dir, version(0)); err != nil {
		t.Fatal(err)
	}
	const writes = 50
	done := make(chan struct{})
	var wg sync.WaitGroup
	var reads, snapshots, pruned int
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := 0
		for {
			select {
			case <-done:
				return
			default:
			}
			for _, n := range names {
				b, err := os.ReadFile(filepath.Join(dir, n))
				if err != nil {
					t.Errorf("reading %s during a deployment: %v", n, err)
					return
				}
				v, err := versionOf(b)
				if err != nil {
					t.Errorf("%s torn: %v", n, err)
					return
				}
				if v < last {
					t.Errorf("%s went back from version %d to %d", n, last, v)
				}
				last = v
				reads++
			}
			// A consistent snapshot: open the current version directory
			// once, then read the pair from it.
			root, err := os.OpenRoot(filepath.Join(dir, stateDir, currentLink))
			if err != nil {
				t.Errorf("opening the current version: %v", err)
				return
			}
			cert, err1 := readRoot(root, "cert.pem")
			key, err2 := readRoot(root, "key.pem")
			root.Close()
			if errors.Is(err1, fs.ErrNotExist) || errors.Is(err2, fs.ErrNotExist) {
				pruned++ // this reader slept through several deployments
				continue
			}
			if err1 != nil || err2 != nil {
				t.Errorf("reading the current version: %v, %v", err1, err2)
				return
			}
			cv, err1 := versionOf(cert)
			kv, err2 := versionOf(key)
			if err1 != nil || err2 != nil || cv != kv {
				t.Errorf("certificate version %d (%v) with key version %d (%v)", cv, err1, kv, err2)
				return
			}
			snapshots++
		}
	}()
	for n := 1; n <= writes; n++ {
		if _, err := Write(dir, version(n)); err != nil {
			t.Fatalf("Write %d: %v", n, err)
		}
	}
	close(done)
	wg.Wait()
	checkDeployed(t, dir, writes)
	if vs := versionDirs(t, dir); len(vs) != keepVersions {
		t.Errorf("%d versions kept, want %d", len(vs), keepVersions)
	}
	checkNoLeftovers(t, dir)
	t.Logf("%d reads through links, %d consistent snapshots, %d snapshots pruned under the reader", reads, snapshots, pruned)
	if reads == 0 {
		t.Error("the reader never ran")
	}
}

func readRoot(root *os.Root, name string) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

func TestWriteErrors(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(base, "live")
	if _, err := Write(live, version(1)); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{
		filepath.Join(file, "out"),          // parent is a regular file
		filepath.Join(file, "a", "b"),       // further below it
		file,                                // the output directory is a regular file
		filepath.Join(live, "cert.pem"),     // a deployed file (through its link)
		filepath.Join(live, "key.pem", "x"), // below a deployed file
	} {
		if _, err := Write(dir, version(2)); err == nil {
			t.Errorf("Write(%s) succeeded", dir)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "x" {
		t.Errorf("regular file changed: %q, %v", b, err)
	}
	checkDeployed(t, live, 1)
	if vs := versionDirs(t, live); len(vs) != 1 {
		t.Errorf("failed writes left version directories: %q", vs)
	}
	checkNoLeftovers(t, live)
}

// TestWriteFailureKeepsPrevious makes the state directory read-only, which
// only works for an unprivileged user.
func TestWriteFailureKeepsPrevious(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	dir := t.TempDir()
	if _, err := Write(dir, version(1)); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, stateDir)
	if err := os.Chmod(state, 0o555); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(state, 0o755)
	if _, err := Write(dir, version(2)); err == nil {
		t.Fatal("Write into a read-only state directory succeeded")
	}
	checkDeployed(t, dir, 1)
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		data string
		perm fs.FileMode
	}{
		{"a", "one", 0o600},
		{"a", "two, longer", 0o644}, // replaces, and the mode follows
		{"b", "", 0o640},
		{"c", "x", 0o755},
	} {
		path := filepath.Join(dir, tc.name)
		if err := WriteFileAtomic(path, []byte(tc.data), tc.perm); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		fi, _ := os.Stat(path)
		if err != nil || string(b) != tc.data || fi.Mode().Perm() != tc.perm {
			t.Errorf("%s: %q %v %v, want %q %v", tc.name, b, fi.Mode(), err, tc.data, tc.perm)
		}
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "x"), nil, 0o600); err == nil {
		t.Error("WriteFileAtomic into a missing directory succeeded")
	}
	checkNoLeftovers(t, dir)
}

func TestCheckWritable(t *testing.T) {
	base := t.TempDir()
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	existing := filepath.Join(base, "existing")
	if err := os.Mkdir(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		dir     string
		wantErr string
	}{
		{"existing directory", existing, ""},
		{"missing directory", filepath.Join(base, "new"), ""},
		{"missing nested directories", filepath.Join(base, "a", "b", "c"), ""},
		{"missing below an existing one", filepath.Join(existing, "x", "y"), ""},
		{"a regular file", file, "not a directory"},
		{"under a regular file", filepath.Join(file, "out"), "not a directory"},
		{"deep under a regular file", filepath.Join(file, "a", "b"), "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tree(t, base)
			err := CheckWritable(tc.dir)
			if tc.wantErr == "" && err != nil {
				t.Errorf("CheckWritable(%s): %v", tc.dir, err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("CheckWritable(%s) = %v, want an error mentioning %q", tc.dir, err, tc.wantErr)
			}
			if after := tree(t, base); !slices.Equal(before, after) {
				t.Errorf("CheckWritable changed the tree: %q -> %q", before, after)
			}
		})
	}
}

func TestCheckWritableReadOnly(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	ro := filepath.Join(t.TempDir(), "ro")
	os.Mkdir(ro, 0o555)
	defer os.Chmod(ro, 0o755)
	for _, dir := range []string{ro, filepath.Join(ro, "missing")} {
		if err := CheckWritable(dir); err == nil {
			t.Errorf("CheckWritable(%s) succeeded in a read-only directory", dir)
		}
	}
}

func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Error(err)
			return nil
		}
		out = append(out, path)
		return nil
	})
	return out
}
