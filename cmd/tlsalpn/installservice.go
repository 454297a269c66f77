package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tlsalpn/tlsalpn/config"
	"github.com/tlsalpn/tlsalpn/deploy"
	"github.com/tlsalpn/tlsalpn/plan"
)

const installServiceUsage = `
Usage: tlsalpn install-service serve [--config FILE] [--steer] [--hook-kill] [--root DIR] [--dry-run] [--force]
       tlsalpn install-service renew [--root DIR] [--dry-run] [--force]

Writes the systemd units of one way of working, the ones shipped in
contrib/systemd, byte for byte:
  serve  tlsalpn.service, the front door on :443 (Type=notify, as the
         unprivileged user tlsalpn with only CAP_NET_BIND_SERVICE), and
         /etc/sysusers.d/tlsalpn.conf, which makes that user;
         --steer adds the drop-in steering needs (CAP_BPF, CAP_NET_ADMIN,
         CAP_SYS_PTRACE); --hook-kill the one for deploy hooks that signal
         a server of another user (nginx -s reload: CAP_KILL); --config
         FILE adds paths.conf, which runs serve with FILE and lets it write
         exactly the output directories FILE names (ReadWritePaths=)
  renew  tlsalpn-renew.service and tlsalpn-renew.timer, "tlsalpn renew -q"
         twice a day as root, for certificates obtained with tlsalpn issue
into DIR/etc/systemd/system (DIR is / unless --root is given, e.g. an image
being built). It never starts anything: it prints the systemctl commands to
run. A file already there with other contents is left alone, and nothing is
written, unless --force is given.

Examples:
  tlsalpn install-service serve --dry-run
  tlsalpn install-service serve --steer --config /etc/tlsalpn/serve.yaml
  tlsalpn install-service renew --root /tmp/image

Exit codes: 0 written (or already there), 1 a file differs (see --force) or
could not be written, 2 usage error.
`

// unitFile is one file install-service writes: its path below the root
// and its contents.
type unitFile struct {
	path string
	text string
}

// pathsDropIn is the drop-in that runs serve with configFile and gives it
// write access to the directories the file's certificates are written to
// (out, and the directory of an HAProxy crt), instead of the unit's
// example /etc/nginx/tls: under ProtectSystem=strict nothing else is
// writable. Each is "-"-prefixed, so that a directory not made yet does
// not stop the unit; it must exist, owned by tlsalpn, before a
// certificate goes there (install-service says so).
func pathsDropIn(configFile string) (string, error) {
	abs, dirs, err := configOutDirs(configFile)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by tlsalpn install-service serve --config %s:\n", abs)
	b.WriteString("# serve runs with that file and may write where its certificates go.\n[Service]\n")
	if abs != "/etc/tlsalpn/serve.yaml" {
		// An empty assignment drops the unit's commands before these.
		fmt.Fprintf(&b, "ExecStartPre=\nExecStartPre=/usr/local/bin/tlsalpn serve --check-config %s\n", systemdQuote(abs))
		fmt.Fprintf(&b, "ExecStart=\nExecStart=/usr/local/bin/tlsalpn serve --config %s --storage /var/lib/tlsalpn --log-format json\n", systemdQuote(abs))
	}
	// The unit's example directory is dropped: only these are writable.
	b.WriteString("ReadWritePaths=\n")
	for _, d := range dirs {
		fmt.Fprintf(&b, "ReadWritePaths=%s\n", systemdQuote("-"+d))
	}
	return b.String(), nil
}

// configOutDirs reads configFile and returns its absolute path and the
// directories its certificates are written to, sorted, each once.
func configOutDirs(configFile string) (string, []string, error) {
	abs, err := filepath.Abs(configFile)
	if err != nil {
		return "", nil, usagef("--config: %v", err)
	}
	cfg, err := config.Load(abs)
	if err != nil {
		return "", nil, usagef("--config: %v", err)
	}
	var dirs []string
	for _, c := range cfg.Certificates {
		if c.Out != "" {
			dirs = append(dirs, filepath.Clean(c.Out))
		}
		if c.HAProxy != nil && c.HAProxy.Cert != "" {
			dirs = append(dirs, filepath.Dir(c.HAProxy.Cert))
		}
	}
	slices.Sort(dirs)
	return abs, slices.Compact(dirs), nil
}

// systemdQuote quotes a path for a unit file when it needs it: spaces,
// quotes and backslashes are written as systemd reads them in a
// double-quoted word; "%" is doubled, as specifiers are expanded in both.
func systemdQuote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	if !strings.ContainsAny(s, " \t\"'\\") {
		return s
	}
	r := strings.NewReplacer("\\", "\\\\", "\"", "\\\"")
	return "\"" + r.Replace(s) + "\""
}

// otherWay returns the unit of the other way of working when it is
// installed under root: serve's unit for renew, the renew timer for serve.
func otherWay(root, what string) string {
	other := "tlsalpn-renew.timer"
	if what == "renew" {
		other = "tlsalpn.service"
	}
	path := filepath.Join(root, "etc", "systemd", "system", other)
	if _, err := os.Stat(path); err == nil {
		return path
	}
	return ""
}

// unitsFor returns the files of a way of working; the texts are plan's,
// which tests keep equal to contrib/.
func unitsFor(what string, steer, hookKill bool, configFile string) ([]unitFile, error) {
	const dir = "etc/systemd/system"
	switch what {
	case "serve":
		files := []unitFile{
			{filepath.Join(dir, "tlsalpn.service"), plan.ServeUnit},
			{"etc/sysusers.d/tlsalpn.conf", plan.SysusersConf},
		}
		if steer {
			files = append(files, unitFile{filepath.Join(dir, "tlsalpn.service.d", "steer.conf"), plan.SteerDropIn})
		}
		if hookKill {
			files = append(files, unitFile{filepath.Join(dir, "tlsalpn.service.d", "deploy-hook-kill.conf"), plan.HookKillDropIn})
		}
		if configFile != "" {
			text, err := pathsDropIn(configFile)
			if err != nil {
				return nil, err
			}
			files = append(files, unitFile{filepath.Join(dir, "tlsalpn.service.d", "paths.conf"), text})
		}
		return files, nil
	case "renew":
		if steer || hookKill || configFile != "" {
			return nil, usagef("--steer, --hook-kill and --config are for the serve unit: tlsalpn renew neither listens nor steers, and reads no config file")
		}
		return []unitFile{
			{filepath.Join(dir, "tlsalpn-renew.service"), plan.RenewServiceUnit},
			{filepath.Join(dir, "tlsalpn-renew.timer"), plan.RenewTimerUnit},
		}, nil
	case "":
		return nil, usagef("say which units: serve (the front door) or renew (a timer for certificates from tlsalpn issue)")
	}
	return nil, usagef("%q: want serve (the front door) or renew (a timer for certificates from tlsalpn issue)", what)
}

func runInstallService(ctx context.Context, e *env, args []string) error {
	var root string
	var dryRun, force, steer, hookKill bool
	var configFile string
	fs := newFlagSet(e, "install-service", installServiceUsage)
	fs.StringVar(&root, "root", "/", "write below this `DIR` instead of /")
	fs.BoolVar(&dryRun, "dry-run", false, "print the files and where they would go; write nothing")
	fs.BoolVar(&force, "force", false, "replace files that are already there with other contents")
	fs.BoolVar(&steer, "steer", false, "serve: add the drop-in with the capabilities steering needs")
	fs.StringVar(&configFile, "config", "", "serve: the configuration `FILE` serve runs with; its output directories become the only writable ones (drop-in paths.conf)")
	fs.BoolVar(&hookKill, "hook-kill", false, "serve: add the drop-in that lets deploy hooks signal a server of another user (CAP_KILL)")
	if err := fs.parse(args, 1); err != nil {
		return err
	}
	what := ""
	if len(fs.pos) == 1 {
		what = fs.pos[0]
	}
	files, err := unitsFor(what, steer, hookKill, configFile)
	if err != nil {
		return err
	}
	if root == "" {
		return usagef("--root: give a directory (/ for this system)")
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return usagef("--root %s: not a directory", root)
	}

	// Look at every file first: a refusal writes nothing.
	state, differ, err := unitStates(root, files)
	if err != nil {
		return err
	}
	if dryRun {
		for i, f := range files {
			verb := map[string]string{"new": "would write", "unchanged": "already there, unchanged", "replaced": "differs; --force would replace"}[state[i]]
			fmt.Fprintf(e.stdout, "# %s (%s)\n%s\n", filepath.Join(root, f.path), verb, f.text)
		}
		return nil
	}
	if len(differ) > 0 && !force {
		return fmt.Errorf("%s already there with other contents; nothing written (compare with tlsalpn install-service %s --dry-run, then --force replaces)",
			strings.Join(differ, ", "), what)
	}
	if err := writeUnits(e, root, files, state); err != nil {
		return err
	}
	printInstallNext(e, root, what, configFile)
	return nil
}

// unitStates compares each file with what is under root already: "new",
// "unchanged" or "replaced", and the paths of the replaced ones, so that
// a file with other contents refuses the whole install before anything
// is written.
func unitStates(root string, files []unitFile) (state, differ []string, err error) {
	state = make([]string, len(files))
	for i, f := range files {
		path := filepath.Join(root, f.path)
		old, err := os.ReadFile(path)
		switch {
		case errors.Is(err, iofs.ErrNotExist):
			state[i] = "new"
		case err != nil:
			return nil, nil, fmt.Errorf("reading %s: %w", path, err)
		case bytes.Equal(old, []byte(f.text)):
			state[i] = "unchanged"
		default:
			state[i] = "replaced"
			differ = append(differ, path)
		}
	}
	return state, differ, nil
}

// writeUnits writes the files that are not there unchanged, each whole
// (a unit half-written would be read by systemd as it is), and says what
// it did with each.
func writeUnits(e *env, root string, files []unitFile, state []string) error {
	for i, f := range files {
		if state[i] == "unchanged" {
			fmt.Fprintf(e.stdout, "%s: unchanged\n", filepath.Join(root, f.path))
			continue
		}
		path := filepath.Join(root, f.path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		if err := deploy.WriteFileAtomic(path, []byte(f.text), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		fmt.Fprintf(e.stdout, "%s: %s\n", path, map[string]string{"new": "written", "replaced": "replaced"}[state[i]])
	}
	return nil
}

// printInstallNext prints the commands still to run, since install-service
// starts nothing, and warns when the other way of working is installed
// too or the units would run another binary than this one.
func printInstallNext(e *env, root, what, configFile string) {
	fmt.Fprintln(e.stdout, "next:")
	if what == "serve" {
		fmt.Fprintln(e.stdout, "  systemd-sysusers                                  # creates the user tlsalpn")
		cfgPath, dirs := "/etc/tlsalpn/serve.yaml", []string{"/etc/nginx/tls"}
		if configFile != "" {
			cfgPath, dirs, _ = configOutDirs(configFile) // read without error above
		}
		fmt.Fprintln(e.stdout, "  # the directories certificates are written to, the only ones serve may write (ReadWritePaths=):")
		for _, d := range dirs {
			fmt.Fprintf(e.stdout, "  install -d -o tlsalpn -m 0755 %s\n", shellQuote(d))
		}
		fmt.Fprintf(e.stdout, "  tlsalpn serve --check-config %s\n", shellQuote(cfgPath))
		fmt.Fprintln(e.stdout, "  systemctl daemon-reload && systemctl enable --now tlsalpn")
	} else {
		fmt.Fprint(e.stdout, "  systemctl daemon-reload && systemctl enable --now tlsalpn-renew.timer\n")
	}
	if other := otherWay(root, what); other != "" {
		fmt.Fprintf(e.stdout, "Warning: %s is installed too. Use one way: serve renews the certificates it keeps itself, as the user tlsalpn,\n"+
			"while the renew timer runs as root and leaves root-owned files in the storage that serve then cannot read.\n", other)
	}
	if exe, err := os.Executable(); err == nil && exe != "/usr/local/bin/tlsalpn" {
		fmt.Fprintf(e.stdout, "The units run /usr/local/bin/tlsalpn; this is %s: install -m 0755 %s /usr/local/bin/tlsalpn\n", exe, exe)
	}
}
