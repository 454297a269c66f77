package manager

import (
	"crypto/tls"
	"fmt"
	"runtime"
	"testing"
)

// TestCacheNames: a certificate is found under the server name a
// handshake sends however its names were spelled when it was put: case,
// trailing dot, U-label or A-label, wildcard.
func TestCacheNames(t *testing.T) {
	cert := &tls.Certificate{}
	c := NewCache()
	c.Put([]string{"App.Example.", "*.Apps.Example", "bücher.example", "192.0.2.1"}, cert)
	for _, tc := range []struct {
		sni  string
		want bool
	}{
		{"app.example", true},
		{"APP.EXAMPLE.", true},
		{"x.apps.example", true},
		{"apps.example", false},
		{"xn--bcher-kva.example", true},
		{"bücher.example", true},
		{"other.example", false},
		{"", false},
	} {
		got, err := c.GetCertificate(&tls.ClientHelloInfo{ServerName: tc.sni})
		if (got == cert) != tc.want {
			t.Errorf("GetCertificate(%q) = %v, %v; want found %v", tc.sni, got, err, tc.want)
		}
	}
	for _, name := range []string{"app.example", "App.Example.", "*.apps.example", "xn--bcher-kva.example", "192.0.2.1"} {
		if c.Get(name) != cert {
			t.Errorf("Get(%q) = nil", name)
		}
	}
}

// TestCachePutAtScale: putting a certificate into a cache that holds
// 10,000 costs that certificate's names, not a copy of the cache, so that
// a front door loads 10,000 certificates in linear time. It counts the
// bytes allocated, which unlike a duration does not depend on the load
// of the machine.
func TestCachePutAtScale(t *testing.T) {
	const n, puts = 10_000, 100
	c := NewCache()
	cert := &tls.Certificate{}
	for i := range n {
		c.Put([]string{fmt.Sprintf("site%d.example", i)}, cert)
	}
	names := make([][]string, puts)
	for i := range names {
		names[i] = []string{fmt.Sprintf("new%d.example", i)}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for _, ns := range names {
		c.Put(ns, cert)
	}
	runtime.ReadMemStats(&after)
	// A map of 10,000 names is hundreds of KiB; a name's entry is bytes.
	if per := (after.TotalAlloc - before.TotalAlloc) / puts; per > 4<<10 {
		t.Errorf("a Put into a cache of %d names allocates %d bytes: the cache is copied", n, per)
	}
	for _, name := range []string{"site0.example", "site9999.example", "new99.example"} {
		if got, err := c.GetCertificate(&tls.ClientHelloInfo{ServerName: name}); err != nil || got != cert {
			t.Errorf("GetCertificate(%q) = %v, %v", name, got, err)
		}
	}
}

// BenchmarkCacheGetCertificate measures a handshake's lookup in a cache of
// 10,000 certificates from every core at once: it must take no lock that
// handshakes contend for.
func BenchmarkCacheGetCertificate(b *testing.B) {
	const n = 10_000
	c := NewCache()
	hellos := make([]*tls.ClientHelloInfo, n)
	for i := range n {
		name := fmt.Sprintf("site%d.example", i)
		c.Put([]string{name}, &tls.Certificate{})
		hellos[i] = &tls.ClientHelloInfo{ServerName: name}
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := c.GetCertificate(hellos[i%n]); err != nil {
				b.Fatal(err)
			}
			i += 7919
		}
	})
}
