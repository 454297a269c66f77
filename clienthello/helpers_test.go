package clienthello

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"testing"
	"time"
)

// Builders for synthetic hellos, written from the RFCs independently of the
// parser under test.

func u16(v int) []byte { return []byte{byte(v >> 8), byte(v)} }

func vec8(b []byte) []byte  { return append([]byte{byte(len(b))}, b...) }
func vec16(b []byte) []byte { return append(u16(len(b)), b...) }

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

type ext struct {
	typ  int
	data []byte
}

func (e ext) bytes() []byte { return cat(u16(e.typ), vec16(e.data)) }

type sniName struct {
	typ  byte
	name string
}

func sniExt(names ...sniName) ext {
	var list []byte
	for _, n := range names {
		list = append(list, n.typ)
		list = append(list, vec16([]byte(n.name))...)
	}
	return ext{extServerName, vec16(list)}
}

func hostExt(host string) ext { return sniExt(sniName{0, host}) }

func alpnExt(protos ...string) ext {
	var list []byte
	for _, p := range protos {
		list = append(list, vec8([]byte(p))...)
	}
	return ext{extALPN, vec16(list)}
}

func versExt(vs ...int) ext {
	var list []byte
	for _, v := range vs {
		list = append(list, u16(v)...)
	}
	return ext{extSupportedVersions, vec8(list)}
}

// synth describes a ClientHello body field by field; zero values give a
// well-formed TLS 1.2 hello with a 32-byte session ID.
type synth struct {
	version     int // 0: 0x0303
	sessionID   []byte
	suites      []byte // raw cipher_suites vector body
	compression []byte // raw compression methods vector body
	noExt       bool
	exts        []ext
	extsRaw     []byte // replaces the encoded extensions when non-nil
	trailing    []byte // after the extensions, inside the body
}

func (s synth) body() []byte {
	v := s.version
	if v == 0 {
		v = 0x0303
	}
	sid := s.sessionID
	if sid == nil {
		sid = make([]byte, 32)
	}
	suites := s.suites
	if suites == nil {
		suites = []byte{0x0a, 0x0a, 0x13, 0x01, 0xc0, 0x2b}
	}
	comp := s.compression
	if comp == nil {
		comp = []byte{0}
	}
	random := make([]byte, 32)
	for i := range random {
		random[i] = byte(i)
	}
	b := cat(u16(v), random, vec8(sid), vec16(suites), vec8(comp))
	if !s.noExt {
		exts := s.extsRaw
		if exts == nil {
			exts = []byte{}
			for _, e := range s.exts {
				exts = append(exts, e.bytes()...)
			}
		}
		b = append(b, vec16(exts)...)
	}
	return append(b, s.trailing...)
}

func handshakeMsg(typ byte, body []byte) []byte {
	n := len(body)
	return append([]byte{typ, byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

func (s synth) msg() []byte { return handshakeMsg(1, s.body()) }

// record frames body as one TLS record.
func record(typ byte, version int, body []byte) []byte {
	return cat([]byte{typ}, u16(version), vec16(body))
}

// wire is the hello in one handshake record.
func (s synth) wire() []byte { return record(0x16, 0x0301, s.msg()) }

// fragment frames msg as handshake records of the given sizes (the last
// record takes what remains).
func fragment(msg []byte, sizes ...int) []byte {
	var out []byte
	for _, n := range sizes {
		if n >= len(msg) {
			break
		}
		out = append(out, record(0x16, 0x0301, msg[:n])...)
		msg = msg[n:]
	}
	return append(out, record(0x16, 0x0301, msg)...)
}

// randomFragment splits msg into k records at random points.
func randomFragment(r *mrand.Rand, msg []byte, k int) []byte {
	cuts := map[int]bool{}
	for len(cuts) < k-1 && len(cuts) < len(msg)-1 {
		cuts[1+r.IntN(len(msg)-1)] = true
	}
	var out []byte
	last := 0
	for i := 1; i < len(msg); i++ {
		if cuts[i] {
			out = append(out, record(0x16, 0x0301, msg[last:i])...)
			last = i
		}
	}
	return append(out, record(0x16, 0x0301, msg[last:])...)
}

// messageOf extracts the handshake message from records, for re-framing.
func messageOf(t testing.TB, raw []byte) []byte {
	t.Helper()
	var msg []byte
	for len(raw) > 0 {
		if len(raw) < 5 {
			t.Fatalf("messageOf: %d stray bytes", len(raw))
		}
		n := int(raw[3])<<8 | int(raw[4])
		msg = append(msg, raw[5:5+n]...)
		raw = raw[5+n:]
	}
	return msg
}

// Real hellos from crypto/tls.

// capture returns the ClientHello record(s) that a crypto/tls client with
// cfg writes, read off a net.Pipe by record headers alone.
func capture(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c1, c2 := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tls.Client(c1, cfg).Handshake() // fails once c2 is closed
		c1.Close()
	}()
	var out []byte
	var hdr [5]byte
	need := -1
	for need != 0 {
		if _, err := io.ReadFull(c2, hdr[:]); err != nil {
			t.Fatalf("capture: %v", err)
		}
		body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
		if _, err := io.ReadFull(c2, body); err != nil {
			t.Fatalf("capture: %v", err)
		}
		out = append(append(out, hdr[:]...), body...)
		if need < 0 {
			need = 4 + (int(body[1])<<16 | int(body[2])<<8 | int(body[3]))
		}
		need -= len(body)
	}
	c2.Close()
	<-done
	return out
}

// clientCase is a crypto/tls client configuration and what its hello says.
type clientCase struct {
	name     string
	cfg      func() *tls.Config
	wantSNI  string
	wantALPN []string
	wantMax  uint16
	wantECH  bool
}

func clientCases(ech []byte) []clientCase {
	cfg := func(min, max uint16, sni string, alpn ...string) func() *tls.Config {
		return func() *tls.Config {
			return &tls.Config{MinVersion: min, MaxVersion: max, ServerName: sni, NextProtos: alpn, InsecureSkipVerify: sni == ""}
		}
	}
	cases := []clientCase{
		{name: "tls12/sni/acme", cfg: cfg(tls.VersionTLS12, tls.VersionTLS12, "a.example", "acme-tls/1"), wantSNI: "a.example", wantALPN: []string{"acme-tls/1"}, wantMax: tls.VersionTLS12},
		{name: "tls12/sni/h2", cfg: cfg(tls.VersionTLS12, tls.VersionTLS12, "www.example.com", "h2", "http/1.1"), wantSNI: "www.example.com", wantALPN: []string{"h2", "http/1.1"}, wantMax: tls.VersionTLS12},
		{name: "tls12/sni/none", cfg: cfg(tls.VersionTLS12, tls.VersionTLS12, "b.example"), wantSNI: "b.example", wantMax: tls.VersionTLS12},
		{name: "tls12/nosni/h2", cfg: cfg(tls.VersionTLS10, tls.VersionTLS12, "", "h2", "http/1.1"), wantALPN: []string{"h2", "http/1.1"}, wantMax: tls.VersionTLS12},
		{name: "tls13/sni/acme", cfg: cfg(tls.VersionTLS13, tls.VersionTLS13, "a.example", "acme-tls/1"), wantSNI: "a.example", wantALPN: []string{"acme-tls/1"}, wantMax: tls.VersionTLS13},
		{name: "tls13/sni/h2", cfg: cfg(tls.VersionTLS12, tls.VersionTLS13, "www.example.com", "h2", "http/1.1"), wantSNI: "www.example.com", wantALPN: []string{"h2", "http/1.1"}, wantMax: tls.VersionTLS13},
		{name: "tls13/sni/none", cfg: cfg(tls.VersionTLS12, tls.VersionTLS13, "c.example"), wantSNI: "c.example", wantMax: tls.VersionTLS13},
		{name: "tls13/nosni/none", cfg: cfg(tls.VersionTLS12, tls.VersionTLS13, ""), wantMax: tls.VersionTLS13},
		{name: "tls13/nosni/acme", cfg: cfg(tls.VersionTLS13, tls.VersionTLS13, "", "acme-tls/1"), wantALPN: []string{"acme-tls/1"}, wantMax: tls.VersionTLS13},
		{name: "tls13/x25519-only/custom-alpn", cfg: func() *tls.Config {
			c := cfg(tls.VersionTLS12, tls.VersionTLS13, "d.example", "spdy/3.1", "h2", "x-custom")()
			c.CurvePreferences = []tls.CurveID{tls.X25519}
			return c
		}, wantSNI: "d.example", wantALPN: []string{"spdy/3.1", "h2", "x-custom"}, wantMax: tls.VersionTLS13},
	}
	if ech != nil {
		cases = append(cases, clientCase{name: "tls13/ech-outer", cfg: func() *tls.Config {
			c := cfg(tls.VersionTLS13, tls.VersionTLS13, "secret.example", "h2")()
			c.EncryptedClientHelloConfigList = ech
			return c
		}, wantSNI: "public.example", wantALPN: []string{"h2"}, wantMax: tls.VersionTLS13, wantECH: true})
	}
	return cases
}

// echKeys makes an ECH configuration (X25519, HKDF-SHA256, AES-128-GCM)
// with public name public.example: the ECHConfigList for clients and the
// key for a server.
func echKeys(t testing.TB) (list []byte, key tls.EncryptedClientHelloKey) {
	t.Helper()
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	contents := cat(
		[]byte{7},   // config_id
		u16(0x0020), // DHKEM(X25519, HKDF-SHA256)
		vec16(priv.PublicKey().Bytes()),
		vec16(cat(u16(0x0001), u16(0x0001))), // HKDF-SHA256, AES-128-GCM
		[]byte{0},                            // maximum_name_length
		vec8([]byte("public.example")),
		vec16(nil), // extensions
	)
	config := cat(u16(0xfe0d), vec16(contents))
	return vec16(config), tls.EncryptedClientHelloKey{Config: config, PrivateKey: priv.Bytes(), SendAsRetry: true}
}

// certificate is a self-signed ECDSA certificate for names.
func certificate(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
