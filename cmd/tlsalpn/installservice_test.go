package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tlsalpn/tlsalpn/plan"
)

// TestInstallService writes each way of working's units under a temporary
// root, and checks that they are contrib's (plan's) texts, that --dry-run
// writes nothing, that a file with other contents is not replaced without
// --force, and that systemd-analyze verify accepts what was written, the
// serve unit together with its drop-ins.
func TestInstallService(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		args  []string
		files map[string]string
	}{
		{[]string{"serve"}, map[string]string{
			"etc/systemd/system/tlsalpn.service": plan.ServeUnit,
			"etc/sysusers.d/tlsalpn.conf":        plan.SysusersConf,
		}},
		{[]string{"serve", "--steer", "--hook-kill"}, map[string]string{
			"etc/systemd/system/tlsalpn.service":                         plan.ServeUnit,
			"etc/systemd/system/tlsalpn.service.d/steer.conf":            plan.SteerDropIn,
			"etc/systemd/system/tlsalpn.service.d/deploy-hook-kill.conf": plan.HookKillDropIn,
			"etc/sysusers.d/tlsalpn.conf":                                plan.SysusersConf,
		}},
		{[]string{"renew"}, map[string]string{
			"etc/systemd/system/tlsalpn-renew.service": plan.RenewServiceUnit,
			"etc/systemd/system/tlsalpn-renew.timer":   plan.RenewTimerUnit,
		}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			root := t.TempDir()
			args := append([]string{"install-service", "--root", root}, tc.args...)

			code, stdout, stderr := runCLI(t, ctx, append(args, "--dry-run")...)
			if code != exitOK {
				t.Fatalf("--dry-run: exit %d: %s", code, stderr)
			}
			if files := treeFiles(t, root); len(files) != 0 {
				t.Errorf("--dry-run wrote %v", files)
			}
			for path, text := range tc.files {
				if !strings.Contains(stdout, "# "+filepath.Join(root, path)+" (would write)\n"+text) {
					t.Errorf("--dry-run does not print %s as it would write it:\n%s", path, stdout)
				}
			}

			code, stdout, stderr = runCLI(t, ctx, args...)
			if code != exitOK {
				t.Fatalf("exit %d: %s %s", code, stdout, stderr)
			}
			var want []string
			for path, text := range tc.files {
				got, err := os.ReadFile(filepath.Join(root, path))
				if err != nil || string(got) != text {
					t.Errorf("%s: %v, contents differ from plan's", path, err)
				}
				want = append(want, path)
			}
			var got []string
			for _, f := range treeFiles(t, root) {
				if fi, err := os.Stat(filepath.Join(root, f)); err == nil && !fi.IsDir() {
					got = append(got, f)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("wrote %v, want %v", got, want)
			}
			if !strings.Contains(stdout, "systemctl daemon-reload && systemctl enable --now ") {
				t.Errorf("no next steps: %s", stdout)
			}
			verifyUnits(t, filepath.Join(root, "etc/systemd/system"))

			// Again: all unchanged, exit 0.
			if code, stdout, _ = runCLI(t, ctx, args...); code != exitOK || strings.Count(stdout, ": unchanged") != len(tc.files) {
				t.Errorf("second run: exit %d: %s", code, stdout)
			}
			// A file edited by the admin is not replaced, and nothing else
			// is written either, without --force.
			var edited string
			for path := range tc.files {
				edited = filepath.Join(root, path)
				break
			}
			os.WriteFile(edited, []byte("# mine\n"), 0o644)
			code, _, stderr = runCLI(t, ctx, args...)
			if data, _ := os.ReadFile(edited); code != exitFailure || string(data) != "# mine\n" || !strings.Contains(stderr, "--force") {
				t.Errorf("over an edited file: exit %d, file %q: %s", code, data, stderr)
			}
			if code, _, stderr = runCLI(t, ctx, append(args, "--force")...); code != exitOK {
				t.Errorf("--force: exit %d: %s", code, stderr)
			}
			if data, _ := os.ReadFile(edited); string(data) == "# mine\n" {
				t.Errorf("--force did not replace %s", edited)
			}
		})
	}
}

// verifyUnits runs systemd-analyze verify on every unit in dir, reading
// their drop-ins from there (SYSTEMD_UNIT_PATH), where it is installed.
func verifyUnits(t *testing.T, dir string) {
	t.Helper()
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		msg := "systemd-analyze is not installed (scripts/ci-deps.sh installs it: Debian's systemd): the units written are not verified"
		if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
			t.Fatalf("%s, and CI is set: CI must verify them", msg)
		}
		t.Log(msg)
		return
	}
	units, _ := filepath.Glob(filepath.Join(dir, "*.*"))
	for _, u := range units {
		if strings.HasSuffix(u, ".d") {
			continue
		}
		cmd := exec.Command(bin, "verify", "--man=no", filepath.Base(u))
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
		out, _ := cmd.CombinedOutput()
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line != "" && !strings.HasSuffix(line, "Command /usr/local/bin/tlsalpn is not executable: No such file or directory") {
				t.Errorf("systemd-analyze verify %s: %s", filepath.Base(u), line)
			}
		}
	}
}

// TestInstallServiceBothWays: installing the renew timer where serve's
// unit is (or the other way round) says loudly that the two fight over
// the storage.
func TestInstallServiceBothWays(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	if code, stdout, stderr := runCLI(t, ctx, "install-service", "serve", "--root", root); code != exitOK || strings.Contains(stdout, "Warning") {
		t.Fatalf("serve alone: exit %d: %s %s", code, stdout, stderr)
	}
	code, stdout, stderr := runCLI(t, ctx, "install-service", "renew", "--root", root)
	if code != exitOK || !strings.Contains(stdout, "Warning: "+filepath.Join(root, "etc/systemd/system/tlsalpn.service")+" is installed too") {
		t.Errorf("renew over serve: exit %d: %s %s", code, stdout, stderr)
	}
}

func TestInstallServiceUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "say which units"},
		{[]string{"timer"}, `"timer": want serve`},
		{[]string{"renew", "--steer"}, "are for the serve unit"},
		{[]string{"renew", "--config", "x.yaml"}, "are for the serve unit"},
		{[]string{"serve", "--root", "/nonexistent-root-dir"}, "not a directory"},
		{[]string{"serve", "renew"}, "unexpected argument"},
	} {
		code, _, stderr := runCLI(t, context.Background(), append([]string{"install-service"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("install-service %v: exit %d: %s (want %q)", tc.args, code, stderr, tc.want)
		}
	}
}

// TestInstallServiceConfig: with --config, serve runs with that file and
// may write exactly the directories its certificates go to (quoted as
// systemd reads them), and systemd-analyze accepts the result.
func TestInstallServiceConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "my serve.yaml")
	os.WriteFile(cfg, []byte(`listen: ":443"
acme: {ca: letsencrypt, email: ops@example.com, agree_tos: true}
routes:
  - names: ["*"]
    backend: 127.0.0.1:8443
certificates:
  - names: [example.com]
    out: /etc/nginx/tls/example.com
  - names: [www.example.com]
    out: /etc/nginx/tls/example.com/
  - names: [shop.example.com]
    out: /etc/nginx/tls/shop 50%
  - names: [api.example.com]
    haproxy: {socket: /run/haproxy/admin.sock, cert: /etc/haproxy/certs/api.pem}
`), 0o644)
	root := t.TempDir()
	code, stdout, stderr := runCLI(t, context.Background(), "install-service", "serve", "--config", cfg, "--root", root)
	if code != exitOK {
		t.Fatalf("exit %d: %s %s", code, stdout, stderr)
	}
	got, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/tlsalpn.service.d/paths.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ExecStartPre=\nExecStartPre=/usr/local/bin/tlsalpn serve --check-config \"" + cfg + "\"\n",
		"ExecStart=\nExecStart=/usr/local/bin/tlsalpn serve --config \"" + cfg + "\" --storage /var/lib/tlsalpn --log-format json\n",
		"ReadWritePaths=\nReadWritePaths=-/etc/haproxy/certs\nReadWritePaths=-/etc/nginx/tls/example.com\nReadWritePaths=\"-/etc/nginx/tls/shop 50%%\"\n",
	} {
		if !strings.Contains(string(got), want) {
			t.Errorf("paths.conf lacks %q:\n%s", want, got)
		}
	}
	if !strings.Contains(stdout, "install -d -o tlsalpn -m 0755 '/etc/nginx/tls/shop 50%'") {
		t.Errorf("next steps do not make the directories:\n%s", stdout)
	}
	verifyUnits(t, filepath.Join(root, "etc/systemd/system"))

	code, _, stderr = runCLI(t, context.Background(), "install-service", "serve", "--config", filepath.Join(dir, "missing.yaml"), "--root", root)
	if code != exitUsage || !strings.Contains(stderr, "--config") {
		t.Errorf("missing config: exit %d: %s", code, stderr)
	}
}
