package deploy

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"time"
)

// HAProxy replaces certificates in a running HAProxy through its runtime API
// (the "stats socket … level admin" of its configuration), so that new
// handshakes get the new certificate at once, without the reload that would
// start new processes and leave old ones draining connections for minutes.
//
// The runtime API changes memory only. A certificate set this way is lost
// when HAProxy restarts or reloads, which re-reads its "crt" files: callers
// must write the file as well, which Deploy does.
//
// HAProxy keeps one certificate transaction for the whole process, and 2.6
// puts a "set ssl cert" for another path into the open one. SetCert
// notices when another client's update gets in its way, tries again a few
// times, and never reports success unless HAProxy then serves the new
// serial; still, updates to one HAProxy are best made one at a time.
//
// Certificate paths are as "show ssl cert" lists them: the "crt" path of
// the configuration, joined to any "crt-base".
type HAProxy struct {
	// Socket is the runtime API's address as in HAProxy's "stats socket"
	// line: a unix socket path (/run/haproxy/admin.sock) or host:port
	// (127.0.0.1:9999). HAProxy's "unix@" and "ipv4@"/"ipv6@" prefixes are
	// accepted. The socket needs "level admin".
	Socket string
	// Timeout bounds each command, from dial to the end of the answer;
	// 0 means 10 seconds.
	Timeout time.Duration
}

// maxAnswer bounds what is read from HAProxy for one command: the answers
// used here are a few hundred bytes.
const maxAnswer = 1 << 20

// Deploy writes pemBundle (certificate chain and private key, PEM) to
// certPath atomically with mode 0600, so that HAProxy finds the new
// certificate when it next starts or reloads, then makes it live at once
// with SetCert. certPath is replaced by a regular file (a symlink there
// would be replaced, not followed). The bundle is checked before anything
// is written, so a bad one never reaches the disk.
func (h HAProxy) Deploy(ctx context.Context, certPath string, pemBundle []byte) error {
	if _, err := haproxyPayload(pemBundle); err != nil {
		return fmt.Errorf("deploying %s to HAProxy: %w", certPath, err)
	}
	if err := WriteFileAtomic(certPath, pemBundle, 0o600); err != nil {
		return err
	}
	return h.SetCert(ctx, certPath, pemBundle)
}

// SetCert replaces, in HAProxy's memory, the certificate it loaded from
// certPath with pemBundle: the certificate, its chain and its private key,
// PEM (blank lines and text between blocks are dropped, since an empty
// line would end the payload). It sends
//
//	set ssl cert <certPath> <<
//	<pemBundle>
//	(empty line)
//
// then "commit ssl cert <certPath>", each on a connection of its own: in
// HAProxy's non-interactive mode the socket closes after one command. On
// any failure after the transaction may exist it sends "abort ssl cert
// <certPath>", so no half-done transaction blocks the next update. It then
// checks with "show ssl cert" that HAProxy serves the new serial. Errors
// quote HAProxy's answer. SetCert does not write certPath; see Deploy.
//
// When another client's update gets in the way (HAProxy has one
// transaction slot), SetCert tries again a few times within ctx.
func (h HAProxy) SetCert(ctx context.Context, certPath string, pemBundle []byte) error {
	arg, err := cliArg(certPath)
	if err != nil {
		return fmt.Errorf("updating HAProxy certificate %q: %w", certPath, err)
	}
	payload, err := haproxyPayload(pemBundle)
	if err != nil {
		return fmt.Errorf("updating HAProxy certificate %s: %w", certPath, err)
	}
	const attempts = 4
	for attempt := 1; ; attempt++ {
		err := h.setCert(ctx, certPath, arg, payload)
		var busy busyError
		if err == nil || !errors.As(err, &busy) {
			return err
		}
		if attempt == attempts {
			return fmt.Errorf("%w (%d attempts)", err, attempts)
		}
		// Back off with jitter, so that two clients retrying do not
		// collide again in step.
		wait := time.Duration(attempt)*50*time.Millisecond + rand.N(50*time.Millisecond)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// busyError marks a failure caused by another client's concurrent update,
// worth trying again.
type busyError struct{ error }

func (e busyError) Unwrap() error { return e.error }

func busy(format string, args ...any) error { return busyError{fmt.Errorf(format, args...)} }

// setCert makes one attempt of SetCert.
func (h HAProxy) setCert(ctx context.Context, certPath, arg string, payload []byte) (err error) {
	// HAProxy 2.6 has one certificate transaction per process, and a "set
	// ssl cert" for another path while one is open updates the open one
	// (seen with 2.6.12): look first, and check the answer names our path.
	list, err := h.certCommand(ctx, "show ssl cert\n")
	if err != nil {
		return fmt.Errorf("updating HAProxy certificate %s: listing certificates: %w", certPath, err)
	}
	pending, loaded := parseCertList(list)
	if pending != "" && pending != certPath {
		return busy("updating HAProxy certificate %s: HAProxy has an uncommitted update of %s from another client; "+
			"if nothing is updating it, run \"abort ssl cert %s\" on the socket", certPath, pending, pending)
	}

	// From here on a transaction may exist: abort it on any failure.
	ours := true
	defer func() {
		if err != nil && ours {
			err = h.abort(ctx, certPath, err)
		}
	}()

	cmd := "set ssl cert " + arg + " <<\n" + string(payload) + "\n"
	answer, err := h.certCommand(ctx, cmd)
	if err != nil {
		return fmt.Errorf("updating HAProxy certificate %s: set ssl cert: %w", certPath, err)
	}
	switch got := transactionPath(answer); {
	case answer == "":
		return fmt.Errorf("updating HAProxy certificate %s: HAProxy closed the connection without answering set ssl cert; "+
			"the command is %d bytes, more than fits in HAProxy's buffer? (tune.bufsize, 16384 by default)", certPath, len(cmd))
	case got == "":
		hint := ""
		if strings.Contains(answer, "not referenced by the configuration") {
			hint = fmt.Sprintf(" (HAProxy has loaded: %s; the path must be written exactly as in its \"crt\" setting)",
				strings.Join(loaded, ", "))
		}
		return fmt.Errorf("updating HAProxy certificate %s: set ssl cert: HAProxy said %q%s", certPath, answer, hint)
	case got != certPath:
		// Another client opened a transaction for got between our look and
		// our set, and HAProxy put our certificate into it: abort it rather
		// than let our certificate be committed for the wrong name.
		ours = false
		err := busy("updating HAProxy certificate %s: HAProxy put the certificate into the open update of %s", certPath, got)
		return h.abort(ctx, got, err)
	}

	answer, err = h.certCommand(ctx, "commit ssl cert "+arg+"\n")
	if err != nil {
		return fmt.Errorf("updating HAProxy certificate %s: commit ssl cert: %w", certPath, err)
	}
	if strings.Contains(answer, "No ongoing transaction") {
		// Another client aborted it, having found our certificate in its
		// own update (the 2.6 behaviour above).
		return busy("updating HAProxy certificate %s: commit ssl cert: HAProxy said %q", certPath, answer)
	}
	if !strings.Contains(answer, "Success!") {
		return fmt.Errorf("updating HAProxy certificate %s: commit ssl cert: HAProxy said %q", certPath, answer)
	}

	// Confirm: another client's certificate may have been put into our
	// transaction before we committed it.
	shown, err := h.ShowCert(ctx, certPath)
	if err != nil {
		return fmt.Errorf("updating HAProxy certificate %s: committed, but checking it failed: %w", certPath, err)
	}
	if want, got := leafSerial(payload), fieldOf(shown, "Serial"); !sameSerial(want, got) {
		return busy("updating HAProxy certificate %s: committed, but HAProxy shows serial %s, not %s", certPath, got, want)
	}
	return nil
}

// ShowCert returns HAProxy's description of the certificate it serves from
// certPath ("show ssl cert <certPath>"): Filename, Status, Serial,
// notBefore, notAfter, Subject, Subject Alternative Name and so on, one
// "Key: value" per line. A certPath starting with "*" shows an uncommitted
// transaction instead.
func (h HAProxy) ShowCert(ctx context.Context, certPath string) (string, error) {
	arg, err := cliArg(certPath)
	if err != nil {
		return "", fmt.Errorf("showing HAProxy certificate %q: %w", certPath, err)
	}
	answer, err := h.certCommand(ctx, "show ssl cert "+arg+"\n")
	if err != nil {
		return "", fmt.Errorf("showing HAProxy certificate %s: %w", certPath, err)
	}
	if !strings.HasPrefix(answer, "Filename:") {
		return "", fmt.Errorf("showing HAProxy certificate %s: HAProxy said %q", certPath, answer)
	}
	return answer, nil
}

// abort sends "abort ssl cert path" after cause, even when ctx is already
// cancelled (a transaction left open would block every later update), and
// returns cause with any failure to abort joined to it.
func (h HAProxy) abort(ctx context.Context, path string, cause error) error {
	arg, err := cliArg(path)
	if err != nil {
		return cause
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.timeout())
	defer cancel()
	answer, err := h.certCommand(ctx, "abort ssl cert "+arg+"\n")
	switch {
	case err != nil:
		return errors.Join(cause, fmt.Errorf("aborting the HAProxy transaction for %s: %w", path, err))
	case strings.Contains(answer, "aborted") || strings.Contains(answer, "No ongoing transaction") ||
		strings.Contains(answer, "The ongoing transaction is about"):
		return cause // aborted, or there was none of ours
	default:
		return errors.Join(cause, fmt.Errorf("aborting the HAProxy transaction for %s: HAProxy said %q", path, answer))
	}
}

func (h HAProxy) timeout() time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return 10 * time.Second
}

// certCommand is command for the certificate commands, which HAProxy
// refuses, doing nothing, while a commit holds its certificate lock
// (milliseconds): it sends cmd again until the lock is free or ctx ends.
func (h HAProxy) certCommand(ctx context.Context, cmd string) (string, error) {
	for attempt := 1; ; attempt++ {
		answer, err := h.command(ctx, cmd)
		if err != nil || !strings.Contains(answer, "Operations on certificates are currently locked") || attempt == 50 {
			return answer, err
		}
		select {
		case <-ctx.Done():
			return answer, nil
		case <-time.After(time.Duration(min(attempt, 10)) * 5 * time.Millisecond):
		}
	}
}

// command sends one command (with its final newline) on a new connection
// and returns the answer, trimmed of the empty line that ends it. HAProxy
// closes the connection after answering.
func (h HAProxy) command(ctx context.Context, cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout())
	defer cancel()
	network, address := socketAddr(h.Socket)
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return "", fmt.Errorf("connecting to the HAProxy runtime API: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := io.WriteString(conn, cmd); err != nil {
		return "", fmt.Errorf("sending to the HAProxy runtime API at %s: %w", h.Socket, err)
	}
	answer, err := io.ReadAll(io.LimitReader(conn, maxAnswer))
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return "", fmt.Errorf("reading the HAProxy runtime API's answer at %s: %w", h.Socket, err)
	}
	return strings.TrimRight(string(answer), "\n"), nil
}

// socketAddr maps a "stats socket" address to a network and address for
// net.Dial.
func socketAddr(s string) (network, address string) {
	switch {
	case strings.HasPrefix(s, "unix@"):
		return "unix", strings.TrimPrefix(s, "unix@")
	case strings.HasPrefix(s, "ipv4@"):
		return "tcp4", strings.TrimPrefix(s, "ipv4@")
	case strings.HasPrefix(s, "ipv6@"):
		return "tcp6", strings.TrimPrefix(s, "ipv6@")
	case strings.Contains(s, "/"):
		return "unix", s
	}
	if _, _, err := net.SplitHostPort(s); err == nil {
		return "tcp", s
	}
	return "unix", s
}

// cliArg escapes s as one argument of a runtime API command: HAProxy splits
// words on spaces and tabs and commands on ';', and a backslash escapes
// the next character. A line break cannot be escaped.
func cliArg(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty certificate path")
	}
	if strings.ContainsAny(s, "\n\r\x00") {
		return "", errors.New("certificate path contains a line break or NUL, which HAProxy's command line cannot carry")
	}
	var b strings.Builder
	for _, r := range s {
		switch r {
		case ' ', '\t', ';', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String(), nil
}

// haproxyPayload re-encodes the PEM blocks of bundle with nothing between
// them: an empty line ends a runtime API payload, so a blank line or a
// "Bag Attributes" preamble in the middle of a bundle would cut it short.
// The bundle must hold a certificate and a private key, and no encrypted
// block (HAProxy cannot ask for a passphrase).
func haproxyPayload(bundle []byte) ([]byte, error) {
	var out bytes.Buffer
	var certs, keys int
	rest := bundle
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if len(b.Headers) > 0 {
			return nil, fmt.Errorf("PEM block %q has headers (an encrypted key?), which HAProxy cannot load", b.Type)
		}
		switch {
		case b.Type == "CERTIFICATE":
			certs++
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			keys++
		}
		pem.Encode(&out, b)
	}
	switch {
	case certs == 0:
		return nil, errors.New("the PEM bundle has no CERTIFICATE block")
	case keys == 0:
		return nil, errors.New("the PEM bundle has no PRIVATE KEY block (HAProxy wants the certificate, its chain and its key in one bundle)")
	}
	return out.Bytes(), nil
}

// parseCertList reads the answer to "show ssl cert": the path of the open
// transaction, if any, and the loaded certificate paths.
func parseCertList(answer string) (pending string, loaded []string) {
	for _, line := range strings.Split(answer, "\n") {
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "*"):
			pending = line[1:]
		default:
			loaded = append(loaded, line)
		}
	}
	return pending, loaded
}

// transactionPath returns the path in "Transaction created for certificate
// PATH!" or "Transaction updated for certificate PATH!", or "".
func transactionPath(answer string) string {
	for _, prefix := range []string{"Transaction created for certificate ", "Transaction updated for certificate "} {
		if rest, ok := strings.CutPrefix(answer, prefix); ok && strings.HasSuffix(rest, "!") && !strings.Contains(rest, "\n") {
			return strings.TrimSuffix(rest, "!")
		}
	}
	return ""
}

// fieldOf returns the value of "key: value" in a "show ssl cert" answer.
func fieldOf(answer, key string) string {
	for _, line := range strings.Split(answer, "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// leafSerial returns the serial number of the first certificate of a PEM
// payload, hex, as HAProxy shows it; "" if it does not parse.
func leafSerial(payload []byte) string {
	for rest := payload; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return ""
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return ""
		}
		return strings.ToUpper(hex.EncodeToString(c.SerialNumber.Bytes()))
	}
}

// sameSerial compares hex serials ignoring case and leading zeros (HAProxy
// prints the DER integer's bytes, with the 00 that keeps it positive). An
// unknown serial on our side proves nothing either way.
func sameSerial(want, got string) bool {
	if want == "" {
		return true
	}
	norm := func(s string) string { return strings.TrimLeft(strings.ToUpper(s), "0") }
	return norm(want) == norm(got)
}
