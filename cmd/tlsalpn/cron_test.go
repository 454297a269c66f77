package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/storage/fs"
)

// userUID is the effective user id the tests below run commands as: an
// ordinary user, whose default storage is under $HOME, even when the test
// itself runs as root (whose default, /var/lib/tlsalpn, a test must not
// touch).
const userUID = 1000

// runCLIAs runs the command in-process as user euid with exactly the
// environment vars (nothing inherited), as cron or systemd would start it.
func runCLIAs(t *testing.T, ctx context.Context, euid int, vars map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdout: &out, stderr: &errb, getenv: func(k string) string { return vars[k] }, geteuid: func() int { return euid }}
	code := run(ctx, e, args)
	return code, out.String(), errb.String()
}

// TestReadOnlyCommandsNeedStorage is finding 3 of issue 8: renew on a
// storage directory that does not exist said "no certificates stored" and
// exited 0, so a cron line looking in the wrong place never reported it.
// renew, list and revoke must exit 1 naming the path, and create nothing.
func TestReadOnlyCommandsNeedStorage(t *testing.T) {
	home := t.TempDir()
	userDefault := filepath.Join(home, ".local", "share", "tlsalpn")
	missing := filepath.Join(t.TempDir(), "var", "lib", "tlsalpn")
	tests := []struct {
		name string
		args []string
		path string // the storage that must be named, and not created
	}{
		{"renew --storage", []string{"renew", "--storage", missing}, missing},
		{"renew -q --storage", []string{"renew", "-q", "--storage", missing}, missing},
		{"renew --dry-run --storage", []string{"renew", "--dry-run", "--storage", missing}, missing},
		{"list --storage", []string{"list", "--storage", missing}, missing},
		{"revoke --storage", []string{"revoke", "example.com", "--storage", missing}, missing},
		{"renew, default storage", []string{"renew"}, userDefault},
		{"list, default storage", []string{"list"}, userDefault},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLIAs(t, context.Background(), userUID, map[string]string{"HOME": home}, tt.args...)
			if code != exitFailure {
				t.Errorf("exit %d, want %d; stdout %q, stderr %q", code, exitFailure, stdout, stderr)
			}
			want := "no storage at " + tt.path + " (issue a certificate first, or pass --storage)"
			if !strings.Contains(stderr, want) || len(lines(stderr)) != 1 {
				t.Errorf("stderr = %q; want one line with %q", stderr, want)
			}
			if _, err := os.Stat(tt.path); !os.IsNotExist(err) {
				t.Errorf("%s was created (or is unreadable: %v)", tt.path, err)
			}
		})
	}

	// Root whose certificates an earlier tlsalpn kept in root's home,
	// before /var/lib/tlsalpn was root's default: told where they are.
	if _, err := os.Stat(fs.SystemRoot); err == nil {
		t.Logf("%s exists on this machine: not testing the upgrade from root's home", fs.SystemRoot)
	} else {
		rootHome := t.TempDir()
		old := filepath.Join(rootHome, ".local", "share", "tlsalpn")
		if err := os.MkdirAll(old, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{{"renew", "-q"}, {"list"}} {
			code, stdout, stderr := runCLIAs(t, context.Background(), 0, map[string]string{"HOME": rootHome}, args...)
			want := "but " + old + " holds what an earlier tlsalpn stored for root: move it (mv " + old + " /var/lib/tlsalpn)"
			if code != exitFailure || !strings.Contains(stderr, want) {
				t.Errorf("%q as root after an upgrade: exit %d, stdout %q, stderr %q; want 1 and %q", args, code, stdout, stderr, want)
			}
		}
		if _, err := os.Stat(fs.SystemRoot); err == nil {
			t.Errorf("%s was created", fs.SystemRoot)
		}
	}

	// An existing, empty storage is not an error: it says so, and -q
	// keeps quiet.
	empty := t.TempDir()
	code, stdout, stderr := runCLI(t, context.Background(), "renew", "--storage", empty)
	if code != exitOK || !strings.Contains(stdout, "no certificates stored in "+empty) {
		t.Errorf("renew on an empty storage: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, context.Background(), "renew", "-q", "--storage", empty)
	if code != exitOK || stdout != "" || stderr != "" {
		t.Errorf("renew -q on an empty storage: exit %d, stdout %q, stderr %q; want 0 and silence", code, stdout, stderr)
	}
}

// readmeBlocks returns the fenced code blocks of README.md whose info
// string is lang.
func readmeBlocks(t *testing.T, lang string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	re := regexp.MustCompile("(?ms)^```" + regexp.QuoteMeta(lang) + "\n(.*?)^```\n")
	for _, m := range re.FindAllStringSubmatch(string(data), -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// shellWords splits one sh command line (backslash-newlines joined) into
// words, with sh's single and double quotes and backslashes; a comment
// ends it. It knows no expansions: README commands need none.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	line = strings.ReplaceAll(line, "\\\n", " ")
	var words []string
	var cur strings.Builder
	in := false // a word is being built
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				t.Fatalf("unterminated ' in %q", line)
			}
			cur.WriteString(line[i+1 : i+1+j])
			i, in = i+1+j, true
		case c == '"':
			j := strings.IndexByte(line[i+1:], '"')
			if j < 0 {
				t.Fatalf("unterminated \" in %q", line)
			}
			cur.WriteString(line[i+1 : i+1+j])
			i, in = i+1+j, true
		case c == '\\' && i+1 < len(line):
			cur.WriteByte(line[i+1])
			i, in = i+1, true
		case c == '#' && !in:
			i = len(line)
		case c == ' ' || c == '\t' || c == '\n':
			if in {
				words, in = append(words, cur.String()), false
				cur.Reset()
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}

// tlsalpnArgs returns the arguments of the tlsalpn command that words
// run, checking that it is tlsalpn that runs.
func tlsalpnArgs(t *testing.T, words []string) []string {
	t.Helper()
	if len(words) == 0 || filepath.Base(words[0]) != "tlsalpn" {
		t.Fatalf("not a tlsalpn command: %q", words)
	}
	return words[1:]
}

// TestREADMECommandsRenew runs the README's quick start ("tlsalpn issue"),
// its cron line and its systemd unit's ExecStart, taken from README.md
// itself so they cannot drift, as one ordinary user with a fresh $HOME and
// nothing else in the environment (as cron and systemd start commands),
// storage at the documented default: each of the two renew lines must find
// the certificate issue stored and renew it.
//
// The substitutions, all here: the issue command gets --ca, --ca-root and
// --listen for the embedded Pebble appended (the README names Let's
// Encrypt and :443); absolute paths in it (--out) are moved under a
// temporary directory; and "systemctl" in the deploy hook is a script on
// PATH that records its arguments. The cron line's user field is not
// honoured: every command runs as the same ordinary user. The renew lines
// run unchanged.
func TestREADMECommandsRenew(t *testing.T) {
	// The commands, from README.md.
	var issueWords []string
	for _, b := range readmeBlocks(t, "sh") {
		if i := strings.Index(b, "tlsalpn issue "); i >= 0 && issueWords == nil {
			issueWords = shellWords(t, b[i:])
		}
	}
	crontab := readmeBlocks(t, "crontab")
	if len(crontab) != 1 {
		t.Fatalf("README has %d crontab blocks, want 1 (the cron line)", len(crontab))
	}
	var cronWords []string
	for _, l := range strings.Split(crontab[0], "\n") {
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			if len(f) < 7 || f[5] != "root" {
				t.Fatalf("cron line %q: want minute hour day month weekday root command", l)
			}
			cronWords = shellWords(t, strings.Join(f[6:], " "))
			// The help says the same.
			for _, args := range [][]string{{"--help"}, {"renew", "--help"}} {
				if _, help, _ := runCLI(t, context.Background(), args...); !strings.Contains(help, l) {
					t.Errorf("tlsalpn %s does not show the README's cron line %q", strings.Join(args, " "), l)
				}
			}
		}
	}
	var unitWords []string
	var units []string
	for _, b := range readmeBlocks(t, "ini") {
		units = append(units, b)
		for _, l := range strings.Split(b, "\n") {
			if v, ok := strings.CutPrefix(l, "ExecStart="); ok && strings.Contains(b, "tlsalpn renew") {
				unitWords = shellWords(t, v)
			}
		}
	}
	if issueWords == nil || cronWords == nil || unitWords == nil {
		t.Fatalf("README.md: issue command %q, cron line %q, systemd ExecStart %q: want all three", issueWords, cronWords, unitWords)
	}
	// The README shows the units as shipped in contrib/ (and plan prints
	// those: check.TestRenewUnitsAreContrib).
	for _, f := range []string{"tlsalpn-renew.service", "tlsalpn-renew.timer"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "contrib", "systemd", f))
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, u := range units {
			found = found || u == string(data)
		}
		if !found {
			t.Errorf("README.md does not show contrib/systemd/%s verbatim", f)
		}
	}

	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	home, fakeRoot, bin := filepath.Join(dir, "home"), filepath.Join(dir, "root"), filepath.Join(dir, "bin")
	for _, d := range []string{home, fakeRoot, bin} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	systemctlLog := filepath.Join(dir, "systemctl.log")
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte("#!/bin/sh\necho \"$*\" >> '"+systemctlLog+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH")) // the deploy hook's sh inherits it
	vars := map[string]string{"HOME": home}
	storage := filepath.Join(home, ".local", "share", "tlsalpn")
	ctx := context.Background()

	args := tlsalpnArgs(t, issueWords)
	var out string
	for i, a := range args {
		if filepath.IsAbs(a) {
			args[i] = filepath.Join(fakeRoot, a)
			if i > 0 && args[i-1] == "--out" {
				out = args[i]
			}
		}
	}
	if out == "" {
		t.Fatalf("the README's issue command has no --out: %q", issueWords)
	}
	args = append(args, "--ca", ca.DirectoryURL(), "--ca-root", ca.root, "--listen", ca.listen)
	code, stdout, stderr := runCLIAs(t, ctx, userUID, vars, args...)
	if code != exitOK {
		t.Fatalf("README issue: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, want := range []string{"stored in " + storage + " (certificate name example.com)", "renew with: tlsalpn renew ("} {
		if !strings.Contains(stdout, want) {
			t.Errorf("issue does not say %q:\n%s", want, stdout)
		}
	}
	leaf := verifyChain(t, ca, filepath.Join(out, "fullchain.pem"), "example.com", "www.example.com")

	reloads := 1
	for _, tt := range []struct {
		what  string
		words []string
	}{
		{"cron line", cronWords},
		{"systemd unit", unitWords},
	} {
		// The CA says: renew now.
		if err := ca.SetRenewalInfo(ctx, leaf, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runCLIAs(t, ctx, userUID, vars, tlsalpnArgs(t, tt.words)...)
		if code != exitOK || !strings.Contains(stdout, "renewed (") {
			t.Fatalf("README %s %q: exit %d\nstdout: %s\nstderr: %s", tt.what, tt.words, code, stdout, stderr)
		}
		next := verifyChain(t, ca, filepath.Join(out, "fullchain.pem"), "example.com", "www.example.com")
		if next.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
			t.Fatalf("README %s: the certificate in --out was not replaced", tt.what)
		}
		leaf = next
		reloads++
		if log, _ := os.ReadFile(systemctlLog); strings.Count(string(log), "reload nginx\n") != reloads {
			t.Errorf("after the %s, systemctl ran %q; want \"reload nginx\" %d times", tt.what, log, reloads)
		}
	}
}

// TestIssueSaysHowToRenew: a storage other than the default is named in
// the renew line issue prints, so that cron looks where issue stored.
func TestIssueSaysHowToRenew(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage := filepath.Join(dir, "my store")
	code, stdout, stderr := runCLI(t, context.Background(), ca.issueArgs(storage, filepath.Join(dir, "out"), "example.com")...)
	if code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"stored in " + storage + " (certificate name example.com)\n",
		"renew with: tlsalpn renew --storage '" + storage + "' (",
		"/tlsalpn renew -q --storage '" + storage + "'\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("issue output lacks %q:\n%s", want, stdout)
		}
	}
}

// TestRenewQuiet: -q prints nothing when nothing was due, prints what was
// renewed, and reports a failure on stderr with exit 1.
func TestRenewQuiet(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	ctx := context.Background()
	if code, _, stderr := runCLI(t, ctx, ca.issueArgs(storage, out, "a.example")...); code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, ctx, ca.issueArgs(storage, "", "b.example")...); code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, stderr)
	}
	// The CA says a.example is due, b.example not: only a.example is
	// mentioned.
	leaf := readChain(t, filepath.Join(out, "fullchain.pem"))[0]
	if err := ca.SetRenewalInfo(ctx, leaf, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, ctx, "renew", "-q", "--storage", storage)
	if code != exitOK || len(lines(stdout)) != 1 || !strings.HasPrefix(stdout, "a.example") || !strings.Contains(stdout, "renewed (") || stderr != "" {
		t.Fatalf("renew -q, a.example due: exit %d, stdout %q, stderr %q; want one line, a.example renewed", code, stdout, stderr)
	}
	// Nothing due: silence.
	code, stdout, stderr = runCLI(t, ctx, "renew", "-q", "--storage", storage)
	if code != exitOK || stdout != "" || stderr != "" {
		t.Fatalf("renew -q, nothing due: exit %d, stdout %q, stderr %q; want 0 and silence", code, stdout, stderr)
	}
	// Without -q the same run speaks.
	if code, stdout, _ := runCLI(t, ctx, "renew", "--storage", storage); code != exitOK || strings.Count(stdout, "not due") != 2 {
		t.Fatalf("renew, nothing due: exit %d, stdout %q", code, stdout)
	}
	// A failure is loud: stdout names it, stderr has the error, exit 1.
	ca.fail500.Store(true)
	code, stdout, stderr = runCLI(t, ctx, "renew", "-q", "--force", "--storage", storage)
	ca.fail500.Store(false)
	if code != exitFailure || !strings.Contains(stdout, "FAILED") || !strings.Contains(stderr, "renewals failed") {
		t.Fatalf("renew -q with the CA failing: exit %d, stdout %q, stderr %q; want exit 1 and the failure", code, stdout, stderr)
	}
}

// treeSnapshot describes every file below dirs: type, mode, size, inode,
// modification time and content, so that any write shows.
func treeSnapshot(t *testing.T, dirs ...string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, d := range dirs {
		filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				m[p] = "error: " + err.Error()
				return nil
			}
			desc := fmt.Sprintf("%v %d %d inode %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano(), fileInode(fi))
			switch {
			case fi.Mode()&os.ModeSymlink != 0:
				target, _ := os.Readlink(p)
				desc += " -> " + target
			case fi.Mode().IsRegular():
				data, _ := os.ReadFile(p)
				desc += fmt.Sprintf(" %x", sha256.Sum256(data))
			}
			m[p] = desc
			return nil
		})
	}
	return m
}

func diffSnapshots(before, after map[string]string) []string {
	var diff []string
	for p, b := range before {
		if a, ok := after[p]; !ok {
			diff = append(diff, "removed "+p)
		} else if a != b {
			diff = append(diff, "changed "+p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			diff = append(diff, "added "+p)
		}
	}
	return diff
}

// TestRenewDryRun: --dry-run orders and validates for real at the CA, and
// nothing changes in the storage or in the output directory, and the
// deploy hook does not run; a failing rehearsal exits 1, changing nothing
// either.
func TestRenewDryRun(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	storage, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	marker := filepath.Join(dir, "deployed")
	ctx := context.Background()
	args := append(ca.issueArgs(storage, out, "example.com"), "--deploy-hook", "echo deployed >> "+marker)
	if code, _, stderr := runCLI(t, ctx, args...); code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, stderr)
	}
	before := treeSnapshot(t, storage, out, marker)
	orders := ca.finalized.Load()

	// list reads only.
	for _, args := range [][]string{{"list", "--storage", storage}, {"list", "--json", "--storage", storage}} {
		if code, stdout, stderr := runCLI(t, ctx, args...); code != exitOK || !strings.Contains(stdout, "example.com") {
			t.Fatalf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
	if diff := diffSnapshots(before, treeSnapshot(t, storage, out, marker)); len(diff) > 0 {
		t.Errorf("list changed files: %v", diff)
	}

	code, stdout, stderr := runCLI(t, ctx, "renew", "--dry-run", "--storage", storage)
	if code != exitOK || !strings.Contains(stdout, "dry run: would renew example.com: ok") {
		t.Fatalf("renew --dry-run: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if got := ca.finalized.Load() - orders; got != 1 {
		t.Errorf("the dry run finalized %d orders at the CA, want 1", got)
	}
	if diff := diffSnapshots(before, treeSnapshot(t, storage, out, marker)); len(diff) > 0 {
		t.Errorf("the dry run changed files: %v", diff)
	}

	ca.fail500.Store(true)
	code, stdout, stderr = runCLI(t, ctx, "renew", "--dry-run", "--storage", storage)
	ca.fail500.Store(false)
	if code != exitFailure || !strings.Contains(stdout, "dry run: example.com: FAILED") || !strings.Contains(stderr, "dry run: 1 of 1 failed") {
		t.Fatalf("renew --dry-run with the CA failing: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if diff := diffSnapshots(before, treeSnapshot(t, storage, out, marker)); len(diff) > 0 {
		t.Errorf("the failed dry run changed files: %v", diff)
	}
}

// portHolder is a server holding the port the CA validates on, as nginx
// holds :443, stopped and started again by shell hooks: a hook creates
// DIR/stop or DIR/start and waits for DIR/stopped or DIR/started. Every
// step is appended to the events file the hooks write to too.
type portHolder struct {
	addr, dir, events string

	mu sync.Mutex
	ln net.Listener
}

func startPortHolder(t *testing.T, addr string) *portHolder {
	t.Helper()
	h := &portHolder{addr: addr, dir: t.TempDir()}
	h.events = filepath.Join(h.dir, "events")
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	h.ln = ln
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
		h.mu.Lock()
		if h.ln != nil {
			h.ln.Close()
		}
		h.mu.Unlock()
	})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			h.step(t, "stop", "stopped", "released", func() error { err := h.ln.Close(); h.ln = nil; return err })
			h.step(t, "start", "started", "rebound", func() (err error) { h.ln, err = net.Listen("tcp", h.addr); return err })
		}
	}()
	return h
}

func (h *portHolder) step(t *testing.T, request, ack, event string, do func() error) {
	if _, err := os.Stat(filepath.Join(h.dir, request)); err != nil {
		return
	}
	h.mu.Lock()
	err := do()
	h.mu.Unlock()
	if err != nil {
		event += " (" + err.Error() + ")"
	}
	h.log(event)
	os.Remove(filepath.Join(h.dir, request))
	os.WriteFile(filepath.Join(h.dir, ack), nil, 0o644)
}

func (h *portHolder) log(event string) {
	f, err := os.OpenFile(h.events, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err == nil {
		f.WriteString(event + "\n")
		f.Close()
	}
}

// hook returns a shell command that logs name and asks the holder to do
// request, waiting (at most 5 s) until it has.
func (h *portHolder) hook(name, request, ack string) string {
	return fmt.Sprintf(`echo %s >> '%s'; touch '%s/%s'; i=0; while [ ! -e '%s/%s' ]; do i=$((i+1)); [ $i -gt 500 ] && exit 1; sleep 0.01; done; rm '%s/%s'`,
		name, h.events, h.dir, request, h.dir, ack, h.dir, ack)
}

func (h *portHolder) takeEvents() string {
	data, _ := os.ReadFile(h.events)
	os.Remove(h.events)
	return strings.TrimSpace(strings.ReplaceAll(string(data), "\n", " "))
}

func (h *portHolder) bound() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ln != nil
}

// sameHookRun reports whether the events of a renewal run are want, or
// what want becomes when the CA validated nothing for some certificates:
// Pebble reuses a valid authorization for about 1% of orders even when
// told never to (its check is rand.Intn(100) > percent), and a
// certificate ordered without a validation binds no listener, so it is
// deployed before the pre-hook runs, or with no hooks at all.
func sameHookRun(got, want string) bool {
	if got == want {
		return true
	}
	skeleton := func(events string) (hooks []string, deploys int) {
		for _, e := range strings.Fields(events) {
			if e == "deploy" {
				deploys++
			} else {
				hooks = append(hooks, e)
			}
		}
		return hooks, deploys
	}
	gh, gd := skeleton(got)
	wh, wd := skeleton(want)
	if gd != wd {
		return false
	}
	if len(gh) == 0 {
		return true // no listener was bound, so no hook ran
	}
	// The hooks ran as wanted, and no deploy came after the post-hook.
	return strings.Join(gh, " ") == strings.Join(wh, " ") &&
		strings.LastIndex(got, "deploy") < strings.Index(got, "post")
}

// TestPrePostHooks: a server holds the validation port. --pre-hook stops
// it just before the listener binds and --post-hook starts it after the
// listener was released: once per run, not per name; after the deploy
// hooks; remembered for renew; not run when nothing is due; and the
// post-hook runs even when the validation failed.
func TestPrePostHooks(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	h := startPortHolder(t, ca.listen)
	dir := t.TempDir()
	storage := filepath.Join(dir, "store")
	ctx := context.Background()
	hooks := []string{
		"--pre-hook", h.hook("pre", "stop", "stopped"),
		"--post-hook", h.hook("post", "start", "started"),
		"--deploy-hook", "echo deploy >> '" + h.events + "'",
	}

	args := append(ca.issueArgs(storage, filepath.Join(dir, "out"), "a.example", "b.example"), "--separate")
	code, stdout, stderr := runCLI(t, ctx, append(args, hooks...)...)
	if code != exitOK {
		t.Fatalf("issue with the port held: exit %d\nstdout: %s\nstderr: %s\nevents: %s", code, stdout, stderr, h.takeEvents())
	}
	if got, want := h.takeEvents(), "pre released deploy deploy post rebound"; got != want {
		t.Errorf("issue --separate of two names: events %q, want %q", got, want)
	}
	if !h.bound() {
		t.Error("the server holding the port was not started again")
	}

	// Nothing due: no listener, so no hook stops the server.
	if code, stdout, stderr := runCLI(t, ctx, "renew", "--storage", storage); code != exitOK {
		t.Fatalf("renew: exit %d: %s %s", code, stdout, stderr)
	}
	if got := h.takeEvents(); got != "" {
		t.Errorf("renew with nothing due: events %q, want none", got)
	}
	// Both due: the remembered hooks run once around both orders.
	code, stdout, stderr = runCLI(t, ctx, "renew", "--force", "--storage", storage)
	if code != exitOK || strings.Count(stdout, "renewed (forced)") != 2 {
		t.Fatalf("renew --force: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if got, want := h.takeEvents(), "pre released deploy deploy post rebound"; !sameHookRun(got, want) {
		t.Errorf("renew --force of two certificates: events %q, want %q\n%s\n%s", got, want, stdout, stderr)
	}

	// A post-hook given to renew runs besides the remembered ones; when
	// it fails, the run fails after saying what it renewed.
	code, stdout, stderr = runCLI(t, ctx, "renew", "--force", "--storage", storage, "--post-hook", "echo extra >> '"+h.events+"'; exit 3")
	if code != exitFailure || strings.Count(stdout, "renewed (forced)") != 2 || !strings.Contains(stderr, `post-hook "echo extra`) {
		t.Fatalf("renew --force with a failing extra post-hook: exit %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if got, want := h.takeEvents(), "pre released deploy deploy post rebound extra"; !sameHookRun(got, want) {
		t.Errorf("renew --force --post-hook: events %q, want %q\n%s", got, want, stdout)
	}

	// A dry run needs the port too: the hooks run, the deploy hook does not.
	code, stdout, stderr = runCLI(t, ctx, "renew", "--dry-run", "--storage", storage)
	if code != exitOK || strings.Count(stdout, ": ok") != 2 {
		t.Fatalf("renew --dry-run: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if got, want := h.takeEvents(), "pre released post rebound"; !sameHookRun(got, want) {
		t.Errorf("renew --dry-run: events %q, want %q", got, want)
	}

	// The validation fails (the listener is not where the CA connects):
	// the server is started again all the same.
	other := "127.0.0.1:" + itoa(freePort(t))
	args = ca.issueArgs(filepath.Join(dir, "store2"), filepath.Join(dir, "out2"), "c.example")
	args = append(args, "--listen", other, "--no-preflight")
	code, stdout, stderr = runCLI(t, ctx, append(args, hooks...)...)
	if code != exitFailure {
		t.Fatalf("issue with validation failing: exit %d, want 1\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if got, want := h.takeEvents(), "pre released post rebound"; got != want {
		t.Errorf("failed validation: events %q, want %q", got, want)
	}
	if !h.bound() {
		t.Error("after a failed validation the server holding the port was not started again")
	}
}

// TestNoHomeNoStorage: a user's command with no --storage and no $HOME (a
// systemd unit without User=) is a usage error that says how to fix it; the
// advice is cmd's, storage/fs only reports fs.ErrNoHome.
func TestNoHomeNoStorage(t *testing.T) {
	code, stdout, stderr := runCLIAs(t, context.Background(), userUID, map[string]string{}, "list")
	want := "no --storage given and no default: default root: $HOME is not set (under systemd, give the unit a User= or pass --storage)"
	if code != exitUsage || !strings.Contains(stderr, want) {
		t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, stdout, stderr, exitUsage, want)
	}
}
