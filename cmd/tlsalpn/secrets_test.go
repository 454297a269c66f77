package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsalpn/tlsalpn/internal/democa"
)

// secret is one spelling of something that must never be written where
// people and log collectors read: what it is, and the bytes.
type secret struct {
	what  string
	value string
}

// spellings are the ways a secret's bytes show up in text: raw, hex,
// base64 in both alphabets (with and without padding).
func spellings(what string, raw []byte) []secret {
	if len(raw) == 0 {
		return nil
	}
	return []secret{
		{what + " (raw)", string(raw)},
		{what + " (hex)", hex.EncodeToString(raw)},
		{what + " (base64)", base64.StdEncoding.EncodeToString(raw)},
		{what + " (base64url)", base64.RawURLEncoding.EncodeToString(raw)},
	}
}

// keySecrets are the spellings of every private key PEM block in data: the
// PEM body (whole and line by line), the DER, and the private scalars (a
// JWK's "d", an RSA prime, an Ed25519 seed) in every spelling.
func keySecrets(name string, data []byte) []secret {
	var out []secret
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		if !strings.Contains(b.Type, "PRIVATE KEY") {
			continue
		}
		what := name + " " + b.Type
		body := base64.StdEncoding.EncodeToString(b.Bytes)
		out = append(out, secret{what + " (PEM body)", body})
		// Each full 64-character line of the body, as a log that quoted
		// part of a PEM would show it; the last, short, line is too
		// short to be telling.
		for i := 0; i+64 <= len(body); i += 64 {
			out = append(out, secret{what + " (PEM line)", body[i : i+64]})
		}
		out = append(out, spellings(what+" DER", b.Bytes)...)
		var key any
		var err error
		switch b.Type {
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		}
		if err != nil {
			continue
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey:
			d, _ := k.Bytes()
			out = append(out, spellings(what+" d", d)...)
		case *rsa.PrivateKey:
			out = append(out, spellings(what+" d", k.D.Bytes())...)
			for _, p := range k.Primes {
				out = append(out, spellings(what+" prime", p.Bytes())...)
			}
		case ed25519.PrivateKey:
			out = append(out, spellings(what+" seed", k.Seed())...)
		}
	}
}

// leaks returns what of secrets appears in text.
func leaks(text string, secrets []secret) []string {
	var found []string
	for _, s := range secrets {
		if strings.Contains(text, s.value) {
			found = append(found, s.what)
		}
	}
	return found
}

// TestLeaksDetector: the detector finds a key however it is spelled, so
// that TestSecretsNeverLogged cannot pass for want of looking.
func TestLeaksDetector(t *testing.T) {
	k, _ := ecdsa.GenerateKey(ecdsaCurve(), rand.Reader)
	der, _ := x509.MarshalECPrivateKey(k)
	pemText := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	d, _ := k.Bytes()
	secrets := keySecrets("k", []byte(pemText))
	for _, text := range []string{
		"level=DEBUG msg=x key=" + pemText,
		`{"jwk":{"kty":"EC","d":"` + base64.RawURLEncoding.EncodeToString(d) + `"}}`,
		"der=" + hex.EncodeToString(der),
		strings.Split(pemText, "\n")[1],
	} {
		if len(leaks(text, secrets)) == 0 {
			t.Errorf("not found in %q", text)
		}
	}
	if l := leaks("nothing here", secrets); len(l) != 0 {
		t.Errorf("found %v in nothing", l)
	}
}

// TestSecretsNeverLogged runs, as processes, an issuance, a forced
// renewal and serve's own issuance against the test CA (Pebble) with EAB
// required, at debug level, in JSON and in text, and greps everything they
// wrote (stdout and stderr: tlsalpn writes no log file) for the account
// keys, the EAB HMAC key and every private key in storage and outputs.
//
// Tokens and key authorizations are not searched for: they are not
// secrets. The token is in every challenge object the CA serves; the key
// authorization is the token and the account key's thumbprint, a hash of
// the public key; and TLS-ALPN-01 itself hands its digest to any client
// that asks with acme-tls/1. Logging them at debug helps to compare with
// what the CA says (tlsalpn check --token). What would let someone act as
// the account, or as the server, is the account key, the EAB HMAC key (it
// binds new accounts to the customer) and certificate keys.
func TestSecretsNeverLogged(t *testing.T) {
	hmacRaw := make([]byte, 32)
	rand.Read(hmacRaw)
	hmacKey := base64.RawURLEncoding.EncodeToString(hmacRaw)
	ca := startCLICA(t, democa.Options{EABRequired: true, EABKeys: map[string]string{"kid-secret": hmacKey}})
	bin := filepath.Join(buildBinaries(t), "tlsalpn")
	dir := t.TempDir()
	storage, out := filepath.Join(dir, "store"), filepath.Join(dir, "out")
	serveStorage, serveOut := filepath.Join(dir, "serve-store"), filepath.Join(dir, "serve-out")
	environ := append(os.Environ(), "TLSALPN_DEBUG=1", "TLSALPN_EAB_KID=kid-secret", "TLSALPN_EAB_HMAC_KEY="+hmacKey)

	var written bytes.Buffer // everything every command wrote
	runProc := func(args ...string) (string, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = environ
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("tlsalpn %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		written.Write(stdout.Bytes())
		written.Write(stderr.Bytes())
		return stdout.String(), stderr.String()
	}

	issue := ca.issueArgs(storage, out, "example.com", "www.example.com")
	_, stderr := runProc(append(issue, "-v", "--log-format", "json")...)
	checkJSONEvents(t, stderr, "certificate issued", "example.com")
	runProc("renew", "--force", "-v", "--log-format", "text", "--storage", storage)
	runProc("list", "--storage", storage)
	runProc("list", "--json", "--storage", storage)

	// serve obtains its own certificate with an account of its own.
	cmd := exec.Command(bin, "serve", "-v", "--log-format", "json", "--listen", ca.listen, "--backend", echoTLSBackend(t, "backend.example"),
		"-d", "serve.example", "--ca", ca.DirectoryURL(), "--ca-root", ca.root, "--email", "ops@example.com", "--agree-tos",
		"--storage", serveStorage, "--out", serveOut, "--profile", "default", "--steer", "off")
	cmd.Env = environ
	serveOutput := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = serveOutput, serveOutput
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "serve's certificate", 30*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(serveOut, "fullchain.pem"))
		return err == nil && strings.Contains(serveOutput.String(), "certificate obtained")
	})
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("serve: %v\n%s", err, serveOutput.String())
	}
	written.WriteString(serveOutput.String())
	checkJSONEvents(t, serveOutput.String(), "certificate issued", "serve.example")

	secrets := spellings("EAB HMAC key", hmacRaw)
	secrets = append(secrets, secret{"EAB HMAC key (as given)", hmacKey})
	keys := 0
	for _, root := range []string{storage, out, serveStorage, serveOut} {
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			data, _ := os.ReadFile(path)
			if s := keySecrets(path, data); len(s) > 0 {
				keys++
				secrets = append(secrets, s...)
			}
			return nil
		})
	}
	// Two accounts; the first certificate, its renewal and their
	// deployed copies; serve's certificate and its copy.
	if keys < 6 {
		t.Fatalf("found %d files with private keys in storage and outputs, want at least 6: the search looks in the wrong place", keys)
	}
	if written.Len() < 2000 {
		t.Fatalf("only %d bytes written at debug level: not a debug run", written.Len())
	}
	if found := leaks(written.String(), secrets); len(found) > 0 {
		t.Errorf("secrets written to stdout or stderr: %v", found)
	}
	t.Logf("searched %d bytes of output for %d spellings of secrets from %d key files", written.Len(), len(secrets), keys)
}

// checkJSONEvents: every line of stderr is a JSON log record, and the
// event msg for name has the names, the order URL and the outcome.
func checkJSONEvents(t *testing.T, stderr, msg, name string) {
	t.Helper()
	found := false
	sc := bufio.NewScanner(strings.NewReader(stderr))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			continue // serve's banner on stdout, in the same buffer
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("not a JSON log line: %q: %v", line, err)
			continue
		}
		if rec["msg"] != msg {
			continue
		}
		names, _ := json.Marshal(rec["names"])
		order, _ := rec["order"].(string)
		if strings.Contains(string(names), name) && strings.HasPrefix(order, "https://") && rec["outcome"] != nil {
			found = true
		}
	}
	if !found {
		t.Errorf("no %q log line with names %s, the order URL and the outcome:\n%s", msg, name, stderr)
	}
}

func ecdsaCurve() elliptic.Curve { return elliptic.P256() }
