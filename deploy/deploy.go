// Package deploy puts certificates where servers read them and tells the
// servers.
//
// Four PEM files must change together: a server that read a new cert.pem
// with the old key.pem would fail to start. So each deployment is written
// in full into a fresh version directory, and one symlink, swapped with
// rename(2), makes all four current at once; the names a server is
// configured with are symlinks through it (the layout certbot's live/
// directory and Kubernetes' atomic writer use). A crash at any point leaves
// either the old set or the new one, never a mix, and never a torn file.
//
//	OUT/cert.pem      -> .tlsalpn/current/cert.pem
//	OUT/chain.pem     -> .tlsalpn/current/chain.pem
//	OUT/fullchain.pem -> .tlsalpn/current/fullchain.pem
//	OUT/key.pem       -> .tlsalpn/current/key.pem      (the file itself is 0600)
//	OUT/.tlsalpn/current -> v20261130T010203Z-5f3a…     (previous versions kept: 2)
package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Files are the contents of one deployment.
type Files struct {
	Cert      []byte // leaf only
	Chain     []byte // intermediates, without the leaf
	FullChain []byte // leaf then intermediates: what nginx's ssl_certificate wants
	Key       []byte // private key, written 0600
}

// Paths are where a deployment's files can be read, through the stable
// symlinks.
type Paths struct {
	Dir, Cert, Chain, FullChain, Key string
}

// PathsIn returns the paths of a deployment in dir.
func PathsIn(dir string) Paths {
	return Paths{
		Dir:       dir,
		Cert:      filepath.Join(dir, "cert.pem"),
		Chain:     filepath.Join(dir, "chain.pem"),
		FullChain: filepath.Join(dir, "fullchain.pem"),
		Key:       filepath.Join(dir, "key.pem"),
	}
}

const (
	stateDir     = ".tlsalpn"
	currentLink  = "current"
	keepVersions = 3 // the current one and two before it
)

// Remove removes what Write put in dir: the four names and the versions
// behind them, leaving dir itself and anything else in it. It returns the
// names it removed.
func Remove(dir string) ([]string, error) {
	p := PathsIn(dir)
	var removed []string
	for _, f := range []string{p.Cert, p.Chain, p.FullChain, p.Key} {
		switch err := os.Remove(f); {
		case err == nil:
			removed = append(removed, f)
		case !errors.Is(err, fs.ErrNotExist):
			return removed, fmt.Errorf("removing %s: %w", f, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(dir, stateDir)); err != nil {
		return removed, fmt.Errorf("removing %s: %w", filepath.Join(dir, stateDir), err)
	}
	return removed, nil
}

// Write deploys f into dir atomically (see the package comment) and returns
// the paths. dir is created 0755 if missing: servers running as another
// user must be able to reach cert.pem (so version directories are 0755
// too); key.pem itself is 0600.
func Write(dir string, f Files) (Paths, error) {
	p := PathsIn(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return p, fmt.Errorf("creating output directory %s: %w", dir, err)
	}
	state := filepath.Join(dir, stateDir)
	if err := os.MkdirAll(state, 0o755); err != nil {
		return p, fmt.Errorf("creating %s: %w", state, err)
	}
	version := "v" + time.Now().UTC().Format("20060102T150405.000000000Z") + "-" + randomHex(4)
	vdir := filepath.Join(state, version)
	if err := os.Mkdir(vdir, 0o755); err != nil {
		return p, fmt.Errorf("creating %s: %w", vdir, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(vdir)
		}
	}()
	for _, w := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"cert.pem", f.Cert, 0o644},
		{"chain.pem", f.Chain, 0o644},
		{"fullchain.pem", f.FullChain, 0o644},
		{"key.pem", f.Key, 0o600},
	} {
		if err := WriteFileAtomic(filepath.Join(vdir, w.name), w.data, w.mode); err != nil {
			return p, err
		}
	}
	if err := syncDir(vdir); err != nil {
		return p, err
	}
	// Swap "current" to the new version: create a temporary link, then
	// rename it over the old one.
	tmpLink := filepath.Join(state, ".current-"+randomHex(6))
	if err := os.Symlink(version, tmpLink); err != nil {
		return p, fmt.Errorf("linking new version in %s: %w", state, err)
	}
	if err := os.Rename(tmpLink, filepath.Join(state, currentLink)); err != nil {
		os.Remove(tmpLink)
		return p, fmt.Errorf("switching %s to the new certificate: %w", dir, err)
	}
	ok = true
	if err := syncDir(state); err != nil {
		return p, err
	}
	for _, name := range []string{"cert.pem", "chain.pem", "fullchain.pem", "key.pem"} {
		if err := ensureLink(dir, name); err != nil {
			return p, err
		}
	}
	if err := syncDir(dir); err != nil {
		return p, err
	}
	prune(state, version)
	return p, nil
}

// ensureLink makes dir/name a symlink to .tlsalpn/current/name, replacing a
// regular file left by another tool (atomically, by rename).
func ensureLink(dir, name string) error {
	target := filepath.Join(stateDir, currentLink, name)
	path := filepath.Join(dir, name)
	if cur, err := os.Readlink(path); err == nil && cur == target {
		return nil
	}
	tmp := filepath.Join(dir, "."+name+"-"+randomHex(6))
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("linking %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("linking %s: %w", path, err)
	}
	return nil
}

// prune removes old version directories beyond keepVersions; failures are
// harmless (the next deployment tries again).
func prune(state, current string) {
	entries, err := os.ReadDir(state)
	if err != nil {
		return
	}
	var versions []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "v") {
			versions = append(versions, e.Name())
		}
	}
	sort.Strings(versions) // names start with a UTC timestamp
	for len(versions) > keepVersions {
		if versions[0] != current {
			os.RemoveAll(filepath.Join(state, versions[0]))
		}
		versions = versions[1:]
	}
}

// WriteFileAtomic writes data to path by way of a temporary file in the same
// directory, fsync and rename, with exactly mode perm (the umask does not
// apply). Readers see the old content or the new, never part of either.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("writing %s: flushing to disk: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, fs.ErrInvalid) {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// CheckWritable reports, before any certificate is ordered, whether dir can
// receive a deployment, so that a CA's rate limit is not spent on a
// certificate that could not be written. It creates nothing: when dir does
// not exist yet, its nearest existing ancestor is probed instead.
func CheckWritable(dir string) error {
	probe := dir
	for {
		fi, err := os.Stat(probe)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("output directory %s cannot be created: %s is not a directory", dir, probe)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("output directory %s: %w", dir, err)
		}
		parent := filepath.Dir(probe)
		if parent == probe {
			break
		}
		probe = parent
	}
	f, err := os.CreateTemp(probe, ".tlsalpn-probe-*")
	if err != nil {
		return fmt.Errorf("output directory %s is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// Hook is a command run after a deployment, through /bin/sh -c (cmd.exe /C
// on Windows).
type Hook struct {
	Command string
	Timeout time.Duration // 0 means 2 minutes
	// Name is what errors call the hook; "" means "deploy hook". The
	// command line runs its pre- and post-hooks with Run too.
	Name string
}

// HookResult is what a hook printed.
type HookResult struct {
	Output []byte // stdout and stderr interleaved, capped at 64 KiB
}

// Run runs the hook with env added to the environment (TLSALPN_CERT and
// friends; see Env). A non-zero exit, a timeout or a failure to start is an
// error that includes the end of the hook's output.
func (h Hook) Run(ctx context.Context, env []string) (HookResult, error) {
	if strings.TrimSpace(h.Command) == "" {
		return HookResult{}, nil
	}
	timeout := h.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd, err := shellCommand(ctx, h.Command)
	if err != nil {
		return HookResult{}, fmt.Errorf("%s %q: %w", h.name(), h.Command, err)
	}
	cmd.Env = append(os.Environ(), env...)
	var out capped
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	res := HookResult{Output: out.Bytes()}
	if ctx.Err() == context.DeadlineExceeded {
		return res, fmt.Errorf("%s %q timed out after %s: %s", h.name(), h.Command, timeout, tail(res.Output))
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		// The hook exited 0 but left a process holding its output open
		// (a daemon it started): that is success.
		err = nil
	}
	if err != nil {
		return res, fmt.Errorf("%s %q failed: %w: %s", h.name(), h.Command, err, tail(res.Output))
	}
	return res, nil
}

func (h Hook) name() string {
	if h.Name == "" {
		return "deploy hook"
	}
	return h.Name
}

// Env is the environment a hook receives: tlsalpn's own names, and the
// names certbot and lego hooks already read, so existing scripts work.
func Env(p Paths, names []string) []string {
	first := ""
	if len(names) > 0 {
		first = names[0]
	}
	return []string{
		"TLSALPN_DOMAIN=" + first,
		"TLSALPN_DOMAINS=" + strings.Join(names, " "),
		"TLSALPN_OUT=" + p.Dir,
		"TLSALPN_CERT=" + p.Cert,
		"TLSALPN_CHAIN=" + p.Chain,
		"TLSALPN_FULLCHAIN=" + p.FullChain,
		"TLSALPN_KEY=" + p.Key,
		"RENEWED_LINEAGE=" + p.Dir,                    // certbot
		"RENEWED_DOMAINS=" + strings.Join(names, " "), // certbot
		"LEGO_CERT_DOMAIN=" + first,                   // lego
		"LEGO_CERT_PATH=" + p.FullChain,               // lego
		"LEGO_CERT_KEY_PATH=" + p.Key,                 // lego
	}
}

type capped struct{ buf bytes.Buffer }

const maxHookOutput = 64 << 10

func (c *capped) Write(b []byte) (int, error) {
	if room := maxHookOutput - c.buf.Len(); room > 0 {
		c.buf.Write(b[:min(len(b), room)])
	}
	return len(b), nil
}

func (c *capped) Bytes() []byte { return c.buf.Bytes() }

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 500 {
		s = "…" + s[len(s)-500:]
	}
	if s == "" {
		return "(no output)"
	}
	return s
}
