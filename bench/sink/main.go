//go:build linux

// Command sink is the cheapest backend a relayed connection can have, for
// the hosting benchmarks (bench/hosting.sh): it listens on -ports loopback
// ports, writes one byte ("+") to every connection it accepts, so that the
// client knows the front door relayed it end to end, and then either holds
// the connection open, reading and discarding (idle connections, by the
// hundred thousand: nginx would need a worker process per ~20,000 of them
// and a TLS handshake each), or closes it at once (-close: a burst of new
// connections whose backend must cost nothing).
//
// One destination port gives the front door only as many connections as
// the ephemeral port range has ports (about 28,000), hence several ports.
// It prints "sink ADDR ADDR …" once listening and runs until SIGTERM or
// SIGINT, or until stdin closes when -stdin is set.
//
//	go run ./bench/sink -ports 4
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tlsalpn/tlsalpn/bench/internal/loadgen"
)

func main() {
	ports := flag.Int("ports", 1, "number of loopback ports to listen on")
	closeAfter := flag.Bool("close", false, "close each connection right after its greeting byte")
	stdin := flag.Bool("stdin", false, "exit when stdin closes")
	conns := flag.Int("conns", 0, "connections it must be able to hold at once: RLIMIT_NOFILE is raised to that, or it fails saying so")
	flag.Parse()
	if *ports < 1 || *conns < 0 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: sink [-ports N] [-conns N] [-close] [-stdin]")
		os.Exit(2)
	}
	if err := loadgen.RaiseNoFile(uint64(*conns) + 256); err != nil {
		fmt.Fprintln(os.Stderr, "sink:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *stdin {
		go func() {
			io.Copy(io.Discard, os.Stdin)
			stop()
		}()
	}
	var accepted, failed atomic.Int64
	addrs := make([]string, *ports)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintf(os.Stderr, "sink: listening on port %d of %d: %v\n", i+1, *ports, err)
			os.Exit(1)
		}
		context.AfterFunc(ctx, func() { ln.Close() })
		addrs[i] = ln.Addr().String()
		go serve(ln, *closeAfter, &accepted, &failed)
	}
	fmt.Println("sink", strings.Join(addrs, " "))
	<-ctx.Done()
	fmt.Fprintf(os.Stderr, "sink: %d connections accepted, %d accept errors\n", accepted.Load(), failed.Load())
}

// serve accepts until ln is closed. An accept error other than the close
// (EMFILE when the descriptor limit is reached) is counted and retried
// after a pause, as a server would; the count is printed at exit, so a
// sink that ran out of descriptors says so.
func serve(ln net.Listener, closeAfter bool, accepted, failed *atomic.Int64) {
	greeting := []byte("+")
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if n := failed.Add(1); n == 1 {
				fmt.Fprintf(os.Stderr, "sink: accept on %s: %v\n", ln.Addr(), err)
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		accepted.Add(1)
		if closeAfter {
			c.Write(greeting)
			c.Close()
			continue
		}
		go func() {
			defer c.Close()
			if _, err := c.Write(greeting); err != nil {
				return
			}
			// Hold until the client goes, with a buffer small enough
			// that a hundred thousand of them cost the machine little
			// (io.Copy would hold 8 KiB each while it waits).
			var b [64]byte
			for {
				if _, err := c.Read(b[:]); err != nil {
					return
				}
			}
		}()
	}
}
