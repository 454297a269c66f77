package main

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
)

// TestLogFormat: text on a terminal, JSON otherwise, unless --log-format
// says which.
func TestLogFormat(t *testing.T) {
	_, tty := openPTY(t)
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pipeR.Close()
	defer pipeW.Close()
	for _, tc := range []struct {
		name   string
		stderr *os.File
		format logFormat
		json   bool
	}{
		{"terminal, default", tty, "", false},
		{"pipe, default", pipeW, "", true},
		{"terminal, json asked", tty, "json", true},
		{"pipe, text asked", pipeW, "text", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := &env{stderr: tc.stderr, getenv: func(string) string { return "" }}
			h := newLogger(e, tc.format, slog.LevelInfo).Handler()
			// The same handler kind, writing where the test can read.
			_, isJSON := h.(*slog.JSONHandler)
			if isJSON != tc.json {
				t.Errorf("JSON handler: %v, want %v (%T)", isJSON, tc.json, h)
			}
		})
	}
}

func TestLogFormatFlag(t *testing.T) {
	for _, cmd := range []string{"issue", "renew", "serve", "list"} {
		code, _, stderr := runCLI(t, context.Background(), cmd, "--log-format", "yaml")
		if code != exitUsage || !strings.Contains(stderr, `"yaml": want text or json`) {
			t.Errorf("%s --log-format yaml: exit %d: %s", cmd, code, stderr)
		}
	}
}
