package clienthello

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// readers are the ways a hello can arrive: whole, a byte at a time, in
// halves, and with the final read returning io.EOF along with data.
var readers = []struct {
	name       string
	wrap       func(io.Reader) io.Reader
	readsAhead bool // by design, so what is left in the source is not what Read left
}{
	{"whole", func(r io.Reader) io.Reader { return r }, false},
	{"onebyte", iotest.OneByteReader, false},
	{"half", iotest.HalfReader, false},
	{"dataerr", iotest.DataErrReader, true},
}

func checkInfo(t *testing.T, info *Info, c clientCase) {
	t.Helper()
	if info.ServerName != c.wantSNI {
		t.Errorf("ServerName = %q, want %q", info.ServerName, c.wantSNI)
	}
	if !slices.Equal(info.ALPN, c.wantALPN) || (info.ALPN == nil) != (c.wantALPN == nil) {
		t.Errorf("ALPN = %q, want %q", info.ALPN, c.wantALPN)
	}
	if got := info.MaxVersion(); got != c.wantMax {
		t.Errorf("MaxVersion() = %#04x, want %#04x", got, c.wantMax)
	}
	if info.LegacyVersion != 0x0303 {
		t.Errorf("LegacyVersion = %#04x, want 0x0303", info.LegacyVersion)
	}
	if info.ECH != c.wantECH {
		t.Errorf("ECH = %v, want %v", info.ECH, c.wantECH)
	}
}

// sameInfo compares everything but Raw.
func sameInfo(a, b *Info) bool {
	return a.ServerName == b.ServerName && slices.Equal(a.ALPN, b.ALPN) && (a.ALPN == nil) == (b.ALPN == nil) &&
		slices.Equal(a.Versions, b.Versions) && (a.Versions == nil) == (b.Versions == nil) &&
		a.LegacyVersion == b.LegacyVersion && a.ECH == b.ECH
}

func TestCaptured(t *testing.T) {
	list, _ := echKeys(t)
	// What follows the hello on the wire must stay unread: a
	// ChangeCipherSpec and an application data record (early data).
	after := cat(record(0x14, 0x0303, []byte{1}), record(0x17, 0x0303, []byte("early")))
	for _, c := range clientCases(list) {
		t.Run(c.name, func(t *testing.T) {
			raw := capture(t, c.cfg())
			info, err := Parse(raw)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			checkInfo(t, info, c)
			if !bytes.Equal(info.Raw, raw) {
				t.Errorf("Parse: Raw is not the input")
			}
			if c.wantMax == 0x0304 && !slices.Contains(info.Versions, 0x0304) {
				t.Errorf("Versions = %#04x, want 0x0304 among them", info.Versions)
			}
			info2, err := Parse(append(slices.Clip(raw), after...))
			if err != nil || !bytes.Equal(info2.Raw, raw) {
				t.Errorf("Parse with trailing records: err %v, Raw of %d bytes, want %d", err, len(info2.Raw), len(raw))
			}
			for _, rd := range readers {
				src := bytes.NewReader(append(slices.Clip(raw), after...))
				info, err := Read(rd.wrap(src))
				if err != nil {
					t.Fatalf("Read/%s: %v", rd.name, err)
				}
				checkInfo(t, info, c)
				if !bytes.Equal(info.Raw, raw) {
					t.Errorf("Read/%s: Raw differs from the wire", rd.name)
				}
				if rest, _ := io.ReadAll(src); !rd.readsAhead && !bytes.Equal(rest, after) {
					t.Errorf("Read/%s: left %q unread, want %q", rd.name, rest, after)
				}
			}
		})
	}
}

func TestFragmented(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(1, 2))
	list, _ := echKeys(t)
	for _, c := range clientCases(list) {
		raw := capture(t, c.cfg())
		msg := messageOf(t, raw)
		t.Run(c.name, func(t *testing.T) {
			variants := [][]byte{
				fragment(msg, 1),          // the type byte alone
				fragment(msg, 1, 1, 1, 1), // the header byte by byte
				fragment(msg, 4),          // the header alone
				fragment(msg, 3, 2),       // the length across records
				fragment(msg, len(msg)-1), // all but the last byte
			}
			for _, k := range []int{2, 3, 7, 50, len(msg)} {
				variants = append(variants, randomFragment(rng, msg, k))
			}
			for i, v := range variants {
				info, err := Parse(v)
				if err != nil {
					t.Fatalf("variant %d: Parse: %v", i, err)
				}
				checkInfo(t, info, c)
				if !bytes.Equal(info.Raw, v) {
					t.Errorf("variant %d: Parse: Raw is not the input", i)
				}
				for _, rd := range readers {
					src := bytes.NewReader(append(slices.Clip(v), "after"...))
					info, err := Read(rd.wrap(src))
					if err != nil {
						t.Fatalf("variant %d: Read/%s: %v", i, rd.name, err)
					}
					checkInfo(t, info, c)
					if !bytes.Equal(info.Raw, v) || !rd.readsAhead && src.Len() != len("after") {
						t.Errorf("variant %d: Read/%s: Raw of %d bytes, %d left; want %d and 5", i, rd.name, len(info.Raw), src.Len(), len(v))
					}
				}
			}
		})
	}
}

func TestTruncated(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(3, 4))
	cases := clientCases(nil)
	for _, c := range []clientCase{cases[1], cases[5]} {
		raw := capture(t, c.cfg())
		frag := randomFragment(rng, messageOf(t, raw), 9)
		for _, wire := range [][]byte{raw, frag} {
			for i := range len(wire) {
				if _, err := Parse(wire[:i]); !errors.Is(err, ErrTruncated) {
					t.Fatalf("%s: Parse of %d/%d bytes: %v, want ErrTruncated", c.name, i, len(wire), err)
				}
				info, err := Read(bytes.NewReader(wire[:i]))
				if !errors.Is(err, ErrTruncated) {
					t.Fatalf("%s: Read of %d/%d bytes: %v, want ErrTruncated", c.name, i, len(wire), err)
				}
				if !bytes.Equal(info.Raw, wire[:i]) {
					t.Fatalf("%s: Read of %d bytes: Raw has %d", c.name, i, len(info.Raw))
				}
			}
		}
	}
}

func TestSynthetic(t *testing.T) {
	grease := []byte{0x1a, 0x1a}
	many := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("p%d", i))
		}
		return out
	}
	var manyExts []ext
	for i := range 40 {
		manyExts = append(manyExts, ext{0x1000 + i, nil})
	}
	manyExts = append(manyExts, hostExt("many.example"))
	tests := []struct {
		name     string
		s        synth
		sni      string
		alpn     []string
		versions []uint16
		legacy   uint16
		ech      bool
	}{
		{name: "no extensions", s: synth{noExt: true, version: 0x0301}, legacy: 0x0301},
		{name: "empty extensions block", s: synth{exts: nil}, legacy: 0x0303},
		{name: "no session ID", s: synth{sessionID: []byte{}, exts: []ext{hostExt("x.example")}}, sni: "x.example", legacy: 0x0303},
		{name: "GREASE everywhere", s: synth{exts: []ext{
			{0x0a0a, nil},
			hostExt("g.example"),
			alpnExt(string(grease), "h2"),
			versExt(0x2a2a, 0x0304, 0x0303),
			{0xfafa, []byte{0}},
		}}, sni: "g.example", alpn: []string{string(grease), "h2"}, versions: []uint16{0x2a2a, 0x0304, 0x0303}, legacy: 0x0303},
		{name: "SNI with other name types", s: synth{exts: []ext{sniExt(sniName{7, "opaque"}, sniName{0, "host.example"}, sniName{9, "more"})}}, sni: "host.example", legacy: 0x0303},
		{name: "SNI with no host_name", s: synth{exts: []ext{sniExt(sniName{7, "opaque"})}}, legacy: 0x0303},
		{name: "SNI raw, not normalised", s: synth{exts: []ext{hostExt("WWW.Example.COM.")}}, sni: "WWW.Example.COM.", legacy: 0x0303},
		{name: "ECH outer", s: synth{exts: []ext{hostExt("public.example"), {extEncryptedHello, []byte{0, 1, 2}}, versExt(0x0304)}}, sni: "public.example", versions: []uint16{0x0304}, ech: true, legacy: 0x0303},
		{name: "many ALPN", s: synth{exts: []ext{alpnExt(many(9)...), hostExt("h.example")}}, sni: "h.example", alpn: many(9), legacy: 0x0303},
		{name: "many versions", s: synth{exts: []ext{versExt(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)}}, versions: []uint16{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, legacy: 0x0303},
		{name: "many extensions", s: synth{exts: manyExts}, sni: "many.example", legacy: 0x0303},
		{name: "mixed ALPN", s: synth{exts: []ext{alpnExt("x1", "h2", "abc", "http/1.1", "acme-tls/1")}}, alpn: []string{"x1", "h2", "abc", "http/1.1", "acme-tls/1"}, legacy: 0x0303},
		{name: "SSL 3.0 legacy_version", s: synth{version: 0x0300, noExt: true}, legacy: 0x0300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wire := tt.s.wire()
			info, err := Parse(wire)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := &Info{ServerName: tt.sni, ALPN: tt.alpn, Versions: tt.versions, LegacyVersion: tt.legacy, ECH: tt.ech}
			if !sameInfo(info, want) {
				t.Errorf("Parse = %+v\nwant %+v", info, want)
			}
			info2, err := Read(iotest.OneByteReader(bytes.NewReader(wire)))
			if err != nil || !sameInfo(info2, want) || !bytes.Equal(info2.Raw, wire) {
				t.Errorf("Read = %+v, %v", info2, err)
			}
		})
	}
}

func TestMaxVersion(t *testing.T) {
	for _, tt := range []struct {
		info Info
		want uint16
	}{
		{Info{LegacyVersion: 0x0303}, 0x0303},
		{Info{LegacyVersion: 0x0303, Versions: []uint16{0x0a0a, 0x0304, 0x0303}}, 0x0304},
		{Info{LegacyVersion: 0x0303, Versions: []uint16{0xfafa}}, 0x0303},
	} {
		if got := tt.info.MaxVersion(); got != tt.want {
			t.Errorf("%+v.MaxVersion() = %#04x, want %#04x", tt.info, got, tt.want)
		}
	}
	for v := range 1 << 16 {
		want := v>>8 == v&0xff && v&0x0f == 0x0a
		if IsGREASE(uint16(v)) != want {
			t.Fatalf("IsGREASE(%#04x) = %v", v, !want)
		}
	}
}

// TestErrors feeds hostile and broken input to Parse and to Read (a byte at
// a time), which must agree on the error and consume no more than the
// records they looked at.
func TestErrors(t *testing.T) {
	good := synth{exts: []ext{hostExt("a.example"), alpnExt("h2")}}
	msg := good.msg()
	withExts := func(exts ...ext) []byte { return synth{exts: exts}.wire() }
	sized := func(bodyLen int) []byte { // a hello message whose body has bodyLen bytes
		return handshakeMsg(1, synth{exts: []ext{{21, make([]byte, bodyLen-len(synth{exts: []ext{{21, nil}}}.body()))}}}.body())
	}
	tinyRecords := func(n int) []int { return slices.Repeat([]int{1}, n) }
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), ErrPlainHTTP},
		{"HTTP/2 preface", []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), ErrPlainHTTP},
		{"HTTP cut short", []byte("POS"), ErrPlainHTTP},
		{"SSH", []byte("SSH-2.0-OpenSSH_9.6\r\n"), ErrNotTLS},
		{"alert record", record(0x15, 0x0303, []byte{2, 40}), ErrNotTLS},
		{"SSLv2 hello", cat([]byte{0x80, 0x2e, 0x01, 0x03, 0x01}, make([]byte, 0x2b)), ErrUnsupportedVersion},
		{"record version 2", cat([]byte{0x16, 0x02, 0x00}, vec16(msg)), ErrUnsupportedVersion},
		{"record version 0x0403", cat([]byte{0x16, 0x04, 0x03}, vec16(msg)), ErrUnsupportedVersion},
		{"legacy_version 0x0200", synth{version: 0x0200}.wire(), ErrUnsupportedVersion},
		{"ServerHello", record(0x16, 0x0303, handshakeMsg(2, good.body())), ErrNotClientHello},
		{"ServerHello fragmented", fragment(handshakeMsg(2, good.body()), 1), ErrNotClientHello},
		{"empty record", cat(record(0x16, 0x0301, nil), good.wire()), ErrMalformed},
		{"record over 16 KiB", cat([]byte{0x16, 0x03, 0x01, 0x40, 0x01}, msg), ErrTooLarge},
		{"record length 0xffff", cat([]byte{0x16, 0x03, 0x01, 0xff, 0xff}, msg), ErrTooLarge},
		{"handshake length 0xffffff", record(0x16, 0x0301, []byte{1, 0xff, 0xff, 0xff, 3, 3}), ErrTooLarge},
		{"handshake length 16385", record(0x16, 0x0301, []byte{1, 0, 0x40, 0x01, 3, 3}), ErrTooLarge},
		{"body of 16385", fragment(sized(16385), 16384), ErrTooLarge},
		{"1-byte records past MaxBytes", fragment(sized(3000), tinyRecords(3100)...), ErrTooLarge},
		{"handshake shorter than the record", record(0x16, 0x0301, cat(msg, []byte{0})), ErrMalformed},
		{"second message in the record", record(0x16, 0x0301, cat(msg, handshakeMsg(1, nil))), ErrMalformed},
		{"next record overruns the hello", cat(record(0x16, 0x0301, msg[:10]), record(0x16, 0x0301, cat(msg[10:], []byte{0}))), ErrMalformed},
		{"alert between fragments", cat(record(0x16, 0x0301, msg[:10]), record(0x15, 0x0303, []byte{2, 40}), record(0x16, 0x0301, msg[10:])), ErrMalformed},
		{"CCS between fragments", cat(record(0x16, 0x0301, msg[:2]), record(0x14, 0x0303, []byte{1})), ErrMalformed},
		{"empty body", record(0x16, 0x0301, handshakeMsg(1, nil)), ErrMalformed},
		{"body of 34", record(0x16, 0x0301, handshakeMsg(1, good.body()[:34])), ErrMalformed},
		{"session ID of 33", synth{sessionID: make([]byte, 33)}.wire(), ErrMalformed},
		{"session ID overruns", record(0x16, 0x0301, handshakeMsg(1, cat(u16(0x0303), make([]byte, 32), []byte{20}, make([]byte, 5)))), ErrMalformed},
		{"no cipher suites", synth{suites: []byte{}}.wire(), ErrMalformed},
		{"odd cipher suites", synth{suites: []byte{0x13, 0x01, 0x13}}.wire(), ErrMalformed},
		{"cipher suites overrun", record(0x16, 0x0301, handshakeMsg(1, cat(u16(0x0303), make([]byte, 32), []byte{0}, u16(200), make([]byte, 10)))), ErrMalformed},
		{"missing cipher suites", record(0x16, 0x0301, handshakeMsg(1, cat(u16(0x0303), make([]byte, 32), []byte{0}))), ErrMalformed},
		{"no compression methods", synth{compression: []byte{}}.wire(), ErrMalformed},
		{"missing compression methods", record(0x16, 0x0301, handshakeMsg(1, cat(u16(0x0303), make([]byte, 32), []byte{0}, u16(2), u16(0x1301)))), ErrMalformed},
		{"one stray byte after compression", synth{noExt: true, trailing: []byte{0}}.wire(), ErrMalformed},
		{"garbage after extensions", synth{exts: []ext{hostExt("a.example")}, trailing: []byte{0, 0}}.wire(), ErrMalformed},
		{"extensions length short", synth{extsRaw: []byte{0, 0, 0}}.wire(), ErrMalformed},
		{"extension overruns", synth{extsRaw: cat(u16(0), u16(10), []byte{1, 2})}.wire(), ErrMalformed},
		{"duplicate extension", withExts(hostExt("a.example"), alpnExt("h2"), hostExt("b.example")), ErrMalformed},
		{"duplicate unknown extension", withExts(ext{0x3374, nil}, ext{0x3374, nil}), ErrMalformed},
		{"duplicate GREASE extension", withExts(ext{0x0a0a, nil}, ext{0x0a0a, []byte{0}}), ErrMalformed},
		{"duplicate after 16 high extensions", withExts(slices.Concat(func() []ext {
			var e []ext
			for i := range 20 {
				e = append(e, ext{0x2000 + i, nil})
			}
			return e
		}(), []ext{{0x2013, nil}})...), ErrMalformed},
		{"SNI empty extension", withExts(ext{extServerName, nil}), ErrMalformed},
		{"SNI empty list", withExts(ext{extServerName, u16(0)}), ErrMalformed},
		{"SNI list length wrong", withExts(ext{extServerName, cat(u16(20), []byte{0}, vec16([]byte("a.example")))}), ErrMalformed},
		{"SNI empty host_name", withExts(sniExt(sniName{0, ""})), ErrMalformed},
		{"SNI empty other name", withExts(sniExt(sniName{0, "a.example"}, sniName{3, ""})), ErrMalformed},
		{"SNI two host_names", withExts(sniExt(sniName{0, "a.example"}, sniName{0, "b.example"})), ErrMalformed},
		{"SNI entry cut short", withExts(ext{extServerName, vec16([]byte{0, 0})}), ErrMalformed},
		{"SNI name overruns", withExts(ext{extServerName, vec16(cat([]byte{0}, u16(50), []byte("a.example")))}), ErrMalformed},
		{"ALPN empty extension", withExts(ext{extALPN, nil}), ErrMalformed},
		{"ALPN empty list", withExts(ext{extALPN, u16(0)}), ErrMalformed},
		{"ALPN empty name", withExts(alpnExt("h2", "")), ErrMalformed},
		{"ALPN list length wrong", withExts(ext{extALPN, cat(u16(9), vec8([]byte("h2")))}), ErrMalformed},
		{"ALPN name overruns", withExts(ext{extALPN, vec16([]byte{5, 'h', '2'})}), ErrMalformed},
		{"versions empty", withExts(ext{extSupportedVersions, nil}), ErrMalformed},
		{"versions odd", withExts(ext{extSupportedVersions, []byte{3, 3, 4, 3}}), ErrMalformed},
		{"versions zero", withExts(ext{extSupportedVersions, []byte{0}}), ErrMalformed},
		{"versions length wrong", withExts(ext{extSupportedVersions, []byte{4, 3, 4}}), ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse: %v, want %v", err, tt.want)
			}
			src := &countingReader{r: bytes.NewReader(tt.in)}
			info, rerr := Read(iotest.OneByteReader(src))
			if !errors.Is(rerr, tt.want) {
				t.Fatalf("Read: %v, want %v", rerr, tt.want)
			}
			if src.n > MaxBytes || !bytes.Equal(info.Raw, tt.in[:src.n]) {
				t.Errorf("Read consumed %d bytes, Raw has %d", src.n, len(info.Raw))
			}
			if errors.Is(tt.want, ErrNotTLS) && src.n > recordHeaderLen {
				t.Errorf("Read consumed %d bytes of a non-TLS stream", src.n)
			}
			t.Log(rerr)
		})
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestLimits checks the exact bounds: the largest hello passes in 2 and in
// 64 records, and one record more is refused before it is read.
func TestLimits(t *testing.T) {
	base := synth{exts: []ext{hostExt("max.example"), {21, nil}}}
	pad := MaxHandshakeLen - len(base.body())
	m := handshakeMsg(1, synth{exts: []ext{hostExt("max.example"), {21, make([]byte, pad)}}}.body())
	if len(m) != 4+MaxHandshakeLen {
		t.Fatalf("built a message of %d bytes", len(m))
	}
	sizes := func(n int) []int { // n records, the first n-1 of 16 bytes
		return slices.Repeat([]int{16}, n-1)
	}
	for _, tt := range []struct {
		records int
		want    error
	}{
		{2, nil},
		{64, nil},
		{65, ErrTooLarge},
	} {
		var wire []byte
		if tt.records == 2 {
			wire = fragment(m, 16384)
		} else {
			wire = fragment(m, sizes(tt.records)...)
		}
		if got := bytes.Count(wire, []byte{0x16, 0x03, 0x01}); got < tt.records {
			t.Fatalf("built %d records", got)
		}
		info, err := Parse(wire)
		if !errors.Is(err, tt.want) || err == nil && info.ServerName != "max.example" {
			t.Errorf("%d records: Parse: %v", tt.records, err)
		}
		src := &countingReader{r: bytes.NewReader(wire)}
		if _, err := Read(src); !errors.Is(err, tt.want) || src.n > MaxBytes {
			t.Errorf("%d records: Read: %v after %d bytes", tt.records, err, src.n)
		}
		if tt.want == nil && len(wire) > MaxBytes {
			t.Errorf("%d records take %d bytes, over MaxBytes", tt.records, len(wire))
		}
	}
	if MaxBytes != 16708 {
		t.Errorf("MaxBytes = %d, documented as 16708", MaxBytes)
	}
}

func TestErrorMessages(t *testing.T) {
	_, err := Read(strings.NewReader("GET / HTTP/1.1\r\n"))
	if want := `reading ClientHello: not a TLS handshake: looks like plain HTTP (starts "GET /"; a client speaking http:// to a TLS port?)`; err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
	_, err = Parse(synth{exts: []ext{alpnExt("h2", "")}}.wire())
	if want := "parsing ClientHello: malformed: ALPN protocol name of 0 bytes where 0 remain"; err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
}

func TestReadPassesErrors(t *testing.T) {
	wire := synth{exts: []ext{hostExt("a.example")}}.wire()
	boom := errors.New("boom")
	info, err := Read(iotest.TimeoutReader(io.MultiReader(bytes.NewReader(wire[:7]), iotest.ErrReader(boom))))
	if !errors.Is(err, iotest.ErrTimeout) || errors.Is(err, ErrTruncated) {
		t.Errorf("Read: %v, want the reader's error", err)
	}
	if len(info.Raw) == 0 || !bytes.HasPrefix(wire, info.Raw) {
		t.Errorf("Raw = %x", info.Raw)
	}
}

// TestAllocs pins the allocation counts the package documents.
func TestAllocs(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("allocation counts differ under -race")
	}
	raw := capture(t, clientCases(nil)[5].cfg())
	if n := testing.AllocsPerRun(100, func() { Parse(raw) }); n > 2 {
		t.Errorf("Parse: %v allocations, want at most 2", n)
	}
	r := bytes.NewReader(raw)
	if n := testing.AllocsPerRun(100, func() { r.Reset(raw); Read(r) }); n > 3 {
		t.Errorf("Read: %v allocations, want at most 3", n)
	}
}
