// Command manycerts is bench/many.sh's helper: what a shell does badly,
// done once, in Go, the same way for tlsalpn and for Caddy.
//
//	manycerts ports N                    N free TCP ports on 127.0.0.1, one a line
//	manycerts acme-requests PEBBLE_LOG   the ACME requests Pebble logged, by kind
//	manycerts caddy-config -mode automate|serve …   Caddy's JSON config for a job
//	manycerts stored -names FILE -roots FILE DIR    every name has a certificate in DIR
//	manycerts served -names FILE -roots FILE ADDR   every name is served at ADDR
//
// stored and served check each certificate as a client would: it names the
// name and chains to the roots given (Pebble's, fetched from its management
// interface), so a certificate that is missing, for another name or from
// another CA fails the bench (exit 1, the names listed) instead of being
// counted.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "ports":
		err = ports(args)
	case "acme-requests":
		err = acmeRequests(args)
	case "caddy-config":
		err = caddyConfig(args)
	case "stored":
		err = stored(args)
	case "served":
		err = served(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "manycerts:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: manycerts ports N | acme-requests LOG | caddy-config FLAGS | stored FLAGS DIR | served FLAGS ADDR")
	os.Exit(2)
}

// ports prints N distinct ports that were free on 127.0.0.1 a moment ago,
// picked at random below the kernel's ephemeral range (as
// internal/freeport does for the tests): a ":0" port comes from the range
// every outgoing connection draws from, and would soon be taken again by
// one of the many connections the bench makes before the port is bound.
func ports(args []string) error {
	if len(args) != 1 {
		return errors.New("ports N")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 || n > 100 {
		return fmt.Errorf("ports %q: want a number from 1 to 100", args[0])
	}
	hi := ephemeralLow() - 1
	lo := max(hi-12000, 1024)
	seen := map[int]bool{}
	for range 100 * n {
		if len(seen) == n {
			break
		}
		p := lo + rand.IntN(hi-lo+1)
		if seen[p] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		seen[p] = true
		fmt.Println(p)
	}
	if len(seen) != n {
		return fmt.Errorf("found %d free ports of %d", len(seen), n)
	}
	return nil
}

// ephemeralLow is the first port of the kernel's ephemeral range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 2048 {
				return n
			}
		}
	}
	return 32768
}

// acmeKinds maps the path patterns Pebble's WFE logs for each request
// ("POST /order-plz -> calling handler()") to the kind of ACME request,
// in the order the kinds are printed. Pebble logs the pattern the request
// matched, not its path, so an order's URL and its ID never reach the
// count. Management paths (/roots/, …) are not ACME requests and are left
// out.
var acmeKinds = []struct{ pattern, kind string }{
	{"/dir", "directory"},
	{"/nonce-plz", "new-nonce"},
	{"/sign-me-up", "new-account"},
	{"/my-account/", "account"},
	{"/order-plz", "new-order"},
	{"/authZ/", "authz"},
	{"/chalZ/", "challenge"},
	{"/my-order/", "order-poll"},
	{"/finalize-order/", "finalize"},
	{"/certZ/", "cert"},
	{"/draft-ietf-acme-ari-03/renewalInfo/", "renewal-info"},
	{"/revoke-cert", "revoke"},
	{"/rollover-account-key", "key-rollover"},
	{"/list-orderz/", "list-orders"},
}

// acmeRequests prints one line: "total N" then "KIND N" for every kind
// seen, all on one line, for the shell to read.
func acmeRequests(args []string) error {
	if len(args) != 1 {
		return errors.New("acme-requests PEBBLE_LOG")
	}
	f, err := os.Open(args[0])
	if err != nil {
		return fmt.Errorf("reading Pebble's log: %w", err)
	}
	defer f.Close()
	counts := map[string]int{}
	total := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutSuffix(line, " -> calling handler()")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) < 2 {
			continue
		}
		pattern := fields[len(fields)-1]
		for _, k := range acmeKinds {
			if k.pattern == pattern {
				counts[k.kind]++
				total++
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading Pebble's log %s: %w", args[0], err)
	}
	if total == 0 {
		return fmt.Errorf("no ACME request in Pebble's log %s: has its log format changed?", args[0])
	}
	out := []string{"total", strconv.Itoa(total)}
	for _, k := range acmeKinds {
		if c := counts[k.kind]; c > 0 {
			out = append(out, k.kind, strconv.Itoa(c))
		}
	}
	fmt.Println(strings.Join(out, " "))
	return nil
}

// caddyConfig prints Caddy's JSON config for one job: "automate" obtains
// the certificates and serves nothing (the nearest to tlsalpn issue
// --separate: one certificate per name, the challenge answered by
// CertMagic's own listener on the port Pebble dials), "serve" serves every
// name from an HTTPS server on that port, which also answers the
// challenges (the nearest to tlsalpn serve). Only tls-alpn-01 is enabled;
// everything binds 127.0.0.1; the admin endpoint is off.
func caddyConfig(args []string) error {
	flags := flag.NewFlagSet("caddy-config", flag.ContinueOnError)
	mode := flags.String("mode", "", "automate or serve")
	namesFile := flags.String("names", "", "file of names, one a line")
	ca := flags.String("ca", "", "ACME directory URL")
	caRoot := flags.String("ca-root", "", "PEM file of the roots the CA's HTTPS chains to")
	storage := flags.String("storage", "", "storage directory")
	tlsPort := flags.Int("tls-port", 0, "the port the CA's validation dials")
	httpPort := flags.Int("http-port", 0, "a free port for Caddy's HTTP port (nothing is served there)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	names, err := readNames(*namesFile)
	if err != nil {
		return err
	}
	if *ca == "" || *caRoot == "" || *storage == "" || *tlsPort == 0 || *httpPort == 0 {
		return errors.New("caddy-config: -ca, -ca-root, -storage, -tls-port and -http-port are required")
	}
	issuer := map[string]any{
		"module":                  "acme",
		"ca":                      *ca,
		"email":                   "bench@example.com",
		"trusted_roots_pem_files": []string{*caRoot},
		"challenges": map[string]any{
			"http":      map[string]any{"disabled": true},
			"tls-alpn":  map[string]any{"alternate_port": *tlsPort},
			"bind_host": "127.0.0.1",
		},
	}
	tlsApp := map[string]any{
		"automation": map[string]any{
			"policies": []any{map[string]any{"issuers": []any{issuer}}},
		},
	}
	apps := map[string]any{"tls": tlsApp}
	switch *mode {
	case "automate":
		tlsApp["certificates"] = map[string]any{"automate": names}
	case "serve":
		apps["http"] = map[string]any{
			"http_port":  *httpPort,
			"https_port": *tlsPort,
			"servers": map[string]any{
				"bench": map[string]any{
					"listen": []string{"127.0.0.1:" + strconv.Itoa(*tlsPort)},
					"routes": []any{map[string]any{
						"match":  []any{map[string]any{"host": names}},
						"handle": []any{map[string]any{"handler": "static_response", "body": "ok"}},
					}},
					"automatic_https": map[string]any{"disable_redirects": true},
				},
			},
		}
	default:
		return fmt.Errorf("caddy-config: -mode %q: want automate or serve", *mode)
	}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true},
		"storage": map[string]any{"module": "file_system", "root": *storage},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{
			"level":   "INFO",
			"writer":  map[string]any{"output": "stderr"},
			"encoder": map[string]any{"format": "json"},
		}}},
		"apps": apps,
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(cfg)
}

// checkFlags are the flags stored and served share.
type checkFlags struct {
	names []string
	roots *x509.CertPool
	// inter holds the CA's intermediates, so that a leaf stored or served
	// without its chain is still judged by its issuer.
	inter *x509.CertPool
}

func parseCheckFlags(name string, args []string) (*checkFlags, []string, error) {
	flags := flag.NewFlagSet(name, flag.ContinueOnError)
	namesFile := flags.String("names", "", "file of names, one a line")
	rootsFile := flags.String("roots", "", "PEM file of the CA's roots and intermediates")
	if err := flags.Parse(args); err != nil {
		return nil, nil, err
	}
	names, err := readNames(*namesFile)
	if err != nil {
		return nil, nil, err
	}
	data, err := os.ReadFile(*rootsFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CA's roots: %w", err)
	}
	c := &checkFlags{names: names, roots: x509.NewCertPool(), inter: x509.NewCertPool()}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing the CA's roots %s: %w", *rootsFile, err)
	}
	roots := 0
	for _, cert := range certs {
		if !cert.IsCA {
			continue
		}
		if cert.CheckSignatureFrom(cert) == nil {
			c.roots.AddCert(cert)
			roots++
		} else {
			c.inter.AddCert(cert)
		}
	}
	if roots == 0 {
		return nil, nil, fmt.Errorf("%s holds no self-signed CA certificate", *rootsFile)
	}
	return c, flags.Args(), nil
}

// verify checks that chain's leaf is valid for name under c's roots.
func (c *checkFlags) verify(name string, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return errors.New("no certificate")
	}
	inter := c.inter.Clone()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: c.roots, Intermediates: inter})
	return err
}

// report prints the names that failed (the first few with why) and
// returns an error saying how many.
func report(what string, total int, failed map[string]error) error {
	if len(failed) == 0 {
		fmt.Printf("%d of %d names %s\n", total, total, what)
		return nil
	}
	names := make([]string, 0, len(failed))
	for n := range failed {
		names = append(names, n)
	}
	slices.Sort(names)
	for i, n := range names {
		if i == 10 {
			fmt.Fprintf(os.Stderr, "  … and %d more\n", len(names)-10)
			break
		}
		fmt.Fprintf(os.Stderr, "  %s: %v\n", n, failed[n])
	}
	return fmt.Errorf("%d of %d names not %s", len(failed), total, what)
}

// stored checks that every name has a valid certificate of its own among
// the PEM files under DIR (tlsalpn's lineages/NAME/SERIAL/cert.pem,
// Caddy's certificates/CA/NAME/NAME.crt): each file's first certificate is
// a leaf, the rest its chain.
func stored(args []string) error {
	c, rest, err := parseCheckFlags("stored", args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return errors.New("stored -names FILE -roots FILE DIR")
	}
	valid := map[string]bool{}
	why := map[string]error{}
	err = filepath.WalkDir(rest[0], func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".crt") || filepath.Base(path) == "cert.pem") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		chain, err := parseCerts(data)
		if err != nil || len(chain) == 0 || chain[0].IsCA {
			return nil // not a leaf certificate file
		}
		for _, n := range chain[0].DNSNames {
			if err := c.verify(n, chain); err != nil {
				why[n] = fmt.Errorf("%s: %w", path, err)
				continue
			}
			valid[n] = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the certificates under %s: %w", rest[0], err)
	}
	failed := map[string]error{}
	for _, n := range c.names {
		if !valid[n] {
			if why[n] == nil {
				why[n] = errors.New("no certificate stored")
			}
			failed[n] = why[n]
		}
	}
	return report("stored with a valid certificate", len(c.names), failed)
}

// served makes one TLS handshake per name at ADDR (with the name as SNI,
// 8 at a time) and checks the certificate each gets.
func served(args []string) error {
	c, rest, err := parseCheckFlags("served", args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return errors.New("served -names FILE -roots FILE ADDR")
	}
	addr := rest[0]
	if host, _, err := net.SplitHostPort(addr); err != nil || !net.ParseIP(host).IsLoopback() {
		return fmt.Errorf("served %s: want a loopback HOST:PORT", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var mu sync.Mutex
	failed := map[string]error{}
	work := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for name := range work {
				if err := c.handshake(ctx, addr, name); err != nil {
					mu.Lock()
					failed[name] = err
					mu.Unlock()
				}
			}
		})
	}
	for _, n := range c.names {
		work <- n
	}
	close(work)
	wg.Wait()
	return report("served with a valid certificate", len(c.names), failed)
}

func (c *checkFlags) handshake(ctx context.Context, addr, name string) error {
	d := tls.Dialer{Config: &tls.Config{ServerName: name, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}}
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(hctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("handshake with %s as %s: %w", addr, name, err)
	}
	defer conn.Close()
	return c.verify(name, conn.(*tls.Conn).ConnectionState().PeerCertificates)
}

func readNames(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the names: %w", err)
	}
	names := strings.Fields(string(data))
	if len(names) == 0 {
		return nil, fmt.Errorf("%s holds no name", path)
	}
	return names, nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return certs, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, cert)
	}
}
