package check

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/tlsalpn/tlsalpn/challenge"
)

// --- certificates -----------------------------------------------------------

var (
	oidSAN          = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidTest         = asn1.ObjectIdentifier{1, 2, 3}
	oidECDSASHA256  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidObsoleteTest = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 30, 1}
)

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func marshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sanFor is the exact SAN extension value the CA expects for id, with its
// name optionally replaced (to make wrong SANs).
func sanFor(t testing.TB, id challenge.Identifier, extra ...asn1.RawValue) []byte {
	var first asn1.RawValue
	if id.Type == challenge.IP {
		first = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 7, Bytes: netip.MustParseAddr(id.Value).AsSlice()}
	} else {
		first = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(id.Value)}
	}
	return marshal(t, append([]asn1.RawValue{first}, extra...))
}

func dnsGeneralName(s string) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, Bytes: []byte(s)}
}

func acmeExt(t testing.TB, keyAuth string) pkix.Extension {
	h := sha256.Sum256([]byte(keyAuth))
	return pkix.Extension{Id: challenge.OIDACMEIdentifier(), Critical: true, Value: marshal(t, h[:])}
}

func sanExt(v []byte) pkix.Extension { return pkix.Extension{Id: oidSAN, Critical: true, Value: v} }

// rawCert assembles a certificate with an empty subject and issuer and
// exactly the given extensions, in order (duplicates allowed, which
// x509.CreateCertificate would refuse), for key's public half, signed by
// signer (key itself when nil, making it self-signed).
func rawCert(t testing.TB, key, signer *ecdsa.PrivateKey, exts []pkix.Extension) *tls.Certificate {
	t.Helper()
	if signer == nil {
		signer = key
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sigAlg := func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(a *cryptobyte.Builder) { a.AddASN1ObjectIdentifier(oidECDSASHA256) })
	}
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(tbs *cryptobyte.Builder) {
		tbs.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(v *cryptobyte.Builder) { v.AddASN1Int64(2) })
		tbs.AddASN1BigInt(big.NewInt(now.UnixNano()))
		sigAlg(tbs)
		tbs.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {})
		tbs.AddASN1(cbasn1.SEQUENCE, func(v *cryptobyte.Builder) {
			v.AddASN1UTCTime(now.Add(-time.Hour).UTC().Truncate(time.Second))
			v.AddASN1UTCTime(now.Add(24 * time.Hour).UTC().Truncate(time.Second))
		})
		tbs.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {})
		tbs.AddBytes(spki)
		tbs.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(e *cryptobyte.Builder) {
			e.AddASN1(cbasn1.SEQUENCE, func(all *cryptobyte.Builder) {
				for _, ext := range exts {
					all.AddASN1(cbasn1.SEQUENCE, func(one *cryptobyte.Builder) {
						one.AddASN1ObjectIdentifier(ext.Id)
						if ext.Critical {
							one.AddASN1Boolean(true)
						}
						one.AddASN1OctetString(ext.Value)
					})
				}
			})
		})
	})
	tbs, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, signer, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	c := cryptobyte.NewBuilder(nil)
	c.AddASN1(cbasn1.SEQUENCE, func(cert *cryptobyte.Builder) {
		cert.AddBytes(tbs)
		sigAlg(cert)
		cert.AddASN1BitString(sig)
	})
	der, err := c.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// testRoot is a CA for production certificates.
type testRoot struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pool *x509.CertPool
}

func newTestRoot(t testing.TB) *testRoot {
	t.Helper()
	k := mustKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "check test root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &testRoot{key: k, cert: c, pool: pool}
}

// leaf issues a production certificate for id valid for lifetime.
func (r *testRoot) leaf(t testing.TB, id challenge.Identifier, lifetime time.Duration) *tls.Certificate {
	t.Helper()
	k := mustKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: id.Value},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if id.Type == challenge.IP {
		tmpl.IPAddresses = []net.IP{net.ParseIP(id.Value)}
	} else {
		tmpl.DNSNames = []string{id.Value}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.cert, k.Public(), r.key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}

// --- responders -------------------------------------------------------------

// acmeConfig answers handshakes offering exactly acme-tls/1 with acmeCert and
// all others with prod, like a correct responder in front of a web server.
func acmeConfig(acmeCert, prod *tls.Certificate) *tls.Config {
	return &tls.Config{
		NextProtos: []string{challenge.ALPNProto, "h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if slices.Equal(hello.SupportedProtos, []string{challenge.ALPNProto}) {
				return acmeCert, nil
			}
			return prod, nil
		},
	}
}

// responder is a TLS server on loopback that picks its configuration by SNI
// (def for any other name), completes one handshake per connection and
// closes it, as a TLS-ALPN-01 responder does.
type responder struct {
	ln    net.Listener
	def   *tls.Config
	mu    sync.Mutex
	confs map[string]*tls.Config
	wg    sync.WaitGroup
}

func listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func newResponder(t testing.TB, addr string, def *tls.Config) *responder {
	t.Helper()
	r := &responder{ln: listen(t, addr), def: def, confs: map[string]*tls.Config{}}
	outer := &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if c, ok := r.confs[hello.ServerName]; ok {
			return c, nil
		}
		if r.def != nil {
			return r.def, nil
		}
		return nil, errors.New("no configuration for " + hello.ServerName)
	}}
	r.wg.Go(func() {
		for {
			c, err := r.ln.Accept()
			if err != nil {
				return
			}
			r.wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				tc := tls.Server(c, outer)
				if tc.Handshake() == nil {
					tc.Close()
				}
			})
		}
	})
	t.Cleanup(func() { r.ln.Close(); r.wg.Wait() })
	return r
}

func (r *responder) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *responder) set(sni string, c *tls.Config) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.confs[sni] = c
}

// httpServer is a plain HTTP server on loopback.
func httpServer(t testing.TB, addr string) int {
	t.Helper()
	ln := listen(t, addr)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("hello\n")) }), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// silentServer accepts connections and never answers.
func silentServer(t testing.TB, addr string) int {
	t.Helper()
	ln := listen(t, addr)
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				<-done
			})
		}
	})
	t.Cleanup(func() { close(done); ln.Close(); wg.Wait() })
	return ln.Addr().(*net.TCPAddr).Port
}

// closedPort returns a port on addr's host where nothing listens.
func closedPort(t testing.TB, addr string) int {
	t.Helper()
	ln := listen(t, addr)
	p := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return p
}

// haveIPv6 reports whether ::1 can be listened on.
func haveIPv6() bool {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}
