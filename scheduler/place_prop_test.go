package scheduler

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// TestPlaceInvariants drives a Cluster the way its caller does: random
// sequences of creates, starts, stops and deletes, node registrations,
// drains, downs and ups, and plan changes, with every accepted decision
// applied through UpsertAgent or RemoveAgent. A node going down is followed
// by a KindMove for each agent on it that should run, as the leader does.
//
// Every decision is judged against an oracle worked out from the test's own
// record of the cluster (not the model's counters): a request is refused
// exactly when its documented reason holds, in the documented order, and a
// placement lands on a node that is eligible (or, for a start, the agent's own
// node, up), offers the runtime, matches the constraints and has room after
// the batch's earlier decisions. After every step:
//
//   - no port is held by two agents, and every port lies in the range;
//   - no node's usage exceeds its capacity;
//   - no org is over a cap, unless the cap was lowered under it and the org
//     has not grown since;
//   - every agent that should run sits on a node that is not down, or its
//     last re-placement was refused with ReasonNoNode;
//   - the model's incremental counters equal a recount (checkClusterConsistent).
func TestPlaceInvariants(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		m := newPlaceMachine(rt)
		rt.Repeat(map[string]func(*rapid.T){
			// Creating is listed twice to draw it twice as often: the
			// other agent actions need agents to act on.
			"create":     m.create,
			"create2":    m.create,
			"start":      m.start,
			"stop":       m.stop,
			"delete":     m.delete,
			"addNode":    m.addNode,
			"removeNode": m.removeNode,
			"drainNode":  m.drainNode,
			"downNode":   m.downNode,
			"upNode":     m.upNode,
			"reschedule": m.reschedule,
			"changePlan": m.changePlan,
			"":           m.check,
		})
	})
}

const (
	propPortStart = 30000
	propPortEnd   = 30015
	propMaxNodes  = 6
)

var (
	propOrgs     = []string{"org-1", "org-2", "org-3"}
	propRuntimes = []string{"runc", "gvisor"}
	propRegions  = []string{"eu", "us"}
)

type placeMachine struct {
	c *Cluster
	// nodes, orgs and agents are what the caller has fed the model.
	nodes  map[string]Node
	orgs   map[string]Org
	agents map[string]Agent
	// stranded are agents that should run on a down node and whose last
	// re-placement was refused with ReasonNoNode.
	stranded map[string]bool
	// counts are each org's agents and running agents after the last step.
	counts map[string][2]int
	nextID int
	seed   uint64
}

func newPlaceMachine(t *rapid.T) *placeMachine {
	cfg := Config{
		PortStart: propPortStart, PortEnd: propPortEnd,
		Algorithm:  rapid.SampledFrom([]Algorithm{Binpack, Spread}).Draw(t, "algorithm"),
		SampleSize: rapid.IntRange(1, 4).Draw(t, "sample size"),
	}
	m := &placeMachine{
		c:        NewCluster(cfg),
		nodes:    map[string]Node{},
		orgs:     map[string]Org{},
		agents:   map[string]Agent{},
		stranded: map[string]bool{},
		counts:   map[string][2]int{},
	}
	for range 3 {
		m.addNode(t)
	}
	for _, id := range propOrgs {
		m.setOrg(Org{ID: id, MaxAgents: rapid.IntRange(0, 6).Draw(t, id+" max agents"), MaxRunning: rapid.IntRange(0, 4).Draw(t, id+" max running")})
	}
	return m
}

// Actions.

func (m *placeMachine) create(t *rapid.T) {
	n := rapid.IntRange(1, 4).Draw(t, "batch")
	reqs := make([]Request, n)
	for i := range reqs {
		m.nextID++
		reqs[i] = Request{
			Kind: KindCreate, AgentID: fmt.Sprintf("a%d", m.nextID),
			OrgID:     rapid.SampledFrom(propOrgs).Draw(t, "org"),
			Runtime:   rapid.SampledFrom(propRuntimes).Draw(t, "runtime"),
			Resources: drawResources(t, "agent"),
		}
		if rapid.IntRange(0, 3).Draw(t, "constrained") == 0 {
			reqs[i].Constraints = map[string]string{"region": rapid.SampledFrom(propRegions).Draw(t, "region")}
		}
	}
	m.placeAndApply(t, reqs)
}

func (m *placeMachine) start(t *rapid.T) {
	ids := m.drawAgents(t)
	reqs := make([]Request, len(ids))
	for i, id := range ids {
		reqs[i] = Request{Kind: KindStart, AgentID: id}
	}
	m.placeAndApply(t, reqs)
}

func (m *placeMachine) stop(t *rapid.T) {
	for _, id := range m.drawAgents(t) {
		a := m.agents[id]
		a.Holds = false
		m.upsertAgent(a)
	}
}

func (m *placeMachine) delete(t *rapid.T) {
	for _, id := range m.drawAgents(t) {
		delete(m.agents, id)
		delete(m.stranded, id)
		m.c.RemoveAgent(id)
	}
}

func (m *placeMachine) addNode(t *rapid.T) {
	if len(m.nodes) >= propMaxNodes {
		t.Skip("enough nodes")
	}
	id := fmt.Sprintf("n%d", len(m.nodes)+1)
	for m.nodes[id].ID != "" {
		id += "x"
	}
	n := Node{
		ID:        id,
		Capacity:  Resources{CPUMillis: rapid.SampledFrom([]int64{0, 2000, 4000}).Draw(t, "cpu"), MemoryMB: rapid.SampledFrom([]int64{0, 2048, 4096}).Draw(t, "memory")},
		MaxAgents: rapid.IntRange(0, 4).Draw(t, "max agents"),
		Runtimes:  rapid.SliceOfNDistinct(rapid.SampledFrom(propRuntimes), 0, 2, rapid.ID).Draw(t, "runtimes"),
		Eligible:  true,
	}
	if rapid.Bool().Draw(t, "labelled") {
		n.Labels = map[string]string{"region": rapid.SampledFrom(propRegions).Draw(t, "region")}
	}
	m.setNode(n)
}

// removeNode forgets a node that hosts no agent, as the store allows.
func (m *placeMachine) removeNode(t *rapid.T) {
	var empty []string
	for _, id := range slices.Sorted(maps.Keys(m.nodes)) {
		if !slices.ContainsFunc(slices.Collect(maps.Values(m.agents)), func(a Agent) bool { return a.NodeID == id }) {
			empty = append(empty, id)
		}
	}
	if len(empty) == 0 {
		t.Skip("every node hosts agents")
	}
	id := rapid.SampledFrom(empty).Draw(t, "node")
	delete(m.nodes, id)
	m.c.RemoveNode(id)
}

func (m *placeMachine) drainNode(t *rapid.T) {
	n := m.drawNode(t)
	n.Eligible, n.Down = false, false
	m.setNode(n)
}

func (m *placeMachine) upNode(t *rapid.T) {
	n := m.drawNode(t)
	n.Eligible, n.Down = true, false
	m.setNode(n)
}

func (m *placeMachine) downNode(t *rapid.T) {
	n := m.drawNode(t)
	n.Eligible, n.Down = false, true
	m.setNode(n)
	m.reschedule(t)
}

// reschedule re-places every agent that should run on a down node, as the
// leader does when a node goes down and on every later pass.
func (m *placeMachine) reschedule(t *rapid.T) {
	var reqs []Request
	for _, id := range slices.Sorted(maps.Keys(m.agents)) {
		if a := m.agents[id]; a.Holds && m.nodes[a.NodeID].Down {
			reqs = append(reqs, Request{Kind: KindMove, AgentID: id})
		}
	}
	m.placeAndApply(t, reqs)
}

func (m *placeMachine) changePlan(t *rapid.T) {
	id := rapid.SampledFrom(propOrgs).Draw(t, "org")
	m.setOrg(Org{ID: id, MaxAgents: rapid.IntRange(0, 6).Draw(t, "max agents"), MaxRunning: rapid.IntRange(0, 4).Draw(t, "max running")})
}

// Feeding the model.

func (m *placeMachine) setNode(n Node) {
	m.nodes[n.ID] = n
	m.c.UpsertNode(n)
}

func (m *placeMachine) setOrg(o Org) {
	m.orgs[o.ID] = o
	m.c.UpsertOrg(o)
}

func (m *placeMachine) upsertAgent(a Agent) {
	m.agents[a.ID] = a
	if !a.Holds || !m.nodes[a.NodeID].Down {
		delete(m.stranded, a.ID)
	}
	m.c.UpsertAgent(a)
}

func (m *placeMachine) drawAgents(t *rapid.T) []string {
	if len(m.agents) == 0 {
		t.Skip("no agents")
	}
	ids := slices.Sorted(maps.Keys(m.agents))
	return rapid.SliceOfNDistinct(rapid.SampledFrom(ids), 1, 3, rapid.ID).Draw(t, "agents")
}

func (m *placeMachine) drawNode(t *rapid.T) Node {
	if len(m.nodes) == 0 {
		t.Skip("no nodes")
	}
	return m.nodes[rapid.SampledFrom(slices.Sorted(maps.Keys(m.nodes))).Draw(t, "node")]
}

func drawResources(t *rapid.T, label string) Resources {
	return Resources{
		CPUMillis: rapid.SampledFrom([]int64{0, 500, 1000, 2000}).Draw(t, label+" cpu"),
		MemoryMB:  rapid.SampledFrom([]int64{0, 512, 1024, 2048}).Draw(t, label+" memory"),
	}
}

// placeAndApply places a batch, judges every decision, and applies the
// accepted ones as the caller would once the plan is committed.
func (m *placeMachine) placeAndApply(t *rapid.T, reqs []Request) {
	if len(reqs) == 0 {
		return
	}
	m.seed++
	ds := Place(m.c, reqs, m.seed)
	if len(ds) != len(reqs) {
		t.Fatalf("%d decisions for %d requests", len(ds), len(reqs))
	}
	o := m.newOracle()
	for i, r := range reqs {
		o.judge(t, r, ds[i])
	}
	for i, r := range reqs {
		d := ds[i]
		switch {
		case r.Kind == KindMove && d.Reason == ReasonNoNode:
			m.stranded[r.AgentID] = true
		case !d.OK():
		case r.Kind == KindCreate:
			m.upsertAgent(Agent{
				ID: r.AgentID, OrgID: r.OrgID, NodeID: d.NodeID, Port: d.Port, Resources: r.Resources,
				Runtime: r.Runtime, Constraints: r.Constraints, Holds: true,
			})
		default: // start, move
			a := m.agents[r.AgentID]
			a.NodeID, a.Holds = d.NodeID, true
			m.upsertAgent(a)
		}
	}
}

// oracle works out, from the machine's records and the batch's earlier
// decisions, what each decision must be.
type oracle struct {
	m     *placeMachine
	used  map[string]Resources // by node, holding agents and batch reservations
	count map[string]int       // by node
	orgs  map[string][2]int    // agents, running, with the batch's
	ports map[int]bool         // held, or taken earlier in the batch
}

func (m *placeMachine) newOracle() *oracle {
	o := &oracle{m: m, used: map[string]Resources{}, count: map[string]int{}, orgs: map[string][2]int{}, ports: map[int]bool{}}
	for _, a := range m.agents {
		o.ports[a.Port] = true
		c := o.orgs[a.OrgID]
		c[0]++
		if a.Holds {
			c[1]++
			o.reserve(a.NodeID, a.Resources)
		}
		o.orgs[a.OrgID] = c
	}
	return o
}

func (o *oracle) reserve(node string, r Resources) {
	u := o.used[node]
	u.CPUMillis += r.CPUMillis
	u.MemoryMB += r.MemoryMB
	o.used[node] = u
	o.count[node]++
}

func (o *oracle) fits(n Node, r Resources) bool {
	u := o.used[n.ID]
	return (n.Capacity.CPUMillis == 0 || u.CPUMillis+r.CPUMillis <= n.Capacity.CPUMillis) &&
		(n.Capacity.MemoryMB == 0 || u.MemoryMB+r.MemoryMB <= n.Capacity.MemoryMB) &&
		(n.MaxAgents == 0 || o.count[n.ID] < n.MaxAgents)
}

// candidate reports whether a new placement may go to n.
func (o *oracle) candidate(n Node, runtime string, constraints map[string]string, r Resources) bool {
	if !n.Eligible || (runtime != "" && len(n.Runtimes) > 0 && !slices.Contains(n.Runtimes, runtime)) {
		return false
	}
	for k, v := range constraints {
		if n.Labels[k] != v {
			return false
		}
	}
	return o.fits(n, r)
}

func (o *oracle) anyCandidate(runtime string, constraints map[string]string, r Resources, exclude string) bool {
	for id, n := range o.m.nodes {
		if id != exclude && o.candidate(n, runtime, constraints, r) {
			return true
		}
	}
	return false
}

func (o *oracle) judge(t *rapid.T, r Request, d Decision) {
	t.Helper()
	if d.AgentID != r.AgentID {
		t.Fatalf("decision for %s answers request for %s", d.AgentID, r.AgentID)
	}
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s %s: %s; decision %+v", r.Kind, r.AgentID, fmt.Sprintf(format, args...), d)
	}
	wantReason := func(want Reason) {
		t.Helper()
		if d.Reason != want {
			fail("want reason %q", want)
		}
	}
	switch r.Kind {
	case KindCreate:
		org, counts := o.m.orgs[r.OrgID], o.orgs[r.OrgID]
		switch {
		case org.MaxAgents > 0 && counts[0] >= org.MaxAgents:
			wantReason(ReasonAgentLimit)
		case org.MaxRunning > 0 && counts[1] >= org.MaxRunning:
			wantReason(ReasonRunningCap)
		case len(o.ports) >= propPortEnd-propPortStart+1:
			wantReason(ReasonNoPorts)
		case !o.anyCandidate(r.Runtime, r.Constraints, r.Resources, ""):
			wantReason(ReasonNoNode)
		default:
			wantReason("")
			if d.Port < propPortStart || d.Port > propPortEnd || o.ports[d.Port] {
				fail("port %d is outside the range or taken", d.Port)
			}
			if !o.candidate(o.m.nodes[d.NodeID], r.Runtime, r.Constraints, r.Resources) {
				fail("node %s may not take it", d.NodeID)
			}
			o.ports[d.Port] = true
			o.reserve(d.NodeID, r.Resources)
			o.orgs[r.OrgID] = [2]int{counts[0] + 1, counts[1] + 1}
		}

	case KindStart:
		a := o.m.agents[r.AgentID]
		org, counts := o.m.orgs[a.OrgID], o.orgs[a.OrgID]
		own, ownKnown := o.m.nodes[a.NodeID]
		switch {
		case a.Holds:
			wantReason("")
			if d.NodeID != a.NodeID {
				fail("a running agent moved from %s", a.NodeID)
			}
		case org.MaxRunning > 0 && counts[1] >= org.MaxRunning:
			wantReason(ReasonRunningCap)
		case ownKnown && !own.Down && o.fits(own, a.Resources):
			wantReason("")
			if d.NodeID != a.NodeID {
				fail("started elsewhere although its own node %s has room", a.NodeID)
			}
		case !o.anyCandidate(a.Runtime, a.Constraints, a.Resources, a.NodeID):
			wantReason(ReasonNoNode)
		default:
			wantReason("")
			if d.NodeID == a.NodeID || !o.candidate(o.m.nodes[d.NodeID], a.Runtime, a.Constraints, a.Resources) {
				fail("node %s may not take it", d.NodeID)
			}
		}
		if d.OK() && d.Port != a.Port {
			fail("port changed from %d", a.Port)
		}
		if d.OK() && !a.Holds {
			o.reserve(d.NodeID, a.Resources)
			o.orgs[a.OrgID] = [2]int{counts[0], counts[1] + 1}
		}

	case KindMove:
		a := o.m.agents[r.AgentID]
		if !o.anyCandidate(a.Runtime, a.Constraints, a.Resources, a.NodeID) {
			wantReason(ReasonNoNode)
			return
		}
		wantReason("")
		if d.NodeID == a.NodeID || !o.candidate(o.m.nodes[d.NodeID], a.Runtime, a.Constraints, a.Resources) {
			fail("node %s may not take it", d.NodeID)
		}
		if d.Port != a.Port {
			fail("port changed from %d", a.Port)
		}
		o.reserve(d.NodeID, a.Resources)
	}
}

// check states the invariants after every step.
func (m *placeMachine) check(t *rapid.T) {
	holder := map[int]string{}
	used := map[string]Resources{}
	count := map[string]int{}
	counts := map[string][2]int{}
	for _, id := range slices.Sorted(maps.Keys(m.agents)) {
		a := m.agents[id]
		if other, ok := holder[a.Port]; ok {
			t.Fatalf("port %d held by %s and %s", a.Port, other, id)
		}
		holder[a.Port] = id
		if a.Port < propPortStart || a.Port > propPortEnd {
			t.Fatalf("agent %s holds port %d, outside %d-%d", id, a.Port, propPortStart, propPortEnd)
		}
		c := counts[a.OrgID]
		c[0]++
		if a.Holds {
			c[1]++
			u := used[a.NodeID]
			u.CPUMillis += a.Resources.CPUMillis
			u.MemoryMB += a.Resources.MemoryMB
			used[a.NodeID] = u
			count[a.NodeID]++
			if n, ok := m.nodes[a.NodeID]; !ok || n.Down {
				if !m.stranded[id] {
					t.Fatalf("agent %s should run but sits on down node %s without a refused re-placement", id, a.NodeID)
				}
			}
		}
		counts[a.OrgID] = c
	}
	for id, n := range m.nodes {
		u, k := used[id], count[id]
		if (n.Capacity.CPUMillis > 0 && u.CPUMillis > n.Capacity.CPUMillis) ||
			(n.Capacity.MemoryMB > 0 && u.MemoryMB > n.Capacity.MemoryMB) ||
			(n.MaxAgents > 0 && k > n.MaxAgents) {
			t.Fatalf("node %s over capacity: %+v by %d agents, capacity %+v, max %d agents", id, u, k, n.Capacity, n.MaxAgents)
		}
		if got, gotK, _ := m.c.NodeUsage(id); got != u || gotK != k {
			t.Fatalf("model says node %s uses %+v by %d agents, agents say %+v by %d", id, got, gotK, u, k)
		}
	}
	for _, id := range propOrgs {
		org, c, before := m.orgs[id], counts[id], m.counts[id]
		if org.MaxAgents > 0 && c[0] > org.MaxAgents && c[0] > before[0] {
			t.Fatalf("org %s grew to %d agents, over its cap of %d", id, c[0], org.MaxAgents)
		}
		if org.MaxRunning > 0 && c[1] > org.MaxRunning && c[1] > before[1] {
			t.Fatalf("org %s grew to %d running, over its cap of %d", id, c[1], org.MaxRunning)
		}
		if a, r := m.c.OrgUsage(id); a != c[0] || r != c[1] {
			t.Fatalf("model says org %s has %d agents, %d running; agents say %d, %d", id, a, r, c[0], c[1])
		}
	}
	m.counts = counts
	if free := propPortEnd - propPortStart + 1 - len(m.agents); m.c.FreePorts() != free {
		t.Fatalf("FreePorts() = %d, want %d", m.c.FreePorts(), free)
	}
	checkClusterConsistent(t, m.c)
	if t.Failed() {
		t.FailNow()
	}
}
