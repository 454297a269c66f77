package freeport

import (
	"net"
	"strconv"
	"testing"
)

// TestPick: the port is below the ephemeral range and can be bound.
func TestPick(t *testing.T) {
	for range 20 {
		p := Pick(t)
		if p >= ephemeralLow() || p < 1024 {
			t.Fatalf("port %d: want one in [1024, %d)", p, ephemeralLow())
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d cannot be bound: %v", p, err)
		}
		ln.Close()
	}
}
