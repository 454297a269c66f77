package challenge

import (
	"errors"
	"strings"
	"testing"
)

func TestParseIdentifier(t *testing.T) {
	tests := []struct {
		in      string
		want    Identifier
		wantErr string // substring; "" means success
		wild    bool
	}{
		{in: "example.com", want: Identifier{DNS, "example.com"}},
		{in: "Example.COM.", want: Identifier{DNS, "example.com"}},
		{in: "  www.example.com  ", want: Identifier{DNS, "www.example.com"}},
		{in: "bücher.de", want: Identifier{DNS, "xn--bcher-kva.de"}},
		{in: "BÜCHER.de", want: Identifier{DNS, "xn--bcher-kva.de"}},
		{in: "XN--BCHER-KVA.DE", want: Identifier{DNS, "xn--bcher-kva.de"}},
		{in: "ｅｘａｍｐｌｅ.com", want: Identifier{DNS, "example.com"}},
		{in: "localhost", want: Identifier{DNS, "localhost"}},
		{in: "a-b.c-d.example", want: Identifier{DNS, "a-b.c-d.example"}},
		{in: "192.0.2.1", want: Identifier{IP, "192.0.2.1"}},
		{in: "2001:db8::1", want: Identifier{IP, "2001:db8::1"}},
		{in: "2001:DB8:0:0:0:0:0:1", want: Identifier{IP, "2001:db8::1"}},
		{in: "[2001:db8::1]", want: Identifier{IP, "2001:db8::1"}},
		{in: "::ffff:192.0.2.1", want: Identifier{IP, "192.0.2.1"}},
		{in: "127.0.0.1", want: Identifier{IP, "127.0.0.1"}},
		{in: "::1", want: Identifier{IP, "::1"}},
		{in: "10.0.0.1", want: Identifier{IP, "10.0.0.1"}},
		{in: "0.0.0.0", wantErr: "unspecified address"},
		{in: "::", wantErr: "unspecified address"},
		{in: "[::]", wantErr: "unspecified address"},
		{in: "::ffff:0.0.0.0", wantErr: "unspecified address"},
		{in: "255.255.255.255", wantErr: "broadcast"},
		{in: "224.0.0.1", wantErr: "multicast"},
		{in: "ff02::1", wantErr: "multicast"},
		{in: "169.254.1.1", wantErr: "link-local"},
		{in: "fe80::1", wantErr: "link-local"},
		{in: "*.example.com", wantErr: "use the DNS-01", wild: true},
		{in: "*", wantErr: "wildcard", wild: true},
		{in: "", wantErr: "empty identifier"},
		{in: "fe80::1%eth0", wantErr: "zone"},
		{in: "[example.com]", wantErr: `"[example.com]"`},
		{in: "2001:db8::g", wantErr: `"2001:db8::g"`},
		{in: "1.2.3.4.5", wantErr: "all digits"},
		{in: "256.1.1.1", wantErr: "all digits"},
		{in: "a..example", wantErr: "empty label"},
		{in: ".example", wantErr: "empty label"},
		{in: "example.com..", wantErr: "empty label"},
		{in: "-a.example", wantErr: `"-a.example"`},
		{in: "a-.example", wantErr: `"a-.example"`},
		{in: "a_b.example", wantErr: `"a_b.example"`},
		{in: "ab--c.example", wantErr: `"ab--c.example"`},
		{in: "xn--.example", wantErr: `"xn--.example"`},
		{in: "xn--zz.example", wantErr: `"xn--zz.example"`},
		{in: "a\x00b.example", wantErr: `"a\x00b.example"`},
		{in: "\xff.example", wantErr: "UTF-8"},
		{in: "a.*.example", wantErr: `"a.*.example"`},
		{in: strings.Repeat("a", 64) + ".example", wantErr: "longer than 63"},
		{in: strings.Repeat("abcdefghi.", 26) + "example", wantErr: "longer than 253"},
		{in: strings.Repeat("a", 5000), wantErr: "longer than 253"},
	}
	for _, tt := range tests {
		got, err := ParseIdentifier(tt.in)
		if tt.wantErr == "" {
			if err != nil || got != tt.want {
				t.Errorf("ParseIdentifier(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseIdentifier(%q) error = %v; want it to contain %q", tt.in, err, tt.wantErr)
		}
		if errors.Is(err, ErrWildcard) != tt.wild {
			t.Errorf("ParseIdentifier(%q): errors.Is(err, ErrWildcard) = %v, want %v", tt.in, !tt.wild, tt.wild)
		}
	}
}

func TestNormalizeServerName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"example.com", "example.com"},
		{"EXAMPLE.com", "example.com"},
		{"example.com.", "example.com"},
		{"Example.COM.", "example.com"},
		{"xn--bcher-kva.de", "xn--bcher-kva.de"},
		{"XN--BCHER-KVA.DE", "xn--bcher-kva.de"},
		{"bücher.de", "xn--bcher-kva.de"},
		{"1.2.0.192.in-addr.arpa", "1.2.0.192.in-addr.arpa"},
		{"a", "a"},
		// Hostile or invalid.
		{"", ""},
		{".", ""},
		{"example.com..", ""},
		{"xn--", ""},
		{"xn--.example", ""},
		{"xn--zz.example", ""},
		{"ab--c.example", ""},
		{"a\x00b.example", ""},
		{"example.com\x00", ""},
		{"\x00", ""},
		{"a b.example", ""},
		{"a_b.example", ""},
		{"*.example.com", ""},
		{"-a.example", ""},
		{"a-.example", ""},
		{"\xff\xfe.example", ""},
		{strings.Repeat("a", 64) + ".example", ""},
		{strings.Repeat("a.", 127) + "ab", ""}, // 255 bytes
		{strings.Repeat("a", 1<<16), ""},
		{strings.Repeat("\u00ad", 2000) + "a.example", ""}, // ignorable, but over the input bound
	}
	for _, tt := range tests {
		if got := NormalizeServerName(tt.in); got != tt.want {
			t.Errorf("NormalizeServerName(%.60q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNormalizeServerNameFastPathAllocs(t *testing.T) {
	for _, sni := range []string{"www.example.com", "www.example.com.", "1.2.0.192.in-addr.arpa"} {
		if n := testing.AllocsPerRun(100, func() { NormalizeServerName(sni) }); n != 0 {
			t.Errorf("NormalizeServerName(%q) allocates %v times, want 0", sni, n)
		}
	}
}

func TestServerName(t *testing.T) {
	tests := []struct {
		id   Identifier
		want string
	}{
		{Identifier{DNS, "example.com"}, "example.com"},
		{Identifier{DNS, "xn--bcher-kva.de"}, "xn--bcher-kva.de"},
		{Identifier{IP, "192.0.2.1"}, "1.2.0.192.in-addr.arpa"},
		{Identifier{IP, "::ffff:192.0.2.1"}, "1.2.0.192.in-addr.arpa"},
		{Identifier{IP, "2001:db8::1"}, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"},
		{Identifier{IP, "2001:db8:abcd:12::f"}, "f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.1.0.0.d.c.b.a.8.b.d.0.1.0.0.2.ip6.arpa"},
		{Identifier{IP, "not-an-ip"}, ""},
		{Identifier{IP, "fe80::1%eth0"}, ""},
		{Identifier{"email", "a@example.com"}, ""},
	}
	for _, tt := range tests {
		if got := ServerName(tt.id); got != tt.want {
			t.Errorf("ServerName(%+v) = %q, want %q", tt.id, got, tt.want)
		}
		// What a responder looks up must be what the CA sends.
		if tt.want != "" && NormalizeServerName(tt.want) != tt.want {
			t.Errorf("NormalizeServerName(ServerName(%+v)) = %q, want it unchanged", tt.id, NormalizeServerName(tt.want))
		}
	}
}

func FuzzNormalizeServerName(f *testing.F) {
	for _, s := range []string{"example.com", "EXAMPLE.com.", "xn--", "bücher.de", "a\x00b", "xn--bcher-kva.de", "ab--c", "*.a", "1.2.0.192.in-addr.arpa"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := NormalizeServerName(s)
		if got == "" {
			return
		}
		if p := hostnameProblem(got); p != "" {
			t.Fatalf("NormalizeServerName(%q) = %q, not a host name: %s", s, got, p)
		}
		if again := NormalizeServerName(got); again != got {
			t.Fatalf("NormalizeServerName not idempotent: %q -> %q -> %q", s, got, again)
		}
	})
}

// TestCheckHostname: one set of words for each fault of a name, the same
// from CheckHostname (which the configuration and the proxy's routes use)
// and from ParseIdentifier.
func TestCheckHostname(t *testing.T) {
	for _, tt := range []struct {
		in, want string // want: the whole message; "" means valid
	}{
		{"example.com", ""},
		{"Example.COM.", ""},
		{"bücher.de", ""},
		{"a..example", `"a..example" has an empty label (two dots in a row, or a leading dot)`},
		{"exa mple.com", `"exa mple.com" has " ", which is not allowed in a host name: use letters, digits, hyphens and dots`},
		{"a_b.example", `"a_b.example" has an underscore, which CAs refuse in host names`},
		{"-a.example", `"-a.example" has a label that starts or ends with a hyphen`},
		{strings.Repeat("a", 64) + ".example", `"` + strings.Repeat("a", 40) + `"... has a label longer than 63 bytes, the DNS limit`},
		{"1.2.3.4.5", `"1.2.3.4.5" ends in a label of all digits, so it is neither a host name nor an IP address`},
		{"xn--zz.example", `"xn--zz.example" is not a valid internationalized name`},
		{"\xff.example", `"\xff.example" is not valid UTF-8`},
	} {
		err := CheckHostname(tt.in)
		if tt.want == "" {
			if err != nil {
				t.Errorf("CheckHostname(%q) = %v, want nil", tt.in, err)
			}
			continue
		}
		var he *HostnameError
		if !errors.As(err, &he) || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("CheckHostname(%q) = %v, want a *HostnameError %s", tt.in, err, tt.want)
		}
		if _, perr := ParseIdentifier(tt.in); perr == nil || !strings.HasSuffix(perr.Error(), err.Error()) || !errors.As(perr, &he) {
			t.Errorf("ParseIdentifier(%q) = %v, want the same words as CheckHostname: %v", tt.in, perr, err)
		}
	}
}
