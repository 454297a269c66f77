package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/tlsalpn/tlsalpn/challenge"
	"github.com/tlsalpn/tlsalpn/internal/democa"
	"github.com/tlsalpn/tlsalpn/metrics"
)

// scrape is one /metrics answer, parsed.
type scrape struct {
	text     string
	families map[string]*dto.MetricFamily
}

func getScrape(t *testing.T, admin string) *scrape {
	t.Helper()
	body, code := adminGet(t, admin, "/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing the scrape: %v\n%s", err, body)
	}
	return &scrape{text: body, families: fams}
}

// value is the value of the series name{labels…} (label pairs as
// "k=v"), and whether it is there. A histogram's value is its count.
func (s *scrape) value(name string, labels ...string) (float64, bool) {
	f := s.families[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, lp := range m.Label {
			have[lp.GetName()] = lp.GetValue()
		}
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// sum adds up every series of name (counters and gauges).
func (s *scrape) sum(name string) float64 {
	var n float64
	if f := s.families[name]; f != nil {
		for _, m := range f.Metric {
			n += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return n
}

func adminDo(t *testing.T, method, admin, path, token string) (string, int) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+admin+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 60 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode
}

func adminGet(t *testing.T, admin, path, token string) (string, int) {
	t.Helper()
	return adminDo(t, http.MethodGet, admin, path, token)
}

var adminLine = regexp.MustCompile(`admin API on http://(\S+) `)

// adminAddr waits for serve's banner and returns the admin API's address.
func adminAddr(t *testing.T, stdout *syncBuffer) string {
	t.Helper()
	waitFor(t, "serve to announce its admin API", 10*time.Second, func() bool { return adminLine.MatchString(stdout.String()) })
	return adminLine.FindStringSubmatch(stdout.String())[1]
}

// plainEcho is a plain TCP echo server: the backend of a route that
// terminates TLS in the front door (mode tcp).
func plainEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// echoOnce sends ping through c and expects it back, then closes c.
func echoOnce(t *testing.T, c net.Conn) {
	t.Helper()
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
}

// TestServeMetricsDuringIssuance is issue 12's acceptance for metrics and
// the admin API: "tlsalpn serve --admin" obtains a certificate from
// Pebble through its own front door while the test scrapes /metrics, and
// every metric says what happened: one order, one answered validation
// handshake, the certificate's expiry equal to the issued NotAfter, its
// renewal window, the deployment, the connections relayed and terminated
// and those refused; then POST /renew renews it through the same path as
// "tlsalpn renew --force", and the metrics follow. promtool accepts the
// scrape.
func TestServeMetricsDuringIssuance(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	tlsBackend := echoTLSBackend(t, "backend.example")
	plainBackend := plainEcho(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	cfgFile := filepath.Join(dir, "serve.yaml")
	cfg := fmt.Sprintf(`listen: %q
storage: %q
admin: 127.0.0.1:0
acme:
  ca: %q
  ca_root: %q
  email: ops@example.com
  agree_tos: true
  profile: default
proxy:
  steer: off
routes:
  - names: ["*"]
    backend: %q
  - names: [example.com]
    backend: %q
    mode: tcp
certificates:
  - names: [example.com]
    out: %q
  - names: [hookfail.example]
    out: %q
    deploy_hook: exit 3
`, ca.listen, filepath.Join(dir, "store"), ca.DirectoryURL(), ca.root, tlsBackend, plainBackend, out, filepath.Join(dir, "out2"))
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// While a challenge is pending (told ready, not yet validated), the
	// metrics and /status show it.
	var duringPending, duringStatus string
	var duringOnce sync.Once
	var adminOf atomic.Pointer[string]
	onChallenge := func() {
		duringOnce.Do(func() {
			// On the CA's goroutine: no t.Fatal here.
			for i := 0; adminOf.Load() == nil && i < 500; i++ {
				time.Sleep(10 * time.Millisecond)
			}
			if a := adminOf.Load(); a != nil {
				for _, l := range strings.Split(httpGetBody("http://"+*a+"/metrics"), "\n") {
					if strings.HasPrefix(l, "tlsalpn_challenges_pending ") {
						duringPending = l
					}
				}
				duringStatus = httpGetBody("http://" + *a + "/status")
			}
		})
	}
	ca.onChallenge.Store(&onChallenge)
	start := time.Now()
	// No preflight: every validation handshake counted is the CA's.
	stdout, stderr, stop := startServe(t, "--config", cfgFile, "--no-preflight")
	admin := adminAddr(t, stdout)
	adminOf.Store(&admin)

	if body, code := adminGet(t, admin, "/healthz", ""); code != http.StatusOK {
		t.Errorf("/healthz: %d %s", code, body)
	}
	waitFor(t, "the certificate to be deployed", 30*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(out, "fullchain.pem"))
		return err == nil
	})
	leaf := verifyChain(t, ca, filepath.Join(out, "fullchain.pem"), "example.com")

	// Traffic: one connection relayed to the TLS backend, one acme-tls/1
	// hello for a name with nothing pending (relayed too), one
	// terminated here for example.com, a plain-HTTP client and a PROXY
	// header from an untrusted address (refused).
	c, err := tls.Dial("tcp", ca.listen, &tls.Config{InsecureSkipVerify: true, ServerName: "other.example"})
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c)
	if c, err := tls.Dial("tcp", ca.listen, &tls.Config{InsecureSkipVerify: true, ServerName: "nothing.example", NextProtos: []string{"acme-tls/1"}}); err == nil {
		c.Close()
	}
	hsStart := time.Now()
	c, err = tls.Dial("tcp", ca.listen, &tls.Config{InsecureSkipVerify: true, ServerName: "example.com"})
	if err != nil {
		t.Fatalf("terminated route: %v", err)
	}
	hsTook := time.Since(hsStart)
	if got := c.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("terminated with serial %x, want the issued %x", got, leaf.SerialNumber)
	}
	echoOnce(t, c)
	for _, junk := range []string{"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "PROXY TCP4 192.0.2.1 192.0.2.2 1234 443\r\n"} {
		rc, err := net.Dial("tcp", ca.listen)
		if err != nil {
			t.Fatal(err)
		}
		rc.Write([]byte(junk))
		rc.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.Copy(io.Discard, rc) // the front door closes it
		rc.Close()
	}

	var s *scrape
	waitFor(t, "the connections and the renewal window to show in /metrics", 20*time.Second, func() bool {
		s = getScrape(t, admin)
		relayed, _ := s.value("tlsalpn_frontdoor_connections_total", "route=*", "path=relayed")
		term, _ := s.value("tlsalpn_frontdoor_connections_total", "route=example.com", "path=terminated")
		_, ari := s.value("tlsalpn_certificate_ari_window_end_timestamp_seconds", "certificate=example.com")
		hookFailed, _ := s.value("tlsalpn_renewal_deploy_failures_total")
		return relayed == 2 && term == 1 && ari && hookFailed == 1
	})
	orders := float64(ca.orders.Load())
	if orders != 2 {
		t.Errorf("the CA saw %v orders, want 2 (one per certificate)", orders)
	}
	notAfter := float64(leaf.NotAfter.Unix())
	ts := func(t time.Time) float64 { return float64(t.UnixMilli()) / 1e3 }
	checks := []struct {
		name   string
		labels []string
		want   func(v float64) bool
		what   string
	}{
		{"tlsalpn_renewal_attempts_total", []string{"trigger=missing"}, eq(2), "one order per missing certificate"},
		{"tlsalpn_renewal_attempts_total", []string{"trigger=due"}, eq(0), "no renewal"},
		{"tlsalpn_acme_requests_total", []string{"endpoint=newOrder", "code=201"}, eq(orders), "the orders the CA saw"},
		{"tlsalpn_acme_requests_total", []string{"endpoint=finalize", "code=200"}, eq(2), "one finalize per order"},
		{"tlsalpn_acme_requests_total", []string{"endpoint=directory", "code=200"}, atLeast(1), "the directory"},
		{"tlsalpn_acme_requests_total", []string{"endpoint=newAccount"}, atLeast(1), "an account"},
		{"tlsalpn_acme_requests_total", []string{"endpoint=challenge"}, atLeast(1), "the challenge told ready"},
		{"tlsalpn_acme_requests_total", []string{"endpoint=certificate", "code=200"}, eq(2), "the certificates downloaded"},
		{"tlsalpn_acme_requests_total", []string{"endpoint=renewalInfo", "code=200"}, atLeast(1), "renewal information"},
		{"tlsalpn_acme_request_duration_seconds", []string{"endpoint=newOrder"}, eq(orders), "a latency per order"},
		// Pebble validates each challenge from 3 connections at once
		// (concurrentValidations in its va package); the responder logs
		// each, and no preflight adds its own.
		{"tlsalpn_challenge_handshakes_answered_total", nil, eq(float64(strings.Count(stderr.String(), "serving tls-alpn-01 challenge"))), "as many as the responder logged"},
		{"tlsalpn_challenge_handshakes_answered_total", nil, eq(6), "Pebble's 3 validation handshakes for each of the 2 challenges"},
		{"tlsalpn_challenge_handshakes_refused_total", []string{"reason=not_pending"}, eq(1), "the acme-tls/1 hello for nothing.example"},
		{"tlsalpn_challenges_pending", nil, eq(0), "nothing pending after the order"},
		{"tlsalpn_certificate_stored", []string{"certificate=example.com"}, eq(1), "stored"},
		{"tlsalpn_certificate_expiry_timestamp_seconds", []string{"certificate=example.com"}, eq(notAfter), "the issued NotAfter"},
		{"tlsalpn_certificate_last_renewal_timestamp_seconds", []string{"certificate=example.com"}, between(ts(start)-1, ts(time.Now())), "obtained during the test"},
		{"tlsalpn_certificate_last_renewal_success", []string{"certificate=example.com"}, eq(1), "the order succeeded"},
		{"tlsalpn_certificate_renewal_failing_since_timestamp_seconds", []string{"certificate=example.com"}, eq(0), "not failing"},
		{"tlsalpn_certificate_last_deployment_timestamp_seconds", []string{"certificate=example.com"}, between(ts(start)-1, ts(time.Now())), "deployed during the test"},
		{"tlsalpn_certificate_last_deployment_success", []string{"certificate=example.com"}, eq(1), "deployed"},
		{"tlsalpn_certificate_last_deployment_success", []string{"certificate=hookfail.example"}, eq(0), "its deploy hook exits 3"},
		{"tlsalpn_certificate_last_renewal_success", []string{"certificate=hookfail.example"}, eq(1), "obtained, though not deployed"},
		{"tlsalpn_renewal_deploy_failures_total", nil, eq(1), "the hook that failed"},
		{"tlsalpn_certificate_ari_window_start_timestamp_seconds", []string{"certificate=example.com"}, between(float64(leaf.NotBefore.Unix()), notAfter), "a window inside the lifetime"},
		{"tlsalpn_certificate_ari_window_end_timestamp_seconds", []string{"certificate=example.com"}, between(float64(leaf.NotBefore.Unix()), notAfter), "a window inside the lifetime"},
		{"tlsalpn_certificate_next_renewal_timestamp_seconds", []string{"certificate=example.com"}, between(ts(time.Now()), notAfter), "renewal ahead, before expiry"},
		{"tlsalpn_frontdoor_connections_open", []string{"route=*", "path=relayed"}, eq(0), "all closed"},
		{"tlsalpn_frontdoor_bytes_total", []string{"route=*", "direction=in"}, atLeast(4 + 100), "a ClientHello and ping in"},
		{"tlsalpn_frontdoor_bytes_total", []string{"route=example.com", "direction=out"}, atLeast(4 + 500), "a certificate and ping out"},
		{"tlsalpn_frontdoor_tls_handshake_duration_seconds", []string{"route=example.com", "result=ok"}, eq(1), "one terminated handshake"},
		{"tlsalpn_frontdoor_refused_total", []string{"reason=bad_client_hello"}, eq(1), "the plain-HTTP client"},
		{"tlsalpn_frontdoor_refused_total", []string{"reason=untrusted_proxy"}, eq(1), "the PROXY header"},
		{"tlsalpn_frontdoor_route_steered", []string{"route=*"}, eq(0), "steer: off"},
		{"tlsalpn_status_up", nil, eq(1), "storage read"},
		{"process_cpu_seconds_total", nil, atLeast(0), "the process collector"},
		{"go_goroutines", nil, atLeast(1), "the Go collector"},
	}
	for _, c := range checks {
		v, ok := s.value(c.name, c.labels...)
		if !ok || !c.want(v) {
			t.Errorf("%s%v = %v (present %v): want %s", c.name, c.labels, v, ok, c.what)
		}
	}
	if v := s.sum("tlsalpn_renewal_failures_total"); v != 0 {
		t.Errorf("tlsalpn_renewal_failures_total sums to %v, want 0", v)
	}
	if v := s.sum("tlsalpn_acme_errors_total"); v != 0 {
		t.Errorf("tlsalpn_acme_errors_total sums to %v, want 0 (Pebble with strict nonces may say badNonce: then say so here)", v)
	}
	// The handshake histogram measured something. Not compared with the
	// client's own time: in TLS 1.3 the client's handshake ends before the
	// server has read its Finished, so the server's can be the longer.
	if f := s.families["tlsalpn_frontdoor_tls_handshake_duration_seconds"]; f != nil {
		for _, m := range f.Metric {
			if m.GetHistogram().GetSampleCount() == 0 {
				continue // result="failed"
			}
			if sum := m.GetHistogram().GetSampleSum(); sum <= 0 || sum > 30 {
				t.Errorf("terminate handshakes took %gs in all by the histogram (the client's whole dial %gs): want a positive duration", sum, hsTook.Seconds())
			}
		}
	}
	promtoolCheckMetrics(t, s.text)
	// The two certificates are ordered at once: one or both of their
	// challenges may be pending.
	var pendingSt metrics.Status
	if err := json.Unmarshal([]byte(duringStatus), &pendingSt); err != nil || len(pendingSt.PendingChallenges) == 0 {
		t.Errorf("while a challenge was pending, /status said %v %s", err, duringStatus)
	}
	for _, n := range pendingSt.PendingChallenges {
		if n != "example.com" && n != "hookfail.example" {
			t.Errorf("/status lists %q as pending; want only the certificates' names", n)
		}
	}
	if len(pendingSt.PendingChallenges) == 0 || (duringPending != "tlsalpn_challenges_pending 1" && duringPending != "tlsalpn_challenges_pending 2") {
		t.Errorf("while a challenge was pending, /metrics said %q; want 1 or 2", duringPending)
	}
	if testing.Verbose() {
		for _, l := range strings.Split(s.text, "\n") {
			if strings.HasPrefix(l, "tlsalpn_acme_requests_total") {
				t.Log(l)
			}
		}
	}

	// /readyz and /status.
	if body, code := adminGet(t, admin, "/readyz", ""); code != http.StatusOK {
		t.Errorf("/readyz: %d %s", code, body)
	}
	body, code := adminGet(t, admin, "/status", "")
	var st metrics.Status
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil {
		t.Fatalf("/status: %d %v %s", code, err, body)
	}
	if len(st.Certificates) != 2 || st.Certificates[1].DeployError == "" || st.Certificates[0].Name != "example.com" || st.Certificates[0].Serial != leaf.SerialNumber.Text(16) ||
		!st.Certificates[0].NotAfter.Equal(leaf.NotAfter) || st.Certificates[0].NextRenewalReason == "" || !st.Certificates[0].LastAttemptOK {
		t.Errorf("/status certificates: %s", body)
	}
	if len(st.Routes) != 2 || st.Routes[0].Steered || st.Routes[0].SteerNote == "" || st.Routes[1].Mode != "tcp" || len(st.PendingChallenges) != 0 || st.Listening == "" {
		t.Errorf("/status routes: %s", body)
	}

	// POST /renew, and what is not it.
	if _, code := adminGet(t, admin, "/renew?name=example.com", ""); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /renew: %d, want 405", code)
	}
	if body, code := adminDo(t, http.MethodPost, admin, "/renew?name=nope.example", ""); code != http.StatusNotFound {
		t.Errorf("POST /renew of an unknown name: %d %s, want 404", code, body)
	}
	body, code = adminDo(t, http.MethodPost, admin, "/renew?name=example.com", "")
	var rr metrics.RenewResult
	if err := json.Unmarshal([]byte(body), &rr); code != http.StatusOK || err != nil || rr.Serial == "" || rr.Serial == leaf.SerialNumber.Text(16) || rr.Error != "" {
		t.Fatalf("POST /renew: %d %v %s", code, err, body)
	}
	s = getScrape(t, admin)
	if v, _ := s.value("tlsalpn_renewal_attempts_total", "trigger=requested"); v != 1 {
		t.Errorf("requested attempts = %v after POST /renew, want 1", v)
	}
	if v, _ := s.value("tlsalpn_acme_requests_total", "endpoint=newOrder", "code=201"); v != float64(ca.orders.Load()) || v != 3 {
		t.Errorf("newOrder requests = %v, the CA saw %d, want 3", v, ca.orders.Load())
	}
	if v, _ := s.value("tlsalpn_certificate_expiry_timestamp_seconds", "certificate=example.com"); v != float64(rr.NotAfter.Unix()) {
		t.Errorf("expiry after the renewal = %v, want the new NotAfter %v", v, rr.NotAfter.Unix())
	}

	// A renewal the CA refuses: counted by the CA's error type, and the
	// certificate's renewals are failing from now on.
	ca.fail500.Store(true)
	failedAt := time.Now()
	body, code = adminDo(t, http.MethodPost, admin, "/renew?name=example.com", "")
	ca.fail500.Store(false)
	if err := json.Unmarshal([]byte(body), &rr); code != http.StatusBadGateway || err != nil || rr.Error == "" {
		t.Fatalf("POST /renew while the CA fails: %d %v %s; want 502 and the error", code, err, body)
	}
	s = getScrape(t, admin)
	for _, c := range []struct {
		name   string
		labels []string
		want   func(float64) bool
	}{
		{"tlsalpn_renewal_failures_total", []string{"reason=serverInternal"}, eq(1)},
		{"tlsalpn_acme_errors_total", []string{"type=serverInternal"}, atLeast(1)},
		{"tlsalpn_certificate_last_renewal_success", []string{"certificate=example.com"}, eq(0)},
		{"tlsalpn_certificate_renewal_failing_since_timestamp_seconds", []string{"certificate=example.com"}, between(ts(failedAt), ts(time.Now()))},
	} {
		if v, ok := s.value(c.name, c.labels...); !ok || !c.want(v) {
			t.Errorf("after a refused renewal, %s%v = %v (present %v)\n%s", c.name, c.labels, v, ok, grepLines(s.text, "_failures_total", "_errors_total"))
		}
	}
	promtoolCheckMetrics(t, s.text)
	if code := stop(); code != exitOK {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
}

// httpGetBody returns the body of GET url, or the error as text.
func httpGetBody(url string) string {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// grepLines returns the lines of text that contain any of subs.
func grepLines(text string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func eq(want float64) func(float64) bool { return func(v float64) bool { return v == want } }
func atLeast(want float64) func(float64) bool {
	return func(v float64) bool { return v >= want }
}
func between(lo, hi float64) func(float64) bool {
	return func(v float64) bool { return v >= lo && v <= hi && !math.IsNaN(v) }
}

// promtoolPath finds promtool, which scripts/ci-deps.sh installs (Debian's
// prometheus package). Where it cannot exist (no apt-get), the test is
// skipped and says so; on a Debian-like system its absence is a failure.
func promtoolPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	if _, aptErr := exec.LookPath("apt-get"); aptErr != nil || runtime.GOOS != "linux" {
		t.Skipf("promtool is not installed and this system has no apt-get to install it (scripts/ci-deps.sh): %v", err)
	}
	t.Fatalf("promtool is missing: run scripts/ci-deps.sh (it installs Debian's prometheus package): %v", err)
	return ""
}

// promtoolCheckMetrics runs "promtool check metrics" on a scrape.
func promtoolCheckMetrics(t *testing.T, text string) {
	t.Helper()
	cmd := exec.Command(promtoolPath(t), "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out.String())
	}
}

// TestServeAdminToken: with --admin-token-file, every admin request needs
// the bearer token. And while the CA refuses every order, serve is not
// ready, says which certificate it waits for, and the metrics say the
// certificate is missing and failing.
func TestServeAdminToken(t *testing.T) {
	ca := startCLICA(t, democa.Options{})
	ca.fail500.Store(true)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600)
	stdout, stderr, stop := startServe(t, "--listen", ca.listen, "--backend", echoTLSBackend(t, "b.example"), "--storage", filepath.Join(dir, "store"),
		"-d", "example.com", "--ca", ca.DirectoryURL(), "--ca-root", ca.root, "--email", "ops@example.com", "--agree-tos",
		"--steer", "off", "--admin", "127.0.0.1:0", "--admin-token-file", tokenFile)
	admin := adminAddr(t, stdout)
	waitFor(t, "the first order to fail", 20*time.Second, func() bool { return strings.Contains(stderr.String(), "obtaining certificate failed") })
	for _, c := range []struct {
		path, token string
		want        int
	}{
		{"/metrics", "", http.StatusUnauthorized},
		{"/status", "wrong", http.StatusUnauthorized},
		{"/healthz", "", http.StatusUnauthorized},
		{"/metrics", "s3cret-token", http.StatusOK},
		{"/healthz", "s3cret-token", http.StatusOK},
		{"/readyz", "s3cret-token", http.StatusServiceUnavailable},
	} {
		if body, code := adminGet(t, admin, c.path, c.token); code != c.want {
			t.Errorf("GET %s with token %q: %d %s, want %d", c.path, c.token, code, body, c.want)
		}
	}
	if body, _ := adminGet(t, admin, "/readyz", "s3cret-token"); !strings.Contains(body, "no certificate yet for [example.com]") {
		t.Errorf("/readyz says %q; want the certificate it waits for", body)
	}
	body, _ := adminGet(t, admin, "/metrics", "s3cret-token")
	for _, want := range []string{`tlsalpn_certificate_stored{certificate="example.com"} 0`, `tlsalpn_certificate_last_renewal_success{certificate="example.com"} 0`,
		`tlsalpn_renewal_failures_total{reason="serverInternal"} `, `tlsalpn_acme_errors_total{endpoint="newAccount",type="serverInternal"} `} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, grepLines(body, "tlsalpn_certificate", "failures", "errors"))
		}
	}
	if code := stop(); code != exitOK {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
	if strings.Contains(stdout.String()+stderr.String(), "s3cret-token") {
		t.Errorf("the token was written out:\n%s\n%s", stdout, stderr)
	}
}

// TestServeAdminUsage: an admin address serve must not listen on is a
// usage error (exit 2), before anything starts.
func TestServeAdminUsage(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	cfgFile := filepath.Join(dir, "serve.yaml")
	os.WriteFile(cfgFile, []byte("routes:\n  - names: [\"*\"]\n    backend: 127.0.0.1:8443\nadmin: 0.0.0.0:9443\n"), 0o644)
	base := []string{"--listen", "127.0.0.1:" + itoa(freePort(t)), "--backend", "127.0.0.1:8443", "--storage", filepath.Join(dir, "store")}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"wildcard without token", append(base, "--admin", "0.0.0.0:9443"), "not a loopback address"},
		{"no host without token", append(base, "--admin", ":9443"), "not a loopback address"},
		{"public without token", append(base, "--admin", "192.0.2.1:9443"), "not a loopback address"},
		{"not host:port", append(base, "--admin", "9443"), "--admin"},
		{"token without address", append(base, "--admin-token-file", empty), "but no admin address"},
		{"empty token file", append(base, "--admin", "127.0.0.1:0", "--admin-token-file", empty), "is empty"},
		{"missing token file", append(base, "--admin", "127.0.0.1:0", "--admin-token-file", filepath.Join(dir, "nope")), "admin token"},
		{"config: wildcard without token", []string{"--config", cfgFile}, "admin: 0.0.0.0:9443 is not a loopback address"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			e := &env{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
			// Canceled already: should a check regress, serve fails to
			// bind rather than listening on a wildcard address.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if code := run(ctx, e, append([]string{"serve"}, c.args...)); code != exitUsage || !strings.Contains(stderr.String(), c.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr.String(), exitUsage, c.want)
			}
			if strings.Contains(stdout.String(), "listening") {
				t.Errorf("serve started: %s", stdout.String())
			}
		})
	}
}

// readmeSectionBlocks returns the fenced code blocks of lang in README.md's
// section titled heading (up to the next heading of any level).
func readmeSectionBlocks(t *testing.T, heading, lang string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	i := strings.Index(text, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README.md has no %q", heading)
	}
	text = text[i+len(heading)+2:]
	if j := regexp.MustCompile(`(?m)^#{2,3} `).FindStringIndex(text); j != nil {
		text = text[:j[0]]
	}
	var blocks []string
	re := regexp.MustCompile("(?ms)^```" + regexp.QuoteMeta(lang) + "\n(.*?)^```\n")
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// TestREADMEMetricsCommands runs every command of README.md's "Metrics and
// the admin API" as written, with two substitutions: serve.yaml is a
// configuration for the embedded Pebble (one certificate, example.com),
// and 127.0.0.1:9443 a free loopback port. tlsalpn runs in-process; the
// other lines run under sh from the repository's root, and must exit 0.
func TestREADMEMetricsCommands(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skipf("curl, which the README's commands use, is not installed: %v", err)
	}
	promtoolPath(t)
	blocks := readmeSectionBlocks(t, "### Metrics and the admin API", "sh")
	if len(blocks) != 2 {
		t.Fatalf("the section has %d sh blocks, want 2 (the admin API, the rules)", len(blocks))
	}
	ca := startCLICA(t, democa.Options{})
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "serve.yaml")
	os.WriteFile(cfgFile, []byte(fmt.Sprintf(`listen: %q
storage: %q
acme: {ca: %q, ca_root: %q, email: ops@example.com, agree_tos: true, profile: default}
proxy: {steer: "off"}
routes: [{names: ["*"], backend: %q}]
certificates: [{names: [example.com], out: %q}]
`, ca.listen, filepath.Join(dir, "store"), ca.DirectoryURL(), ca.root, echoTLSBackend(t, "b.example"), filepath.Join(dir, "out"))), 0o644)
	admin := "127.0.0.1:" + itoa(freePort(t))
	subst := strings.NewReplacer("127.0.0.1:9443", admin, "serve.yaml", cfgFile)

	var lines []string
	for _, b := range blocks {
		for _, l := range strings.Split(strings.ReplaceAll(b, "\\\n", " "), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				lines = append(lines, l)
			}
		}
	}
	var stop func() int
	var stderr *syncBuffer
	ran := 0
	for _, l := range lines {
		words := shellWords(t, subst.Replace(l))
		if words[0] == "tlsalpn" {
			var stdout *syncBuffer
			stdout, stderr, stop = startServe(t, tlsalpnArgs(t, words)[1:]...)
			if got := adminAddr(t, stdout); got != admin {
				t.Fatalf("admin API on %s, want %s", got, admin)
			}
			waitFor(t, "serve to be ready", 30*time.Second, func() bool {
				_, code := adminGet(t, admin, "/readyz", "")
				return code == http.StatusOK
			})
			ran++
			continue
		}
		cmd := exec.Command("sh", "-c", subst.Replace(l))
		cmd.Dir = filepath.Join("..", "..")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", l, err, out)
			continue
		}
		ran++
		switch {
		case strings.Contains(l, "/status"):
			var st metrics.Status
			if err := json.Unmarshal(out, &st); err != nil || len(st.Certificates) != 1 || !st.Certificates[0].Stored {
				t.Errorf("%s: %v\n%s", l, err, out)
			}
		case strings.Contains(l, "/renew"):
			var rr metrics.RenewResult
			if err := json.Unmarshal(out, &rr); err != nil || rr.Serial == "" || rr.Error != "" {
				t.Errorf("%s: %v\n%s", l, err, out)
			}
		}
	}
	if ran != len(lines) || ran < 7 {
		t.Errorf("ran %d of the section's %d commands, want all of at least 7", ran, len(lines))
	}
	if stop == nil {
		t.Fatal("the section starts no tlsalpn serve")
	}
	if code := stop(); code != exitOK {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
}

// TestServeAdminReload: SIGHUP keeps the admin API as it is. The --admin
// flag overrides the file at a reload as at start, so a file without
// admin reloads; a file that changes the admin API's address or token is
// refused, loudly, and the running API keeps answering.
func TestServeAdminReload(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "serve.yaml")
	backendAddr := echoTLSBackend(t, "b.example")
	write := func(extra string) {
		os.WriteFile(cfg, []byte(fmt.Sprintf("listen: \"127.0.0.1:%d\"\nstorage: %s\nproxy: {steer: \"off\"}\nroutes: [{names: [\"*\"], backend: %q}]\n%s",
			freePort(t), filepath.Join(dir, "store"), backendAddr, extra)), 0o644)
	}
	write("")
	listenLine := regexp.MustCompile(`listen: "([^"]+)"`)
	data, _ := os.ReadFile(cfg)
	listen := listenLine.FindStringSubmatch(string(data))[1]
	stdout, stderr, stop := startServe(t, "--config", cfg, "--admin", "127.0.0.1:0")
	admin := adminAddr(t, stdout)
	hup := func(log string) {
		t.Helper()
		before := strings.Count(stderr.String(), log)
		if self, err := os.FindProcess(os.Getpid()); err == nil {
			self.Signal(syscall.SIGHUP)
		}
		waitFor(t, "the reload to log "+log, 10*time.Second, func() bool { return strings.Count(stderr.String(), log) > before })
	}
	for i, step := range []struct{ extra, log string }{
		{"", "SIGHUP: configuration reloaded"},
		{"admin_token_file: " + filepath.Join(dir, "token") + "\n", "needs a restart"},
	} {
		os.WriteFile(filepath.Join(dir, "token"), []byte("tok\n"), 0o600)
		data := listenLine.ReplaceAllString(string(mustRead(t, cfg)), fmt.Sprintf("listen: %q", listen)) // the listen address stays
		os.WriteFile(cfg, []byte(data+step.extra), 0o644)
		hup(step.log)
		if body, code := adminGet(t, admin, "/healthz", ""); code != http.StatusOK {
			t.Errorf("step %d: /healthz without a token after the reload: %d %s", i, code, body)
		}
	}
	if !strings.Contains(stderr.String(), "new configuration refused") {
		t.Errorf("the refused reload was not logged as refused:\n%s", stderr)
	}
	if code := stop(); code != exitOK {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestServeMetricsSteered: connections the kernel steers straight to the
// backend never reach the front door, so they are counted in the kernel
// and shown as tlsalpn_frontdoor_steered_connections_total, with the
// route shown steered; none of them is counted as relayed.
func TestServeMetricsSteered(t *testing.T) {
	dir := t.TempDir()
	listen := "127.0.0.1:" + itoa(freePort(t))
	stdout, stderr, stop := startServe(t, "--listen", listen, "--backend", plainTCPEchoTLS(t),
		"--storage", filepath.Join(dir, "store"), "--admin", "127.0.0.1:0")
	admin := adminAddr(t, stdout)
	waitFor(t, "serve to log its steering", 10*time.Second, func() bool { return strings.Contains(stderr.String(), "steering") })
	if steeringForbidden(stderr.String()) || strings.Contains(stderr.String(), "steering off") {
		t.Skipf("steering not possible here: %s", stderr.String())
	}
	waitForPort(t, listen, 10*time.Second)
	before := getScrape(t, admin)
	n0, _ := before.value("tlsalpn_frontdoor_steered_connections_total")
	const conns = 3
	for range conns {
		c, err := tls.Dial("tcp", listen, &tls.Config{InsecureSkipVerify: true, ServerName: "example.com"})
		if err != nil {
			t.Fatal(err)
		}
		echoOnce(t, c)
	}
	s := getScrape(t, admin)
	if n, ok := s.value("tlsalpn_frontdoor_steered_connections_total"); !ok || n-n0 != conns {
		t.Errorf("steered connections went from %v to %v (present %v); want %d more", n0, n, ok, conns)
	}
	if v, _ := s.value("tlsalpn_frontdoor_route_steered", "route=*"); v != 1 {
		t.Errorf("tlsalpn_frontdoor_route_steered{route=\"*\"} = %v, want 1", v)
	}
	if v, _ := s.value("tlsalpn_frontdoor_connections_total", "route=*", "path=relayed"); v != 0 {
		t.Errorf("%v connections counted as relayed; want 0, all steered", v)
	}
	body, _ := adminGet(t, admin, "/status", "")
	var st metrics.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil || len(st.Routes) != 1 || !st.Routes[0].Steered || st.SteeredConnections < conns {
		t.Errorf("/status: %v %s", err, body)
	}
	if code := stop(); code != exitOK {
		t.Errorf("serve exited %d: %s", code, stderr.String())
	}
}

// plainTCPEchoTLS is echoTLSBackend on a plain TCP socket: a Go listener
// uses Multipath TCP by default, which a sockmap (steering) cannot take.
func plainTCPEchoTLS(t *testing.T) string {
	t.Helper()
	id, _ := challenge.ParseIdentifier("b.example")
	cert, err := challenge.Build(id, "backend.cert")
	if err != nil {
		t.Fatal(err)
	}
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}})
				io.Copy(tc, tc)
			}()
		}
	}()
	return ln.Addr().String()
}
