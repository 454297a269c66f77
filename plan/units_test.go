package plan

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRenewUnitsAreContrib: the units plan prints are the files shipped in
// contrib/systemd, byte for byte, and systemd accepts them.
func TestRenewUnitsAreContrib(t *testing.T) {
	for _, tt := range []struct{ file, text string }{
		{"systemd/tlsalpn-renew.service", RenewServiceUnit},
		{"systemd/tlsalpn-renew.timer", RenewTimerUnit},
		{"systemd/tlsalpn.service", ServeUnit},
		{"systemd/tlsalpn.service.d/steer.conf", SteerDropIn},
		{"systemd/tlsalpn.service.d/deploy-hook-kill.conf", HookKillDropIn},
		{"sysusers.d/tlsalpn.conf", SysusersConf},
	} {
		t.Run(tt.file, func(t *testing.T) {
			got, err := os.ReadFile(filepath.Join("..", "contrib", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.text {
				t.Errorf("contrib/%s differs from what plan prints:\n--- contrib\n%s\n--- plan\n%s", tt.file, got, tt.text)
			}
		})
	}
}

// TestContribUnitsVerify runs systemd-analyze verify on every unit in
// contrib/systemd with its drop-ins (all of them at once: each is opt-in,
// and together they must still make a valid unit), where systemd-analyze
// is installed: an unknown key, a bad value or a wrong section fails. The
// units are verified by name from a unit path of their own
// (SYSTEMD_UNIT_PATH), which is how systemd-analyze reads a unit's .d
// directory, with no running systemd needed: this works in a container.
// That /usr/local/bin/tlsalpn is not installed on the test machine is the
// one complaint allowed.
func TestContribUnitsVerify(t *testing.T) {
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		msg := "systemd-analyze is not installed (scripts/ci-deps.sh installs it: Debian's systemd)"
		if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
			t.Fatalf("%s, and CI is set: CI must run this test", msg)
		}
		t.Skip(msg)
	}
	units, err := filepath.Glob(filepath.Join("..", "contrib", "systemd", "*"))
	if err != nil || len(units) == 0 {
		t.Fatalf("no units in contrib/systemd: %v", err)
	}
	dir, err := filepath.Abs(filepath.Join("..", "contrib", "systemd"))
	if err != nil {
		t.Fatal(err)
	}
	verified := 0
	for _, u := range units {
		if strings.HasSuffix(u, ".d") {
			continue
		}
		verified++
		cmd := exec.Command(bin, "verify", "--man=no", filepath.Base(u))
		// The trailing ":" keeps systemd's own unit path after ours.
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
		out, _ := cmd.CombinedOutput()
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line != "" && !strings.HasSuffix(line, "Command /usr/local/bin/tlsalpn is not executable: No such file or directory") {
				t.Errorf("systemd-analyze verify %s: %s", u, line)
			}
		}
	}
	if verified < 3 {
		t.Errorf("verified %d units, want the serve unit and the renew service and timer", verified)
	}
}

// TestContribReadWritePathsOptional: systemd refuses to start a unit one
// of whose ReadWritePaths does not exist, and an output directory often
// does not exist yet on the day the unit is installed. Every entry must be
// "-"-prefixed (ignored while missing); the storage is a StateDirectory,
// which systemd creates.
func TestContribReadWritePathsOptional(t *testing.T) {
	units, err := filepath.Glob(filepath.Join("..", "contrib", "systemd", "*.service"))
	if err != nil || len(units) == 0 {
		t.Fatalf("no services in contrib/systemd: %v", err)
	}
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			v, ok := strings.CutPrefix(line, "ReadWritePaths=")
			if !ok {
				continue
			}
			for _, p := range strings.Fields(v) {
				if !strings.HasPrefix(p, "-") {
					t.Errorf("%s: ReadWritePaths entry %q: write -%s, or systemd will not start the unit while it is missing", u, p, p)
				}
			}
		}
	}
}
