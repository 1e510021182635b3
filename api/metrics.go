package api

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the REST API. Labels are the route pattern, never the raw
// path, so that IDs do not become series.
type metrics struct {
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	createToReady prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "agenthost", Subsystem: "api", Name: "requests_total",
			Help: "REST API requests by route pattern, method and status code.",
		}, []string{"method", "route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "agenthost", Subsystem: "api", Name: "request_duration_seconds",
			Help:    "REST API request latency by route pattern and method.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14),
		}, []string{"method", "route"}),
		createToReady: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "agenthost", Subsystem: "api", Name: "create_to_ready_seconds",
			Help:    "Time from an accepted create request to the agent being ready, for creates that succeed.",
			Buckets: prometheus.ExponentialBuckets(0.1, 1.6, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.createToReady)
	}
	return m
}

func (m *metrics) observe(method, route string, code int, d time.Duration) {
	m.requests.WithLabelValues(method, route, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(method, route).Observe(d.Seconds())
}
