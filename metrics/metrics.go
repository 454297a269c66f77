// Package metrics exposes what "tlsalpn serve" does as Prometheus metrics
// (with the official client, github.com/prometheus/client_golang) and
// serves them, with a small admin API, on the admin listener.
//
// The packages that do the work (manager, issuer, responder, proxy,
// frontdoor) do not import this one: each defines the hook it calls (a
// func or a small interface, the way net/http/httptrace and crypto/tls
// hooks work), nil meaning off at no cost, and Metrics implements them;
// frontdoor wires them together. What is kept in storage (each
// certificate's expiry, renewal window, last renewal and deployment) is
// read at scrape time through a StatusFunc, so that the metrics say what
// the storage says, not what this process happened to see.
//
// Every metric is named tlsalpn_…, and follows Prometheus's naming rules:
// base units (seconds, bytes), _total for counters, _timestamp_seconds for
// points in time; "promtool check metrics" accepts a scrape (a test runs it).
package metrics

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mholt/acmez/v3/acme"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tlsalpn/tlsalpn/manager"
	"github.com/tlsalpn/tlsalpn/proxy"
	"github.com/tlsalpn/tlsalpn/responder"
)

// Metrics holds the collectors of one serve, on a registry of its own
// (not the client's global one: no package-level state, and two daemons
// in one test process do not mix).
type Metrics struct {
	reg *prometheus.Registry

	renewAttempts *prometheus.CounterVec // trigger
	renewFailures *prometheus.CounterVec // reason
	deployFails   prometheus.Counter

	acmeRequests *prometheus.CounterVec   // endpoint, code
	acmeDuration *prometheus.HistogramVec // endpoint
	acmeErrors   *prometheus.CounterVec   // endpoint, type

	challAnswered   prometheus.Counter
	challRefused    *prometheus.CounterVec // reason
	challNotPending prometheus.Counter     // told by the proxy
	challWithdrawn  prometheus.Counter     // told by the responder

	connsOpen     *prometheus.GaugeVec                 // route, path
	connsTotal    *prometheus.CounterVec               // route, path
	bytesTotal    *prometheus.CounterVec               // route, direction
	refused       *prometheus.CounterVec               // reason
	refusedBy     map[proxy.Refusal]prometheus.Counter // refused's children, resolved once: read-only after New
	handshakeTime *prometheus.HistogramVec             // route, result

	mu sync.Mutex
	// attempts is the last order the keeper (or a request) placed for
	// each certificate, by certificate name.
	attempts map[string]attemptState
	status   StatusFunc
}

// attemptState is the outcome of the last orders for one certificate.
type attemptState struct {
	at           time.Time
	ok           bool
	failingSince time.Time // the first of the failures in a row; zero when the last succeeded
}

// StatusFunc returns what storage and the daemon say now: the
// per-certificate metrics are read from it at each scrape.
type StatusFunc func(ctx context.Context) (*Status, error)

// New returns Metrics with every collector registered, the Go runtime's
// and the process's included.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), attempts: map[string]attemptState{}}
	f := factory{m.reg}
	m.renewAttempts = f.counterVec("tlsalpn_renewal_attempts_total", "Orders placed to obtain or renew a certificate, by what made them (missing, revoked, due, emergency, requested).", "trigger")
	m.renewFailures = f.counterVec("tlsalpn_renewal_failures_total", "Orders that obtained no certificate, by reason (the CA's error type, or timeout, canceled, other).", "reason")
	m.deployFails = f.counter("tlsalpn_renewal_deploy_failures_total", "Certificates obtained and stored whose deployment to their outputs then failed.")
	m.acmeRequests = f.counterVec("tlsalpn_acme_requests_total", "HTTP requests to the ACME CA, by endpoint and HTTP status code (0: no response).", "endpoint", "code")
	m.acmeDuration = f.histogramVec("tlsalpn_acme_request_duration_seconds", "Time the ACME CA took to answer, by endpoint.", prometheus.ExponentialBuckets(0.01, 2.5, 10), "endpoint")
	m.acmeErrors = f.counterVec("tlsalpn_acme_errors_total", "Problem documents the ACME CA answered with, by endpoint and error type (badNonce, rateLimited, …).", "endpoint", "type")
	m.challAnswered = f.counter("tlsalpn_challenge_handshakes_answered_total", "TLS-ALPN-01 validation handshakes answered with a challenge certificate.")
	m.challRefused = f.counterVec("tlsalpn_challenge_handshakes_refused_total", "acme-tls/1 handshakes not answered, by reason: not_pending (no challenge for the name; passed to the backend), withdrawn (unpublished meanwhile).", "reason")
	m.challNotPending = m.challRefused.WithLabelValues("not_pending")
	m.challWithdrawn = m.challRefused.WithLabelValues("withdrawn")
	m.connsOpen = f.gaugeVec("tlsalpn_frontdoor_connections_open", "Client connections the front door carries now, by route and path (relayed, terminated). Steered connections never reach it.", "route", "path")
	m.connsTotal = f.counterVec("tlsalpn_frontdoor_connections_total", "Client connections the front door carried, by route and path (relayed, terminated), counted when they end.", "route", "path")
	m.bytesTotal = f.counterVec("tlsalpn_frontdoor_bytes_total", "Bytes carried between clients and backends, by route and direction (in: from the client, out: to it), counted when the connection ends.", "route", "direction")
	m.refused = f.counterVec("tlsalpn_frontdoor_refused_total", "Connections closed without being routed, by reason.", "reason")
	m.handshakeTime = f.histogramVec("tlsalpn_frontdoor_tls_handshake_duration_seconds", "TLS handshakes the front door terminated (mode http or tcp), by route and result.", prometheus.ExponentialBuckets(0.001, 2.5, 10), "route", "result")
	for _, t := range []string{manager.TriggerMissing, manager.TriggerRevoked, manager.TriggerDue, manager.TriggerEmergency, TriggerRequested} {
		m.renewAttempts.WithLabelValues(t) // every trigger shows, at 0
	}
	for _, r := range []proxy.Refusal{proxy.RefusedLimit, proxy.RefusedSourceLimit, proxy.RefusedEvicted, proxy.RefusedHelloTimeout,
		proxy.RefusedBadHello, proxy.RefusedUntrustedProxy, proxy.RefusedBadProxyHeader, proxy.RefusedNoRoute,
		proxy.RefusedBackendDown, proxy.RefusedHandshakeFailed} {
		if m.refusedBy == nil {
			m.refusedBy = map[proxy.Refusal]prometheus.Counter{}
		}
		m.refusedBy[r] = m.refused.WithLabelValues(string(r))
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&certCollector{m: m})
	return m
}

// TriggerRequested is the trigger of a renewal asked for through the
// admin API or "tlsalpn renew" handed to serve.
const TriggerRequested = "requested"

// Registry is where the collectors are registered, for a caller that adds
// its own or gathers them itself.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetStatus sets where the per-certificate metrics are read from.
func (m *Metrics) SetStatus(f StatusFunc) {
	m.mu.Lock()
	m.status = f
	m.mu.Unlock()
}

// Attempt records one order for spec's certificate, placed for trigger,
// with its outcome as manager.KeepOptions.OnAttempt gives it.
func (m *Metrics) Attempt(spec manager.Spec, trigger string, rec *manager.Record, err error) {
	m.renewAttempts.WithLabelValues(trigger).Inc()
	now := time.Now()
	ok := rec != nil
	if !ok {
		m.renewFailures.WithLabelValues(FailureReason(err)).Inc()
	} else if err != nil {
		m.deployFails.Inc()
	}
	id := spec.ID()
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.attempts[id]
	st.at, st.ok = now, ok
	switch {
	case ok:
		st.failingSince = time.Time{}
	case st.failingSince.IsZero():
		st.failingSince = now
	}
	m.attempts[id] = st
}

// FailureReason is the reason label of a failed order: the CA's error
// type when it answered with a problem document (rateLimited,
// unauthorized, connection, …: what to do differs), else timeout,
// canceled or other.
func FailureReason(err error) string {
	if p, ok := errors.AsType[acme.Problem](err); ok && p.Type != "" {
		return problemType(p.Type)
	}
	if p, ok := errors.AsType[*acme.Problem](err); ok && p != nil && p.Type != "" {
		return problemType(p.Type)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "other"
}

// problemType is an ACME problem type without its URN prefix
// ("urn:ietf:params:acme:error:rateLimited" is "rateLimited"); a type
// outside the ACME namespace is "other", so that a CA cannot make label
// values up without bound.
func problemType(t string) string {
	if rest, ok := strings.CutPrefix(t, "urn:ietf:params:acme:error:"); ok && rest != "" && len(rest) <= 64 && !strings.ContainsAny(rest, " /:") {
		return rest
	}
	return "other"
}

// Challenge is the responder's observer (responder.WithObserver): every
// handshake that offered acme-tls/1 and reached it.
func (m *Metrics) Challenge(ev responder.Event) {
	switch {
	case ev.Served:
		m.challAnswered.Inc()
	case errors.Is(ev.Err, responder.ErrNoChallenge):
		// The front door hands a hello for a name with nothing pending
		// to the backend (ChallengeNotPending): the responder sees only
		// a challenge withdrawn between the lookup and the handshake.
		m.challWithdrawn.Inc()
	default:
		m.challRefused.WithLabelValues("other").Inc()
	}
}

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttpHandler(m.reg)
}
