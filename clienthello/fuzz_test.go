package clienthello

import (
	"bytes"
	"errors"
	"io"
	"maps"
	mrand "math/rand/v2"
	"net"
	"slices"
	"testing"
	"testing/iotest"
)

// seeds are real and synthetic hellos, whole and fragmented, plus a few
// broken ones.
func seeds(t testing.TB) [][]byte {
	rng := mrand.New(mrand.NewPCG(7, 8))
	list, _ := echKeys(t)
	var out [][]byte
	for _, c := range clientCases(list) {
		raw := capture(t, c.cfg())
		out = append(out, raw, randomFragment(rng, messageOf(t, raw), 4))
	}
	out = append(out,
		synth{noExt: true}.wire(),
		synth{exts: []ext{sniExt(sniName{1, "x"}, sniName{0, "a.example"}), alpnExt("\x0a\x0a", "h2"), versExt(0x3a3a, 0x0304), {extEncryptedHello, []byte{0}}}}.wire(),
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		[]byte{0x16, 0x03, 0x01, 0x00, 0x01, 0x01},
	)
	return out
}

// sentinel returns which of the package's errors err is.
func sentinel(err error) error {
	for _, s := range []error{ErrPlainHTTP, ErrNotTLS, ErrTruncated, ErrTooLarge, ErrMalformed, ErrNotClientHello, ErrUnsupportedVersion} {
		if errors.Is(err, s) {
			return s
		}
	}
	return err
}

// FuzzParse: Parse never panics, fails only with the package's errors, and
// what it accepts it accepts again from Raw alone, with the same result.
func FuzzParse(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := Parse(data)
		if err != nil {
			if s := sentinel(err); s == err {
				t.Fatalf("Parse: error %v is none of the package's", err)
			}
			return
		}
		if len(info.Raw) > len(data) || !bytes.Equal(info.Raw, data[:len(info.Raw)]) {
			t.Fatalf("Raw is not a prefix of the input")
		}
		again, err := Parse(info.Raw)
		if err != nil {
			t.Fatalf("Parse(Raw): %v", err)
		}
		if !sameInfo(info, again) || !bytes.Equal(again.Raw, info.Raw) {
			t.Fatalf("Parse(Raw) = %+v, first %+v", again, info)
		}
		for _, p := range info.ALPN {
			if p == "" {
				t.Fatalf("empty ALPN protocol accepted")
			}
		}
	})
}

// FuzzRead: Read agrees with Parse on every input, a byte at a time too,
// consumes exactly Raw on success, and never more than MaxBytes.
func FuzzRead(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		want, perr := Parse(data)
		for _, wrap := range []func(io.Reader) io.Reader{
			func(r io.Reader) io.Reader { return r },
			iotest.OneByteReader,
		} {
			src := &countingReader{r: bytes.NewReader(data)}
			info, err := Read(wrap(src))
			if sentinel(err) != sentinel(perr) {
				t.Fatalf("Read: %v; Parse: %v", err, perr)
			}
			if src.n > MaxBytes || !bytes.Equal(info.Raw, data[:src.n]) {
				t.Fatalf("Read consumed %d bytes, Raw has %d", src.n, len(info.Raw))
			}
			if err == nil && (!sameInfo(info, want) || !bytes.Equal(info.Raw, want.Raw)) {
				t.Fatalf("Read = %+v; Parse = %+v", info, want)
			}
		}
	})
}

func benchHellos(b *testing.B) map[string][]byte {
	cases := clientCases(nil)
	chrome := synth{exts: []ext{
		{0x0a0a, nil}, hostExt("www.example.com"), {23, nil}, {0xff01, []byte{0}},
		{10, []byte{0, 8, 0x0a, 0x0a, 0, 0x1d, 0, 0x17, 0, 0x18}}, {11, []byte{1, 0}},
		{35, nil}, alpnExt("h2", "http/1.1"), {5, []byte{1, 0, 0, 0, 0}},
		{13, make([]byte, 20)}, {18, nil}, {51, make([]byte, 43)}, {45, []byte{1, 1}},
		versExt(0x2a2a, 0x0304, 0x0303), {27, []byte{2, 0, 2}}, {0x4469, []byte{0, 3, 2, 'h', '2'}},
		{0x1a1a, []byte{0}},
	}}
	// Pad with the padding extension (21) to a 512-byte record, as
	// browsers do.
	base := len(chrome.wire())
	chrome.exts = append(chrome.exts, ext{21, make([]byte, 512-base-4)})
	return map[string][]byte{
		"chrome-like-512B":   chrome.wire(),
		"go-tls13-x25519":    capture(b, cases[9].cfg()),
		"go-tls13-mlkem":     capture(b, cases[5].cfg()),
		"go-tls13-8-records": randomFragment(mrand.New(mrand.NewPCG(9, 9)), messageOf(b, capture(b, cases[5].cfg())), 8),
	}
}

func BenchmarkParse(b *testing.B) {
	hellos := benchHellos(b)
	for _, name := range slices.Sorted(maps.Keys(hellos)) {
		raw := hellos[name]
		b.Run(name+"/"+itoa(len(raw)), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := Parse(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func itoa(n int) string {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(buf[i:]) + "B"
		}
	}
}

// memConn is a net.Conn over a byte slice, to time Peek without a kernel.
type memConn struct {
	net.Conn // nil: only Read is used
	bytes.Reader
}

func (m *memConn) Read(p []byte) (int, error) { return m.Reader.Read(p) }

// BenchmarkPeek times Peek from memory, and over one loopback TCP
// connection on which a writer sends hellos back to back: each Peek
// consumes exactly one, so no connect is timed, but real reads are.
func BenchmarkPeek(b *testing.B) {
	raw := benchHellos(b)["chrome-like-512B"]
	b.Run("memory", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		var m memConn
		for b.Loop() {
			m.Reader.Reset(raw)
			if _, _, err := Peek(&m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("tcp", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer client.Close() // ends the writer
		go func() {
			batch := bytes.Repeat(raw, 64)
			for {
				if _, err := client.Write(batch); err != nil {
					return
				}
			}
		}()
		conn, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			info, _, err := Peek(conn)
			if err != nil || info.ServerName != "www.example.com" {
				b.Fatal(err)
			}
		}
	})
}
