package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Status is what GET /status answers, and what the per-certificate
// metrics are made of at each scrape.
type Status struct {
	// Listening is the front door's address, "" until it is bound.
	Listening    string              `json:"listening"`
	Certificates []CertificateStatus `json:"certificates"`
	// PendingChallenges are the names a TLS-ALPN-01 challenge is
	// published for now.
	PendingChallenges []string      `json:"pending_challenges"`
	Routes            []RouteStatus `json:"routes"`
	// SteeredConnections counts the new connections the kernel handed
	// straight to the backend (steering): the front door never sees
	// them, so they are in no other count.
	SteeredConnections uint64 `json:"steered_connections"`
}

// CertificateStatus is one certificate serve keeps.
type CertificateStatus struct {
	Name  string   `json:"name"` // the certificate name (its first name, or cert_name)
	Names []string `json:"names"`
	// Stored is false while no certificate is stored for these names
	// yet (being obtained, or failing to be); the fields below are then
	// zero, except the last attempt's.
	Stored    bool      `json:"stored"`
	Serial    string    `json:"serial,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	// ARIStart and ARIEnd are the CA's suggested renewal window (ARI,
	// RFC 9773), zero when the CA gave none.
	ARIStart time.Time `json:"ari_window_start,omitzero"`
	ARIEnd   time.Time `json:"ari_window_end,omitzero"`
	// NextRenewal is when it is due, and NextRenewalReason why then.
	NextRenewal       time.Time `json:"next_renewal,omitzero"`
	NextRenewalReason string    `json:"next_renewal_reason,omitempty"`
	// LastRenewal is when the stored certificate was obtained.
	LastRenewal time.Time `json:"last_renewal,omitzero"`
	// LastAttempt, LastAttemptOK and FailingSince are the orders this
	// serve placed: the last one's time and outcome, and since when they
	// have been failing (zero when the last one succeeded).
	LastAttempt   time.Time `json:"last_attempt,omitzero"`
	LastAttemptOK bool      `json:"last_attempt_ok"`
	FailingSince  time.Time `json:"failing_since,omitzero"`
	// LastDeployment is the last successful deployment of the stored
	// certificate to its outputs on this node; DeployError, at
	// DeployErrorAt, why the last one failed ("" when it did not).
	LastDeployment time.Time `json:"last_deployment,omitzero"`
	DeployError    string    `json:"deploy_error,omitempty"`
	DeployErrorAt  time.Time `json:"deploy_error_at,omitzero"`
	Revoked        bool      `json:"revoked,omitempty"`
}

// RouteStatus is one front-door route.
type RouteStatus struct {
	Route   string   `json:"route"` // the route label of the metrics
	Names   []string `json:"names"`
	Backend string   `json:"backend"`
	Mode    string   `json:"mode"`
	// Steered says whether new connections for this route go straight
	// to the backend's socket now (no challenge pending, steering on),
	// bypassing the front door; SteerNote says why not, when it is off.
	Steered   bool   `json:"steered"`
	SteerNote string `json:"steer_note,omitempty"`
}

// Fill adds what m knows of each certificate's orders to st.
func (m *Metrics) Fill(st *Status) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range st.Certificates {
		c := &st.Certificates[i]
		if a, ok := m.attempts[c.Name]; ok {
			c.LastAttempt, c.LastAttemptOK, c.FailingSince = a.at, a.ok, a.failingSince
		}
	}
}

// certCollector turns the Status into per-certificate and per-route
// gauges at each scrape.
type certCollector struct{ m *Metrics }

var (
	descNotAfter     = certDesc("tlsalpn_certificate_expiry_timestamp_seconds", "When the stored certificate expires (its NotAfter).")
	descNotBefore    = certDesc("tlsalpn_certificate_not_before_timestamp_seconds", "When the stored certificate became valid (its NotBefore).")
	descARIStart     = certDesc("tlsalpn_certificate_ari_window_start_timestamp_seconds", "Start of the CA's suggested renewal window (ARI); absent when the CA gave none.")
	descARIEnd       = certDesc("tlsalpn_certificate_ari_window_end_timestamp_seconds", "End of the CA's suggested renewal window (ARI); absent when the CA gave none.")
	descNext         = certDesc("tlsalpn_certificate_next_renewal_timestamp_seconds", "When the certificate is due for renewal.")
	descLastRenewal  = certDesc("tlsalpn_certificate_last_renewal_timestamp_seconds", "When the stored certificate was obtained.")
	descLastAttempt  = certDesc("tlsalpn_certificate_last_renewal_attempt_timestamp_seconds", "When this serve last placed an order for the certificate.")
	descLastResult   = certDesc("tlsalpn_certificate_last_renewal_success", "1 if the last order this serve placed for the certificate obtained it, 0 if it failed.")
	descFailing      = certDesc("tlsalpn_certificate_renewal_failing_since_timestamp_seconds", "Since when orders for the certificate have been failing in a row; 0 when the last succeeded.")
	descLastDeploy   = certDesc("tlsalpn_certificate_last_deployment_timestamp_seconds", "When the stored certificate was last deployed to its outputs on this node.")
	descDeployResult = certDesc("tlsalpn_certificate_last_deployment_success", "1 if the last deployment of the stored certificate succeeded, 0 if it failed.")
	descStored       = certDesc("tlsalpn_certificate_stored", "1 if a certificate is stored for the names (it can be served), 0 if not yet.")
	descPending      = prometheus.NewDesc("tlsalpn_challenges_pending", "TLS-ALPN-01 challenges published now.", nil, nil)
	descSteered      = prometheus.NewDesc("tlsalpn_frontdoor_route_steered", "1 if new connections for the route go straight to the backend's socket now, bypassing the front door.", []string{"route"}, nil)
	descStatusUp     = prometheus.NewDesc("tlsalpn_status_up", "1 if the certificates' state could be read from storage at this scrape.", nil, nil)
	descSteeredConns = prometheus.NewDesc("tlsalpn_frontdoor_steered_connections_total", "New connections the kernel handed straight to the backend's listening socket (steering), which the front door never sees.", nil, nil)
)

func certDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, []string{"certificate"}, nil)
}

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNotAfter, descNotBefore, descARIStart, descARIEnd, descNext, descLastRenewal,
		descLastAttempt, descLastResult, descFailing, descLastDeploy, descDeployResult, descStored, descPending, descSteered, descStatusUp, descSteeredConns} {
		ch <- d
	}
}

// scrapeTimeout bounds the storage reads of one scrape.
const scrapeTimeout = 10 * time.Second

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	f := c.m.status
	c.m.mu.Unlock()
	if f == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	st, err := f(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descStatusUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descStatusUp, prometheus.GaugeValue, 1)
	c.m.Fill(st)
	ts := func(d *prometheus.Desc, t time.Time, name string) {
		if !t.IsZero() {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(t.UnixMilli())/1e3, name)
		}
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, cs := range st.Certificates {
		ch <- prometheus.MustNewConstMetric(descStored, prometheus.GaugeValue, b(cs.Stored), cs.Name)
		ts(descNotAfter, cs.NotAfter, cs.Name)
		ts(descNotBefore, cs.NotBefore, cs.Name)
		ts(descARIStart, cs.ARIStart, cs.Name)
		ts(descARIEnd, cs.ARIEnd, cs.Name)
		ts(descNext, cs.NextRenewal, cs.Name)
		ts(descLastRenewal, cs.LastRenewal, cs.Name)
		if !cs.LastAttempt.IsZero() {
			ts(descLastAttempt, cs.LastAttempt, cs.Name)
			ch <- prometheus.MustNewConstMetric(descLastResult, prometheus.GaugeValue, b(cs.LastAttemptOK), cs.Name)
			failing := 0.0
			if !cs.FailingSince.IsZero() {
				failing = float64(cs.FailingSince.UnixMilli()) / 1e3
			}
			ch <- prometheus.MustNewConstMetric(descFailing, prometheus.GaugeValue, failing, cs.Name)
		}
		ts(descLastDeploy, cs.LastDeployment, cs.Name)
		if cs.Stored && (!cs.LastDeployment.IsZero() || cs.DeployError != "") {
			ch <- prometheus.MustNewConstMetric(descDeployResult, prometheus.GaugeValue, b(cs.DeployError == ""), cs.Name)
		}
	}
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(len(st.PendingChallenges)))
	ch <- prometheus.MustNewConstMetric(descSteeredConns, prometheus.CounterValue, float64(st.SteeredConnections))
	for _, r := range st.Routes {
		ch <- prometheus.MustNewConstMetric(descSteered, prometheus.GaugeValue, b(r.Steered), r.Route)
	}
}
