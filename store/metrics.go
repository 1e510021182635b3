package store

import (
	"cmp"
	"slices"
	"strings"
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
	readIndex     *prometheus.HistogramVec
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
		readIndex: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "agenthost", Subsystem: "store", Name: "read_index_duration_seconds",
			Help:    "Time the leader takes to confirm its leadership for a read index (linearizable reads, shared by concurrent callers), by result.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}, []string{"result"}),
	}
	reg.MustRegister(m.applyDuration, m.fsmDuration, m.fsmCommands, m.snapshots, m.readIndex)
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

func (m *Metrics) observeReadIndex(err error, d time.Duration) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "failed"
	}
	m.readIndex.WithLabelValues(result).Observe(d.Seconds())
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
		gauge("has_leader", "1 when this server knows a Raft leader (itself included), else 0: a cluster without quorum has none.", func() float64 {
			addr, _ := r.LeaderWithID()
			return boolFloat(addr != "")
		}),
		gauge("voters", "Voters in this server's latest Raft configuration.", func() float64 {
			f := r.GetConfiguration()
			if f.Error() != nil {
				return 0
			}
			n := 0
			for _, srv := range f.Configuration().Servers {
				if srv.Suffrage == raft.Voter {
					n++
				}
			}
			return float64(n)
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

// Bounds on the per-org series (docs/operations.md, "Metrics"): a cluster
// of thousands of tenants must not give Prometheus thousands of series per
// scrape, but every org at or near its running cap must be visible by name.
const (
	// orgSeriesTop is how many orgs, the ones with the most running agents,
	// get series of their own.
	orgSeriesTop = 20
	// orgSeriesNearCap is the share of its running cap from which an org
	// gets series of its own, whatever its rank.
	orgSeriesNearCap = 0.8
	// orgSeriesMax bounds the orgs with series of their own: the near-cap
	// orgs fullest first, then the top ones.
	orgSeriesMax = 100
	// otherOrg is the org label of the sum over every org without series
	// of its own.
	otherOrg = "other"
)

// clusterCollector exports the replicated state, read at scrape time from
// the local snapshot: nodes, their capacity and allocation, ports, agents,
// and orgs' running agents against their caps. Only the leader exports
// it, so that a sum over the control servers counts everything once (across
// a change of leader two servers may export for a scrape; dashboards take
// max by the identifying labels).
type clusterCollector struct {
	s *Store

	nodes, nodeStatus, capacity, allocated *prometheus.Desc
	agents, ports, orgs                    *prometheus.Desc
	orgRunning, orgCap                     *prometheus.Desc
}

func newClusterCollector(s *Store) *clusterCollector {
	desc := func(subsystem, name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("agenthost", subsystem, name), help, labels, nil)
	}
	return &clusterCollector{
		s:          s,
		nodes:      desc("cluster", "nodes", "Nodes by status (ready, draining, down). Exported by the Raft leader only.", "status"),
		nodeStatus: desc("node", "status", "1 for the node's status (ready, draining, down), 0 for the others. Exported by the Raft leader only.", "node", "status"),
		capacity: desc("node", "capacity", "What a node offers agents, by resource: cpu in cores, memory in bytes, agents in agents. Exported by the Raft leader only.",
			"node", "resource", "unit"),
		allocated: desc("node", "allocated", "What the agents that should run on a node reserve, by resource (as agenthost_node_capacity). Exported by the Raft leader only.",
			"node", "resource", "unit"),
		agents: desc("cluster", "agents", "Agents by observed status (provisioning, running, stopped, error). Exported by the Raft leader only.", "status"),
		ports: desc("cluster", "ports", "Ports of the agent port range, free or held (a port is held from an agent's creation to its deletion). Exported by the Raft leader only.",
			"state"),
		orgs: desc("cluster", "orgs", "Orgs by where their running agents stand against their running cap: at (or over), near (from 80 %), below, unlimited. Exported by the Raft leader only.",
			"running_cap"),
		orgRunning: desc("org", "running_agents", "Agents that count against the org's running cap (desired running, whatever their status), for the orgs with series of their own; org=\"other\" sums the rest. Exported by the Raft leader only.",
			"org", "org_name"),
		orgCap: desc("org", "running_cap", "The org's running cap, for the capped orgs with series of their own. Exported by the Raft leader only.",
			"org", "org_name"),
	}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.nodes, c.nodeStatus, c.capacity, c.allocated, c.agents, c.ports, c.orgs, c.orgRunning, c.orgCap} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.s.IsLeader() {
		return
	}
	st := c.s.State()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	nodes, err := st.Nodes()
	if err != nil {
		c.s.logger.Warn("metrics: list nodes", "error", err)
		return
	}
	statuses := []NodeStatus{NodeReady, NodeDraining, NodeDown}
	byStatus := map[NodeStatus]int{}
	for _, n := range nodes {
		byStatus[n.Status]++
		for _, s := range statuses {
			gauge(c.nodeStatus, boolFloat(n.Status == s), n.Name, string(s))
		}
		alloc, err := st.NodeAllocation(n.ID)
		if err != nil {
			c.s.logger.Warn("metrics: node allocation", "node", n.ID, "error", err)
			continue
		}
		for _, r := range []struct {
			resource, unit  string
			capacity, inUse float64
		}{
			{"cpu", "core", float64(n.Capacity.CPUMillis) / 1000, float64(alloc.CPUMillis) / 1000},
			{"memory", "byte", float64(n.Capacity.MemoryMB << 20), float64(alloc.MemoryMB << 20)},
			{"agents", "agent", float64(n.Capacity.MaxAgents), float64(alloc.Agents)},
		} {
			gauge(c.capacity, r.capacity, n.Name, r.resource, r.unit)
			gauge(c.allocated, r.inUse, n.Name, r.resource, r.unit)
		}
	}
	for _, s := range statuses {
		gauge(c.nodes, float64(byStatus[s]), string(s))
	}

	cfg, err := st.ClusterConfig()
	if err != nil {
		c.s.logger.Warn("metrics: cluster config", "error", err)
		return
	}
	agents, err := st.Agents()
	if err != nil {
		c.s.logger.Warn("metrics: list agents", "error", err)
		return
	}
	agentStatus := map[AgentStatus]int{}
	held := 0
	for _, a := range agents {
		agentStatus[a.Status]++
		if a.Port >= cfg.PortRangeStart && a.Port <= cfg.PortRangeEnd {
			held++
		}
	}
	for _, s := range []AgentStatus{StatusProvisioning, StatusRunning, StatusStopped, StatusError} {
		gauge(c.agents, float64(agentStatus[s]), strings.ToLower(string(s)))
	}
	size := max(cfg.PortRangeEnd-cfg.PortRangeStart+1, 0)
	gauge(c.ports, float64(max(size-held, 0)), "free")
	gauge(c.ports, float64(held), "held")

	orgs, err := st.Orgs()
	if err != nil {
		c.s.logger.Warn("metrics: list orgs", "error", err)
		return
	}
	usage := make([]orgCapUse, 0, len(orgs))
	for _, o := range orgs {
		row, err := first[*usageRow](st.txn, tableOrgUsage, "id", o.ID)
		if err != nil {
			c.s.logger.Warn("metrics: org usage", "org", o.ID, "error", err)
			continue
		}
		u := orgCapUse{ID: o.ID, Name: o.Name, Cap: o.Plan.MaxRunning}
		if row != nil {
			u.Running = row.Running
		}
		usage = append(usage, u)
	}
	own, other := orgSeries(usage, orgSeriesTop, orgSeriesMax, orgSeriesNearCap)
	byCap := map[string]int{}
	for _, u := range usage {
		byCap[u.capState(orgSeriesNearCap)]++
	}
	for _, s := range []string{"at", "near", "below", "unlimited"} {
		gauge(c.orgs, float64(byCap[s]), s)
	}
	for _, u := range own {
		gauge(c.orgRunning, float64(u.Running), u.ID, u.Name)
		if u.Cap > 0 {
			gauge(c.orgCap, float64(u.Cap), u.ID, u.Name)
		}
	}
	gauge(c.orgRunning, float64(other), otherOrg, otherOrg)
}

// orgCapUse is an org's running agents against its running cap (0: none).
type orgCapUse struct {
	ID, Name     string
	Running, Cap int
}

func (u orgCapUse) capState(nearCap float64) string {
	switch {
	case u.Cap <= 0:
		return "unlimited"
	case u.Running >= u.Cap:
		return "at"
	case float64(u.Running) >= nearCap*float64(u.Cap):
		return "near"
	}
	return "below"
}

// orgSeries picks the orgs that get series of their own: every org at or
// past nearCap of its running cap, fullest first, then the top others by
// running agents (orgs running nothing left out), at most limit in all. It returns them and the running
// agents of all the others, which are exported as one org, otherOrg.
func orgSeries(usage []orgCapUse, top, limit int, nearCap float64) (own []orgCapUse, other int) {
	share := func(u orgCapUse) float64 {
		if u.Cap <= 0 {
			return 0
		}
		return float64(u.Running) / float64(u.Cap)
	}
	sorted := slices.Clone(usage)
	// Near-cap orgs first, fullest first; then by running agents; ties by
	// ID, so that the choice is the same at every scrape.
	slices.SortFunc(sorted, func(a, b orgCapUse) int {
		an, bn := share(a) >= nearCap, share(b) >= nearCap
		switch {
		case an != bn:
			if an {
				return -1
			}
			return 1
		case an && share(a) != share(b):
			return cmp.Compare(share(b), share(a))
		case a.Running != b.Running:
			return cmp.Compare(b.Running, a.Running)
		}
		return cmp.Compare(a.ID, b.ID)
	})
	extra := 0
	for _, u := range sorted {
		switch {
		case len(own) >= limit:
		case share(u) >= nearCap:
			own = append(own, u)
			continue
		case extra < top && u.Running > 0:
			own = append(own, u)
			extra++
			continue
		}
		other += u.Running
	}
	return own, other
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
