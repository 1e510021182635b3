package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"pgregory.net/rapid"
)

// testConfig is a small port range so that tests can reason about every port.
var testConfig = Config{PortStart: 10000, PortEnd: 10199, Algorithm: Binpack}

// readyNode is an eligible node with the given capacity.
func readyNode(id string, cpu, mem int64, maxAgents int) Node {
	return Node{ID: id, Capacity: Resources{CPUMillis: cpu, MemoryMB: mem}, MaxAgents: maxAgents, Eligible: true}
}

func drainingNode(n Node) Node { n.Eligible, n.Down = false, false; return n }

func downNode(n Node) Node { n.Eligible, n.Down = false, true; return n }

// runningAgent is an agent that should run, holding resources on its node.
func runningAgent(id, org, node string, port int, cpu, mem int64) Agent {
	return Agent{ID: id, OrgID: org, NodeID: node, Port: port, Resources: Resources{CPUMillis: cpu, MemoryMB: mem}, Holds: true}
}

func stoppedAgent(id, org, node string, port int, cpu, mem int64) Agent {
	a := runningAgent(id, org, node, port, cpu, mem)
	a.Holds = false
	return a
}

// newTestCluster builds a model from nodes, orgs and agents, in that order.
func newTestCluster(t rapid.TB, cfg Config, nodes []Node, orgs []Org, agents []Agent) *Cluster {
	t.Helper()
	c := NewCluster(cfg)
	for _, n := range nodes {
		c.UpsertNode(n)
	}
	for _, o := range orgs {
		c.UpsertOrg(o)
	}
	for _, a := range agents {
		c.UpsertAgent(a)
	}
	checkClusterConsistent(t, c)
	return c
}

func wantNodeUsage(t rapid.TB, c *Cluster, id string, cpu, mem int64, agents int) {
	t.Helper()
	used, n, ok := c.NodeUsage(id)
	if !ok {
		t.Errorf("NodeUsage(%s): node not known", id)
		return
	}
	if want := (Resources{CPUMillis: cpu, MemoryMB: mem}); used != want || n != agents {
		t.Errorf("NodeUsage(%s) = %+v, %d agents; want %+v, %d agents", id, used, n, want, agents)
	}
}

func wantOrgUsage(t rapid.TB, c *Cluster, id string, agents, running int) {
	t.Helper()
	if a, r := c.OrgUsage(id); a != agents || r != running {
		t.Errorf("OrgUsage(%s) = %d agents, %d running; want %d, %d", id, a, r, agents, running)
	}
}

func wantFreePorts(t rapid.TB, c *Cluster, free int) {
	t.Helper()
	if got := c.FreePorts(); got != free {
		t.Errorf("FreePorts() = %d, want %d", got, free)
	}
}

// checkClusterConsistent recomputes from the agent records what the model
// keeps incrementally (node usage, org counts, held ports, the eligible pool)
// and fails on any difference.
func checkClusterConsistent(t rapid.TB, c *Cluster) {
	t.Helper()
	type usage struct {
		used   Resources
		agents int
	}
	nodes := map[string]usage{}
	orgs := map[string][2]int{}
	ports := map[int]bool{}
	for _, a := range c.agents {
		o := orgs[a.OrgID]
		o[0]++
		if a.Holds {
			o[1]++
			u := nodes[a.NodeID]
			u.used.CPUMillis += a.Resources.CPUMillis
			u.used.MemoryMB += a.Resources.MemoryMB
			u.agents++
			nodes[a.NodeID] = u
		}
		orgs[a.OrgID] = o
		if c.ports.InRange(a.Port) {
			ports[a.Port] = true
		}
	}
	for id, want := range nodes {
		ns, ok := c.nodes[id]
		if !ok {
			if ns, ok = c.detached[id]; !ok {
				t.Errorf("node %s: agents hold %+v there, the model counts nothing", id, want)
				continue
			}
		}
		if got := (usage{ns.used, ns.agents}); got != want {
			t.Errorf("node %s: model says %+v, agents say %+v", id, got, want)
		}
	}
	for id, ns := range c.nodes {
		if _, ok := nodes[id]; !ok && (ns.used != Resources{} || ns.agents != 0) {
			t.Errorf("node %s: model says %+v used by %d agents, no agent holds resources there", id, ns.used, ns.agents)
		}
		if _, ok := c.detached[id]; ok {
			t.Errorf("node %s is both known and detached", id)
		}
	}
	for id := range c.detached {
		if _, ok := nodes[id]; !ok {
			t.Errorf("detached usage kept for node %s, on which no agent holds resources", id)
		}
	}
	for id, os := range c.orgs {
		if got, want := [2]int{os.agents, os.running}, orgs[id]; got != want {
			t.Errorf("org %s: model says %d agents %d running, agents say %d, %d", id, got[0], got[1], want[0], want[1])
		}
	}
	for id := range orgs {
		if _, ok := c.orgs[id]; !ok {
			t.Errorf("org %s has agents but no state in the model", id)
		}
	}
	if want := c.ports.Size() - len(ports); c.FreePorts() != want {
		t.Errorf("FreePorts() = %d, agents hold %d of %d ports", c.FreePorts(), len(ports), c.ports.Size())
	}
	for port := c.cfg.PortStart; port <= c.cfg.PortEnd; port++ {
		if c.ports.Held(port) != ports[port] {
			t.Errorf("port %d: held %v in the bitmap, %v by the agents", port, c.ports.Held(port), ports[port])
		}
	}
	inPool := 0
	for i, ns := range c.eligible {
		if ns.pos != i {
			t.Errorf("eligible[%d] is node %s with pos %d", i, ns.ID, ns.pos)
		}
		if c.nodes[ns.ID] != ns {
			t.Errorf("eligible[%d] is node %s, which the model does not hold", i, ns.ID)
		}
	}
	for id, ns := range c.nodes {
		if ns.Eligible {
			inPool++
		}
		if ns.Eligible != (ns.pos >= 0) {
			t.Errorf("node %s: eligible %v, pos %d", id, ns.Eligible, ns.pos)
		}
	}
	if inPool != len(c.eligible) {
		t.Errorf("%d eligible nodes, pool holds %d", inPool, len(c.eligible))
	}
}

func TestClusterNodes(t *testing.T) {
	c := newTestCluster(t, testConfig,
		[]Node{readyNode("n1", 4000, 8192, 10), readyNode("n2", 4000, 8192, 10)}, nil,
		[]Agent{runningAgent("a1", "o1", "n1", 10000, 1000, 1024)})
	if c.NodeCount() != 2 {
		t.Fatalf("NodeCount() = %d, want 2", c.NodeCount())
	}
	if _, _, ok := c.NodeUsage("n3"); ok {
		t.Errorf("NodeUsage of an unknown node reports ok")
	}

	// Replacing a node's description (here: draining it, new capacity) keeps its usage.
	c.UpsertNode(drainingNode(readyNode("n1", 8000, 16384, 20)))
	wantNodeUsage(t, c, "n1", 1000, 1024, 1)
	checkClusterConsistent(t, c)

	c.RemoveNode("n2")
	c.RemoveNode("n2") // twice is a no-op
	c.RemoveNode("nx")
	if c.NodeCount() != 1 {
		t.Fatalf("NodeCount() = %d after RemoveNode, want 1", c.NodeCount())
	}
	checkClusterConsistent(t, c)
}

func TestClusterAgentAccounting(t *testing.T) {
	nodes := []Node{readyNode("n1", 4000, 8192, 10), readyNode("n2", 4000, 8192, 10)}
	orgs := []Org{{ID: "o1", MaxAgents: 5, MaxRunning: 3}}

	t.Run("upserting the same agent twice counts once", func(t *testing.T) {
		c := newTestCluster(t, testConfig, nodes, orgs, nil)
		a := runningAgent("a1", "o1", "n1", 10000, 1000, 1024)
		c.UpsertAgent(a)
		c.UpsertAgent(a)
		wantNodeUsage(t, c, "n1", 1000, 1024, 1)
		wantOrgUsage(t, c, "o1", 1, 1)
		wantFreePorts(t, c, 199)
		checkClusterConsistent(t, c)
	})

	t.Run("stopping releases node usage, keeps the port and the agent count", func(t *testing.T) {
		c := newTestCluster(t, testConfig, nodes, orgs, []Agent{runningAgent("a1", "o1", "n1", 10000, 1000, 1024)})
		c.UpsertAgent(stoppedAgent("a1", "o1", "n1", 10000, 1000, 1024))
		wantNodeUsage(t, c, "n1", 0, 0, 0)
		wantOrgUsage(t, c, "o1", 1, 0)
		wantFreePorts(t, c, 199)
		if !c.ports.Held(10000) {
			t.Errorf("port 10000 released by a stop")
		}
		// And starting again takes the usage back.
		c.UpsertAgent(runningAgent("a1", "o1", "n1", 10000, 1000, 1024))
		wantNodeUsage(t, c, "n1", 1000, 1024, 1)
		wantOrgUsage(t, c, "o1", 1, 1)
		checkClusterConsistent(t, c)
	})

	t.Run("moving between nodes moves the usage", func(t *testing.T) {
		c := newTestCluster(t, testConfig, nodes, orgs, []Agent{runningAgent("a1", "o1", "n1", 10000, 1000, 1024)})
		c.UpsertAgent(runningAgent("a1", "o1", "n2", 10000, 1000, 1024))
		wantNodeUsage(t, c, "n1", 0, 0, 0)
		wantNodeUsage(t, c, "n2", 1000, 1024, 1)
		wantOrgUsage(t, c, "o1", 1, 1)
		wantFreePorts(t, c, 199)
		checkClusterConsistent(t, c)
	})

	t.Run("changing resources and port replaces the old ones", func(t *testing.T) {
		c := newTestCluster(t, testConfig, nodes, orgs, []Agent{runningAgent("a1", "o1", "n1", 10000, 1000, 1024)})
		c.UpsertAgent(runningAgent("a1", "o1", "n1", 10007, 2000, 512))
		wantNodeUsage(t, c, "n1", 2000, 512, 1)
		if c.ports.Held(10000) || !c.ports.Held(10007) {
			t.Errorf("held 10000: %v, 10007: %v; want false, true", c.ports.Held(10000), c.ports.Held(10007))
		}
		wantFreePorts(t, c, 199)
		checkClusterConsistent(t, c)
	})

	t.Run("removing frees everything", func(t *testing.T) {
		c := newTestCluster(t, testConfig, nodes, orgs, []Agent{
			runningAgent("a1", "o1", "n1", 10000, 1000, 1024),
			stoppedAgent("a2", "o1", "n1", 10001, 1000, 1024),
		})
		c.RemoveAgent("a1")
		c.RemoveAgent("a1")
		c.RemoveAgent("never")
		wantNodeUsage(t, c, "n1", 0, 0, 0)
		wantOrgUsage(t, c, "o1", 1, 0)
		wantFreePorts(t, c, 199)
		c.RemoveAgent("a2")
		wantOrgUsage(t, c, "o1", 0, 0)
		wantFreePorts(t, c, 200)
		if _, ok := c.Agent("a2"); ok {
			t.Errorf("Agent(a2) found after RemoveAgent")
		}
		checkClusterConsistent(t, c)
	})

	t.Run("removing a node keeps its agents' records", func(t *testing.T) {
		c := newTestCluster(t, testConfig, nodes, orgs, []Agent{runningAgent("a1", "o1", "n1", 10000, 1000, 1024)})
		c.RemoveNode("n1")
		if a, ok := c.Agent("a1"); !ok || a.NodeID != "n1" {
			t.Errorf("Agent(a1) = %+v, %v after its node was removed", a, ok)
		}
		wantOrgUsage(t, c, "o1", 1, 1)
		wantFreePorts(t, c, 199)
		// The agent is removed later, while its node is gone.
		c.RemoveAgent("a1")
		wantOrgUsage(t, c, "o1", 0, 0)
		wantFreePorts(t, c, 200)
		checkClusterConsistent(t, c)
	})

	t.Run("a node removed and registered again counts the agents still on it", func(t *testing.T) {
		c := newTestCluster(t, testConfig, nodes, orgs, []Agent{runningAgent("a1", "o1", "n1", 10000, 1000, 1024)})
		c.RemoveNode("n1")
		c.UpsertNode(nodes[0])
		wantNodeUsage(t, c, "n1", 1000, 1024, 1)
		c.RemoveAgent("a1")
		wantNodeUsage(t, c, "n1", 0, 0, 0)
		checkClusterConsistent(t, c)
	})

	t.Run("an agent arriving before its node", func(t *testing.T) {
		c := NewCluster(testConfig)
		c.UpsertAgent(runningAgent("a1", "o1", "n1", 10000, 1000, 1024))
		c.UpsertNode(nodes[0])
		wantNodeUsage(t, c, "n1", 1000, 1024, 1)
		c.RemoveAgent("a1")
		wantNodeUsage(t, c, "n1", 0, 0, 0)
		checkClusterConsistent(t, c)
	})

	t.Run("an agent arriving before its org", func(t *testing.T) {
		c := newTestCluster(t, testConfig, nodes, nil, nil)
		c.UpsertAgent(runningAgent("a1", "o1", "n1", 10000, 1000, 1024))
		c.UpsertAgent(stoppedAgent("a2", "o1", "n1", 10001, 1000, 1024))
		wantOrgUsage(t, c, "o1", 2, 1)
		c.UpsertOrg(Org{ID: "o1", MaxAgents: 2})
		wantOrgUsage(t, c, "o1", 2, 1)
		checkClusterConsistent(t, c)
		d := Place(c, []Request{{Kind: KindCreate, AgentID: "a3", OrgID: "o1"}}, 1)
		wantRefused(t, d[0], ReasonAgentLimit, "Agent limit reached for your plan")
	})

	t.Run("removing an org keeps its agents' counts", func(t *testing.T) {
		c := newTestCluster(t, testConfig, nodes, orgs, []Agent{runningAgent("a1", "o1", "n1", 10000, 1000, 1024)})
		c.RemoveOrg("o1")
		wantOrgUsage(t, c, "o1", 1, 1)
		d := Place(c, []Request{{Kind: KindCreate, AgentID: "a2", OrgID: "o1"}}, 1)
		wantPlaced(t, d[0], "", 0) // its caps are gone
		c.RemoveAgent("a1")
		c.UpsertOrg(orgs[0])
		wantOrgUsage(t, c, "o1", 0, 0)
		checkClusterConsistent(t, c)
		c.RemoveOrg("o1")
		if _, ok := c.orgs["o1"]; ok {
			t.Errorf("an org without agents is kept after RemoveOrg")
		}
	})

	t.Run("changing an org's caps keeps its counts", func(t *testing.T) {
		c := newTestCluster(t, testConfig, nodes, orgs, []Agent{runningAgent("a1", "o1", "n1", 10000, 1000, 1024)})
		c.UpsertOrg(Org{ID: "o1", MaxAgents: 1})
		wantOrgUsage(t, c, "o1", 1, 1)
		checkClusterConsistent(t, c)
	})
}

func TestClusterSetConfig(t *testing.T) {
	nodes := []Node{readyNode("n1", 0, 0, 0)}
	agents := []Agent{
		runningAgent("a1", "o1", "n1", 10000, 0, 0),
		stoppedAgent("a2", "o1", "n1", 10005, 0, 0),
		runningAgent("a3", "o1", "n1", 10100, 0, 0), // outside the new range
	}

	t.Run("new port range rebuilds the bitmap from the agents", func(t *testing.T) {
		c := newTestCluster(t, testConfig, nodes, nil, agents)
		wantFreePorts(t, c, 197)
		c.SetConfig(Config{PortStart: 10000, PortEnd: 10009})
		wantFreePorts(t, c, 8)
		checkClusterConsistent(t, c)
		for _, port := range []int{10000, 10005} {
			if !c.ports.Held(port) {
				t.Errorf("port %d of an existing agent is free after SetConfig", port)
			}
		}
		reqs := make([]Request, 10)
		for i := range reqs {
			reqs[i] = Request{Kind: KindCreate, AgentID: fmt.Sprint("new", i), OrgID: "o1"}
		}
		placed := map[int]bool{}
		for _, d := range Place(c, reqs, 1) {
			if d.OK() {
				placed[d.Port] = true
			}
		}
		if len(placed) != 8 || placed[10000] || placed[10005] {
			t.Errorf("placed ports %v, want the 8 free ports of 10000-10009 without 10000 and 10005", placed)
		}
		// The agent outside the range keeps its port; removing it is harmless.
		c.RemoveAgent("a3")
		wantFreePorts(t, c, 8)
		checkClusterConsistent(t, c)
	})

	t.Run("same range keeps the bitmap and applies defaults", func(t *testing.T) {
		c := newTestCluster(t, testConfig, nodes, nil, agents)
		ports := c.ports
		c.SetConfig(Config{PortStart: testConfig.PortStart, PortEnd: testConfig.PortEnd, Algorithm: Spread})
		if c.ports != ports {
			t.Errorf("SetConfig with an unchanged range rebuilt the bitmap")
		}
		c.SetConfig(Config{PortStart: testConfig.PortStart, PortEnd: testConfig.PortEnd})
		if got := c.Config(); got.Algorithm != Binpack || got.SampleSize != DefaultSampleSize {
			t.Errorf("Config() = %+v, want binpack and sample size %d by default", got, DefaultSampleSize)
		}
		wantFreePorts(t, c, 197)
		checkClusterConsistent(t, c)
	})
}

// TestClusterEligiblePoolToggling toggles nodes in and out of the sampling
// pool (which removes by swapping with the last entry) in random order, and
// checks after every change that the pool holds exactly the eligible nodes and
// that Place only ever picks one of them.
func TestClusterEligiblePoolToggling(t *testing.T) {
	const nodeCount = 64
	rng := rand.New(rand.NewPCG(1, 2))
	c := NewCluster(Config{PortStart: 10000, PortEnd: 10999, SampleSize: nodeCount})
	eligible := map[string]bool{}
	for i := range nodeCount {
		n := readyNode(fmt.Sprintf("n%02d", i), 0, 0, 0)
		n.Eligible = rng.IntN(2) == 0
		c.UpsertNode(n)
		eligible[n.ID] = n.Eligible
	}
	for step := range 3000 {
		id := fmt.Sprintf("n%02d", rng.IntN(nodeCount))
		switch rng.IntN(10) {
		case 0:
			c.RemoveNode(id)
			delete(eligible, id)
		case 1, 2:
			n := readyNode(id, 0, 0, 0)
			n.Eligible, n.Down = false, true
			c.UpsertNode(n)
			eligible[id] = false
		default:
			n := readyNode(id, 0, 0, 0)
			n.Eligible = rng.IntN(2) == 0
			c.UpsertNode(n)
			eligible[id] = n.Eligible
		}
		checkClusterConsistent(t, c)
		if t.Failed() {
			t.Fatalf("model inconsistent after step %d", step)
		}
		anyEligible := false
		for _, e := range eligible {
			anyEligible = anyEligible || e
		}
		for _, d := range Place(c, []Request{{Kind: KindCreate, AgentID: "x"}, {Kind: KindCreate, AgentID: "y"}}, uint64(step)) {
			switch {
			case !d.OK() && anyEligible:
				t.Fatalf("step %d: refused (%s) with eligible nodes", step, d.Message)
			case d.OK() && !eligible[d.NodeID]:
				t.Fatalf("step %d: placed on %s, which is not eligible", step, d.NodeID)
			}
		}
	}
}
