package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServePlatform: on windows serve refuses before doing anything, with
// an exit code of 1 and a message that says why; elsewhere it goes on (here
// to the usage error of a serve given nothing to do), and --check-config,
// which starts nothing, works everywhere.
func TestServePlatform(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	tests := []struct {
		goos       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"windows", []string{"serve", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9", "-d", "a.example", "--out", out}, exitFailure, "serve is not supported on windows: "},
		{"windows", []string{"serve"}, exitFailure, "serve is not supported on windows: "},
		{"windows", []string{"serve", "--check-config", filepath.Join("..", "..", "config", "example-nginx.yaml")}, exitOK, ""},
		{"linux", []string{"serve"}, exitUsage, ""},
		{"darwin", []string{"serve"}, exitUsage, ""},
		{"freebsd", []string{"serve"}, exitUsage, ""},
	}
	for _, tt := range tests {
		t.Run(tt.goos+" "+strings.Join(tt.args[1:], " "), func(t *testing.T) {
			var stdout, stderr strings.Builder
			e := &env{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }, goos: tt.goos}
			code := run(context.Background(), e, tt.args)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.wantCode, stderr.String())
			}
			if tt.wantStderr != "" && !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q does not say %q", stderr.String(), tt.wantStderr)
			}
			if tt.wantStderr == "" && strings.Contains(stderr.String(), "not supported") {
				t.Errorf("serve refused on %s: %s", tt.goos, stderr.String())
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("serve wrote %s (stat: %v); a refusal must do nothing", out, err)
			}
		})
	}
}
