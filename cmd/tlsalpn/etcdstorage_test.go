package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/internal/etcdtest"
	"github.com/tlsalpn/tlsalpn/storage"
	fsstore "github.com/tlsalpn/tlsalpn/storage/fs"
)

// writeKey writes a 32-byte encryption key file, as head -c 32 /dev/urandom makes one (or its
// base64), and returns its path.
func writeKey(t *testing.T, dir, name string, b64 bool) string {
	t.Helper()
	key := bytes.Repeat([]byte{byte(len(name))}, 32)
	copy(key, name)
	data := key
	if b64 {
		data = []byte(base64.StdEncoding.EncodeToString(key) + "\n")
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestStorageFlagsUsage: every mistake in choosing an etcd storage is a usage error (exit 2)
// that says what to do, before anything is contacted or written.
func TestStorageFlagsUsage(t *testing.T) {
	dir := t.TempDir()
	key := writeKey(t, dir, "storage.key", false)
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("too short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	etcdURL := "etcd://127.0.0.1:1/tlsalpn" // never reached: each case fails first
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"not HOST:PORT", []string{"list", "--storage", "etcd://localhost/tlsalpn", "--encryption-key", key}, `endpoint "localhost" is not HOST:PORT`},
		{"bad port", []string{"list", "--storage", "etcd://127.0.0.1:99999/x", "--encryption-key", key}, "port"},
		{"no key", []string{"list", "--storage", etcdURL}, "needs --encryption-key FILE"},
		{"key missing", []string{"list", "--storage", etcdURL, "--encryption-key", filepath.Join(dir, "nope")}, "no such file"},
		{"key of the wrong size", []string{"list", "--storage", etcdURL, "--encryption-key", short}, "neither 32 raw bytes nor their base64"},
		{"CA missing", []string{"revoke", "x", "--storage", etcdURL, "--encryption-key", key, "--etcd-ca", filepath.Join(dir, "nope.pem")}, "--etcd-ca"},
		{"cert without key", []string{"renew", "--storage", etcdURL, "--encryption-key", key, "--etcd-cert", key}, "--etcd-cert and --etcd-key go together"},
		{"user without password", []string{"list", "--storage", etcdURL, "--encryption-key", key, "--etcd-user", "u"}, "needs --etcd-password-file"},
		{"etcd flags with a directory", []string{"list", "--storage", store, "--encryption-key", key}, "--encryption-key is for an etcd:// storage"},
		{"etcd flags without storage", []string{"delete", "x", "--etcd-ca", key, "--etcd-user", "u"}, "--etcd-ca, --etcd-user are for an etcd:// storage"},
		{"issue without --out", []string{"issue", "-d", "example.com", "--agree-tos", "--storage", etcdURL, "--encryption-key", key}, "give --out DIR"},
		{"serve with etcd flags and a directory", []string{"serve", "--listen", "127.0.0.1:" + itoa(freePort(t)), "--backend", "127.0.0.1:1", "--storage", store, "--etcd-ca", key}, "--etcd-ca is for an etcd:// storage"},
		{"copy: etcd flags, two directories", []string{"storage", "copy", store, store + "2", "--encryption-key", key}, "are directories"},
		{"copy: same storage", []string{"storage", "copy", store, store + "/"}, "the same storage"},
		{"copy: one argument", []string{"storage", "copy", store}, "give SRC and DST"},
		{"copy: etcd without key", []string{"storage", "copy", store, etcdURL}, "needs --encryption-key"},
		{"storage: no subcommand", []string{"storage"}, "tlsalpn storage copy SRC DST"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// Bounded: a serve that took its flags would otherwise run on.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			code, _, stderr := runCLI(t, ctx, tt.args...)
			if code != exitUsage || !strings.Contains(stderr, tt.want) {
				t.Errorf("tlsalpn %s: exit %d, stderr %q; want exit 2 saying %q", strings.Join(tt.args, " "), code, stderr, tt.want)
			}
			if _, err := os.Stat(store); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a usage error created %s", store)
			}
		})
	}
}

// TestStorageHelpTeachesEtcd: --help of every command that takes --storage shows the etcd
// form, and the etcd flags.
func TestStorageHelpTeachesEtcd(t *testing.T) {
	for _, cmd := range []string{"issue", "renew", "list", "revoke", "reconfigure", "delete", "serve"} {
		_, help, _ := runCLI(t, context.Background(), cmd, "--help")
		for _, want := range []string{"etcd://HOST:PORT[,HOST:PORT…]/PREFIX", "--encryption-key FILE", "--etcd-ca FILE", "--etcd-password-file FILE"} {
			if !strings.Contains(help, want) {
				t.Errorf("tlsalpn %s --help does not show %q", cmd, want)
			}
		}
	}
}

// TestEtcdUnreachable: an etcd that is not there fails in seconds (exit 1), naming the
// endpoints.
func TestEtcdUnreachable(t *testing.T) {
	key := writeKey(t, t.TempDir(), "storage.key", true)
	a, b := "127.0.0.1:"+itoa(freePort(t)), "127.0.0.1:"+itoa(freePort(t))
	code, _, stderr := runCLI(t, context.Background(), "list", "--storage", "etcd://"+a+","+b+"/tlsalpn", "--encryption-key", key)
	if code != exitFailure || !strings.Contains(stderr, "etcd unreachable at "+a+", "+b) {
		t.Errorf("list on an etcd that is not there: exit %d, stderr %q", code, stderr)
	}
}

// etcdSnapshot returns every key and value under the cluster's root, as etcd holds them.
func etcdSnapshot(t *testing.T, cli *clientv3.Client) map[string]string {
	t.Helper()
	r, err := cli.Get(context.Background(), "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range r.Kvs {
		m[string(kv.Key)] = string(kv.Value)
	}
	return m
}

// durableFiles returns the files of a storage directory that are durable state, with their
// contents and modes.
func durableFiles(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, p := range storage.DurablePrefixes() {
		filepath.WalkDir(filepath.Join(root, p), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), storage.ProbePrefix) {
				return nil
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := d.Info()
			rel, _ := filepath.Rel(root, path)
			m[rel] = fi.Mode().Perm().String() + " " + string(data)
			return nil
		})
	}
	return m
}

// TestEtcdStorage runs the commands against a real etcd: a storage made by a real issue
// against Pebble copied fs → etcd → fs byte for byte (private values encrypted in etcd, 0600
// again on disk), a wrong encryption key refused with nothing written, a non-empty destination
// refused; and issue, list, renew and revoke with their storage in etcd.
func TestEtcdStorage(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	cluster := etcdtest.Start(t, 1)
	cli := cluster.Client(t)
	dir := t.TempDir()
	key := writeKey(t, dir, "storage.key", false)
	other := writeKey(t, dir, "other.key", true)
	ctx := context.Background()

	t.Run("copy round trip", func(t *testing.T) {
		src := filepath.Join(dir, "host")
		if code, _, stderr := runCLI(t, ctx, ca.issueArgs(src, filepath.Join(dir, "out"), "example.com", "www.example.com")...); code != exitOK {
			t.Fatalf("issue: exit %d: %s", code, stderr)
		}
		if code, _, stderr := runCLI(t, ctx, ca.issueArgs(src, filepath.Join(dir, "out2"), "two.example")...); code != exitOK {
			t.Fatalf("issue: exit %d: %s", code, stderr)
		}
		want := durableFiles(t, src)
		url := cluster.URL("moved")
		code, stdout, stderr := runCLI(t, ctx, "storage", "copy", src, url, "--encryption-key", key)
		if code != exitOK || !strings.Contains(stdout, "copied "+itoa(len(want))+" keys") {
			t.Fatalf("storage copy to etcd: exit %d\nstdout: %s\nstderr: %s\n(want %d keys)", code, stdout, stderr, len(want))
		}
		// What etcd holds shows no private key.
		snap := etcdSnapshot(t, cli)
		for k, v := range snap {
			if strings.Contains(v, "PRIVATE KEY") {
				t.Errorf("etcd key %s holds a private key in the clear", k)
			}
		}
		// A non-empty destination is refused, nothing written.
		code, _, stderr = runCLI(t, ctx, "storage", "copy", src, url, "--encryption-key", key)
		if code != exitUsage || !strings.Contains(stderr, "--overwrite") {
			t.Errorf("copy onto state: exit %d, stderr %q; want 2 pointing to --overwrite", code, stderr)
		}
		// The wrong key is refused, nothing written, whichever way.
		for _, args := range [][]string{
			{"storage", "copy", src, url, "--overwrite", "--encryption-key", other},
			{"storage", "copy", url, filepath.Join(dir, "wrong"), "--encryption-key", other},
			{"list", "--storage", url, "--encryption-key", other},
		} {
			code, _, stderr = runCLI(t, ctx, args...)
			if code != exitFailure || !strings.Contains(stderr, "this is not the key the cluster's data was written with; nothing was written") {
				t.Errorf("tlsalpn %s: exit %d, stderr %q", strings.Join(args, " "), code, stderr)
			}
		}
		if after := etcdSnapshot(t, cli); !equalMaps(snap, after) {
			t.Errorf("refused copies changed etcd")
		}
		if _, err := os.Stat(filepath.Join(dir, "wrong")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a copy refused for its key created its destination")
		}
		// And back.
		back := filepath.Join(dir, "back")
		code, stdout, stderr = runCLI(t, ctx, "storage", "copy", url, back, "--encryption-key", key)
		if code != exitOK {
			t.Fatalf("storage copy from etcd: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		got := durableFiles(t, back)
		if !equalMaps(want, got) {
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s: differs after fs → etcd → fs (mode and content: %.20q, want %.20q)", k, got[k], v)
				}
			}
			t.Errorf("round trip: %d files, want %d", len(got), len(want))
		}
		// etcd → etcd, under another prefix.
		code, stdout, stderr = runCLI(t, ctx, "storage", "copy", url, cluster.URL("again"), "--encryption-key", key)
		if code != exitOK || !strings.Contains(stdout, "copied "+itoa(len(want))+" keys") {
			t.Errorf("storage copy etcd → etcd: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		code, stdout, stderr = runCLI(t, ctx, "list", "--storage", url, "--encryption-key", key)
		if code != exitOK || !strings.Contains(stdout, "example.com,www.example.com") || !strings.Contains(stdout, "two.example") {
			t.Errorf("list of the copy in etcd: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
	})

	t.Run("issue list renew revoke", func(t *testing.T) {
		url := cluster.URL("cluster")
		sf := []string{"--storage", url, "--encryption-key", key}
		// Nothing there yet: renew and list say so instead of reporting nothing.
		if code, _, stderr := runCLI(t, ctx, append([]string{"list"}, sf...)...); code != exitFailure || !strings.Contains(stderr, "nothing is stored under "+url) {
			t.Errorf("list of an empty prefix: exit %d, stderr %q", code, stderr)
		}
		out := filepath.Join(dir, "etcd-out")
		args := append(ca.issueArgs("unused", out, "example.com"), "--encryption-key", key)
		for i, a := range args {
			if a == "unused" {
				args[i] = url
			}
		}
		code, stdout, stderr := runCLI(t, ctx, args...)
		if code != exitOK || !strings.Contains(stdout, "stored in "+url) {
			t.Fatalf("issue with storage in etcd: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		leaf := verifyChain(t, ca, filepath.Join(out, "fullchain.pem"), "example.com")
		code, stdout, stderr = runCLI(t, ctx, append([]string{"list", "--json"}, sf...)...)
		var entries []listEntry
		if code != exitOK || json.Unmarshal([]byte(stdout), &entries) != nil || len(entries) != 1 || entries[0].Serial != leaf.SerialNumber.Text(16) {
			t.Fatalf("list: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		// $TLSALPN_STORAGE may name the cluster instead of --storage.
		var envOut, envErr bytes.Buffer
		getenv := func(k string) string {
			if k == "TLSALPN_STORAGE" {
				return url
			}
			return ""
		}
		if code := run(ctx, &env{stdout: &envOut, stderr: &envErr, getenv: getenv}, []string{"list", "--encryption-key", key}); code != exitOK || !strings.Contains(envOut.String(), "example.com") {
			t.Errorf("list with $TLSALPN_STORAGE=%s: exit %d\nstdout: %s\nstderr: %s", url, code, envOut.String(), envErr.String())
		}
		code, stdout, stderr = runCLI(t, ctx, append([]string{"renew"}, sf...)...)
		if code != exitOK || !strings.Contains(stdout, "not due") {
			t.Errorf("renew: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		// The rehearsal copies the accounts out of etcd and orders for real.
		code, stdout, stderr = runCLI(t, ctx, append([]string{"renew", "--dry-run"}, sf...)...)
		if code != exitOK || !strings.Contains(stdout, "would renew example.com: ok") {
			t.Errorf("renew --dry-run: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		code, stdout, stderr = runCLI(t, ctx, append([]string{"reconfigure", "example.com", "--deploy-hook", "true"}, sf...)...)
		if code != exitOK {
			t.Errorf("reconfigure: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		code, stdout, stderr = runCLI(t, ctx, append([]string{"revoke", "example.com", "--reason", "superseded"}, sf...)...)
		if code != exitOK || !strings.Contains(stdout, "revoked") {
			t.Fatalf("revoke: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		code, stdout, _ = runCLI(t, ctx, append([]string{"list"}, sf...)...)
		if code != exitOK || !strings.Contains(stdout, "REVOKED") && !strings.Contains(stdout, "revoked") {
			t.Errorf("list after revoke: exit %d\n%s", code, stdout)
		}
		code, stdout, stderr = runCLI(t, ctx, append([]string{"delete", "example.com"}, sf...)...)
		if code != exitOK {
			t.Errorf("delete: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		code, stdout, _ = runCLI(t, ctx, append([]string{"list"}, sf...)...)
		if code != exitOK || !strings.Contains(stdout, "no certificates in "+url) {
			t.Errorf("list after delete: exit %d\n%s", code, stdout)
		}
	})
}

// readmeSection returns the part of README.md from the heading that begins with heading to
// the next heading of the same level.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i := strings.Index(s, "\n"+heading)
	if i < 0 {
		t.Fatalf("README.md has no heading %q", heading)
	}
	s = s[i+1:]
	level := heading[:strings.IndexByte(heading, ' ')+1]
	if j := strings.Index(s[1:], "\n"+level); j >= 0 {
		s = s[:j+1]
	}
	return s
}

// TestREADMECluster runs the commands of the README's cluster section as written, in order:
// the key made with head, its chmod, storage copy of a host's storage (made by a real issue
// against Pebble) into a real three-member etcd, and list against it. The substitutions, all
// here: absolute paths move under a temporary directory, and each etcd endpoint of the README
// (10.0.0.N:2379) becomes member N's. tlsalpn serve lines belong to the cluster tests.
func TestREADMECluster(t *testing.T) {
	section := readmeSection(t, "## Cluster")
	var cmds []string
	re := "```sh\n"
	for rest := section; ; {
		i := strings.Index(rest, re)
		if i < 0 {
			break
		}
		rest = rest[i+len(re):]
		j := strings.Index(rest, "```\n")
		if j < 0 {
			t.Fatal("README: unterminated sh block in the cluster section")
		}
		block := strings.ReplaceAll(rest[:j], "\\\n", " ")
		for _, l := range strings.Split(block, "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				cmds = append(cmds, l)
			}
		}
		rest = rest[j:]
	}

	ca := startCLICA(t, democa.Options{})
	cluster := etcdtest.Start(t, 3)
	fakeRoot := t.TempDir()
	moved := func(p string) string { return filepath.Join(fakeRoot, p) }
	// The host's storage, as issue left it.
	host := moved("/var/lib/tlsalpn")
	ctx := context.Background()
	if code, _, stderr := runCLI(t, ctx, ca.issueArgs(host, moved("/etc/nginx/tls/example.com"), "example.com")...); code != exitOK {
		t.Fatalf("issue: exit %d: %s", code, stderr)
	}
	if err := os.MkdirAll(moved("/etc/tlsalpn"), 0o700); err != nil {
		t.Fatal(err)
	}
	endpoints := cluster.Endpoints()
	substitute := func(w string) string {
		for i, ep := range endpoints {
			w = strings.ReplaceAll(w, "10.0.0."+itoa(i+1)+":2379", ep)
		}
		if filepath.IsAbs(w) {
			w = moved(w)
		}
		return w
	}
	ran := map[string]bool{}
	for _, c := range cmds {
		words := shellWords(t, c)
		switch {
		case words[0] == "head" || words[0] == "chmod":
			// Run by sh as written, with the paths moved.
			line := strings.ReplaceAll(c, "/etc/tlsalpn/", moved("/etc/tlsalpn")+"/")
			if out, err := exec.Command("sh", "-c", line).CombinedOutput(); err != nil {
				t.Fatalf("README %q: %v: %s", c, err, out)
			}
		case words[0] == "tlsalpn" && len(words) > 1 && words[1] == "serve":
			continue
		case words[0] == "tlsalpn":
			args := tlsalpnArgs(t, words)
			for i := range args {
				args[i] = substitute(args[i])
			}
			code, stdout, stderr := runCLI(t, ctx, args...)
			if code != exitOK {
				t.Fatalf("README %q: exit %d\nstdout: %s\nstderr: %s", c, code, stdout, stderr)
			}
			// What the README says copy prints.
			if args[0] == "storage" && !regexp.MustCompile(`^copied \d+ keys \(accounts \d+, lineages \d+; \d+ private, encrypted\) from `).MatchString(stdout) {
				t.Errorf("README %q printed %q, not what the README shows", c, stdout)
			}
			t.Logf("%s: %s", c, stdout)
			if args[0] == "list" && ran["storage"] && !strings.Contains(stdout, "example.com") {
				t.Errorf("README %q after storage copy does not list example.com:\n%s", c, stdout)
			}
		default:
			t.Errorf("README cluster section: %q is run by no test", c)
		}
		ran[words[0]] = true
		if len(words) > 1 {
			ran[words[1]] = true
		}
	}
	for _, want := range []string{"head", "chmod", "storage", "list"} {
		if !ran[want] {
			t.Errorf("README cluster section: no %s command", want)
		}
	}
	key, err := os.ReadFile(moved("/etc/tlsalpn/storage.key"))
	if fi, _ := os.Stat(moved("/etc/tlsalpn/storage.key")); err != nil || len(key) != 32 || fi.Mode().Perm() != 0o600 {
		t.Errorf("the README's key: %d bytes, %v", len(key), err)
	}
}

// TestServeEtcdStorage: serve takes --storage etcd://… like every command: it obtains its
// certificate from Pebble, stores it in a real etcd (list from "another machine" sees it),
// and deploys it to --out.
func TestServeEtcdStorage(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	cluster := etcdtest.Start(t, 1)
	backend := echoTLSBackend(t, "backend.example")
	dir := t.TempDir()
	key := writeKey(t, dir, "storage.key", false)
	out := filepath.Join(dir, "out")
	url := cluster.URL("serve")
	stdout, stderr, stop := startServe(t, "--listen", ca.listen, "--backend", backend, "-d", "example.com",
		"--ca", ca.DirectoryURL(), "--ca-root", ca.root, "--email", "ops@example.com", "--agree-tos",
		"--storage", url, "--encryption-key", key, "--out", out, "--profile", "default")
	waitFor(t, "serve to listen", 10*time.Second, func() bool { return strings.Contains(stdout.String(), "listening on") })
	waitFor(t, "the certificate to be deployed", 20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(out, "fullchain.pem"))
		return err == nil
	})
	leaf := verifyChain(t, ca, filepath.Join(out, "fullchain.pem"), "example.com")
	code, lout, lerr := runCLI(t, context.Background(), "list", "--json", "--storage", url, "--encryption-key", key)
	var entries []listEntry
	if code != exitOK || json.Unmarshal([]byte(lout), &entries) != nil || len(entries) != 1 || entries[0].Serial != leaf.SerialNumber.Text(16) {
		t.Errorf("list of serve's etcd storage: exit %d\nstdout: %s\nstderr: %s", code, lout, lerr)
	}
	if code := stop(); code != exitOK {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
}

// TestEtcdTLSAndAuth: --etcd-ca, --etcd-cert, --etcd-key, --etcd-user and --etcd-password-file
// reach a real etcd that requires client certificates and a password; without the client
// certificate, or with the wrong password, the command fails (exit 1) and says which.
func TestEtcdTLSAndAuth(t *testing.T) {
	cluster := etcdtest.Start(t, 1, etcdtest.WithTLS(), etcdtest.WithAuth("tlsalpn", "s3cret"))
	caFile, certFile, keyFile := cluster.ClientTLS()
	dir := t.TempDir()
	key := writeKey(t, dir, "storage.key", false)
	pw, wrong := filepath.Join(dir, "password"), filepath.Join(dir, "wrong")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	os.WriteFile(wrong, []byte("guess\n"), 0o600)
	// Something to copy: state made by storage/fs, as issue writes it.
	src := filepath.Join(dir, "host")
	if err := os.MkdirAll(filepath.Join(src, "accounts", "ca", "default"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "accounts", "ca", "default", "key.pem"), []byte("-----BEGIN EC PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := cluster.URL("secure")
	tlsFlags := []string{"--etcd-ca", caFile, "--etcd-cert", certFile, "--etcd-key", keyFile}
	authFlags := []string{"--etcd-user", "tlsalpn", "--etcd-password-file", pw}
	ctx := context.Background()
	for _, tt := range []struct {
		name  string
		flags []string
		code  int
		want  string
	}{
		{"TLS and password", append(append([]string{}, tlsFlags...), authFlags...), exitOK, "copied 1 key (accounts 1; 1 private, encrypted)"},
		{"wrong password", append(append([]string{}, tlsFlags...), "--etcd-user", "tlsalpn", "--etcd-password-file", wrong), exitFailure, "refused the user or the client certificate"},
		{"no TLS", authFlags, exitFailure, "if etcd serves TLS, give --etcd-ca"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"storage", "copy", src, url, "--overwrite", "--encryption-key", key}, tt.flags...)
			code, stdout, stderr := runCLI(t, ctx, args...)
			if code != tt.code || !strings.Contains(stdout+stderr, tt.want) {
				t.Errorf("exit %d\nstdout: %s\nstderr: %s\nwant exit %d saying %q", code, stdout, stderr, tt.code, tt.want)
			}
		})
	}
}

// TestMeasureStorageCopy reports how long storage copy takes for a storage of many
// certificates, to a three-member etcd and back (TLSALPN_MEASURE=1; TLSALPN_MEASURE_CERTS
// certificates, default 1000, each a record, a chain and a key of realistic sizes).
func TestMeasureStorageCopy(t *testing.T) {
	if os.Getenv("TLSALPN_MEASURE") == "" {
		t.Skip("set TLSALPN_MEASURE=1 to measure")
	}
	n := 1000
	if v := os.Getenv("TLSALPN_MEASURE_CERTS"); v != "" {
		fmt.Sscan(v, &n)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "host")
	ctx := context.Background()
	store, err := fsstore.New(src)
	if err != nil {
		t.Fatal(err)
	}
	meta, chain, key := bytes.Repeat([]byte("m"), 700), bytes.Repeat([]byte("c"), 2600), bytes.Repeat([]byte("k"), 230)
	for i := range n {
		name := fmt.Sprintf("host%05d.example", i)
		for _, v := range []struct {
			key   string
			value []byte
			mode  os.FileMode
		}{
			{storage.LineageKey(name, "v1", storage.KeyFile), key, 0o600},
			{storage.LineageKey(name, "v1", storage.CertFile), chain, 0o644},
			{storage.LineageMetaKey(name), meta, 0o644},
		} {
			if err := store.Put(ctx, v.key, v.value, v.mode); err != nil {
				t.Fatal(err)
			}
		}
	}
	cluster := etcdtest.Start(t, 3)
	k := writeKey(t, dir, "storage.key", false)
	for _, step := range []struct{ from, to string }{
		{src, cluster.URL("measure")},
		{cluster.URL("measure"), filepath.Join(dir, "back")},
	} {
		start := time.Now()
		code, stdout, stderr := runCLI(t, ctx, "storage", "copy", step.from, step.to, "--encryption-key", k)
		took := time.Since(start)
		if code != exitOK {
			t.Fatalf("exit %d: %s %s", code, stdout, stderr)
		}
		t.Logf("%d certificates (%d keys), %s → %s: %s (%.0f keys/s)", n, 3*n, scheme(step.from), scheme(step.to), took.Round(time.Millisecond), float64(3*n)/took.Seconds())
	}
}

func scheme(s string) string {
	if strings.HasPrefix(s, etcdScheme) {
		return "etcd (3 members)"
	}
	return "directory"
}

// TestStorageCopyRefusesLiveServe: a directory a serve runs on is not copied (that serve would
// go on renewing into it after the copy), nor is anything copied into one; nothing is written.
func TestStorageCopyRefusesLiveServe(t *testing.T) {
	dir := t.TempDir()
	live, other := filepath.Join(dir, "live"), filepath.Join(dir, "other")
	if err := os.MkdirAll(filepath.Join(other, "accounts", "ca", "default"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "accounts", "ca", "default", "account.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	backend := echoTLSBackend(t, "backend.example")
	_, stderr, stop := startServe(t, "--listen", "127.0.0.1:"+itoa(freePort(t)), "--backend", backend, "--storage", live)
	waitFor(t, "serve's lease", 10*time.Second, func() bool {
		m, _ := filepath.Glob(filepath.Join(live, "serve", "*.json"))
		return len(m) > 0
	})
	before := treeFiles(t, other)
	for _, args := range [][]string{
		{"storage", "copy", live, filepath.Join(dir, "new")},
		{"storage", "copy", other, live, "--overwrite"},
	} {
		code, _, errOut := runCLI(t, context.Background(), args...)
		if code != exitFailure || !strings.Contains(errOut, "is in use by tlsalpn serve (pid ") || !strings.Contains(errOut, "nothing was written") {
			t.Errorf("tlsalpn %s while serve runs on %s: exit %d, stderr %q", strings.Join(args, " "), live, code, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(live, "accounts")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused copy wrote into %s", live)
	}
	if after := treeFiles(t, other); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("a refused copy changed %s: %v", other, after)
	}
	if code := stop(); code != exitOK {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
	// Stopped, it is copied.
	if code, out, errOut := runCLI(t, context.Background(), "storage", "copy", other, live, "--overwrite"); code != exitOK {
		t.Errorf("copy once serve stopped: exit %d\n%s%s", code, out, errOut)
	}
}
