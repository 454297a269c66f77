package challenge

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/mholt/acmez/v3"
	mholtacme "github.com/mholt/acmez/v3/acme"
	"golang.org/x/crypto/acme"
)

const testKeyAuth = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"

func TestBuildVerifyRoundTrip(t *testing.T) {
	for _, in := range []string{"example.com", "Sub.Example.COM.", "bücher.de", "192.0.2.1", "2001:db8::1", "::ffff:198.51.100.7"} {
		id, err := ParseIdentifier(in)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := Build(id, testKeyAuth)
		if err != nil {
			t.Fatalf("Build(%+v): %v", id, err)
		}
		leaf := cert.Leaf
		if leaf == nil || len(cert.Certificate) != 1 || !bytes.Equal(leaf.Raw, cert.Certificate[0]) {
			t.Fatalf("Build(%+v): Leaf not set to the one certificate", id)
		}
		if err := Verify(leaf, id, testKeyAuth); err != nil {
			t.Errorf("Verify(Build(%+v)) = %v", id, err)
		}
		// Wrong key authorization must fail with the hash rule.
		if err := Verify(leaf, id, testKeyAuth+"x"); !errors.Is(err, ErrWrongHash) {
			t.Errorf("Verify(Build(%+v), other keyAuth) = %v, want ErrWrongHash", id, err)
		}
		if n := len(leaf.DNSNames) + len(leaf.IPAddresses) + len(leaf.URIs) + len(leaf.EmailAddresses); n != 1 {
			t.Errorf("Build(%+v): %d SAN entries, want 1", id, n)
		}
		if leaf.SignatureAlgorithm != x509.ECDSAWithSHA256 || leaf.PublicKeyAlgorithm != x509.ECDSA {
			t.Errorf("Build(%+v): algorithms %v/%v", id, leaf.SignatureAlgorithm, leaf.PublicKeyAlgorithm)
		}
		if k, ok := cert.PrivateKey.(*ecdsa.PrivateKey); !ok || !k.PublicKey.Equal(leaf.PublicKey) {
			t.Errorf("Build(%+v): PrivateKey does not match the leaf", id)
		}
		if now := time.Now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
			t.Errorf("Build(%+v): not valid now: %v..%v", id, leaf.NotBefore, leaf.NotAfter)
		}
		if leaf.SerialNumber.Sign() <= 0 {
			t.Errorf("Build(%+v): serial %v not positive", id, leaf.SerialNumber)
		}
		// Go reports the critical acmeIdentifier as unhandled; nothing else.
		if u := leaf.UnhandledCriticalExtensions; len(u) != 1 || !u[0].Equal(OIDACMEIdentifier()) {
			t.Errorf("Build(%+v): unhandled critical extensions %v", id, u)
		}
	}
	// Two builds differ in key and serial.
	id := Identifier{DNS, "example.com"}
	a, _ := Build(id, testKeyAuth)
	b, _ := Build(id, testKeyAuth)
	if a.Leaf.SerialNumber.Cmp(b.Leaf.SerialNumber) == 0 || a.Leaf.PublicKey.(*ecdsa.PublicKey).Equal(b.Leaf.PublicKey) {
		t.Error("two Builds share a serial or key")
	}
}

func TestBuildRejects(t *testing.T) {
	for _, tt := range []struct {
		id   Identifier
		wild bool
	}{
		{Identifier{DNS, "*.example.com"}, true},
		{Identifier{DNS, "Example.com"}, false},
		{Identifier{DNS, "example.com."}, false},
		{Identifier{DNS, "bücher.de"}, false},
		{Identifier{DNS, ""}, false},
		{Identifier{IP, "example.com"}, false},
		{Identifier{IP, "fe80::1%eth0"}, false},
		{Identifier{"email", "a@example.com"}, false},
	} {
		c, err := Build(tt.id, testKeyAuth)
		if err == nil {
			t.Errorf("Build(%+v) = %v, want an error", tt.id, c)
		}
		if errors.Is(err, ErrWildcard) != tt.wild {
			t.Errorf("Build(%+v) = %v; errors.Is(ErrWildcard) want %v", tt.id, err, tt.wild)
		}
	}
}

func TestOIDACMEIdentifierIsACopy(t *testing.T) {
	o := OIDACMEIdentifier()
	o[0] = 99
	if OIDACMEIdentifier().String() != "1.3.6.1.5.5.7.1.31" {
		t.Fatal("OIDACMEIdentifier returned shared storage")
	}
}

// --- hand-made certificates -------------------------------------------------

var (
	oidObsoleteACME = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 30, 1}
	oidTest         = asn1.ObjectIdentifier{1, 2, 3}
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

// rawSAN is the SAN extension value with the given GeneralNames, each as
// (tag, bytes).
func rawSAN(t testing.TB, names ...asn1.RawValue) []byte {
	for i := range names {
		names[i].Class = asn1.ClassContextSpecific
	}
	return marshal(t, names)
}

func dnsName(s string) asn1.RawValue { return asn1.RawValue{Tag: 2, Bytes: []byte(s)} }
func ipAddr(b ...byte) asn1.RawValue { return asn1.RawValue{Tag: 7, Bytes: b} }

func acmeExt(t testing.TB, keyAuth string) pkix.Extension {
	h := sha256.Sum256([]byte(keyAuth))
	return pkix.Extension{Id: OIDACMEIdentifier(), Critical: true, Value: marshal(t, h[:])}
}

// template returns a self-signable template whose SAN and acmeIdentifier are
// given raw in ExtraExtensions, so tests control every byte.
func template(t testing.TB, san []byte, exts ...pkix.Extension) *x509.Certificate {
	var extra []pkix.Extension
	if san != nil {
		extra = append(extra, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Critical: true, Value: san})
	}
	return &x509.Certificate{
		SerialNumber:    big.NewInt(42),
		NotBefore:       time.Now().Add(-time.Hour),
		NotAfter:        time.Now().Add(time.Hour),
		ExtraExtensions: append(extra, exts...),
	}
}

// create signs tmpl with signer under parent (tmpl itself when nil) and
// returns the parsed certificate.
func create(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func selfSigned(t testing.TB, tmpl *x509.Certificate) *x509.Certificate {
	k := mustKey(t)
	return create(t, tmpl, nil, k.Public(), k)
}

type badCert struct {
	name string
	id   Identifier
	cert func(t testing.TB) *x509.Certificate
	rule error  // nil: must pass
	msg  string // exact VerifyError text
}

func badCerts() []badCert {
	dnsID := Identifier{DNS, "a.example"}
	ipID := Identifier{IP, "192.0.2.1"}
	h := sha256.Sum256([]byte(testKeyAuth))
	okSAN := func(t testing.TB) []byte { return rawSAN(t, dnsName("a.example")) }
	unexpectedIDs := func(names, why string) string {
		return fmt.Sprintf("Received certificate with unexpected identifiers (%q): %q", names, why)
	}
	return []badCert{
		{
			name: "good DNS", id: dnsID,
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, okSAN(t), acmeExt(t, testKeyAuth)))
			},
		},
		{
			name: "good DNS with extra extensions and a CN", id: dnsID,
			cert: func(t testing.TB) *x509.Certificate {
				tmpl := template(t, okSAN(t), acmeExt(t, testKeyAuth), pkix.Extension{Id: oidTest, Value: []byte{5, 0}})
				tmpl.Subject.CommonName = "a.example"
				tmpl.BasicConstraintsValid = true
				tmpl.KeyUsage = x509.KeyUsageDigitalSignature
				return selfSigned(t, tmpl)
			},
		},
		{
			name: "good IPv4", id: ipID,
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, rawSAN(t, ipAddr(192, 0, 2, 1)), acmeExt(t, testKeyAuth)))
			},
		},
		{
			name: "signed by another CA", id: dnsID, rule: ErrNotSelfSigned,
			msg: "Received certificate which is not self-signed.",
			cert: func(t testing.TB) *x509.Certificate {
				ca := mustKey(t)
				leaf := mustKey(t)
				// Same (empty) subject as issuer: only the signature is wrong.
				parent := &x509.Certificate{SerialNumber: big.NewInt(1), PublicKey: ca.Public()}
				return create(t, template(t, okSAN(t), acmeExt(t, testKeyAuth)), parent, leaf.Public(), ca)
			},
		},
		{
			name: "subject is not issuer", id: dnsID, rule: ErrNotSelfSigned,
			msg: "Received certificate which is not self-signed.",
			cert: func(t testing.TB) *x509.Certificate {
				k := mustKey(t)
				tmpl := template(t, okSAN(t), acmeExt(t, testKeyAuth))
				tmpl.Subject.CommonName = "a.example"
				// Signed by its own key, but naming someone else as issuer.
				parent := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Other CA"}, PublicKey: k.Public()}
				return create(t, tmpl, parent, k.Public(), k)
			},
		},
		{
			// Go's parser refuses DER with a repeated extension, so (through
			// Go's TLS stack) such a certificate fails at the handshake; the
			// rule is still checked on the parsed structure, as Boulder does.
			name: "duplicate extension", id: dnsID, rule: ErrDuplicateExtension,
			msg: `Received certificate with unexpected extensions: "Extension OID 1.2.3 seen twice"`,
			cert: func(t testing.TB) *x509.Certificate {
				c := selfSigned(t, template(t, okSAN(t), acmeExt(t, testKeyAuth)))
				dup := pkix.Extension{Id: oidTest, Value: []byte{5, 0}}
				c.Extensions = append(slices.Clone(c.Extensions), dup, dup)
				return c
			},
		},
		{
			name: "duplicate acmeIdentifier", id: dnsID, rule: ErrDuplicateExtension,
			msg: `Received certificate with unexpected extensions: "Extension OID 1.3.6.1.5.5.7.1.31 seen twice"`,
			cert: func(t testing.TB) *x509.Certificate {
				c := selfSigned(t, template(t, okSAN(t), acmeExt(t, testKeyAuth)))
				c.Extensions = append(slices.Clone(c.Extensions), acmeExt(t, testKeyAuth))
				return c
			},
		},
		{
			name: "many extensions, one duplicate (map path)", id: dnsID, rule: ErrDuplicateExtension,
			msg: `Received certificate with unexpected extensions: "Extension OID 1.2.3.7 seen twice"`,
			cert: func(t testing.TB) *x509.Certificate {
				c := selfSigned(t, template(t, okSAN(t), acmeExt(t, testKeyAuth)))
				c.Extensions = slices.Clone(c.Extensions)
				for i := range 30 {
					c.Extensions = append(c.Extensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, i}})
				}
				c.Extensions = append(c.Extensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 7}})
				return c
			},
		},
		{
			name: "no acmeIdentifier", id: dnsID, rule: ErrMissingExtension,
			msg: `Received certificate with unexpected extensions: "Required extension OID 1.3.6.1.5.5.7.1.31 is not present"`,
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, okSAN(t)))
			},
		},
		{
			name: "obsolete OID only", id: dnsID, rule: ErrMissingExtension,
			msg: `Received certificate with unexpected extensions: "Required extension OID 1.3.6.1.5.5.7.1.31 is not present"`,
			cert: func(t testing.TB) *x509.Certificate {
				ext := acmeExt(t, testKeyAuth)
				ext.Id = oidObsoleteACME
				return selfSigned(t, template(t, okSAN(t), ext))
			},
		},
		{
			name: "no SAN", id: dnsID, rule: ErrMissingExtension,
			msg: `Received certificate with unexpected extensions: "Required extension OID 2.5.29.17 is not present"`,
			cert: func(t testing.TB) *x509.Certificate {
				tmpl := template(t, nil, acmeExt(t, testKeyAuth))
				tmpl.Subject.CommonName = "a.example"
				return selfSigned(t, tmpl)
			},
		},
		{
			name: "two DNS SANs", id: dnsID, rule: ErrWrongIdentifierCount,
			msg: unexpectedIDs("a.example, b.example", "wrong number of identifiers"),
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, rawSAN(t, dnsName("b.example"), dnsName("a.example")), acmeExt(t, testKeyAuth)))
			},
		},
		{
			name: "IP SAN on DNS identifier", id: dnsID, rule: ErrWrongIdentifierCount,
			msg: unexpectedIDs("192.0.2.1, a.example", "wrong number of identifiers"),
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, rawSAN(t, dnsName("a.example"), ipAddr(192, 0, 2, 1)), acmeExt(t, testKeyAuth)))
			},
		},
		{
			name: "only IP SAN for DNS identifier", id: dnsID, rule: ErrWrongIdentifierCount,
			msg: unexpectedIDs("192.0.2.1", "wrong number of identifiers"),
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, rawSAN(t, ipAddr(192, 0, 2, 1)), acmeExt(t, testKeyAuth)))
			},
		},
		{
			name: "other name", id: dnsID, rule: ErrIdentifierMismatch,
			msg: unexpectedIDs("b.example", "identifier does not match expected identifier"),
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, rawSAN(t, dnsName("b.example")), acmeExt(t, testKeyAuth)))
			},
		},
		{
			name: "upper-case SAN bytes", id: dnsID, rule: ErrSANBytes,
			msg: unexpectedIDs("a.example", "SAN extension does not match expected bytes"),
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, rawSAN(t, dnsName("A.Example")), acmeExt(t, testKeyAuth)))
			},
		},
		{
			name: "extra e-mail SAN entry", id: dnsID, rule: ErrSANBytes,
			msg: unexpectedIDs("a.example, x@a.example", "SAN extension does not match expected bytes"),
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, rawSAN(t, dnsName("a.example"), asn1.RawValue{Tag: 1, Bytes: []byte("x@a.example")}), acmeExt(t, testKeyAuth)))
			},
		},
		{
			name: "DNS SAN on IP identifier", id: ipID, rule: ErrWrongIdentifierCount,
			msg: unexpectedIDs("192.0.2.1, a.example", "wrong number of identifiers"),
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, rawSAN(t, ipAddr(192, 0, 2, 1), dnsName("a.example")), acmeExt(t, testKeyAuth)))
			},
		},
		{
			name: "other IP", id: ipID, rule: ErrIdentifierMismatch,
			msg: unexpectedIDs("192.0.2.2", "identifier does not match expected identifier"),
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, rawSAN(t, ipAddr(192, 0, 2, 2)), acmeExt(t, testKeyAuth)))
			},
		},
		{
			name: "IPv4 encoded in 16 bytes", id: ipID, rule: ErrSANBytes,
			msg: unexpectedIDs("192.0.2.1", "SAN extension does not match expected bytes"),
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, rawSAN(t, ipAddr(net.ParseIP("192.0.2.1").To16()...)), acmeExt(t, testKeyAuth)))
			},
		},
		{
			name: "acmeIdentifier not critical", id: dnsID, rule: ErrNotCritical,
			msg: "Received certificate with acmeValidationV1 extension that is not Critical.",
			cert: func(t testing.TB) *x509.Certificate {
				ext := acmeExt(t, testKeyAuth)
				ext.Critical = false
				return selfSigned(t, template(t, okSAN(t), ext))
			},
		},
		{
			name: "bare 32 bytes", id: dnsID, rule: ErrMalformedValue,
			msg: "Received certificate with malformed acmeValidationV1 extension value.",
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, okSAN(t), pkix.Extension{Id: OIDACMEIdentifier(), Critical: true, Value: h[:]}))
			},
		},
		{
			name: "trailing bytes", id: dnsID, rule: ErrMalformedValue,
			msg: "Received certificate with malformed acmeValidationV1 extension value.",
			cert: func(t testing.TB) *x509.Certificate {
				ext := acmeExt(t, testKeyAuth)
				ext.Value = append(ext.Value, 0)
				return selfSigned(t, template(t, okSAN(t), ext))
			},
		},
		{
			name: "31-byte OCTET STRING", id: dnsID, rule: ErrMalformedValue,
			msg: "Received certificate with malformed acmeValidationV1 extension value.",
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, okSAN(t), pkix.Extension{Id: OIDACMEIdentifier(), Critical: true, Value: marshal(t, h[:31])}))
			},
		},
		{
			name: "hash in a BIT STRING", id: dnsID, rule: ErrMalformedValue,
			msg: "Received certificate with malformed acmeValidationV1 extension value.",
			cert: func(t testing.TB) *x509.Certificate {
				v := marshal(t, asn1.BitString{Bytes: h[:], BitLength: 256})
				return selfSigned(t, template(t, okSAN(t), pkix.Extension{Id: OIDACMEIdentifier(), Critical: true, Value: v}))
			},
		},
		{
			name: "wrong hash", id: dnsID, rule: ErrWrongHash,
			msg: func() string {
				other := sha256.Sum256([]byte("other"))
				return "Received certificate with acmeValidationV1 extension value " + hex.EncodeToString(other[:]) +
					" but expected " + hex.EncodeToString(h[:]) + "."
			}(),
			cert: func(t testing.TB) *x509.Certificate {
				return selfSigned(t, template(t, okSAN(t), acmeExt(t, "other")))
			},
		},
	}
}

func TestVerifyBadCertificates(t *testing.T) {
	for _, tt := range badCerts() {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.cert(t), tt.id, testKeyAuth)
			if tt.rule == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.rule) {
				t.Fatalf("Verify = %v, want errors.Is %v", err, tt.rule)
			}
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify = %T, want *VerifyError", err)
			}
			if err.Error() != tt.msg {
				t.Errorf("Verify text:\n got %s\nwant %s", err.Error(), tt.msg)
			}
			want := "Incorrect validation certificate for tls-alpn-01 challenge. Requested " + tt.id.Value +
				" from 192.0.2.9:443. " + tt.msg
			if got := ve.CAMessage(tt.id, "192.0.2.9:443"); got != want {
				t.Errorf("CAMessage:\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestVerifyArguments(t *testing.T) {
	c, err := Build(Identifier{DNS, "a.example"}, testKeyAuth)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(nil, Identifier{DNS, "a.example"}, testKeyAuth); err == nil {
		t.Error("Verify(nil) = nil")
	}
	err = Verify(c.Leaf, Identifier{"email", "a.example"}, testKeyAuth)
	var ve *VerifyError
	if !errors.Is(err, ErrIdentifierType) || errors.As(err, &ve) {
		t.Errorf("Verify(type email) = %v, want ErrIdentifierType and no *VerifyError", err)
	}
	// Identifiers are used as given, like the CA: an upper-case identifier
	// fails on the SAN bytes.
	if err := Verify(c.Leaf, Identifier{DNS, "A.example"}, testKeyAuth); !errors.Is(err, ErrSANBytes) {
		t.Errorf("Verify(upper-case identifier) = %v, want ErrSANBytes", err)
	}
}

// Certificates made by two independent implementations pass Verify.
func TestVerifyThirdPartyCertificates(t *testing.T) {
	accountKey := mustKey(t)
	const token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	keyAuth, err := KeyAuthorization(token, accountKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"example.com", "xn--bcher-kva.de", "192.0.2.1", "2001:db8::1"} {
		id, err := ParseIdentifier(name)
		if err != nil {
			t.Fatal(err)
		}
		xc := &acme.Client{Key: accountKey}
		xcert, err := xc.TLSALPN01ChallengeCert(token, name)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(xcert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := Verify(leaf, id, keyAuth); err != nil {
			t.Errorf("x/crypto/acme certificate for %s: %v", name, err)
		}

		mcert, err := acmez.TLSALPN01ChallengeCert(mholtacme.Challenge{
			Identifier:       mholtacme.Identifier{Type: string(id.Type), Value: id.Value},
			KeyAuthorization: keyAuth,
		})
		if err != nil {
			t.Fatal(err)
		}
		leaf, err = x509.ParseCertificate(mcert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := Verify(leaf, id, keyAuth); err != nil {
			t.Errorf("acmez certificate for %s: %v", name, err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	for _, tt := range badCerts() {
		f.Add(tt.cert(f).Raw)
	}
	for _, s := range []string{"a.example", "192.0.2.1", "2001:db8::1"} {
		id, _ := ParseIdentifier(s)
		c, err := Build(id, testKeyAuth)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(c.Certificate[0])
	}
	ids := []Identifier{{DNS, "a.example"}, {IP, "192.0.2.1"}, {IP, "2001:db8::1"}, {IP, "bogus"}}
	f.Fuzz(func(t *testing.T, der []byte) {
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			return
		}
		for _, id := range ids {
			err := Verify(leaf, id, testKeyAuth)
			if err == nil {
				continue
			}
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Rule == nil || ve.Detail == "" {
				t.Fatalf("Verify(%+v) = %#v, want a complete *VerifyError", id, err)
			}
			_ = ve.CAMessage(id, "192.0.2.9:443")
		}
	})
}

func BenchmarkBuild(b *testing.B) {
	id := Identifier{DNS, "www.example.com"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(id, testKeyAuth); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	id := Identifier{DNS, "www.example.com"}
	c, err := Build(id, testKeyAuth)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := Verify(c.Leaf, id, testKeyAuth); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNormalizeServerName(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		NormalizeServerName("www.example.com")
	}
}
