package placement

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agenthost/agenthost/scheduler"
	"github.com/agenthost/agenthost/store"
)

type metrics struct {
	placementLatency *prometheus.HistogramVec
	decisionLatency  prometheus.Histogram
	batchSize        prometheus.Histogram
	rejected         *prometheus.CounterVec
	retries          prometheus.Counter
	moved            prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		placementLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "agenthost", Subsystem: "scheduler", Name: "placement_duration_seconds",
			Help:    "Time from a placement request (a create or a start) reaching the leader's scheduler to its answer: queueing, decision and commit; by result (placed, refused, error).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"result"}),
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
	// Known label values start at zero, so that a first refusal or a
	// first error shows in rate() rather than as a series appearing.
	for _, result := range []string{"placed", "refused", "error"} {
		m.placementLatency.WithLabelValues(result)
	}
	for _, r := range []scheduler.Reason{scheduler.ReasonAgentLimit, scheduler.ReasonRunningCap, scheduler.ReasonNoPorts, scheduler.ReasonNoNode} {
		m.rejected.WithLabelValues(string(r))
	}
	if reg != nil {
		reg.MustRegister(m.placementLatency, m.decisionLatency, m.batchSize, m.rejected, m.retries, m.moved)
	}
	return m
}

func (m *metrics) observePlacement(err error, d time.Duration) {
	result := "placed"
	switch {
	case refusalReason(err) != "":
		result = "refused"
	case err != nil:
		result = "error"
	}
	m.placementLatency.WithLabelValues(result).Observe(d.Seconds())
}

// refusalReason is the rejections_total reason of a store error that refuses
// a placement for a cap or for want of room, or "" for any other error.
func refusalReason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, store.ErrAgentLimit):
		return string(scheduler.ReasonAgentLimit)
	case errors.Is(err, store.ErrRunningCap):
		return string(scheduler.ReasonRunningCap)
	case errors.Is(err, store.ErrNoPorts):
		return string(scheduler.ReasonNoPorts)
	case errors.Is(err, store.ErrNoNodeFits), errors.Is(err, store.ErrNoCapacity):
		return string(scheduler.ReasonNoNode)
	}
	return ""
}
