package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tlsalpn/tlsalpn/proxy"
)

// Route implements proxy.Observer: the counters of route r, resolved now,
// once per configuration, so that a connection costs a few atomic adds.
// The route label is the route's first name ("*" for the default route),
// which no other route has.
func (m *Metrics) Route(r proxy.Route) proxy.RouteObserver {
	label := RouteLabel(r)
	ro := &routeObserver{}
	for i, p := range []proxy.Path{proxy.Relayed, proxy.Terminated} {
		ro.open[i] = m.connsOpen.WithLabelValues(label, string(p))
		ro.total[i] = m.connsTotal.WithLabelValues(label, string(p))
	}
	ro.in = m.bytesTotal.WithLabelValues(label, "in")
	ro.out = m.bytesTotal.WithLabelValues(label, "out")
	if r.Mode != "" && r.Mode != proxy.Passthrough {
		ro.hsOK = m.handshakeTime.WithLabelValues(label, "ok")
		ro.hsFail = m.handshakeTime.WithLabelValues(label, "failed")
	}
	return ro
}

// RouteLabel is the value of the route label for r.
func RouteLabel(r proxy.Route) string {
	if len(r.Names) == 0 {
		return "*"
	}
	return r.Names[0]
}

// Refused implements proxy.Observer. Under a flood it runs for every
// connection, so the known reasons' counters are resolved once.
func (m *Metrics) Refused(reason proxy.Refusal) {
	if c, ok := m.refusedBy[reason]; ok {
		c.Inc()
		return
	}
	m.refused.WithLabelValues(string(reason)).Inc()
}

// ChallengeNotPending implements proxy.Observer.
func (m *Metrics) ChallengeNotPending() { m.challNotPending.Inc() }

type routeObserver struct {
	open         [2]prometheus.Gauge
	total        [2]prometheus.Counter
	in, out      prometheus.Counter
	hsOK, hsFail prometheus.Observer
}

func pathIndex(p proxy.Path) int {
	if p == proxy.Terminated {
		return 1
	}
	return 0
}

func (o *routeObserver) Opened(p proxy.Path) { o.open[pathIndex(p)].Inc() }

func (o *routeObserver) Closed(p proxy.Path, up, down int64) {
	i := pathIndex(p)
	o.open[i].Dec()
	o.total[i].Inc()
	if up > 0 {
		o.in.Add(float64(up))
	}
	if down > 0 {
		o.out.Add(float64(down))
	}
}

func (o *routeObserver) Handshake(d time.Duration, err error) {
	h := o.hsOK
	if err != nil {
		h = o.hsFail
	}
	if h != nil {
		h.Observe(d.Seconds())
	}
}
