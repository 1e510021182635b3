package placement_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

var created = time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)

func apply(t *testing.T, s *store.Store, cmd store.Command) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idx, err := s.Apply(ctx, cmd)
	if err != nil {
		t.Fatalf("apply %s: %v", cmd.CommandType(), err)
	}
	return idx
}

func registerNodes(t *testing.T, s *store.Store, n int, capacity store.NodeCapacity) {
	t.Helper()
	for i := range n {
		apply(t, s, &store.NodeRegister{Node: store.Node{
			ID: fmt.Sprintf("node-%d", i), Name: fmt.Sprintf("node-%d", i), Address: fmt.Sprintf("10.0.0.%d:7500", i+1),
			Capacity: capacity, Runtimes: []string{"opencode"}, LastSeen: created,
		}})
	}
}

func newAgent(id, org string) store.Agent {
	return store.Agent{
		ID: id, OrgID: org, Name: id, Runtime: "opencode",
		Resources: store.Resources{CPUMillis: 100, MemoryMB: 128},
		Desired:   store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: created,
	}
}

func createAgent(ctx context.Context, s *store.Store, id, org string) (uint64, error) {
	return s.Apply(ctx, &store.AgentCreate{Agent: newAgent(id, org)})
}

// requireNoDuplicatePorts checks the invariant the scheduler must never break.
func requireNoDuplicatePorts(t *testing.T, st *store.State) []*store.Agent {
	t.Helper()
	agents, err := st.Agents()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]string{}
	for _, a := range agents {
		if other, ok := seen[a.Port]; ok {
			t.Fatalf("port %d held by %s and %s", a.Port, other, a.ID)
		}
		seen[a.Port] = a.ID
		if a.NodeID == "" || a.Port < 10000 || a.Port > 59999 {
			t.Fatalf("agent %s placed on %q port %d", a.ID, a.NodeID, a.Port)
		}
	}
	return agents
}

func TestThousandConcurrentCreatesAdmitExactlyTheRunningCap(t *testing.T) {
	// 1,000 writers, most forwarded, on two cores under the race detector:
	// production timings keep heartbeats from starving into elections.
	tc := clusterrpc.NewTestClusterWith(t, 3, clusterrpc.ProductionTimings)
	leader := tc.Servers[tc.WaitForLeader()].Store
	apply(t, leader, &store.OrgCreate{Org: store.Org{ID: "org-1", Name: "capped", Plan: store.Plan{MaxAgents: 5000, MaxRunning: 100}, CreatedAt: created}})
	registerNodes(t, leader, 3, store.NodeCapacity{CPUMillis: 64000, MemoryMB: 262144, MaxAgents: 500})

	const n = 1000
	var wg sync.WaitGroup
	errs := make([]error, n)
	var maxIndex uint64
	var mu sync.Mutex
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// Spread the callers over all servers: followers forward. A
			// write whose outcome is unknown (leadership changed while it
			// was in flight: this test loads two cores hard) is retried as
			// a careful client would: the agent id makes the retry safe,
			// and "already exists" means the first attempt was committed.
			// So is a write refused for want of a leader (the API's 503):
			// starved of CPU, the cluster may spend seconds electing one,
			// and what this test checks is admission, not availability.
			var idx uint64
			var err error
			for attempt := 0; ; attempt++ {
				idx, err = createAgent(ctx, tc.Servers[(i+attempt)%3].Store, fmt.Sprintf("agent-%04d", i), "org-1")
				if attempt > 0 && errors.Is(err, store.ErrAlreadyExists) {
					err = nil
				}
				retry := errors.Is(err, store.ErrOutcomeUnknown) || errors.Is(err, store.ErrNoLeader) || errors.Is(err, store.ErrNotLeader)
				if !retry || attempt == 10 || ctx.Err() != nil {
					break
				}
			}
			errs[i] = err
			mu.Lock()
			maxIndex = max(maxIndex, idx)
			mu.Unlock()
		}()
	}
	wg.Wait()

	admitted, capped := 0, 0
	for i, err := range errs {
		switch {
		case err == nil:
			admitted++
		case errors.Is(err, store.ErrRunningCap):
			capped++
		default:
			t.Errorf("create %d: unexpected error %v", i, err)
		}
	}
	if admitted != 100 || capped != 900 {
		t.Fatalf("admitted %d, refused at the running cap %d; want 100 and 900", admitted, capped)
	}
	tc.WaitForIndex(maxIndex)
	for _, srv := range tc.Servers {
		agents := requireNoDuplicatePorts(t, srv.Store.State())
		if len(agents) != 100 {
			t.Fatalf("server %s holds %d agents, want 100", srv.Store.ServerID(), len(agents))
		}
	}
}

func TestPlacementCapsAndErrors(t *testing.T) {
	tc := clusterrpc.NewTestCluster(t, 1)
	s := tc.Servers[0].Store
	ctx := context.Background()
	apply(t, s, &store.OrgCreate{Org: store.Org{ID: "small", Name: "small", Plan: store.Plan{MaxAgents: 2, MaxRunning: 1}, CreatedAt: created}})

	if _, err := createAgent(ctx, s, "a0", "small"); !errors.Is(err, store.ErrNoNodeFits) {
		t.Fatalf("create with no nodes: got %v, want ErrNoNodeFits", err)
	}
	registerNodes(t, s, 1, store.NodeCapacity{CPUMillis: 1000, MemoryMB: 1024, MaxAgents: 10})
	if _, err := createAgent(ctx, s, "a1", "small"); err != nil {
		t.Fatal(err)
	}
	if _, err := createAgent(ctx, s, "a2", "small"); !errors.Is(err, store.ErrRunningCap) {
		t.Fatalf("second running agent: got %v, want ErrRunningCap", err)
	}
	// Stop a1: it keeps its port, frees the running slot.
	before, _ := s.State().Agent("a1")
	apply(t, s, &store.AgentSetDesired{ID: "a1", Desired: store.DesiredStopped, Status: store.StatusStopped})
	if _, err := createAgent(ctx, s, "a2", "small"); err != nil {
		t.Fatalf("create after stop: %v", err)
	}
	if _, err := createAgent(ctx, s, "a3", "small"); !errors.Is(err, store.ErrAgentLimit) {
		t.Fatalf("third agent: got %v, want ErrAgentLimit", err)
	}
	// Retrying a create that was committed says so, even at the caps.
	if _, err := createAgent(ctx, s, "a2", "small"); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("repeated create: got %v, want ErrAlreadyExists", err)
	}
	// Starting a1 again hits the running cap (a2 runs) ...
	if _, err := s.Apply(ctx, &store.AgentSetDesired{ID: "a1", Desired: store.DesiredRunning}); !errors.Is(err, store.ErrRunningCap) {
		t.Fatalf("start at cap: got %v, want ErrRunningCap", err)
	}
	// ... and succeeds once a2 is deleted, on the same port.
	apply(t, s, &store.AgentDelete{ID: "a2"})
	apply(t, s, &store.AgentSetDesired{ID: "a1", Desired: store.DesiredRunning})
	after, _ := s.State().Agent("a1")
	if after.Port != before.Port || !after.HoldsResources() {
		t.Fatalf("restarted agent: port %d (was %d), desired %s", after.Port, before.Port, after.Desired)
	}
}

func TestNoPortsLeft(t *testing.T) {
	tc := clusterrpc.NewTestCluster(t, 1)
	s := tc.Servers[0].Store
	ctx := context.Background()
	apply(t, s, &store.ClusterConfigSet{Config: store.ClusterConfig{PortRangeStart: 20000, PortRangeEnd: 20002, SchedulerAlgorithm: store.AlgorithmSpread, ReschedulePolicy: store.RescheduleReschedule}})
	apply(t, s, &store.OrgCreate{Org: store.Org{ID: "o", Name: "o", CreatedAt: created}})
	registerNodes(t, s, 2, store.NodeCapacity{})
	for i := range 3 {
		if _, err := createAgent(ctx, s, fmt.Sprintf("a%d", i), "o"); err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}
	if _, err := createAgent(ctx, s, "a3", "o"); !errors.Is(err, store.ErrNoPorts) {
		t.Fatalf("create past the range: got %v, want ErrNoPorts", err)
	}
	apply(t, s, &store.AgentDelete{ID: "a1"})
	if _, err := createAgent(ctx, s, "a4", "o"); err != nil {
		t.Fatalf("create after a port was freed: %v", err)
	}
	requireNoDuplicatePorts(t, s.State())
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNodeDownReschedulesKeepingPorts(t *testing.T) {
	tc := clusterrpc.NewTestCluster(t, 3)
	s := tc.Servers[tc.WaitForLeader()].Store
	ctx := context.Background()
	apply(t, s, &store.OrgCreate{Org: store.Org{ID: "o", Name: "o", CreatedAt: created}})
	registerNodes(t, s, 1, store.NodeCapacity{CPUMillis: 4000, MemoryMB: 4096})
	ports := map[string]int{}
	for i := range 5 {
		id := fmt.Sprintf("a%d", i)
		if _, err := createAgent(ctx, s, id, "o"); err != nil {
			t.Fatal(err)
		}
		a, _ := s.State().Agent(id)
		ports[id] = a.Port
	}
	apply(t, s, &store.AgentSetDesired{ID: "a4", Desired: store.DesiredStopped, Status: store.StatusStopped})
	// A second node, draining: it must receive nothing.
	apply(t, s, &store.NodeRegister{Node: store.Node{ID: "drained", Name: "drained", Address: "10.0.0.9:7500", Capacity: store.NodeCapacity{CPUMillis: 64000}, LastSeen: created}})
	apply(t, s, &store.NodeSetStatus{ID: "drained", Status: store.NodeDraining})
	registerNodes(t, s, 2, store.NodeCapacity{CPUMillis: 4000, MemoryMB: 4096}) // node-1 joins
	apply(t, s, &store.NodeSetStatus{ID: "node-0", Status: store.NodeDown})

	waitFor(t, "running agents moved off the down node", func() bool {
		for i := range 4 {
			a, _ := s.State().Agent(fmt.Sprintf("a%d", i))
			if a.NodeID != "node-1" {
				return false
			}
		}
		return true
	})
	st := s.State()
	for id, port := range ports {
		a, _ := st.Agent(id)
		if a.Port != port {
			t.Errorf("agent %s moved from port %d to %d", id, port, a.Port)
		}
	}
	if a, _ := st.Agent("a4"); a.NodeID != "node-0" {
		t.Errorf("stopped agent a4 was moved to %s; only agents that should run are re-placed", a.NodeID)
	}
	requireNoDuplicatePorts(t, st)
}

func TestNodeDownWithFailPolicyMarksAgentsError(t *testing.T) {
	tc := clusterrpc.NewTestCluster(t, 1)
	s := tc.Servers[0].Store
	apply(t, s, &store.ClusterConfigSet{Config: store.ClusterConfig{PortRangeStart: 10000, PortRangeEnd: 59999, SchedulerAlgorithm: store.AlgorithmBinpack, ReschedulePolicy: store.RescheduleFail}})
	apply(t, s, &store.OrgCreate{Org: store.Org{ID: "o", Name: "o", CreatedAt: created}})
	registerNodes(t, s, 2, store.NodeCapacity{})
	if _, err := createAgent(context.Background(), s, "a0", "o"); err != nil {
		t.Fatal(err)
	}
	a, _ := s.State().Agent("a0")
	apply(t, s, &store.NodeSetStatus{ID: a.NodeID, Status: store.NodeDown})
	waitFor(t, "agent marked ERROR", func() bool {
		a, _ := s.State().Agent("a0")
		return a.Status == store.StatusError && a.ErrorMsg != ""
	})
	a, _ = s.State().Agent("a0")
	if a.NodeID == "" || a.Port == 0 {
		t.Fatalf("failed agent lost its placement: %+v", a)
	}
	t.Logf("errorMsg: %s", a.ErrorMsg)
}

// TestDrainMovesOrStopsAtTheDeadline: a drain that keeps agents leaves them
// where they are; one that moves them re-places them on another node with
// their ports, once its deadline comes and not before; one that stops them
// stops them; no new agent lands on a draining node; a drained node that
// goes down and comes back goes on draining.
func TestDrainMovesOrStopsAtTheDeadline(t *testing.T) {
	tc := clusterrpc.NewTestCluster(t, 1)
	s := tc.Servers[tc.WaitForLeader()].Store
	ctx := context.Background()
	apply(t, s, &store.OrgCreate{Org: store.Org{ID: "o", Name: "o", CreatedAt: created}})
	registerNodes(t, s, 1, store.NodeCapacity{CPUMillis: 4000, MemoryMB: 4096})
	ports := map[string]int{}
	for i := range 3 {
		id := fmt.Sprintf("a%d", i)
		if _, err := createAgent(ctx, s, id, "o"); err != nil {
			t.Fatal(err)
		}
		a, _ := s.State().Agent(id)
		ports[id] = a.Port
	}
	registerNodes(t, s, 2, store.NodeCapacity{CPUMillis: 4000, MemoryMB: 4096}) // node-1 joins

	// Keep: the agents stay; a new agent goes to node-1.
	apply(t, s, &store.NodeSetStatus{ID: "node-0", Status: store.NodeDraining, Drain: &store.NodeDrain{Agents: store.DrainKeep}})
	if _, err := createAgent(ctx, s, "new", "o"); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.State().Agent("new"); a.NodeID != "node-1" {
		t.Fatalf("a new agent went to %s while node-0 drains", a.NodeID)
	}

	// Move, in a moment: nothing moves before the deadline.
	deadline := time.Now().Add(1500 * time.Millisecond)
	apply(t, s, &store.NodeSetStatus{ID: "node-0", Status: store.NodeDraining, Drain: &store.NodeDrain{Agents: store.DrainMove, Deadline: deadline}})
	waitFor(t, "agents moved off the drained node", func() bool {
		for id := range ports {
			if a, _ := s.State().Agent(id); a.NodeID != "node-1" {
				return false
			}
		}
		return true
	})
	if time.Now().Before(deadline) {
		t.Fatal("agents moved before the drain's deadline")
	}
	st := s.State()
	for id, port := range ports {
		if a, _ := st.Agent(id); a.Port != port {
			t.Errorf("agent %s moved from port %d to %d: its URL changed", id, port, a.Port)
		}
	}
	requireNoDuplicatePorts(t, st)

	// Stop: node-1 drains and stops its agents at once.
	apply(t, s, &store.NodeSetStatus{ID: "node-1", Status: store.NodeDraining, Drain: &store.NodeDrain{Agents: store.DrainStop}})
	waitFor(t, "agents stopped on the drained node", func() bool {
		agents, _ := s.State().AgentsByNode("node-1")
		for _, a := range agents {
			if a.HoldsResources() {
				return false
			}
		}
		return len(agents) == 4
	})

	// Down and back: still draining, with its drain.
	apply(t, s, &store.NodeSetStatus{ID: "node-0", Status: store.NodeDown})
	registerNodes(t, s, 1, store.NodeCapacity{CPUMillis: 4000, MemoryMB: 4096}) // node-0 registers again
	if n, _ := s.State().Node("node-0"); n.Status != store.NodeDraining || n.Drain == nil || n.Drain.Agents != store.DrainMove {
		t.Fatalf("node-0 after coming back: %s %+v", n.Status, n.Drain)
	}
	// Undrained: ready, no drain left.
	apply(t, s, &store.NodeSetStatus{ID: "node-0", Status: store.NodeReady})
	if n, _ := s.State().Node("node-0"); n.Status != store.NodeReady || n.Drain != nil {
		t.Fatalf("node-0 after undrain: %s %+v", n.Status, n.Drain)
	}
}
