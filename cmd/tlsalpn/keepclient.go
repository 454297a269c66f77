package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/config"
)

// keepClientFlags are serve's flags for another ACME client kept beside
// tlsalpn; each replaces its key in --config.
type keepClientFlags struct {
	forward, certDir, socket string
}

func (k *keepClientFlags) register(fs *flagSet) {
	fs.StringVar(&k.forward, "acme-forward", "", "relay validations (exactly acme-tls/1) for names with no challenge of tlsalpn's own pending, byte for byte, to `HOST:PORT`, where another ACME client answers (lego --tls.port, acme.sh --tlsport)")
	fs.StringVar(&k.certDir, "acme-cert-dir", "", "serve the challenge certificates another ACME client writes to `DIR` as NAME.crt.pem and NAME.key.pem (dehydrated's ALPNCERTDIR)")
	fs.StringVar(&k.socket, "ualpn-socket", "", "speak ualpn's protocol on the Unix socket `PATH`, for uacme's ualpn.sh hook and tlsalpn challenge publish")
}

// apply puts the flags given into cfg, absolute paths for directories.
func (k *keepClientFlags) apply(cfg *config.Config) error {
	if k.forward != "" {
		if host, port, err := net.SplitHostPort(k.forward); err != nil || host == "" || port == "" {
			return usagef("--acme-forward %q: want HOST:PORT, such as 127.0.0.1:5001, where the other ACME client answers tls-alpn-01", k.forward)
		}
		cfg.ACMEForward = k.forward
	}
	for _, p := range []struct {
		flag, val string
		dst       *string
	}{{"--acme-cert-dir", k.certDir, &cfg.ACMECertDir}, {"--ualpn-socket", k.socket, &cfg.UALPNSocket}} {
		if p.val == "" {
			continue
		}
		abs, err := filepath.Abs(p.val)
		if err != nil {
			return usagef("%s: %v", p.flag, err)
		}
		*p.dst = abs
	}
	return nil
}

// defaultUALPNSocket is ualpn's own default, so that a hook written for
// ualpn finds serve where it found ualpn.
const defaultUALPNSocket = "/run/ualpn.sock"

const challengeUsage = `
Usage: tlsalpn challenge publish --name NAME --key-authorization KA [--socket PATH]
       tlsalpn challenge withdraw --name NAME [--socket PATH]

For the hook of an ACME client you keep (certbot manual hooks, acme.sh,
dehydrated, your own scripts): publish makes a running "tlsalpn serve"
answer the CA's TLS-ALPN-01 validation for NAME with a certificate built
from the key authorization KA (TOKEN.THUMBPRINT); withdraw stops it. serve
must run with --ualpn-socket PATH (or ualpn_socket: in its config); the
socket speaks ualpn's protocol, so uacme's ualpn.sh hook works unchanged.
publish returns once serve answers for NAME: tell the CA then.

Exit codes: 0 done, 1 refused by serve or no serve listening, 2 bad flags.
`

func runChallenge(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || (args[0] != "publish" && args[0] != "withdraw") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(e.stdout, strings.TrimLeft(challengeUsage, "\n"))
			return nil
		}
		return usagef("challenge: want publish or withdraw (see tlsalpn challenge --help)")
	}
	verb := args[0]
	fs := newFlagSet(e, "challenge "+verb, challengeUsage)
	var name, keyAuth, socket string
	fs.StringVar(&name, "name", "", "the `NAME` (or IP address) being validated")
	fs.StringVar(&socket, "socket", defaultUALPNSocket, "serve's ualpn socket `PATH` (its --ualpn-socket)")
	if verb == "publish" {
		fs.StringVar(&keyAuth, "key-authorization", "", "the challenge's key authorization `KA`, TOKEN.THUMBPRINT")
	}
	if err := fs.parse(args[1:], 0); err != nil {
		return err
	}
	if name == "" {
		return usagef("challenge %s: --name is required", verb)
	}
	id, err := challenge.ParseIdentifier(name)
	if err != nil {
		return usagef("challenge %s: --name %q: %v", verb, name, err)
	}
	line := "unauth " + id.Value
	if verb == "publish" {
		if keyAuth == "" {
			return usagef("challenge publish: --key-authorization is required (TOKEN.THUMBPRINT, as the ACME client gives it to its hook)")
		}
		if err := checkKeyAuthorization(keyAuth); err != nil {
			return usagef("challenge publish: --key-authorization: %v", err)
		}
		sum := sha256.Sum256([]byte(keyAuth))
		line = "auth " + id.Value + " " + base64.RawURLEncoding.EncodeToString(sum[:])
	}
	if err := ualpnCommand(ctx, socket, line); err != nil {
		return fmt.Errorf("challenge %s %s: %w", verb, id.Value, err)
	}
	fmt.Fprintf(e.stdout, "%s: %s\n", id.Value, map[string]string{"publish": "published; serve answers the CA's validation now", "withdraw": "withdrawn"}[verb])
	return nil
}

// ualpnCommand sends one line on the ualpn socket and reads its answer.
func ualpnCommand(ctx context.Context, socket, line string) error {
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("no tlsalpn serve listens on %s: start serve with --ualpn-socket %s (or pass --socket where it listens): %w", socket, socket, err)
		}
		return fmt.Errorf("connecting to serve's socket %s: %w", socket, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
		return fmt.Errorf("writing to %s: %w", socket, err)
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading serve's answer on %s: %w", socket, err)
	}
	reply = strings.TrimRight(reply, "\r\n")
	if reply == "OK" {
		return nil
	}
	if msg, ok := strings.CutPrefix(reply, "ERR "); ok {
		return fmt.Errorf("serve refused: %s", msg)
	}
	return fmt.Errorf("unexpected answer from %s: %q", socket, reply)
}

// checkKeyAuthorization refuses what cannot be a key authorization
// (RFC 8555 §8.1: token "." base64url(JWK thumbprint)), such as the
// digest uacme passes its hooks, which would publish a certificate the
// CA refuses.
func checkKeyAuthorization(ka string) error {
	token, thumb, ok := strings.Cut(ka, ".")
	if !ok || token == "" || strings.Contains(thumb, ".") {
		return fmt.Errorf("%q is not TOKEN.THUMBPRINT", ka)
	}
	for _, part := range []string{token, thumb} {
		if _, err := base64.RawURLEncoding.DecodeString(part); err != nil {
			return fmt.Errorf("%q is not TOKEN.THUMBPRINT in base64url", ka)
		}
	}
	if b, _ := base64.RawURLEncoding.DecodeString(thumb); len(b) != sha256.Size {
		return fmt.Errorf("%q: the thumbprint is not a base64url SHA-256 (43 characters)", ka)
	}
	return nil
}
