package clienthello

import (
	"io"
	"net"
	"testing"
)

// TestReplay checks the connection a server that read the hello itself
// hands on: the replayed bytes first, then the socket, and the client a
// PROXY header named as RemoteAddr when there was one.
func TestReplay(t *testing.T) {
	named := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4711}
	tests := []struct {
		name   string
		prefix string
		remote net.Addr
	}{
		{"hello and PROXY client", "HELLO", named},
		{"hello only", "HELLO", nil},
		{"nothing to replay", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			c := Replay(server, []byte(tt.prefix), tt.remote)
			defer c.Close()
			if got := string(c.Buffered()); got != tt.prefix {
				t.Errorf("Buffered = %q, want %q", got, tt.prefix)
			}
			want := tt.remote
			if want == nil {
				want = server.RemoteAddr()
			}
			if got := c.RemoteAddr(); got != want {
				t.Errorf("RemoteAddr = %v, want %v", got, want)
			}
			go func() {
				client.Write([]byte(" REST"))
				client.Close()
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.prefix+" REST" {
				t.Errorf("read %q, want %q", got, tt.prefix+" REST")
			}
			if b := c.Buffered(); b != nil {
				t.Errorf("Buffered after reading = %q, want nil", b)
			}
		})
	}
}
