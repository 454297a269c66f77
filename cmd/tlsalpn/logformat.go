package main

import (
	"io"
	"log/slog"
	"os"
)

// logFormat is --log-format: "text" (key=value, for people), "json" (one
// object a line, for journald, Loki and jq), or "" for the default: text
// when stderr is a terminal, JSON otherwise, so that what a person watches
// reads as text and what a machine keeps parses without a grammar.
type logFormat string

func (f *logFormat) String() string { return string(*f) }

func (f *logFormat) Set(s string) error {
	switch s {
	case "text", "json":
		*f = logFormat(s)
		return nil
	}
	return usagef("%q: want text or json", s)
}

// registerLogFormat adds --log-format to a command that logs.
func registerLogFormat(fs *flagSet, f *logFormat) {
	fs.Var(f, "log-format", "log line `FORMAT`: text or json (default: text on a terminal, json otherwise)")
}

// newLogger returns the logger of a command: at level, to e.stderr, in
// format, with this command's advice on errors (adviseErrors).
func newLogger(e *env, format logFormat, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: adviseErrors}
	if format == "" {
		format = "json"
		if isTerminal(e.stderr) {
			format = "text"
		}
	}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(e.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(e.stderr, opts))
}

// isTerminal reports whether w is a terminal: progress and text logs are
// for people watching one.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && fdIsTerminal(f.Fd())
}
