// Command handshake measures full TLS handshakes per second against a
// server: each connection does one complete handshake (no session
// resumption: every client config is fresh and has no session cache), then
// closes. It is how bench/proxy.sh compares tlsalpn's terminate mode with a
// minimal crypto/tls server.
//
//	go run ./bench/handshake -addr 127.0.0.1:9443 -c 32 -d 10s
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "", "host:port to connect to")
	sni := flag.String("sni", "bench.example", "server name to send")
	alpn := flag.String("alpn", "http/1.1", "ALPN protocol to offer (empty for none)")
	conc := flag.Int("c", 32, "concurrent connections")
	dur := flag.Duration("d", 10*time.Second, "how long to run")
	serve := flag.String("serve", "", "instead of measuring, run a minimal crypto/tls server on this address with -cert/-key")
	certFile := flag.String("cert", "", "PEM certificate chain (with -serve)")
	keyFile := flag.String("key", "", "PEM key (with -serve)")
	flag.Parse()
	if *serve != "" {
		if err := minimalServer(*serve, *certFile, *keyFile); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	var protos []string
	if *alpn != "" {
		protos = []string{*alpn}
	}
	var ok, failed atomic.Int64
	deadline := time.Now().Add(*dur)
	var wg sync.WaitGroup
	for range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				cfg := &tls.Config{InsecureSkipVerify: true, ServerName: *sni, NextProtos: protos}
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", *addr, cfg)
				if err != nil {
					failed.Add(1)
					continue
				}
				ok.Add(1)
				c.Close()
			}
		}()
	}
	wg.Wait()
	fmt.Printf("handshakes/s %.0f  (ok %d, failed %d, %s, %d connections)\n", float64(ok.Load())/dur.Seconds(), ok.Load(), failed.Load(), *dur, *conc)
}

// minimalServer is the comparison: accept, handshake, wait for the client
// to close, close. Nothing else.
func minimalServer(addr, certFile, keyFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			c.(*tls.Conn).Handshake()
			var b [1]byte
			c.Read(b[:])
		}()
	}
}
