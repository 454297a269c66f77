package democa

import (
	"log/slog"
	"strings"
)

// slogWriter adapts Pebble's *log.Logger, which writes one line per Write, to
// a *slog.Logger at Debug level: Pebble is chatty, and its lines are of
// interest only when debugging a test.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Debug(strings.TrimRight(string(p), "\n"), "component", "pebble")
	return len(p), nil
}
