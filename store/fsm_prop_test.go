package store

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// TestPlacementInvariants applies random sequences of agent creates, starts,
// stops and deletes, node registrations and status changes, and plan changes
// through FSM.Apply, and after every step checks the invariants the
// scheduler relies on, straight from the State:
//
//   - no port is held by two agents, and every port lies in the configured range;
//   - no node's allocation exceeds its capacity;
//   - a create or start the FSM accepted was within the org's plan at that
//     moment (a plan lowered afterwards may leave an org above it);
//   - a command is refused exactly when one of its documented refusal
//     reasons holds in the state it was applied to, with one of those
//     reasons' sentinels;
//   - a refused command leaves the state hash unchanged.
func TestPlacementInvariants(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		m := newPlacementMachine(rt)
		rt.Repeat(map[string]func(*rapid.T){
			// Creating is listed twice to draw it twice as often: the
			// other actions need agents to act on.
			"createAgent":   m.createAgent,
			"createAgent2":  m.createAgent,
			"setDesired":    m.setDesired,
			"deleteAgent":   m.deleteAgent,
			"registerNode":  m.registerNode,
			"setNodeStatus": m.setNodeStatus,
			"changePlan":    m.changePlan,
			"":              m.check,
		})
	})
}

const (
	propPortStart = 30000
	propPortEnd   = 30011
)

var (
	propOrgs     = []string{"org-1", "org-2"}
	propNodes    = []string{"node-1", "node-2", "node-3"}
	propRuntimes = []string{"opencode", "claude"}
)

type placementMachine struct {
	f *testFSM
	// nodes are the registrations made at setup; re-registrations repeat
	// them so that capacities never change under the agents.
	nodes map[string]Node
	// agents are the ids of the agents the FSM accepted and has not deleted.
	agents []string
	nextID int
}

func newPlacementMachine(t *rapid.T) *placementMachine {
	m := &placementMachine{f: newTestFSM(t), nodes: map[string]Node{}}
	m.f.mustApply(&ClusterConfigSet{Config: ClusterConfig{
		PortRangeStart: propPortStart, PortRangeEnd: propPortEnd,
		SchedulerAlgorithm: AlgorithmBinpack, ReschedulePolicy: RescheduleReschedule,
	}})
	for _, id := range propOrgs {
		m.f.mustApply(newOrg(id, "name of "+id, drawPlan(t, id)))
	}
	for _, id := range propNodes {
		n := Node{
			ID: id, Name: id, Address: id + ":7000",
			Capacity: NodeCapacity{
				CPUMillis: rapid.SampledFrom([]int64{0, 2000, 4000}).Draw(t, id+" cpu"),
				MemoryMB:  rapid.SampledFrom([]int64{0, 2048, 4096}).Draw(t, id+" memory"),
				MaxAgents: rapid.IntRange(0, 3).Draw(t, id+" max agents"),
			},
			Runtimes: rapid.SampledFrom([][]string{nil, {"opencode"}, propRuntimes}).Draw(t, id+" runtimes"),
		}
		m.nodes[id] = n
		m.f.mustApply(&NodeRegister{Node: n})
	}
	return m
}

func drawPlan(t *rapid.T, label string) Plan {
	return Plan{
		MaxAgents:  rapid.IntRange(0, 4).Draw(t, label+" maxAgents"),
		MaxRunning: rapid.IntRange(0, 2).Draw(t, label+" maxRunning"),
	}
}

// apply applies cmd and returns the state it was applied to and the error
// that refused it; a refused command must not have changed the state.
func (m *placementMachine) apply(t *rapid.T, cmd Command) (*State, error) {
	t.Helper()
	before := m.f.state()
	_, err := m.f.apply(cmd)
	if err != nil && m.f.hash() != stateHash(t, before) {
		t.Fatalf("%s refused (%v) but the state changed", cmd.CommandType(), err)
	}
	return before, err
}

// drawAgentID picks a live agent, or now and then one that does not exist.
func (m *placementMachine) drawAgentID(t *rapid.T) string {
	if len(m.agents) == 0 || rapid.IntRange(0, 9).Draw(t, "unknown agent") == 0 {
		return "ag-missing"
	}
	return rapid.SampledFrom(m.agents).Draw(t, "agent")
}

// drawPort picks a port of the range, or now and then one just outside it.
func drawPort(t *rapid.T) int {
	if rapid.IntRange(0, 19).Draw(t, "port outside") == 0 {
		return rapid.SampledFrom([]int{propPortStart - 1, propPortEnd + 1}).Draw(t, "outside port")
	}
	return rapid.IntRange(propPortStart, propPortEnd).Draw(t, "port")
}

// drawNodeID picks one of the nodes, or once in oneIn draws one that does not exist.
func drawNodeID(t *rapid.T, oneIn int) string {
	if rapid.IntRange(1, oneIn).Draw(t, "unknown node") == 1 {
		return "node-missing"
	}
	return rapid.SampledFrom(propNodes).Draw(t, "node")
}

func (m *placementMachine) createAgent(t *rapid.T) {
	id := fmt.Sprintf("ag-%d", m.nextID)
	if len(m.agents) > 0 && rapid.IntRange(0, 19).Draw(t, "reuse id") == 0 {
		id = rapid.SampledFrom(m.agents).Draw(t, "taken id")
	}
	a := Agent{
		ID: id, OrgID: rapid.SampledFrom(propOrgs).Draw(t, "org"), Name: "agent " + id,
		Runtime: rapid.SampledFrom([]string{"opencode", "opencode", "opencode", "claude"}).Draw(t, "runtime"),
		Resources: Resources{
			CPUMillis: rapid.SampledFrom([]int64{0, 500, 1000, 2000}).Draw(t, "cpu"),
			MemoryMB:  rapid.SampledFrom([]int64{0, 512, 1024, 2048}).Draw(t, "memory"),
		},
		Desired: rapid.SampledFrom([]DesiredState{DesiredRunning, DesiredStopped}).Draw(t, "desired"),
		Status:  StatusProvisioning,
		NodeID:  drawNodeID(t, 10),
		Port:    drawPort(t),
	}
	before, err := m.apply(t, &AgentCreate{Agent: a})
	reasons := createRefusals(t, before, &a)
	checkVerdict(t, "create "+id, err, reasons)
	if err != nil {
		return
	}
	m.nextID++
	m.agents = append(m.agents, id)
	checkWithinPlan(t, m.f.state(), a.OrgID, "create "+id, true, a.HoldsResources())
}

func (m *placementMachine) setDesired(t *rapid.T) {
	id := m.drawAgentID(t)
	desired := rapid.SampledFrom([]DesiredState{DesiredRunning, DesiredStopped}).Draw(t, "desired")
	// Mostly flip the agent's state: starting a stopped agent is the step
	// with the most ways to be refused.
	if a := agentOf(t, m.f.state(), id); a != nil && rapid.IntRange(0, 3).Draw(t, "flip") > 0 {
		desired = DesiredRunning
		if a.HoldsResources() {
			desired = DesiredStopped
		}
	}
	before, err := m.apply(t, &AgentSetDesired{ID: id, Desired: desired})
	reasons := startRefusals(t, before, id, desired)
	checkVerdict(t, fmt.Sprintf("set %s %s", id, desired), err, reasons)
	if err == nil {
		a := agentOf(t, m.f.state(), id)
		if a.Desired != desired {
			t.Fatalf("agent %s desired %s, want %s", id, a.Desired, desired)
		}
		if old := agentOf(t, before, id); desired == DesiredRunning && !old.HoldsResources() {
			checkWithinPlan(t, m.f.state(), a.OrgID, "start "+id, false, true)
		}
	}
}

func (m *placementMachine) deleteAgent(t *rapid.T) {
	id := m.drawAgentID(t)
	before, err := m.apply(t, &AgentDelete{ID: id})
	var reasons []error
	if agentOf(t, before, id) == nil {
		reasons = append(reasons, ErrNotFound)
	}
	checkVerdict(t, "delete "+id, err, reasons)
	if err == nil {
		m.agents = slices.DeleteFunc(m.agents, func(x string) bool { return x == id })
	}
}

func (m *placementMachine) registerNode(t *rapid.T) {
	id := rapid.SampledFrom(propNodes).Draw(t, "node")
	n := m.nodes[id]
	clash := rapid.IntRange(0, 4).Draw(t, "name clash") == 0
	if clash {
		// Another id under an existing name is refused.
		n.ID = "node-intruder"
	} else {
		n.Address = rapid.SampledFrom([]string{"10.0.0.1:7000", "10.0.0.2:7000"}).Draw(t, "address")
	}
	before, err := m.apply(t, &NodeRegister{Node: n})
	var reasons []error
	if clash {
		reasons = append(reasons, ErrAlreadyExists)
	}
	checkVerdict(t, "register "+n.ID, err, reasons)
	if err == nil {
		want := NodeReady
		if nodeOf(t, before, id).Status == NodeDraining {
			want = NodeDraining
		}
		if got := nodeOf(t, m.f.state(), id).Status; got != want {
			t.Fatalf("re-registered %s is %s, want %s", id, got, want)
		}
	}
}

func (m *placementMachine) setNodeStatus(t *rapid.T) {
	id := drawNodeID(t, 10)
	// Ready is drawn as often as the two others together, so that most
	// nodes take placements most of the time.
	status := rapid.SampledFrom([]NodeStatus{NodeReady, NodeReady, NodeDraining, NodeDown}).Draw(t, "status")
	before, err := m.apply(t, setNodeStatus(id, status))
	var reasons []error
	if nodeOf(t, before, id) == nil {
		reasons = append(reasons, ErrNotFound)
	}
	checkVerdict(t, fmt.Sprintf("node %s %s", id, status), err, reasons)
}

func (m *placementMachine) changePlan(t *rapid.T) {
	id := rapid.SampledFrom(propOrgs).Draw(t, "org")
	plan := drawPlan(t, "new plan")
	_, err := m.apply(t, &OrgUpdate{ID: id, Plan: &plan})
	checkVerdict(t, "plan of "+id, err, nil)
}

// check holds after every step, whatever happened.
func (m *placementMachine) check(t *rapid.T) {
	s := m.f.state()
	agents, err := s.Agents()
	if err != nil {
		t.Fatalf("agents: %v", err)
	}
	checkUsageRows(t, s, agents)
	cfg, err := s.ClusterConfig()
	if err != nil {
		t.Fatalf("cluster config: %v", err)
	}
	holders := map[int]string{}
	ids := make([]string, 0, len(agents))
	for _, a := range agents {
		ids = append(ids, a.ID)
		if other, taken := holders[a.Port]; taken {
			t.Fatalf("port %d held by %s and %s", a.Port, other, a.ID)
		}
		holders[a.Port] = a.ID
		if a.Port < cfg.PortRangeStart || a.Port > cfg.PortRangeEnd {
			t.Fatalf("agent %s holds port %d outside %d-%d", a.ID, a.Port, cfg.PortRangeStart, cfg.PortRangeEnd)
		}
		if byPort, err := s.AgentByPort(a.Port); err != nil || byPort == nil || byPort.ID != a.ID {
			t.Fatalf("AgentByPort(%d) = %+v, %v; want %s", a.Port, byPort, err, a.ID)
		}
		if nodeOf(t, s, a.NodeID) == nil {
			t.Fatalf("agent %s is on unknown node %s", a.ID, a.NodeID)
		}
	}
	if !slices.Equal(ids, slices.Sorted(slices.Values(m.agents))) {
		t.Fatalf("state holds agents %v, want the accepted ones %v", ids, m.agents)
	}
	for _, id := range propNodes {
		n := nodeOf(t, s, id)
		if n.Capacity != m.nodes[id].Capacity {
			t.Fatalf("node %s capacity changed to %+v", id, n.Capacity)
		}
		if over := overCapacity(allocationOf(t, s, id), n.Capacity, Resources{}, 0); over {
			t.Fatalf("node %s allocation %+v exceeds capacity %+v", id, allocationOf(t, s, id), n.Capacity)
		}
	}
}

// checkVerdict fails unless the FSM refused exactly when some reason holds,
// with one of those reasons.
func checkVerdict(t *rapid.T, what string, err error, reasons []error) {
	t.Helper()
	switch {
	case err == nil && len(reasons) > 0:
		t.Fatalf("%s accepted, but it should have been refused with one of %v", what, reasons)
	case err != nil && len(reasons) == 0:
		t.Fatalf("%s refused with %v, but nothing forbids it", what, err)
	case err != nil && !slices.ContainsFunc(reasons, func(r error) bool { return errors.Is(err, r) }):
		t.Fatalf("%s refused with %v, want one of %v", what, err, reasons)
	}
}

// checkWithinPlan checks an org right after an accepted create or start:
// the caps that command was checked against must hold. Only those: an org
// whose plan was lowered may stay above its other cap (a stopped agent may be
// created while too many run; an agent may start while too many exist).
func checkWithinPlan(t *rapid.T, s *State, orgID, what string, checkAgents, checkRunning bool) {
	t.Helper()
	org := orgOf(t, s, orgID)
	agents, running := orgUse(t, s, orgID, "")
	if checkAgents && org.Plan.MaxAgents > 0 && agents > org.Plan.MaxAgents {
		t.Fatalf("after %s, %s has %d agents, plan allows %d", what, orgID, agents, org.Plan.MaxAgents)
	}
	if checkRunning && org.Plan.MaxRunning > 0 && running > org.Plan.MaxRunning {
		t.Fatalf("after %s, %s runs %d agents, plan allows %d", what, orgID, running, org.Plan.MaxRunning)
	}
}

// createRefusals lists every reason the store documents for refusing a,
// judged on the state before the command.
func createRefusals(t *rapid.T, s *State, a *Agent) []error {
	t.Helper()
	var reasons []error
	if agentOf(t, s, a.ID) != nil {
		reasons = append(reasons, ErrAlreadyExists)
	}
	org := orgOf(t, s, a.OrgID)
	agents, running := orgUse(t, s, a.OrgID, "")
	if org.Plan.MaxAgents > 0 && agents >= org.Plan.MaxAgents {
		reasons = append(reasons, ErrAgentLimit)
	}
	if a.HoldsResources() && org.Plan.MaxRunning > 0 && running >= org.Plan.MaxRunning {
		reasons = append(reasons, ErrRunningCap)
	}
	if a.Port < propPortStart || a.Port > propPortEnd {
		reasons = append(reasons, ErrPortOutOfRange)
	}
	if holder, err := s.AgentByPort(a.Port); err != nil {
		t.Fatalf("AgentByPort: %v", err)
	} else if holder != nil {
		reasons = append(reasons, ErrPortInUse)
	}
	node := nodeOf(t, s, a.NodeID)
	switch {
	case node == nil || node.Status != NodeReady:
		reasons = append(reasons, ErrNodeNotEligible)
	case len(node.Runtimes) > 0 && !slices.Contains(node.Runtimes, a.Runtime):
		reasons = append(reasons, ErrNodeNotEligible)
	case a.HoldsResources() && overCapacity(allocationOf(t, s, node.ID), node.Capacity, a.Resources, 1):
		reasons = append(reasons, ErrNoCapacity)
	}
	return reasons
}

// startRefusals lists the reasons to refuse setting agent id to desired.
func startRefusals(t *rapid.T, s *State, id string, desired DesiredState) []error {
	t.Helper()
	a := agentOf(t, s, id)
	if a == nil {
		return []error{ErrNotFound}
	}
	if desired != DesiredRunning || a.HoldsResources() {
		return nil
	}
	var reasons []error
	org := orgOf(t, s, a.OrgID)
	if _, running := orgUse(t, s, a.OrgID, id); org.Plan.MaxRunning > 0 && running >= org.Plan.MaxRunning {
		reasons = append(reasons, ErrRunningCap)
	}
	node := nodeOf(t, s, a.NodeID)
	switch {
	case node == nil || node.Status == NodeDown:
		reasons = append(reasons, ErrNodeNotEligible)
	case overCapacity(allocationOf(t, s, node.ID), node.Capacity, a.Resources, 1):
		reasons = append(reasons, ErrNoCapacity)
	}
	return reasons
}

// orgUse counts an org's agents and those that should run, leaving out except.
func orgUse(t *rapid.T, s *State, orgID, except string) (agents, running int) {
	t.Helper()
	list, err := s.AgentsByOrg(orgID)
	if err != nil {
		t.Fatalf("agents of %s: %v", orgID, err)
	}
	for _, a := range list {
		if a.ID == except {
			continue
		}
		agents++
		if a.HoldsResources() {
			running++
		}
	}
	return agents, running
}

// overCapacity reports whether adding extra (counting as n agents) to alloc
// exceeds any limited dimension of capy.
func overCapacity(alloc NodeAllocation, capy NodeCapacity, extra Resources, n int) bool {
	return (capy.CPUMillis > 0 && alloc.CPUMillis+extra.CPUMillis > capy.CPUMillis) ||
		(capy.MemoryMB > 0 && alloc.MemoryMB+extra.MemoryMB > capy.MemoryMB) ||
		(capy.MaxAgents > 0 && alloc.Agents+n > capy.MaxAgents)
}

// checkUsageRows recomputes the derived org and node usage rows from the
// agents themselves: the O(1) cap and capacity checks are only as good as them.
func checkUsageRows(t *rapid.T, s *State, agents []*Agent) {
	orgs := map[string]usage{}
	nodes := map[string]NodeAllocation{}
	for _, a := range agents {
		u := orgs[a.OrgID]
		u.agents++
		if a.HoldsResources() {
			u.running++
			n := nodes[a.NodeID]
			n.CPUMillis += a.Resources.CPUMillis
			n.MemoryMB += a.Resources.MemoryMB
			n.Agents++
			nodes[a.NodeID] = n
		}
		orgs[a.OrgID] = u
	}
	rows, err := all[*usageRow](s.txn, tableOrgUsage, "id")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if want := orgs[r.ID]; r.Agents != want.agents || r.Running != want.running {
			t.Fatalf("org %s usage row %+v, agents say %+v", r.ID, r, want)
		}
		delete(orgs, r.ID)
	}
	if len(orgs) > 0 {
		t.Fatalf("orgs with agents but no usage row: %v", orgs)
	}
	for id, want := range nodes {
		got, err := s.NodeAllocation(id)
		if err != nil || got != want {
			t.Fatalf("node %s allocation %+v (err %v), agents say %+v", id, got, err, want)
		}
	}
}
