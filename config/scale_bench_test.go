package config

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkParseCertificates parses configurations of 100 to 10,000
// certificates. The cost per certificate (ns/cert) must stay flat: the YAML
// library formats the whole document for each custom unmarshaler it calls,
// which once made a 10,000-certificate file take minutes to load.
//
//	go test -run '^$' -bench ParseCertificates ./config/
func BenchmarkParseCertificates(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		var sb strings.Builder
		sb.WriteString("listen: \":443\"\nacme:\n  email: a@example.com\n  agree_tos: true\nroutes:\n  - names: \"*\"\n    backend: 127.0.0.1:8443\ncertificates:\n")
		for i := range n {
			fmt.Fprintf(&sb, "  - names: h%d.example.com\n    out: /tmp/out/h%d\n", i, i)
		}
		data := []byte(sb.String())
		b.Run(fmt.Sprintf("%d-certs", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := Parse(data, "bench.yaml"); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/cert")
		})
	}
}
