// Command idleconns opens N TLS connections through a proxy, completes a
// request on each so that it is established end to end, leaves them all
// idle, and reports the proxy process's resident memory per connection
// (VmRSS delta / N, read from /proc/PID/status). Used by bench/proxy.sh.
//
//	go run ./bench/idleconns -addr 127.0.0.1:9443 -pid 1234 -n 5000
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func rssKiB(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			return strconv.Atoi(strings.Fields(line)[1])
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

func main() {
	addr := flag.String("addr", "", "proxy host:port")
	pid := flag.Int("pid", 0, "proxy process id")
	n := flag.Int("n", 5000, "connections")
	path := flag.String("path", "/1k", "path to request on each connection")
	flag.Parse()
	before, err := rssKiB(*pid)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	conns := make([]*tls.Conn, 0, *n)
	for i := range *n {
		c, err := tls.Dial("tcp", *addr, &tls.Config{InsecureSkipVerify: true, ServerName: "bench.example", NextProtos: []string{"http/1.1"}})
		if err != nil {
			fmt.Fprintf(os.Stderr, "connection %d: %v\n", i, err)
			os.Exit(1)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: bench.example\r\n\r\n", *path)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			fmt.Fprintf(os.Stderr, "connection %d: %v\n", i, err)
			os.Exit(1)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		conns = append(conns, c)
	}
	time.Sleep(2 * time.Second) // let the proxy settle
	after, err := rssKiB(*pid)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("idle proxied connections %d: proxy RSS %d KiB -> %d KiB, %.1f KiB per connection\n",
		*n, before, after, float64(after-before)/float64(*n))
	for _, c := range conns {
		c.Close()
	}
}
