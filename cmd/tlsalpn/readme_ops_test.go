package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsalpn/tlsalpn/internal/democa"
)

// TestREADMEOperations runs every command of the README's Operations
// section (its "sh ops" blocks) as written, in order, with only these
// changes: issue gets the test CA (--ca, --ca-root, --listen,
// --validation-port), issue and list a temporary --storage, and
// install-service a temporary --root. Each must exit 0, and what the
// section says of it must hold.
func TestREADMEOperations(t *testing.T) {
	blocks := readmeBlocks(t, "sh ops")
	if len(blocks) < 3 {
		t.Fatalf("README has %d \"sh ops\" blocks, want the Logs, systemd and cron ones", len(blocks))
	}
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage := filepath.Join(dir, "store")
	// The README's paths are the repository's.
	t.Chdir(filepath.Join("..", ".."))
	var roots []string
	ran := map[string]bool{}
	for _, b := range blocks {
		for _, line := range strings.Split(b, "\n") {
			words := shellWords(t, line)
			if len(words) == 0 {
				continue
			}
			args := tlsalpnArgs(t, words)
			switch args[0] {
			case "issue":
				args = append(args, "--ca", ca.DirectoryURL(), "--ca-root", ca.root, "--listen", ca.listen,
					"--validation-port", ca.listen[strings.LastIndex(ca.listen, ":")+1:], "--storage", storage)
			case "list":
				args = append(args, "--storage", storage)
			case "install-service":
				// A system of its own for each: the README shows
				// alternatives.
				roots = append(roots, t.TempDir())
				args = append(args, "--root", roots[len(roots)-1])
			default:
				t.Fatalf("README Operations: %q is not run by this test: add it here", line)
			}
			code, stdout, stderr := runCLI(t, context.Background(), args...)
			if code != exitOK {
				t.Errorf("%s: exit %d: %s %s", line, code, stdout, stderr)
				continue
			}
			ran[args[0]] = true
			switch {
			case args[0] == "issue":
				checkJSONEvents(t, stderr, "certificate issued", "example.com")
			case line == "tlsalpn list --expiring-within 14d":
				if !strings.HasPrefix(stdout, "OK: none of 1 certificates expires within 14d") {
					t.Errorf("%s: %q", line, stdout)
				}
			case line == "tlsalpn install-service serve --dry-run":
				if !strings.Contains(stdout, "Type=notify") || len(treeFiles(t, roots[len(roots)-1])) != 0 {
					t.Errorf("%s: %q", line, stdout)
				}
			case strings.Contains(line, "--config"):
				if !strings.Contains(stdout, "tlsalpn.service.d/paths.conf: written") || strings.Contains(stdout, "Warning") {
					t.Errorf("%s: %q", line, stdout)
				}
			}
		}
	}
	if len(ran) != 3 {
		t.Errorf("ran %v; want issue, install-service and list", ran)
	}
	for _, root := range roots {
		verifyUnits(t, filepath.Join(root, "etc", "systemd", "system"))
	}
}
