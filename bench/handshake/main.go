// Command handshake measures full TLS handshakes per second against a
// server: each connection does one complete handshake (no session
// resumption: every client config is fresh and has no session cache), then
// closes. It is how bench/proxy.sh compares tlsalpn's terminate mode with a
// minimal crypto/tls server.
//
// With -get it also asks for one page per connection and reads it to the
// end, as wrk -H 'Connection: close' does; unlike wrk, each connection
// waits for the server's answers in the runtime's poller instead of
// trying again at once (wrk keeps its handshake's writable event and
// retries SSL_connect until the server's flight is in), so the client's
// CPU does not grow with the time a proxy takes to pass the handshake on.
//
//	go run ./bench/handshake -addr 127.0.0.1:9443 -c 32 -d 10s
//	go run ./bench/handshake -addr 127.0.0.1:443 -sni localhost -c 64 -d 10s -get /1k
package main

import (
	"bytes"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
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
	get := flag.String("get", "", "after the handshake, GET this path (HTTP/1.1, Connection: close) and read the answer to its end")
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
				if *get != "" {
					err = fetch(c, *sni, *get)
				}
				c.Close()
				if err != nil {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	fmt.Printf("handshakes/s %.0f  (ok %d, failed %d, %s, %d connections)\n", float64(ok.Load())/dur.Seconds(), ok.Load(), failed.Load(), *dur, *conc)
}

// fetch asks c for path and reads the answer to the end of the stream,
// which must be a 200.
func fetch(c net.Conn, host, path string) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host); err != nil {
		return err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(b, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("GET %s: not a 200: %.40q", path, b)
	}
	return nil
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
