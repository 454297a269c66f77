package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// serverModule is the etcd server's module, a tool dependency in go.mod: its version there is
// the version the tests run, and the client library in go.mod must stay at the same one.
const serverModule = "go.etcd.io/etcd/server/v3"

// buildTimeout bounds building the server the first time (about 25-50 s on a loaded machine).
const buildTimeout = 5 * time.Minute

// Binary returns the path of the etcd server binary for the version go.mod pins, building it
// with "go build" into the user cache directory the first time (keyed by version, so a version
// bump builds again). A file lock makes test binaries that run in parallel build it once; the
// binary is renamed into place, so no test ever runs a half-written file.
//
// $TLSALPN_ETCD_BINARY, when set, names a binary to use instead (it must be etcd 3.6 or later).
func Binary(ctx context.Context) (string, error) {
	if p := os.Getenv("TLSALPN_ETCD_BINARY"); p != "" {
		return p, nil
	}
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Version}}", serverModule).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("etcdtest: version of %s in go.mod: %w", serverModule, err)
	}
	version := strings.TrimSpace(string(out))
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "tlsalpn", "etcdtest", version)
	bin := filepath.Join(dir, "etcd")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("etcdtest: cache directory for etcd %s: %w", version, err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, "build.lock"))
	if err != nil {
		return "", fmt.Errorf("etcdtest: lock the build of etcd %s: %w", version, err)
	}
	defer unlock()
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // another test binary built it while we waited
	}
	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	tmp := filepath.Join(dir, fmt.Sprintf(".etcd-%d", os.Getpid()))
	build := exec.CommandContext(ctx, "go", "build", "-o", tmp, serverModule)
	if out, err := build.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("etcdtest: go build %s@%s: %w\n%s", serverModule, version, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("etcdtest: install etcd %s: %w", version, err)
	}
	return bin, nil
}
