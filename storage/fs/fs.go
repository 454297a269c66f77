package fs

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tlsalpn/tlsalpn/storage"
)

const (
	dirMode      = 0o700
	defaultMode  = 0o600
	tempPrefix   = ".tmp-"
	lockSuffix   = ".lock"
	putAttempts  = 3 // a concurrent Delete may remove a directory that Put has just created
	defaultPoll  = 2 * time.Second
	lockPollWait = 50 * time.Millisecond
	// staleTempAge is how old a temporary file must be before New removes
	// it: a Put takes milliseconds, so one this old belongs to a process
	// that died (kill -9, power loss), never to a writer still at work.
	staleTempAge = 15 * time.Minute
)

// FS is a storage.Storage on a local directory. It is safe for concurrent use, also by several
// processes sharing one root.
type FS struct {
	root     string
	poll     time.Duration
	log      *slog.Logger
	staleAge time.Duration
}

var _ storage.Storage = (*FS)(nil)

// ErrNoHome means an ordinary user's default root cannot be found: $HOME is
// unset or relative (under systemd, a unit without User=). The caller then
// needs a root given explicitly.
var ErrNoHome = errors.New("$HOME is not set")

// Option configures an FS.
type Option func(*FS)

// WithPollInterval sets how often Watch rescans; d <= 0 keeps the default of 2s.
func WithPollInterval(d time.Duration) Option {
	return func(f *FS) {
		if d > 0 {
			f.poll = d
		}
	}
}

// WithLogger sets the logger for problems that have no caller to return an error to, such as a
// failed rescan in Watch. nil discards.
func WithLogger(l *slog.Logger) Option {
	return func(f *FS) { f.log = l }
}

// WithStaleTempAge sets how old a temporary file left by a crashed Put must be for New to remove
// it (default 15 minutes); d < 0 makes New leave them all.
func WithStaleTempAge(d time.Duration) Option {
	return func(f *FS) { f.staleAge = d }
}

// SystemRoot is the default root for the superuser: where a system's state belongs (FHS
// /var/lib), the same whether tlsalpn runs from a shell, from cron or from a systemd unit. It
// needs no $HOME, which systemd does not set for a service without User=.
const SystemRoot = "/var/lib/tlsalpn"

// EnvRoot names the environment variable that, when set, overrides the default root for every
// command (an explicit --storage still wins).
const EnvRoot = "TLSALPN_STORAGE"

// DefaultRoot returns the default root for this process: DefaultRootFor with its effective user
// id and environment.
func DefaultRoot() (string, error) { return DefaultRootFor(os.Geteuid(), os.Getenv) }

// DefaultRootFor returns the default root for a process running as euid with environment getenv:
// $TLSALPN_STORAGE when set (absolute); else SystemRoot for root (uid 0); else
// $XDG_DATA_HOME/tlsalpn, or $HOME/.local/share/tlsalpn when XDG_DATA_HOME is unset or not
// absolute (as the XDG Base Directory specification requires).
//
// Root gets one fixed path, not its home, so that "sudo tlsalpn issue", a root crontab line and
// a systemd unit without User= all find the same certificates.
func DefaultRootFor(euid int, getenv func(string) string) (string, error) {
	if d := getenv(EnvRoot); d != "" {
		if !filepath.IsAbs(d) {
			return "", fmt.Errorf("storage/fs: %s=%q is relative: give an absolute path", EnvRoot, d)
		}
		return filepath.Clean(d), nil
	}
	if euid == 0 {
		return SystemRoot, nil
	}
	return UserRoot(getenv)
}

// UserRoot returns an ordinary user's default root: $XDG_DATA_HOME/tlsalpn, or
// $HOME/.local/share/tlsalpn. It was root's default too before SystemRoot, so a
// command run as root looks there for certificates left by an earlier tlsalpn.
func UserRoot(getenv func(string) string) (string, error) {
	if d := getenv("XDG_DATA_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "tlsalpn"), nil
	}
	home := getenv("HOME")
	if home == "" || !filepath.IsAbs(home) {
		return "", fmt.Errorf("storage/fs: default root: %w", ErrNoHome)
	}
	return filepath.Join(home, ".local", "share", "tlsalpn"), nil
}

// New returns an FS rooted at root, creating root (and missing parents) with mode 0700, and
// tightening root itself to 0700 if it is group- or world-accessible (a narrower mode, such as a
// deliberately read-only 0500, is left alone). root is made absolute and its
// symbolic links are resolved, so a later change of working directory does not move the storage.
func New(root string, opts ...Option) (*FS, error) {
	if root == "" {
		return nil, errors.New("storage/fs: empty root")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("storage/fs: root %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, dirMode); err != nil {
		return nil, fmt.Errorf("storage/fs: create root %s: %w", abs, err)
	}
	// Resolve links once, so that walking the root does not stop at a symbolic link.
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, fmt.Errorf("storage/fs: root %s: %w", root, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("storage/fs: root %s: %w", abs, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("storage/fs: root %s: not a directory", abs)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(abs, dirMode); err != nil {
			return nil, fmt.Errorf("storage/fs: tighten root %s to %#o: %w", abs, dirMode, err)
		}
	}
	f := &FS{root: abs, poll: defaultPoll, staleAge: staleTempAge}
	for _, o := range opts {
		o(f)
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.staleAge >= 0 {
		// Every tlsalpn run opens its storage, so what one that was killed
		// left behind (a private key among it, possibly) does not pile up.
		// Not being able to tidy up does not make the storage unusable.
		n, err := f.RemoveStaleTemp(context.Background(), f.staleAge)
		if err != nil {
			f.log.Warn("storage/fs: temporary files left by a crashed process could not be removed", "root", abs, "error", err)
		}
		if n > 0 {
			f.log.Info("storage/fs: removed temporary files left by a crashed process", "root", abs, "count", n)
		}
	}
	return f, nil
}

// Root returns the absolute root directory.
func (f *FS) Root() string { return f.root }

// Path returns the file that holds key. It does not check that key is valid.
func (f *FS) Path(key string) string {
	return filepath.Join(f.root, filepath.FromSlash(key))
}

// Get implements storage.Storage.
func (f *FS) Get(ctx context.Context, key string) ([]byte, error) {
	if err := storage.ValidateKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("storage/fs: get %q: %w", key, err)
	}
	p := f.Path(key)
	b, err := os.ReadFile(p)
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("storage/fs: get %q: %w: %w", key, storage.ErrNotExist, err)
		}
		return nil, fmt.Errorf("storage/fs: get %q: %w", key, err)
	}
	return b, nil
}

// isNotExist reports errors that mean "no such key": the file is missing, a parent is a file, or
// the path is a directory (a prefix, not a key).
func isNotExist(err error) bool {
	return errors.Is(err, iofs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) ||
		errors.Is(err, syscall.EISDIR)
}

// Put implements storage.Storage. See the package doc for how it stays atomic.
func (f *FS) Put(ctx context.Context, key string, value []byte, mode os.FileMode) error {
	if err := storage.ValidateKey(key); err != nil {
		return err
	}
	if mode&^os.ModePerm != 0 {
		return fmt.Errorf("storage/fs: put %q: mode %v has bits other than permissions", key, mode)
	}
	if mode == 0 {
		mode = defaultMode
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage/fs: put %q: %w", key, err)
	}
	var err error
	for range putAttempts {
		if err = f.put(key, value, mode); !errors.Is(err, iofs.ErrNotExist) {
			break
		}
	}
	return err
}

func (f *FS) put(key string, value []byte, mode os.FileMode) (err error) {
	target := f.Path(key)
	dir := filepath.Dir(target)
	if err := f.mkdirs(dir); err != nil {
		return fmt.Errorf("storage/fs: put %q: %w", key, err)
	}
	tmp, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return fmt.Errorf("storage/fs: put %q: create temporary file in %s: %w", key, dir, err)
	}
	name := tmp.Name()
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(name)
		}
	}()
	// fchmod rather than a mode to open: the umask must neither widen nor narrow it.
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("storage/fs: put %q: chmod %s to %v: %w", key, name, mode, err)
	}
	if _, err := tmp.Write(value); err != nil {
		return fmt.Errorf("storage/fs: put %q: write %s: %w", key, name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("storage/fs: put %q: fsync %s: %w", key, name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("storage/fs: put %q: close %s: %w", key, name, err)
	}
	if err := os.Rename(name, target); err != nil {
		return fmt.Errorf("storage/fs: put %q: rename %s to %s: %w", key, name, target, err)
	}
	// The value is in place from here on; a failed directory fsync only means it may not survive
	// a power loss, which the caller should still hear about.
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("storage/fs: put %q: stored, but %w", key, err)
	}
	return nil
}

// mkdirs creates dir and its missing parents below the root with mode 0700 (chmod explicitly, so
// umask does not matter), fsyncing each parent that gained an entry.
func (f *FS) mkdirs(dir string) error {
	rel, err := filepath.Rel(f.root, dir)
	if err != nil || rel == "." {
		return err
	}
	cur := f.root
	for seg := range strings.SplitSeq(rel, string(filepath.Separator)) {
		parent := cur
		cur = filepath.Join(cur, seg)
		err := os.Mkdir(cur, dirMode)
		if errors.Is(err, iofs.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("create directory %s: %w", cur, err)
		}
		if err := os.Chmod(cur, dirMode); err != nil {
			return fmt.Errorf("chmod directory %s: %w", cur, err)
		}
		if err := syncDir(parent); err != nil {
			return err
		}
	}
	return nil
}

func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		// Windows has no fsync for a directory: FlushFileBuffers needs a handle opened for
		// writing, which os.Open cannot give for a directory. NTFS journals the rename itself.
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s for fsync: %w", dir, err)
	}
	err = d.Sync()
	d.Close()
	// Some file systems cannot fsync directories; there is nothing better to do there.
	if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// Delete implements storage.Storage. Directories left empty are removed, up to but not
// including the root.
func (f *FS) Delete(ctx context.Context, key string) error {
	if err := storage.ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage/fs: delete %q: %w", key, err)
	}
	p := f.Path(key)
	fi, err := os.Lstat(p)
	if isNotExist(err) || err == nil && fi.IsDir() {
		return nil
	}
	if err != nil {
		return fmt.Errorf("storage/fs: delete %q: %w", key, err)
	}
	if err := os.Remove(p); err != nil && !isNotExist(err) {
		return fmt.Errorf("storage/fs: delete %q: %w", key, err)
	}
	dir := filepath.Dir(p)
	// A concurrent Delete of the directory's last other key may have
	// removed the directory itself: then the removal is what it synced.
	if err := syncDir(dir); err != nil && !isNotExist(err) {
		return fmt.Errorf("storage/fs: delete %q: removed, but %w", key, err)
	}
	// Best effort: rmdir fails on a directory that is not empty (or that a concurrent Put is
	// filling), which is exactly when it must stay.
	for dir != f.root && os.Remove(dir) == nil {
		dir = filepath.Dir(dir)
	}
	return nil
}

// Stat implements storage.Storage.
func (f *FS) Stat(ctx context.Context, key string) (storage.KeyInfo, error) {
	if err := storage.ValidateKey(key); err != nil {
		return storage.KeyInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.KeyInfo{}, fmt.Errorf("storage/fs: stat %q: %w", key, err)
	}
	fi, err := os.Stat(f.Path(key))
	if err != nil {
		if isNotExist(err) {
			return storage.KeyInfo{}, fmt.Errorf("storage/fs: stat %q: %w: %w", key, storage.ErrNotExist, err)
		}
		return storage.KeyInfo{}, fmt.Errorf("storage/fs: stat %q: %w", key, err)
	}
	if !fi.Mode().IsRegular() {
		return storage.KeyInfo{}, fmt.Errorf("storage/fs: stat %q: %w: %s is not a regular file",
			key, storage.ErrNotExist, f.Path(key))
	}
	return storage.KeyInfo{Key: key, Size: fi.Size(), Modified: fi.ModTime()}, nil
}

// List implements storage.Storage. Files and directories whose names begin with a dot
// (temporary files among them) and the locks directory are not keys and are skipped, as are
// symbolic links to directories and special files.
func (f *FS) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if err := storage.ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	var keys []string
	var err error
	if recursive {
		err = f.walk(ctx, prefix, func(key string, _ os.FileInfo) error {
			keys = append(keys, key)
			return nil
		})
	} else {
		keys, err = f.listChildren(ctx, prefix)
	}
	if err != nil {
		return nil, fmt.Errorf("storage/fs: list %q: %w", prefix, err)
	}
	slices.Sort(keys)
	return keys, nil
}

func (f *FS) listChildren(ctx context.Context, prefix string) ([]string, error) {
	p := f.root
	if prefix != "" {
		p = f.Path(prefix)
	}
	entries, err := os.ReadDir(p)
	if errors.Is(err, syscall.ENOTDIR) {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return []string{prefix}, nil // the prefix is itself a key
		}
		return nil, nil
	}
	if isNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if skipName(prefix, e.Name()) {
			continue
		}
		key := e.Name()
		if prefix != "" {
			key = prefix + "/" + key
		}
		fi, err := os.Stat(filepath.Join(p, e.Name())) // follows symlinks
		switch {
		case err != nil:
			continue // vanished meanwhile, or a dangling link
		case fi.Mode().IsRegular():
			keys = append(keys, key)
		case fi.IsDir() && e.Type()&iofs.ModeSymlink == 0:
			found := false
			err := f.walk(ctx, key, func(string, os.FileInfo) error {
				found = true
				return iofs.SkipAll
			})
			if err != nil {
				return nil, err
			}
			if found {
				keys = append(keys, key)
			}
		}
	}
	return keys, nil
}

// skipName reports whether the entry name in the directory of prefix is not part of the key space.
func skipName(prefix, name string) bool {
	return strings.HasPrefix(name, ".") || prefix == "" && name == storage.LocksPrefix
}

// walk calls fn for every key covered by prefix (including prefix itself if it is a key), with
// the key's file info. If fn returns an error, walk stops and returns it, except that
// iofs.SkipAll stops the walk without an error.
func (f *FS) walk(ctx context.Context, prefix string, fn func(key string, fi os.FileInfo) error) error {
	start := f.root
	if prefix != "" {
		start = f.Path(prefix)
	}
	err := filepath.WalkDir(start, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			if p == start && isNotExist(err) {
				return iofs.SkipAll
			}
			if isNotExist(err) {
				return nil // removed while we walked
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(f.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if p != start {
			parent := filepath.ToSlash(filepath.Dir(rel))
			if parent == "." {
				parent = ""
			}
			if skipName(parent, d.Name()) {
				if d.IsDir() {
					return iofs.SkipDir
				}
				return nil
			}
		}
		if d.IsDir() {
			return nil
		}
		fi, err := os.Stat(p) // follows symlinks
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		return fn(key, fi)
	})
	if errors.Is(err, iofs.SkipAll) {
		return nil
	}
	return err
}

// RemoveStaleTemp deletes temporary files that a crashed Put left behind and that are older than
// age (use an age well above the time a Put takes, such as 15 minutes, since another process may
// be writing one right now). It returns how many it removed. New calls it (see WithStaleTempAge).
func (f *FS) RemoveStaleTemp(ctx context.Context, age time.Duration) (int, error) {
	cutoff := time.Now().Add(-age)
	n := 0
	err := filepath.WalkDir(f.root, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			if isNotExist(err) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !d.Type().IsRegular() || !strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil || fi.ModTime().After(cutoff) {
			return nil
		}
		if err := os.Remove(p); err != nil && !isNotExist(err) {
			return fmt.Errorf("remove %s: %w", p, err)
		}
		n++
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("storage/fs: remove stale temporary files under %s: %w", f.root, err)
	}
	return n, nil
}
