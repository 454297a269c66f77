//go:build unix

package backend

import "syscall"

const (
	sigStop          = syscall.SIGTERM // fast shutdown, for both servers
	sigReloadNginx   = syscall.SIGHUP  // what "nginx -s reload" sends
	sigReloadHAProxy = syscall.SIGUSR2 // the master-worker reload
)
