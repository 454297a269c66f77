package etcd

import (
	"os/exec"
	"strings"
	"testing"
)

// TestServerNotLinked: the etcd server is a tool dependency for tests only; neither this
// package nor the tlsalpn command may pull it (or its raft and bbolt) into the binary.
func TestServerNotLinked(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".", "github.com/tlsalpn/tlsalpn/cmd/tlsalpn").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for pkg := range strings.Lines(string(out)) {
		for _, banned := range []string{"go.etcd.io/etcd/server/", "go.etcd.io/raft/", "go.etcd.io/bbolt"} {
			if strings.HasPrefix(pkg, banned) {
				t.Errorf("linked into tlsalpn: %s", strings.TrimSpace(pkg))
			}
		}
	}
}
