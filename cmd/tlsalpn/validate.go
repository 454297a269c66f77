package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/mholt/acmez/v3/acme"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/issuer"
	"github.com/tlsalpn/tlsalpn/storage"
)

// maxNamesPerCert is how many names a CA puts in one certificate: Let's
// Encrypt's limit, and the one most CAs share. More is refused before an
// order the CA would reject after the account was made.
const maxNamesPerCert = 100

// issueInput is what validateIssueFlags made of the flags.
type issueInput struct {
	ids   []challenge.Identifier
	caURL string
	kt    issuer.KeyType
	eab   *acme.EAB
	// portErr says why --listen cannot be bound now; it fails the run
	// only if a certificate is to be ordered.
	portErr error
}

// validateIssueFlags checks every value "tlsalpn issue" was given before
// anything is contacted, written or ordered: a bad value is a usage error
// (exit 2) that leaves no account, no order and no file behind. The
// validation address is bind-tested here too, because finding out that
// --listen cannot be bound only when the challenge is published costs an
// account, an order and a failed authorization.
func validateIssueFlags(e *env, f *issueFlags) (issueInput, error) {
	var in issueInput
	if err := f.caFlags.validate(); err != nil {
		return in, err
	}
	if err := checkTimeout(f.timeout); err != nil {
		return in, err
	}
	ids, err := parseNames(f.names)
	if err != nil {
		return in, err
	}
	if err := checkNameCount(ids, f.separate); err != nil {
		return in, err
	}
	if in.caURL, err = issuer.ResolveCA(f.ca); err != nil {
		return in, usagef("--ca: %v", err)
	}
	if in.kt, err = issuer.ParseKeyType(f.keyType); err != nil {
		return in, usagef("--key-type: %v", err)
	}
	if in.eab, err = f.eab(e); err != nil {
		return in, err
	}
	if f.caRoot != "" {
		if _, err := rootPool(f.caRoot); err != nil {
			return in, err
		}
	}
	if f.out != "" {
		// A file where the directory should be would fail the deployment
		// only after the certificate was ordered.
		if fi, err := os.Stat(f.out); err == nil && !fi.IsDir() {
			return in, usagef("--out %s is a file: give the directory the certificate files go to", f.out)
		}
	}
	if err := checkListen(f.listen); err != nil {
		return in, err
	}
	// A port that cannot be bound matters only when something is ordered
	// (a second issue of the same names orders nothing) and no pre-hook
	// frees it: see runIssue.
	if err := bindTest(f.listen); err != nil && f.preHook == "" {
		var ue *usageError
		if errors.As(err, &ue) {
			return in, err
		}
		in.portErr = err
	}
	in.ids = ids
	return in, nil
}

// checkNameCount refuses more names than one certificate may hold, unless
// each name gets its own certificate.
func checkNameCount(ids []challenge.Identifier, separate bool) error {
	if !separate && len(ids) > maxNamesPerCert {
		return usagef("%d names: a certificate holds at most %d (the CA's limit); split them, or use --separate for one certificate per name", len(ids), maxNamesPerCert)
	}
	return nil
}

// checkListen checks the form of a --listen address without binding it:
// host:port with a port in 1-65535 and a host that is empty (every
// address) or an address of this host. A bare number is taken for a
// forgotten colon.
func checkListen(addr string) error {
	if addr == "" {
		return usagef("--listen is empty: give an address such as :443 (every address) or 127.0.0.1:5001")
	}
	if _, err := strconv.Atoi(addr); err == nil {
		return usagef("--listen %s has no host part: did you mean --listen :%s?", addr, addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		if a, perr := netip.ParseAddr(addr); perr == nil {
			return usagef("--listen %s has no port: did you mean --listen %s?", addr, net.JoinHostPort(a.String(), "443"))
		}
		return usagef("--listen %q is not HOST:PORT: give e.g. :443, 127.0.0.1:5001 or [::1]:443", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		if n, err = net.LookupPort("tcp", port); err != nil {
			return usagef("--listen %s: port %q is not a number", addr, port)
		}
	}
	if n < 1 || n > 65535 {
		return usagef("--listen %s: port %d is out of range: give a port from 1 to 65535 (the CA connects to 443)", addr, n)
	}
	if host == "" || host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return usagef("--listen %s: %q is not an IP address: give an address of this host, or :%s for every address", addr, host, port)
	}
	if ip.Zone() != "" {
		return nil // a link-local address on a named interface: the bind test decides
	}
	local, err := isLocalAddr(ip)
	if err != nil {
		return fmt.Errorf("listing this host's addresses to check --listen %s: %w", addr, err)
	}
	if !local {
		return usagef("--listen %s: %s is not an address of this host: give one of its own addresses, or :%s for every address", addr, ip, port)
	}
	return nil
}

// isLocalAddr reports whether ip can be bound here: the unspecified
// address, an address of one of the host's interfaces, or any loopback
// address (Linux answers for all of 127.0.0.0/8).
func isLocalAddr(ip netip.Addr) (bool, error) {
	ip = ip.Unmap()
	if ip.IsUnspecified() || ip.IsLoopback() {
		return true, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ia, ok := netip.AddrFromSlice(n.IP); ok && ia.Unmap() == ip {
			return true, nil
		}
	}
	return false, nil
}

// bindTest binds addr and releases it at once, so that a port that is
// taken or privileged fails now, before an order, instead of when the CA
// is already waiting. Those are failures of the moment, not of the value
// (exit 1, still before anything is written); an address this host does
// not have is a usage error.
func bindTest(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln.Close()
	}
	cause := err
	var op *net.OpError
	if errors.As(err, &op) {
		cause = op.Err // without "listen tcp ADDR:", which repeats the address
	}
	hint := ""
	switch {
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return usagef("--listen %s: not an address of this host", addr)
	case errors.Is(err, syscall.EADDRINUSE):
		hint = " (another server owns this port: run tlsalpn serve in front of it, or stop it while issuing)"
	case errors.Is(err, syscall.EACCES):
		hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE: setcap cap_net_bind_service=+ep $(command -v tlsalpn))"
	}
	return fmt.Errorf("--listen %s cannot be bound, so the CA could not be answered; nothing was ordered: %w%s", addr, cause, hint)
}

// checkAgreeTOS refuses, before anything is written, to go on without
// --agree-tos when an account would have to be created at a CA that has
// terms of service: the registration would fail only after storage was
// made and the order begun.
func checkAgreeTOS(ctx context.Context, e *env, sf *storageFlags, caURL, email string, agreed bool, dir acme.Directory) error {
	if agreed || dir.Meta == nil || dir.Meta.TermsOfService == "" {
		return nil
	}
	exists, err := accountExists(ctx, e, sf, caURL, email)
	if err != nil || exists {
		return err
	}
	return usagef("no account with %s yet, and creating one means agreeing to its terms of service (%s): read them, then add --agree-tos", caURL, dir.Meta.TermsOfService)
}

// accountExists reports whether storage already holds an account for this
// CA and email, without creating the storage directory. On etcd it opens
// the storage to look, which also checks the encryption key before the
// CA is asked for anything.
func accountExists(ctx context.Context, e *env, sf *storageFlags, caURL, email string) (bool, error) {
	loc, err := sf.resolve(e)
	if err != nil {
		return false, err
	}
	key := storage.AccountKey(caURL, email, storage.AccountFile)
	if loc.etcd == nil {
		_, err = os.Stat(filepath.Join(loc.dir, filepath.FromSlash(key)))
		return err == nil, nil
	}
	st, err := openLoc(ctx, loc, create, nil)
	if err != nil {
		return false, err
	}
	defer st.Close()
	_, err = st.store.Stat(ctx, key)
	switch {
	case errors.Is(err, storage.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("looking for the account in %s: %w", loc.url, err)
	}
	return true, nil
}

// validateServeFlags checks serve's flags (without --config) in the terms
// the user typed them, before the configuration they become is validated
// in a config file's terms, and before storage is opened.
func validateServeFlags(e *env, f *serveFlags) error {
	if err := f.caFlags.validate(); err != nil {
		return err
	}
	if err := checkListen(f.listen); err != nil {
		return err
	}
	if f.backend != "" {
		if err := checkBackend(f.backend); err != nil {
			return err
		}
	}
	if len(f.names) > 0 {
		ids, err := parseNames(f.names)
		if err != nil {
			return err
		}
		if err := checkNameCount(ids, false); err != nil {
			return err
		}
	}
	if _, err := issuer.ParseKeyType(f.keyType); err != nil {
		return usagef("--key-type: %v", err)
	}
	switch f.sendProxy {
	case 0, 1, 2:
	default:
		return usagef("--send-proxy %d: give 1 or 2, the PROXY protocol version the backend expects, or leave it out", f.sendProxy)
	}
	if _, err := f.eab(e); err != nil {
		return err
	}
	return nil
}

// checkBackend checks a --backend address: HOST:PORT with a host, since
// the front door dials it. A bare number is taken for a port on loopback,
// where a server moved aside usually listens.
func checkBackend(addr string) error {
	if _, err := strconv.Atoi(addr); err == nil {
		return usagef("--backend %s has no host part: did you mean --backend 127.0.0.1:%s?", addr, addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("--backend %q is not HOST:PORT: give e.g. 127.0.0.1:8443 or [::1]:8443", addr)
	}
	if host == "" {
		return usagef("--backend %s has no host: did you mean --backend 127.0.0.1%s?", addr, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return usagef("--backend %s: port %q is not a port from 1 to 65535", addr, port)
	}
	return nil
}

// flagNames maps the configuration keys serve's flags become to the flags,
// so that an error the configuration's validation finds in flag mode
// speaks of what was typed.
var flagNames = strings.NewReplacer(
	"certificates[0].names", "-d",
	"certificates[0].out", "--out",
	"certificates[0].deploy_hook", "--deploy-hook",
	"certificates[0].haproxy", "--haproxy-socket/--haproxy-cert",
	"certificates[0].key_type", "--key-type",
	"certificates[0].profile", "--profile",
	"certificates[0]", "-d",
	"routes[0].backend", "--backend",
	"routes[0].send_proxy", "--send-proxy",
	"routes[0]", "--backend",
	"acme.agree_tos", "--agree-tos",
	"acme.ca_root", "--ca-root",
	"acme.ca", "--ca",
	"acme.email", "--email",
	"acme.eab", "--eab-kid/--eab-hmac-key",
	"acme.key_type", "--key-type",
	"acme.profile", "--profile",
	"proxy.steer", "--steer",
	"listen:", "--listen:",
	"storage:", "--storage:",
)

// asFlags rewrites a configuration error built from serve's flags in the
// flags' terms.
func asFlags(err error) string { return flagNames.Replace(oneLine(err)) }
