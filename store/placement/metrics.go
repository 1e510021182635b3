package placement

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	decisionLatency prometheus.Histogram
	batchSize       prometheus.Histogram
	rejected        *prometheus.CounterVec
	retries         prometheus.Counter
	moved           prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		decisionLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "agenthost", Subsystem: "scheduler", Name: "decision_duration_seconds",
			Help:    "Time to decide one batch of placement requests, before its commit.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 2, 16),
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "agenthost", Subsystem: "scheduler", Name: "plan_size",
			Help:    "Placements committed per Raft entry.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "agenthost", Subsystem: "scheduler", Name: "rejections_total",
			Help: "Placement requests refused, by reason: agent_limit, running_cap, no_ports, no_node, unknown_agent.",
		}, []string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "agenthost", Subsystem: "scheduler", Name: "stale_retries_total",
			Help: "Decisions the state machine refused as stale and that were decided again.",
		}),
		moved: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "agenthost", Subsystem: "scheduler", Name: "rescheduled_total",
			Help: "Agents re-placed off a down node.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.decisionLatency, m.batchSize, m.rejected, m.retries, m.moved)
	}
	return m
}
