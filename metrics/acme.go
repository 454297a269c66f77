package metrics

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Transport wraps base (nil: http.DefaultTransport) so that every request
// to the ACME CA is counted by endpoint and status, timed, and each
// problem document the CA answers with is counted by its type. It goes
// in the issuer's http.Client (manager.Pool.HTTPClient), under acmez,
// which then needs no hook of its own.
func (m *Metrics) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &acmeTransport{m: m, base: base}
}

type acmeTransport struct {
	m    *Metrics
	base http.RoundTripper

	mu  sync.Mutex
	dir map[string]string // URL → the directory's name for it, learnt from the directory
}

// maxProblem bounds what is read of an error body to find its type.
const maxProblem = 64 << 10

func (t *acmeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.base.RoundTrip(req)
	took := time.Since(start)
	endpoint := t.endpoint(req)
	code := "0"
	if resp != nil {
		code = strconv.Itoa(resp.StatusCode)
		ct := resp.Header.Get("Content-Type")
		switch {
		case resp.StatusCode >= 400 && strings.HasPrefix(ct, "application/problem+json"):
			var p struct {
				Type string `json:"type"`
			}
			json.Unmarshal(t.peek(resp), &p)
			t.m.acmeErrors.WithLabelValues(endpoint, problemType(p.Type)).Inc()
		case req.Method == http.MethodGet && resp.StatusCode == http.StatusOK && strings.HasPrefix(ct, "application/json") && endpoint != "renewalInfo":
			// Only the directory and renewal information are plain
			// GETs: a directory names the other endpoints.
			if t.learn(req.URL.String(), t.peek(resp)) {
				endpoint = "directory"
			}
		}
	}
	t.m.acmeRequests.WithLabelValues(endpoint, code).Inc()
	t.m.acmeDuration.WithLabelValues(endpoint).Observe(took.Seconds())
	return resp, err
}

// peek reads up to maxProblem bytes of resp's body and puts them back in
// front of the rest.
func (t *acmeTransport) peek(resp *http.Response) []byte {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxProblem))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(body), resp.Body), resp.Body}
	return body
}

// learn records the endpoints of the directory at url, if body is one,
// and reports whether it was.
func (t *acmeTransport) learn(url string, body []byte) bool {
	var d map[string]any
	if json.Unmarshal(body, &d) != nil || d["newNonce"] == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dir == nil {
		t.dir = map[string]string{}
	}
	t.dir[url] = "directory"
	for _, k := range []string{"newNonce", "newAccount", "newOrder", "newAuthz", "revokeCert", "keyChange", "renewalInfo"} {
		if u, ok := d[k].(string); ok && u != "" {
			t.dir[u] = k
		}
	}
	return true
}

// endpoint names the ACME resource req is for: the directory's own name
// for the URLs it lists (renewalInfo for anything under that URL), and
// for the URLs the CA hands out (orders, authorizations, challenges,
// certificates), what the path says, as Let's Encrypt's and Pebble's do.
// The set of values is fixed, whatever the CA's URLs.
func (t *acmeTransport) endpoint(req *http.Request) string {
	u := req.URL.String()
	t.mu.Lock()
	name, ok := t.dir[u]
	if !ok {
		if ri := t.renewalInfoLocked(); ri != "" && strings.HasPrefix(u, ri) {
			name, ok = "renewalInfo", true
		}
	}
	t.mu.Unlock()
	if ok {
		return name
	}
	p := strings.ToLower(req.URL.Path)
	switch {
	case strings.Contains(p, "renewalinfo"):
		return "renewalInfo"
	case strings.Contains(p, "finalize"):
		return "finalize"
	case strings.Contains(p, "authz"):
		return "authorization"
	case strings.Contains(p, "chal"):
		return "challenge"
	case strings.Contains(p, "cert"):
		return "certificate"
	case strings.Contains(p, "order"):
		return "order"
	case strings.Contains(p, "acct"), strings.Contains(p, "account"):
		return "account"
	}
	return "other"
}

func (t *acmeTransport) renewalInfoLocked() string {
	for u, n := range t.dir {
		if n == "renewalInfo" {
			return u
		}
	}
	return ""
}
