// Command tlsalpn obtains and renews TLS certificates through the ACME
// TLS-ALPN-01 challenge (RFC 8737): domain control is proven inside the TLS
// handshake on port 443, with no files, no DNS records and no port 80.
//
// Exit codes, for every command:
//
//	0  success
//	1  the operation failed (the CA refused, validation failed, a hook failed)
//	2  usage error: a bad flag, name or value; nothing was done
//	130, 143  interrupted by SIGINT (Ctrl-C) or SIGTERM before finishing
//	          (128 + the signal's number, as shells report it)
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// command is one subcommand. run returns an error; a *usageError exits 2.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *env, args []string) error
}

func commands() []command {
	return []command{
		{"issue", "obtain a certificate, proving control with TLS-ALPN-01", runIssue},
		{"renew", "renew the stored certificates that are due (for cron or a timer)", runRenew},
		{"serve", "the front door on :443: answers the CA, passes everything else to your server, renews in the background", runServe},
		{"revoke", "revoke a stored certificate", runRevoke},
		{"list", "show the stored certificates and when they renew", runList},
		{"reconfigure", "change a stored certificate's output, hook or key type without ordering", runReconfigure},
		{"import", "take over the certificates and accounts of certbot, lego, acme.sh or Traefik", runImport},
		{"delete", "stop managing a stored certificate (its deployed files stay)", runDelete},
		{"storage", "copy all state between a directory and etcd (storage copy SRC DST)", runStorage},
		{"check", "validate a host from the outside exactly as the CA does", runCheck},
		{"plan", "which challenge to use here, decided by probing", runPlan},
		{"demo", "run the whole flow on this machine against an embedded test CA", runDemo},
		{"install-service", "write the systemd units for serve, or the renew timer", runInstallService},
		{"challenge", "publish or withdraw a challenge on a running serve, for another ACME client's hook", runChallenge},
	}
}

// env is the process's outside world, passed down so that commands are
// testable in-process.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// geteuid is the effective user id, which picks the default storage
	// (fs.DefaultRootFor); nil means os.Geteuid.
	geteuid func() int
	// goos is the system serve decides it can run on; "" means runtime.GOOS.
	goos string
}

func (e *env) goOS() string {
	if e.goos == "" {
		return runtime.GOOS
	}
	return e.goos
}

func (e *env) euid() int {
	if e.geteuid == nil {
		return os.Geteuid()
	}
	return e.geteuid()
}

// exitError carries a command's own exit code (check's 1 for expiring and
// 2 for failing, like openssl x509 -checkend) with its one-line message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// interruptedError is the cause of the command's context when a signal
// stopped it, so that the command's "context canceled" can be told to
// people as what it was.
type interruptedError struct{ sig syscall.Signal }

func (e *interruptedError) Error() string {
	switch e.sig {
	case syscall.SIGINT:
		return "interrupted (SIGINT, Ctrl-C)"
	case syscall.SIGTERM:
		return "interrupted (SIGTERM)"
	}
	return "interrupted (" + e.sig.String() + ")"
}

// exitCode is 128 plus the signal's number, as shells report a command a
// signal stopped: 130 for Ctrl-C, 143 for SIGTERM.
func (e *interruptedError) exitCode() int { return 128 + int(e.sig) }

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if s, ok := (<-sigs).(syscall.Signal); ok {
			cancel(&interruptedError{sig: s})
		}
	}()
	os.Exit(profiled(func() int {
		return run(ctx, &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, geteuid: os.Geteuid}, os.Args[1:])
	}))
}

// profiled runs f, writing a CPU profile of the whole run to
// $TLSALPN_CPUPROFILE and the allocations to $TLSALPN_MEMPROFILE when
// set, for "go tool pprof": how the front door's costs are measured.
func profiled(f func() int) int {
	if path := os.Getenv("TLSALPN_CPUPROFILE"); path != "" {
		if fh, err := os.Create(path); err == nil {
			pprof.StartCPUProfile(fh)
			defer func() { pprof.StopCPUProfile(); fh.Close() }()
		}
	}
	if path := os.Getenv("TLSALPN_MEMPROFILE"); path != "" {
		defer func() {
			if fh, err := os.Create(path); err == nil {
				pprof.Lookup("allocs").WriteTo(fh, 0)
				fh.Close()
			}
		}()
	}
	return f()
}

func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 && args[0] == "help" {
			return run(ctx, e, []string{args[1], "--help"})
		}
		mainUsage(e.stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintln(e.stdout, "tlsalpn", version())
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, errHelp):
			return exitOK
		}
		var ie *interruptedError
		if errors.As(context.Cause(ctx), &ie) && errors.Is(err, context.Canceled) {
			fmt.Fprintf(e.stderr, "tlsalpn %s: %s before finishing\n", c.name, ie)
			return ie.exitCode()
		}
		fmt.Fprintf(e.stderr, "tlsalpn %s: %s\n", c.name, oneLine(err))
		var ee *exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		var ue *usageError
		if errors.As(err, &ue) {
			return exitUsage
		}
		return exitFailure
	}
	fmt.Fprintf(e.stderr, "tlsalpn: unknown command %q (run tlsalpn --help for the list)\n", args[0])
	return exitUsage
}

// oneLine folds a possibly multi-line error (errors.Join) into one line,
// in words meant for people: without the package prefixes libraries put
// on their errors for programmers (see internalPrefixes), and with this
// command's advice for the libraries' typed errors (see advice).
func oneLine(err error) string {
	s := strings.Join(strings.Fields(strings.ReplaceAll(err.Error()+advice(err), "\n", "; ")), " ")
	for _, p := range internalPrefixes {
		s = strings.TrimPrefix(s, p)
		s = strings.ReplaceAll(s, ": "+p, ": ")
		s = strings.ReplaceAll(s, "; "+p, "; ")
	}
	return s
}

// internalPrefixes are the "package: " prefixes of errors from this
// module's libraries and from acmez, which say where in the code an error
// arose: useful in a stack, noise in a message to a sysadmin, and already
// said by the wrapping ("opening storage: …").
var internalPrefixes = []string{
	"storage/fs: ", "storage: ", "challenge: ", "issuer: ", "manager: ", "deploy: ", "responder: ",
	"provisioning client: ",
}

func mainUsage(w io.Writer) {
	fmt.Fprint(w, `tlsalpn gets and keeps TLS certificates through the ACME TLS-ALPN-01 challenge:
control of a name is proven inside the TLS handshake on port 443. No port 80,
no DNS API, no files served.

Usage:
  tlsalpn <command> [flags]

Commands:
`)
	width := 0
	for _, c := range commands() {
		width = max(width, len(c.name))
	}
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-*s %s\n", width, c.name, c.summary)
	}
	fmt.Fprintf(w, "  %-*s %s\n", width, "version", "print the version")
	fmt.Fprint(w, `
Try it with nothing set up:
  tlsalpn demo

A first certificate (port 443 must be free while validating, about a second):
  tlsalpn issue -d example.com --email you@example.com --agree-tos --out /etc/ssl/example.com \
      --deploy-hook 'systemctl reload nginx'
It says where it stored the certificate (/var/lib/tlsalpn as root,
~/.local/share/tlsalpn for other users) and how to renew it: from cron or a
systemd timer, twice a day, as the same user:
  17 3,15 * * *  root  /usr/local/bin/tlsalpn renew -q

Run "tlsalpn <command> --help" for the flags of a command.
Exit codes: 0 success, 1 the operation failed, 2 usage error (nothing was done),
130 interrupted (Ctrl-C; 143 for SIGTERM).
`)
}

func version() string { return "0.1.0" }
