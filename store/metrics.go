package store

import (
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the store's Prometheus metrics. A nil *Metrics records nothing,
// so tests may leave it out.
type Metrics struct {
	applyDuration *prometheus.HistogramVec
	fsmDuration   *prometheus.HistogramVec
	fsmCommands   *prometheus.CounterVec
	snapshots     *prometheus.CounterVec
}

// NewMetrics creates the store's metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		applyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "agenthost", Subsystem: "store", Name: "apply_duration_seconds",
			Help:    "Time from submitting a write to its commit and apply, by path (leader or forwarded) and result.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"path", "result"}),
		fsmDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "agenthost", Subsystem: "store", Name: "fsm_apply_duration_seconds",
			Help:    "Time the state machine spends applying one command, by command type.",
			Buckets: prometheus.ExponentialBuckets(0.000005, 2, 14),
		}, []string{"command"}),
		fsmCommands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "agenthost", Subsystem: "store", Name: "fsm_commands_total",
			Help: "Commands applied by the state machine, by command type and result (ok or the refusing error's code).",
		}, []string{"command", "result"}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "agenthost", Subsystem: "store", Name: "snapshots_total",
			Help: "State machine snapshot events: create, persist, persist_failed, restore, restore_failed.",
		}, []string{"event"}),
	}
	reg.MustRegister(m.applyDuration, m.fsmDuration, m.fsmCommands, m.snapshots)
	return m
}

func (m *Metrics) observeApply(t CommandType, err error, d time.Duration) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = ErrorCode(err)
	}
	m.fsmDuration.WithLabelValues(t.String()).Observe(d.Seconds())
	m.fsmCommands.WithLabelValues(t.String(), result).Inc()
}

func (m *Metrics) observeWrite(path string, err error, d time.Duration) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = ErrorCode(err)
	}
	m.applyDuration.WithLabelValues(path, result).Observe(d.Seconds())
}

func (m *Metrics) countSnapshot(event string) {
	if m == nil {
		return
	}
	m.snapshots.WithLabelValues(event).Inc()
}

// registerRaftGauges exposes Raft's health, read from r at scrape time.
func registerRaftGauges(reg prometheus.Registerer, r *raft.Raft, fsm *FSM) {
	gauge := func(name, help string, fn func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "agenthost", Subsystem: "raft", Name: name, Help: help,
		}, fn)
	}
	reg.MustRegister(
		gauge("is_leader", "1 when this server is the Raft leader, else 0.", func() float64 {
			if r.State() == raft.Leader {
				return 1
			}
			return 0
		}),
		gauge("term", "Current Raft term.", func() float64 { return float64(r.CurrentTerm()) }),
		gauge("last_index", "Index of the last entry in this server's Raft log.", func() float64 { return float64(r.LastIndex()) }),
		gauge("commit_index", "Highest Raft index known to be committed.", func() float64 { return float64(r.CommitIndex()) }),
		gauge("applied_index", "Highest Raft index handed to the state machine.", func() float64 { return float64(r.AppliedIndex()) }),
		gauge("fsm_applied_index", "Index of the last command the state machine applied.", func() float64 { return float64(fsm.AppliedIndex()) }),
		gauge("last_contact_seconds", "Seconds since this follower last heard from the leader (0 on the leader).", func() float64 {
			if r.State() == raft.Leader {
				return 0
			}
			lc := r.LastContact()
			if lc.IsZero() {
				return -1
			}
			return time.Since(lc).Seconds()
		}),
	)
}
