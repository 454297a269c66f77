package metrics

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/proxy"
)

// promtool finds promtool, which scripts/ci-deps.sh installs (Debian's
// prometheus package). Where it cannot exist (no apt-get), the test is
// skipped and says so; on a Debian-like system its absence is a failure.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	if _, aptErr := exec.LookPath("apt-get"); aptErr != nil || runtime.GOOS != "linux" {
		t.Skipf("promtool is not installed and this system has no apt-get to install it (scripts/ci-deps.sh): %v", err)
	}
	t.Fatalf("promtool is missing: run scripts/ci-deps.sh (it installs Debian's prometheus package): %v", err)
	return ""
}

const contrib = "../contrib/prometheus"

// TestAlertRules: promtool accepts contrib/prometheus/alerts.yml, and its
// unit tests (alerts_test.yml: each alert fires on what should fire it,
// and only then) pass.
func TestAlertRules(t *testing.T) {
	pt := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "alerts_test.yml"},
	} {
		cmd := exec.Command(pt, args...)
		cmd.Dir = contrib
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestContribNamesExist: every tlsalpn_ metric that the alerts and the
// Grafana dashboard query is one this package exports, so that a renamed
// metric cannot leave an alert that never fires.
func TestContribNamesExist(t *testing.T) {
	m := New()
	now := time.Now()
	m.SetStatus(func(context.Context) (*Status, error) {
		return &Status{Certificates: []CertificateStatus{{Name: "example.com", Stored: true, NotBefore: now, NotAfter: now.Add(time.Hour),
			ARIStart: now, ARIEnd: now, NextRenewal: now, LastRenewal: now, LastDeployment: now}},
			Routes: []RouteStatus{{Route: "*"}}}, nil
	})
	m.Attempt(specFor("example.com"), "due", nil, context.Canceled)
	m.Route(proxy.Route{Names: []string{"example.com"}, Mode: proxy.TerminateTCP})
	m.acmeDuration.WithLabelValues("newOrder")
	m.acmeRequests.WithLabelValues("newOrder", "201")
	m.acmeErrors.WithLabelValues("newOrder", "badNonce")
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range fams {
		have[f.GetName()] = true
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			have[f.GetName()+suffix] = true
		}
	}
	name := regexp.MustCompile(`\btlsalpn_[a-z_]+[a-z]`)
	for _, file := range []string{"alerts.yml", "grafana-dashboard.json"} {
		data, err := os.ReadFile(filepath.Join(contrib, file))
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, n := range name.FindAllString(string(data), -1) {
			found++
			if !have[n] {
				t.Errorf("%s queries %s, which is not exported", file, n)
			}
		}
		if found == 0 {
			t.Errorf("%s names no tlsalpn_ metric", file)
		}
	}
	// And what is exported is well-formed for promtool.
	var buf bytes.Buffer
	for _, f := range fams {
		writeText(&buf, f)
	}
	cmd := exec.Command(promtool(t), "check", "metrics")
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
