package clienthello_test

import (
	"io"
	"log"
	"net"
	"slices"
	"time"

	"github.com/tlsalpn/tlsalpn/clienthello"
)

// A front end on :443 routes acme-tls/1 handshakes to its responder and
// splices everything else to a backend.
func ExamplePeek() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			info, pc, err := clienthello.Peek(conn)
			if err != nil {
				log.Print(err) // errors.Is(err, clienthello.ErrPlainHTTP) etc.
				return
			}
			conn.SetReadDeadline(time.Time{})
			if slices.Equal(info.ALPN, []string{"acme-tls/1"}) {
				// hand pc to tls.Server with the challenge certificate
				return
			}
			backend, err := net.Dial("tcp", "127.0.0.1:8443")
			if err != nil {
				return
			}
			defer backend.Close()
			go io.Copy(backend, pc) // replays info.Raw, then splice(2)
			io.Copy(pc, backend)
		}()
	}
}
