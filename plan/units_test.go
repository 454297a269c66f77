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
		{"tlsalpn-renew.service", RenewServiceUnit},
		{"tlsalpn-renew.timer", RenewTimerUnit},
	} {
		t.Run(tt.file, func(t *testing.T) {
			got, err := os.ReadFile(filepath.Join("..", "contrib", "systemd", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.text {
				t.Errorf("contrib/systemd/%s differs from what plan prints:\n--- contrib\n%s\n--- plan\n%s", tt.file, got, tt.text)
			}
		})
	}
}

// TestContribUnitsVerify runs systemd-analyze verify on every unit in
// contrib/systemd, where systemd-analyze is installed: an unknown key, a
// bad value or a wrong section fails. That /usr/local/bin/tlsalpn is not
// installed on the test machine is the one complaint allowed.
func TestContribUnitsVerify(t *testing.T) {
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	units, err := filepath.Glob(filepath.Join("..", "contrib", "systemd", "*"))
	if err != nil || len(units) == 0 {
		t.Fatalf("no units in contrib/systemd: %v", err)
	}
	for _, u := range units {
		out, _ := exec.Command(bin, "verify", "--man=no", u).CombinedOutput()
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line != "" && !strings.HasSuffix(line, "Command /usr/local/bin/tlsalpn is not executable: No such file or directory") {
				t.Errorf("systemd-analyze verify %s: %s", u, line)
			}
		}
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
