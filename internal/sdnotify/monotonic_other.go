//go:build !unix

package sdnotify

// monotonicUsec is unknown where there is no systemd.
func monotonicUsec() (uint64, bool) { return 0, false }
