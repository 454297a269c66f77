package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsalpn/tlsalpn/internal/democa"
)

func listJSON(t *testing.T, storage string) map[string]listEntry {
	t.Helper()
	code, stdout, stderr := runCLI(t, context.Background(), "list", "--json", "--storage", storage)
	var entries []listEntry
	if code != exitOK || json.Unmarshal([]byte(stdout), &entries) != nil {
		t.Fatalf("list --json: exit %d: %s %s", code, stdout, stderr)
	}
	m := map[string]listEntry{}
	for _, e := range entries {
		m[e.CertName] = e
	}
	return m
}

// TestTwoCAsOneOut (issue 8, finding 1): issuing a name into one --out
// from a second CA (two Pebbles, two roots) leaves one certificate feeding
// it, from the CA asked last, through renewals; the first stops renewing,
// said once; revoke by name works.
func TestTwoCAsOneOut(t *testing.T) {
	tests := []struct {
		name       string
		secondName []string // extra flags of the second issue
		wantCerts  int
		retired    string // certificate name retired, if any
	}{
		{"same certificate name", nil, 1, ""},
		{"own certificate name", []string{"--cert-name", "production"}, 2, "example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			staging, production := startCLICA(t, democa.Options{}), startCLICA(t, democa.Options{})
			dir := t.TempDir()
			storage, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
			ctx := context.Background()
			if code, _, stderr := runCLI(t, ctx, staging.issueArgs(storage, out, "example.com")...); code != exitOK {
				t.Fatalf("issue from staging: %s", stderr)
			}
			code, stdout, stderr := runCLI(t, ctx, append(production.issueArgs(storage, out, "example.com"), tt.secondName...)...)
			if code != exitOK {
				t.Fatalf("issue from production: exit %d: %s", code, stderr)
			}
			if tt.retired != "" && !strings.Contains(stdout, "certificate "+tt.retired+" (example.com from "+staging.DirectoryURL()+") fed "+out+" and is no longer renewed") {
				t.Errorf("the retired certificate is not named:\n%s", stdout)
			}
			if tt.retired == "" && !strings.Contains(stdout, "replaces certificate example.com") {
				t.Errorf("the replacement is not said:\n%s", stdout)
			}
			verifyChain(t, production, filepath.Join(out, "fullchain.pem"), "example.com")

			code, stdout, stderr = runCLI(t, ctx, "renew", "--force", "--storage", storage)
			if code != exitOK {
				t.Fatalf("renew --force: exit %d: %s %s", code, stdout, stderr)
			}
			verifyChain(t, production, filepath.Join(out, "fullchain.pem"), "example.com")
			if n := staging.orders.Load(); n != 1 {
				t.Errorf("staging got %d orders, want 1 (the first issue only)", n)
			}
			list := listJSON(t, storage)
			if len(list) != tt.wantCerts {
				t.Errorf("list has %d certificates, want %d: %+v", len(list), tt.wantCerts, list)
			}
			for name, e := range list {
				switch {
				case name == tt.retired:
					if e.State != "retired" || e.CA != staging.DirectoryURL() {
						t.Errorf("%s: state %q CA %s, want retired from staging", name, e.State, e.CA)
					}
				case e.CA != production.DirectoryURL() || e.State != "ok" || e.Out != out:
					t.Errorf("%s: %+v, want production feeding %s", name, e, out)
				}
			}
			_, table, _ := runCLI(t, ctx, "list", "--storage", storage)
			if !strings.Contains(table, "CA") || !strings.Contains(table, strings.TrimPrefix(strings.Split(production.DirectoryURL(), "/")[2], "")) {
				t.Errorf("list does not show the CA:\n%s", table)
			}
			code, stdout, stderr = runCLI(t, ctx, "revoke", "example.com", "--storage", storage)
			if code != exitOK {
				t.Errorf("revoke example.com: exit %d: %s %s", code, stdout, stderr)
			}
		})
	}
}

// TestSubsetOfNames (issue 8, finding 2): a subset, or the same names in
// another order, never silently drops a certificate from renewal nor makes
// a second one, and the same names again order nothing.
func TestSubsetOfNames(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage, ab := filepath.Join(dir, "store"), filepath.Join(dir, "ab")
	ctx := context.Background()
	if code, _, stderr := runCLI(t, ctx, ca.issueArgs(storage, ab, "a.example", "b.example")...); code != exitOK {
		t.Fatalf("issue a+b: %s", stderr)
	}
	orders := ca.orders.Load()

	steps := []struct {
		name    string
		args    []string
		code    int
		want    string // in stdout, or stderr when code != 0
		ordered bool
	}{
		{"subset without --out", ca.issueArgs(storage, "", "a.example"), exitUsage, "give the new one its own --cert-name", false},
		{"same names again", ca.issueArgs(storage, ab, "a.example", "b.example"), exitOK, "already valid until", false},
		{"other order", ca.issueArgs(storage, "", "b.example", "a.example"), exitOK, "already valid until", false},
		{"a new hook, nothing ordered", append(ca.issueArgs(storage, "", "a.example", "b.example"), "--deploy-hook", "true"), exitOK, "updated: deploy hook", false},
		{"subset under its own name", append(ca.issueArgs(storage, "", "a.example"), "--cert-name", "a-only"), exitOK, "issued a.example", true},
		{"forced", append(ca.issueArgs(storage, "", "a.example", "b.example"), "--force"), exitOK, "issued a.example, b.example", true},
	}
	for _, st := range steps {
		before := ca.orders.Load()
		code, stdout, stderr := runCLI(t, ctx, st.args...)
		got := stdout
		if st.code != exitOK {
			got = stderr
		}
		t.Logf("%s: exit %d\n%s%s", st.name, code, stdout, stderr)
		if code != st.code || !strings.Contains(got, st.want) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d and %q", st.name, code, stdout, stderr, st.code, st.want)
		}
		if ordered := ca.orders.Load() != before; ordered != st.ordered {
			t.Errorf("%s: ordered=%v, want %v", st.name, ordered, st.ordered)
		}
	}
	_ = orders
	list := listJSON(t, storage)
	if len(list) != 2 {
		t.Fatalf("list: %+v; want a.example (a, b) and a-only", list)
	}
	if e := list["a.example"]; strings.Join(e.Names, ",") != "a.example,b.example" || e.Out != ab || e.State != "ok" {
		t.Errorf("a.example: %+v; want both names still renewed into %s", e, ab)
	}
	if e := list["a-only"]; strings.Join(e.Names, ",") != "a.example" || e.Out != filepath.Join(storage, "live", "a-only") {
		t.Errorf("a-only: %+v", e)
	}
}

// TestDamagedRecordIsLoud (issue 9, finding 2): a damaged record is listed
// as damaged and makes renew exit 1 naming it and what to do; delete clears
// it.
func TestDamagedRecordIsLoud(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, lineage string)
	}{
		{"truncated meta.json", func(t *testing.T, l string) {
			data, _ := os.ReadFile(filepath.Join(l, "meta.json"))
			os.WriteFile(filepath.Join(l, "meta.json"), data[:len(data)/2], 0o644)
		}},
		{"garbage cert.pem", func(t *testing.T, l string) {
			m, _ := filepath.Glob(filepath.Join(l, "*", "cert.pem"))
			os.WriteFile(m[0], []byte("garbage"), 0o644)
		}},
		{"missing meta.json", func(t *testing.T, l string) {
			// A record removed by hand (or a first order that crashed
			// before its switch): the certificate is still not dropped
			// from renewal in silence.
			os.Remove(filepath.Join(l, "meta.json"))
		}},
		{"missing key.pem", func(t *testing.T, l string) {
			m, _ := filepath.Glob(filepath.Join(l, "*", "key.pem"))
			os.Remove(m[0])
		}},
	}
	ca := startCLICA(t, democa.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			storage := filepath.Join(dir, "store")
			ctx := context.Background()
			if code, _, stderr := runCLI(t, ctx, ca.issueArgs(storage, filepath.Join(dir, "out"), "example.com")...); code != exitOK {
				t.Fatalf("issue: %s", stderr)
			}
			tt.damage(t, filepath.Join(storage, "lineages", "example.com"))
			code, stdout, _ := runCLI(t, ctx, "list", "--storage", storage)
			if code != exitOK || !strings.Contains(stdout, "DAMAGED") || !strings.Contains(stdout, "tlsalpn delete example.com") {
				t.Errorf("list: exit %d:\n%s", code, stdout)
			}
			code, stdout, stderr := runCLI(t, ctx, "renew", "--storage", storage)
			if code != exitFailure || !strings.Contains(stdout, "example.com") || !strings.Contains(stdout, "DAMAGED") {
				t.Errorf("renew: exit %d (want 1): %s %s", code, stdout, stderr)
			}
			if code, stdout, stderr := runCLI(t, ctx, "delete", "example.com", "--storage", storage); code != exitOK {
				t.Errorf("delete: exit %d: %s %s", code, stdout, stderr)
			}
			if code, stdout, _ := runCLI(t, ctx, "renew", "--storage", storage); code != exitOK {
				t.Errorf("renew after delete: exit %d: %s", code, stdout)
			}
		})
	}
}

// TestIssueAgainWhilePortHeld: issue run again for what is stored and
// valid needs no validation port, so it succeeds while a server holds it
// (an idempotent provisioning run); anything that would order refuses
// before the CA is asked.
func TestIssueAgainWhilePortHeld(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	ctx := context.Background()
	if code, _, stderr := runCLI(t, ctx, ca.issueArgs(storage, out, "example.com")...); code != exitOK {
		t.Fatalf("issue: %s", stderr)
	}
	held, err := net.Listen("tcp", ca.listen)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	before := ca.orders.Load()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"same names again", ca.issueArgs(storage, out, "example.com"), exitOK, "already valid until"},
		{"forced", append(ca.issueArgs(storage, out, "example.com"), "--force"), exitFailure, "cannot be bound"},
		{"other names", ca.issueArgs(storage, out, "example.com", "www.example.com"), exitFailure, "cannot be bound"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runCLI(t, ctx, tt.args...)
		if code != tt.code || !strings.Contains(stdout+stderr, tt.want) {
			t.Errorf("%s: exit %d (want %d), %q %q; want %q", tt.name, code, tt.code, stdout, stderr, tt.want)
		}
	}
	if n := ca.orders.Load() - before; n != 0 {
		t.Errorf("%d orders placed while the port was held", n)
	}
}

// TestReconfigureAndDelete: reconfigure changes what a certificate
// remembers without an order and deploys to a new --out at once; delete
// stops managing it, keeping its files unless asked.
func TestReconfigureAndDelete(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage, out, moved := filepath.Join(dir, "store"), filepath.Join(dir, "out"), filepath.Join(dir, "moved")
	ctx := context.Background()
	if code, _, stderr := runCLI(t, ctx, ca.issueArgs(storage, out, "example.com")...); code != exitOK {
		t.Fatalf("issue: %s", stderr)
	}
	before := ca.orders.Load()
	steps := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"reconfigure", "example.com", "--storage", storage}, exitUsage, "nothing to change"},
		{[]string{"reconfigure", "nosuch.example", "--out", moved, "--storage", storage}, exitUsage, "no certificate named"},
		{[]string{"reconfigure", "example.com", "--out", moved, "--key-type", "rsa2048", "--storage", storage}, exitOK, "updated out, key type; nothing ordered"},
		{[]string{"reconfigure", "example.com", "--key-type", "rsa2048", "--storage", storage}, exitOK, "nothing changed"},
		{[]string{"delete", "example.com", "--storage", storage}, exitOK, "its files in " + moved + " are kept"},
		{[]string{"delete", "example.com", "--storage", storage}, exitUsage, "no certificate named"},
	}
	for _, st := range steps {
		code, stdout, stderr := runCLI(t, ctx, st.args...)
		if code != st.code || !strings.Contains(stdout+stderr, st.want) {
			t.Errorf("%v: exit %d (want %d): %q %q; want %q", st.args, code, st.code, stdout, stderr, st.want)
		}
		if st.want == "updated out, key type; nothing ordered" {
			verifyChain(t, ca, filepath.Join(moved, "fullchain.pem"), "example.com")
			if e := listJSON(t, storage)["example.com"]; e.Out != moved || e.KeyType != "rsa2048" {
				t.Errorf("after reconfigure: %+v", e)
			}
		}
	}
	if n := ca.orders.Load() - before; n != 0 {
		t.Errorf("%d orders placed by reconfigure and delete", n)
	}
	if _, err := os.Stat(filepath.Join(moved, "fullchain.pem")); err != nil {
		t.Errorf("delete removed the deployed files: %v", err)
	}
	if list := listJSON(t, storage); len(list) != 0 {
		t.Errorf("still listed after delete: %+v", list)
	}
	// --remove-files removes them.
	if code, _, stderr := runCLI(t, ctx, ca.issueArgs(storage, out, "other.example")...); code != exitOK {
		t.Fatalf("issue: %s", stderr)
	}
	if code, stdout, stderr := runCLI(t, ctx, "delete", "other.example", "--remove-files", "--storage", storage); code != exitOK || !strings.Contains(stdout, "removed") {
		t.Errorf("delete --remove-files: exit %d: %s %s", code, stdout, stderr)
	}
	if _, err := os.Lstat(filepath.Join(out, "fullchain.pem")); err == nil {
		t.Error("delete --remove-files left fullchain.pem")
	}
}
