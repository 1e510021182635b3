package nodeagent

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agenthost/agenthost/nodeagent/driver"
)

// metrics of the node agent. The control plane knows what each agent should
// be; only the node knows what runs and which agents are busy.
type metrics struct {
	containers *prometheus.GaugeVec
	start      *prometheus.HistogramVec
}

// newMetrics registers the node agent's metrics on reg (nil registers none).
func newMetrics(reg prometheus.Registerer, rts *runtimes) *metrics {
	m := &metrics{
		containers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "agenthost", Subsystem: "nodeagent", Name: "containers",
			Help: "Agents' containers on this node by state (created, running, stopped), as of the last reconcile.",
		}, []string{"state"}),
		start: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "agenthost", Subsystem: "nodeagent", Name: "agent_start_duration_seconds",
			Help:    "Time from creating (or starting) an agent's container to its runtime answering on its health path, by action (create, start).",
			Buckets: prometheus.ExponentialBuckets(0.05, 1.6, 14),
		}, []string{"action"}),
	}
	for _, action := range []string{"create", "start"} {
		m.start.WithLabelValues(action)
	}
	for _, s := range []driver.State{driver.StateCreated, driver.StateRunning, driver.StateStopped} {
		m.containers.WithLabelValues(string(s))
	}
	if reg != nil {
		busy := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "agenthost", Subsystem: "nodeagent", Name: "busy_agents",
			Help: "Agents on this node whose runtime is working on a reply now.",
		}, func() float64 { return float64(rts.busy()) })
		reg.MustRegister(m.containers, m.start, busy)
	}
	return m
}

// observeContainers records the containers the driver listed.
func (m *metrics) observeContainers(actual []driver.Container) {
	counts := map[driver.State]int{driver.StateCreated: 0, driver.StateRunning: 0, driver.StateStopped: 0}
	for _, c := range actual {
		counts[c.State]++
	}
	for s, n := range counts {
		m.containers.WithLabelValues(string(s)).Set(float64(n))
	}
}

func (m *metrics) observeStart(action string, since time.Time) {
	if !since.IsZero() {
		m.start.WithLabelValues(action).Observe(time.Since(since).Seconds())
	}
}
