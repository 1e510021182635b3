package scheduler

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// placeSeeds is how many seeds each table case is placed under: a case whose
// answer is unique must give it whatever the seed.
const placeSeeds = 20

func createReq(id, org string, cpu, mem int64) Request {
	return Request{Kind: KindCreate, AgentID: id, OrgID: org, Runtime: "runc", Resources: Resources{CPUMillis: cpu, MemoryMB: mem}}
}

func startReq(id string) Request { return Request{Kind: KindStart, AgentID: id} }

func moveReq(id string) Request { return Request{Kind: KindMove, AgentID: id} }

// placeCase is a model, one request, and the node it must go to under every
// seed, or the reason and message prefix it must be refused with.
type placeCase struct {
	name   string
	cfg    Config // testConfig when zero
	nodes  []Node
	orgs   []Org
	agents []Agent
	req    Request
	// wantNode is the node the request must be placed on; wantPort, when
	// set, its port.
	wantNode string
	wantPort int
	// wantReason and wantMessage (a prefix) describe a refusal.
	wantReason  Reason
	wantMessage string
}

func runPlaceCases(t *testing.T, cases []placeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if cfg.PortEnd == 0 {
				cfg.PortStart, cfg.PortEnd = testConfig.PortStart, testConfig.PortEnd
			}
			c := newTestCluster(t, cfg, tc.nodes, tc.orgs, tc.agents)
			for seed := range uint64(placeSeeds) {
				d := Place(c, []Request{tc.req}, seed)[0]
				if d.AgentID != tc.req.AgentID {
					t.Fatalf("seed %d: decision for %q, want %q", seed, d.AgentID, tc.req.AgentID)
				}
				if tc.wantReason != "" {
					wantRefused(t, d, tc.wantReason, tc.wantMessage)
				} else {
					wantPlaced(t, d, tc.wantNode, tc.wantPort)
				}
				if t.Failed() {
					t.Fatalf("seed %d: decision %+v", seed, d)
				}
			}
		})
	}
}

// wantPlaced checks that d placed its request on node (any when empty) with
// port (any when zero).
func wantPlaced(t rapid.TB, d Decision, node string, port int) {
	t.Helper()
	if !d.OK() {
		t.Errorf("%s refused (%s): %s; want placed", d.AgentID, d.Reason, d.Message)
		return
	}
	if d.Message != "" {
		t.Errorf("%s placed with message %q", d.AgentID, d.Message)
	}
	if node != "" && d.NodeID != node {
		t.Errorf("%s placed on %s, want %s", d.AgentID, d.NodeID, node)
	}
	if (port != 0 && d.Port != port) || d.Port <= 0 {
		t.Errorf("%s given port %d, want %d", d.AgentID, d.Port, port)
	}
}

// wantRefused checks that d refused its request for reason, with a message
// starting with prefix.
func wantRefused(t rapid.TB, d Decision, reason Reason, prefix string) {
	t.Helper()
	if d.OK() {
		t.Errorf("%s placed on %s port %d; want refused with %s", d.AgentID, d.NodeID, d.Port, reason)
		return
	}
	if d.Reason != reason {
		t.Errorf("%s refused with %s (%s), want %s", d.AgentID, d.Reason, d.Message, reason)
	}
	if !strings.HasPrefix(d.Message, prefix) {
		t.Errorf("%s refused with message %q, want it to start with %q", d.AgentID, d.Message, prefix)
	}
}

func TestPlaceFeasibility(t *testing.T) {
	n1 := readyNode("n1", 4000, 8192, 4)
	withRuntimes := func(n Node, rts ...string) Node { n.Runtimes = rts; return n }
	withLabels := func(n Node, kv ...string) Node {
		n.Labels = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			n.Labels[kv[i]] = kv[i+1]
		}
		return n
	}
	withConstraints := func(r Request, kv ...string) Request {
		r.Constraints = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			r.Constraints[kv[i]] = kv[i+1]
		}
		return r
	}
	req := createReq("new", "o1", 1000, 2048)
	noRuntime := req
	noRuntime.Runtime = ""
	noNode := "no node has room"

	runPlaceCases(t, []placeCase{
		{name: "ready node with room", nodes: []Node{n1}, req: req, wantNode: "n1"},
		{name: "draining node", nodes: []Node{drainingNode(n1)}, req: req, wantReason: ReasonNoNode, wantMessage: noNode},
		{name: "down node", nodes: []Node{downNode(n1)}, req: req, wantReason: ReasonNoNode, wantMessage: noNode},
		{name: "no nodes at all", req: req, wantReason: ReasonNoNode, wantMessage: noNode},
		{
			name:  "only the ready one of ready, draining and down",
			nodes: []Node{drainingNode(readyNode("d", 0, 0, 0)), readyNode("r", 4000, 8192, 4), downNode(readyNode("x", 0, 0, 0))},
			req:   req, wantNode: "r",
		},
		{name: "runtime offered", nodes: []Node{withRuntimes(n1, "gvisor", "runc")}, req: req, wantNode: "n1"},
		{name: "runtime not offered", nodes: []Node{withRuntimes(n1, "gvisor")}, req: req, wantReason: ReasonNoNode, wantMessage: noNode},
		{
			name:  "only the node offering the runtime",
			nodes: []Node{withRuntimes(readyNode("g", 0, 0, 0), "gvisor"), withRuntimes(readyNode("r", 0, 0, 0), "runc")},
			req:   req, wantNode: "r",
		},
		{name: "empty Runtimes offers any", nodes: []Node{n1}, req: req, wantNode: "n1"},
		{name: "no runtime asked fits any node", nodes: []Node{withRuntimes(n1, "gvisor")}, req: noRuntime, wantNode: "n1"},
		{
			name:  "all constraints match",
			nodes: []Node{withLabels(n1, "region", "eu", "gpu", "yes", "disk", "ssd")},
			req:   withConstraints(req, "region", "eu", "gpu", "yes"), wantNode: "n1",
		},
		{
			name:  "one constraint differs",
			nodes: []Node{withLabels(n1, "region", "eu", "gpu", "no")},
			req:   withConstraints(req, "region", "eu", "gpu", "yes"), wantReason: ReasonNoNode, wantMessage: noNode,
		},
		{
			name:  "constraint on a label the node lacks",
			nodes: []Node{withLabels(n1, "region", "eu")},
			req:   withConstraints(req, "region", "eu", "gpu", "yes"), wantReason: ReasonNoNode, wantMessage: noNode,
		},
		{
			name:  "only the node matching every constraint",
			nodes: []Node{withLabels(readyNode("a", 0, 0, 0), "region", "eu"), withLabels(readyNode("b", 0, 0, 0), "region", "eu", "gpu", "yes"), withLabels(readyNode("c", 0, 0, 0), "gpu", "yes")},
			req:   withConstraints(req, "region", "eu", "gpu", "yes"), wantNode: "b",
		},
		{name: "labels without constraints", nodes: []Node{withLabels(n1, "region", "eu")}, req: req, wantNode: "n1"},
		{
			name: "CPU exactly fills the node", nodes: []Node{n1},
			agents: []Agent{runningAgent("a1", "o1", "n1", 10000, 3000, 0)},
			req:    req, wantNode: "n1",
		},
		{
			name: "CPU short by one millicore", nodes: []Node{n1},
			agents: []Agent{runningAgent("a1", "o1", "n1", 10000, 3001, 0)},
			req:    req, wantReason: ReasonNoNode, wantMessage: noNode,
		},
		{
			name: "memory exactly fills the node", nodes: []Node{n1},
			agents: []Agent{runningAgent("a1", "o1", "n1", 10000, 0, 6144)},
			req:    req, wantNode: "n1",
		},
		{
			name: "memory short by one MB", nodes: []Node{n1},
			agents: []Agent{runningAgent("a1", "o1", "n1", 10000, 0, 6145)},
			req:    req, wantReason: ReasonNoNode, wantMessage: noNode,
		},
		{
			name: "MaxAgents reached", nodes: []Node{n1},
			agents: []Agent{
				runningAgent("a1", "o1", "n1", 10000, 0, 0), runningAgent("a2", "o1", "n1", 10001, 0, 0),
				runningAgent("a3", "o1", "n1", 10002, 0, 0), runningAgent("a4", "o1", "n1", 10003, 0, 0),
			},
			req: req, wantReason: ReasonNoNode, wantMessage: noNode,
		},
		{
			name: "stopped agents hold no resources", nodes: []Node{n1},
			agents: []Agent{
				runningAgent("a1", "o1", "n1", 10000, 1000, 1024), stoppedAgent("a2", "o1", "n1", 10001, 4000, 8192),
				runningAgent("a3", "o1", "n1", 10002, 1000, 1024), stoppedAgent("a4", "o1", "n1", 10003, 4000, 8192),
				runningAgent("a5", "o1", "n1", 10004, 1000, 1024), stoppedAgent("a6", "o1", "n1", 10005, 4000, 8192),
			},
			req: req, wantNode: "n1",
		},
		{
			name: "zero capacity is unlimited", nodes: []Node{readyNode("n1", 0, 0, 0)},
			agents: []Agent{
				runningAgent("a1", "o1", "n1", 10000, 1e6, 1e6), runningAgent("a2", "o1", "n1", 10001, 1e6, 1e6),
			},
			req: createReq("new", "o1", 1e6, 1e6), wantNode: "n1",
		},
		{
			name: "zero CPU capacity still bounds memory", nodes: []Node{readyNode("n1", 0, 1024, 0)},
			req: req, wantReason: ReasonNoNode, wantMessage: noNode,
		},
		{
			name:  "only the node with room",
			nodes: []Node{readyNode("small", 500, 8192, 0), readyNode("big", 2000, 8192, 0), readyNode("lowmem", 8000, 1024, 0)},
			req:   req, wantNode: "big",
		},
	})
}

func TestPlaceCaps(t *testing.T) {
	nodes := []Node{readyNode("n1", 0, 0, 0)}
	running := func(n int, org string) []Agent {
		var out []Agent
		for i := range n {
			out = append(out, runningAgent(fmt.Sprintf("%s-r%d", org, i), org, "n1", 10100+len(org)*10+i, 0, 0))
		}
		return out
	}
	stopped := func(n int, org string) []Agent {
		var out []Agent
		for i := range n {
			out = append(out, stoppedAgent(fmt.Sprintf("%s-s%d", org, i), org, "n1", 10150+len(org)*10+i, 0, 0))
		}
		return out
	}
	req := createReq("new", "o1", 100, 100)
	agentLimit := "Agent limit reached for your plan"
	runningCap := "concurrent agent cap reached"

	runPlaceCases(t, []placeCase{
		{
			name: "maxAgents reached by stopped agents", nodes: nodes, orgs: []Org{{ID: "o1", MaxAgents: 2}},
			agents: stopped(2, "o1"), req: req, wantReason: ReasonAgentLimit, wantMessage: agentLimit,
		},
		{
			name: "maxAgents is checked before maxRunning", nodes: nodes, orgs: []Org{{ID: "o1", MaxAgents: 2, MaxRunning: 2}},
			agents: running(2, "o1"), req: req, wantReason: ReasonAgentLimit, wantMessage: agentLimit,
		},
		{
			name: "maxAgents below the limit", nodes: nodes, orgs: []Org{{ID: "o1", MaxAgents: 3}},
			agents: append(stopped(1, "o1"), running(1, "o1")...), req: req, wantNode: "n1",
		},
		{
			name: "maxRunning reached", nodes: nodes, orgs: []Org{{ID: "o1", MaxAgents: 5, MaxRunning: 1}},
			agents: running(1, "o1"), req: req, wantReason: ReasonRunningCap, wantMessage: runningCap,
		},
		{
			name: "stopped agents do not count against maxRunning", nodes: nodes, orgs: []Org{{ID: "o1", MaxRunning: 1}},
			agents: stopped(3, "o1"), req: req, wantNode: "n1",
		},
		{
			name: "other orgs' agents do not count", nodes: nodes,
			orgs:   []Org{{ID: "o1", MaxAgents: 1, MaxRunning: 1}, {ID: "o2", MaxAgents: 1, MaxRunning: 1}},
			agents: running(1, "o2"), req: req, wantNode: "n1",
		},
		{
			name: "zero caps are unlimited", nodes: nodes, orgs: []Org{{ID: "o1"}},
			agents: append(running(20, "o1"), stopped(20, "o1")...), req: req, wantNode: "n1",
		},
		{name: "an org the model does not know is unlimited", nodes: nodes, req: req, wantNode: "n1"},
		{
			name: "no ports", cfg: Config{PortStart: 20000, PortEnd: 20001}, nodes: nodes,
			agents: []Agent{runningAgent("a1", "o2", "n1", 20000, 0, 0), stoppedAgent("a2", "o2", "n1", 20001, 0, 0)},
			req:    req, wantReason: ReasonNoPorts, wantMessage: "No available ports",
		},
		{
			name: "last free port", cfg: Config{PortStart: 20000, PortEnd: 20002}, nodes: nodes,
			agents: []Agent{runningAgent("a1", "o2", "n1", 20000, 0, 0), stoppedAgent("a2", "o2", "n1", 20002, 0, 0)},
			req:    req, wantNode: "n1", wantPort: 20001,
		},
		{
			name: "no node with room", nodes: []Node{readyNode("n1", 50, 0, 0), drainingNode(readyNode("n2", 0, 0, 0))},
			orgs: []Org{{ID: "o1", MaxAgents: 5, MaxRunning: 5}}, req: req, wantReason: ReasonNoNode, wantMessage: "no node has room",
		},
	})
}

func TestPlaceBatch(t *testing.T) {
	creates := func(n int, org string, cpu int64) []Request {
		out := make([]Request, n)
		for i := range out {
			out[i] = createReq(fmt.Sprint("new", i), org, cpu, 0)
		}
		return out
	}
	big := []Node{readyNode("n1", 0, 0, 0), readyNode("n2", 0, 0, 0)}

	t.Run("maxAgents 3, five creates: three placed", func(t *testing.T) {
		c := newTestCluster(t, testConfig, big, []Org{{ID: "o1", MaxAgents: 3}}, nil)
		ds := Place(c, creates(5, "o1", 0), 1)
		for _, d := range ds[:3] {
			wantPlaced(t, d, "", 0)
		}
		for _, d := range ds[3:] {
			wantRefused(t, d, ReasonAgentLimit, "Agent limit reached for your plan")
		}
		wantDistinctPorts(t, ds)
	})

	t.Run("maxRunning 2 with one running: one placed", func(t *testing.T) {
		c := newTestCluster(t, testConfig, big, []Org{{ID: "o1", MaxRunning: 2}},
			[]Agent{runningAgent("a1", "o1", "n1", 10000, 0, 0)})
		ds := Place(c, creates(4, "o1", 0), 1)
		wantPlaced(t, ds[0], "", 0)
		for _, d := range ds[1:] {
			wantRefused(t, d, ReasonRunningCap, "concurrent agent cap reached")
		}
	})

	t.Run("creates never share a port", func(t *testing.T) {
		c := newTestCluster(t, testConfig, big, nil, []Agent{
			runningAgent("a1", "o1", "n1", 10000, 0, 0), stoppedAgent("a2", "o1", "n1", 10003, 0, 0),
		})
		ds := Place(c, creates(250, "o1", 0), 1)
		placed := 0
		for _, d := range ds {
			if d.OK() {
				placed++
				if d.Port == 10000 || d.Port == 10003 {
					t.Errorf("%s given port %d, held by an existing agent", d.AgentID, d.Port)
				}
			} else {
				wantRefused(t, d, ReasonNoPorts, "No available ports")
			}
		}
		if placed != 198 {
			t.Errorf("placed %d, want 198 (the free ports)", placed)
		}
		wantDistinctPorts(t, ds)
	})

	t.Run("a batch larger than a bitmap word takes exactly the free ports", func(t *testing.T) {
		cfg := Config{PortStart: 10000, PortEnd: 10999}
		var agents []Agent
		for port := 10000; port <= 10999; port += 3 {
			agents = append(agents, stoppedAgent(fmt.Sprint("held", port), "o1", "n1", port, 0, 0))
		}
		c := newTestCluster(t, cfg, big, nil, agents)
		free := c.FreePorts()
		got := map[int]bool{}
		for _, d := range Place(c, creates(free+10, "o1", 0), 1) {
			if !d.OK() {
				wantRefused(t, d, ReasonNoPorts, "No available ports")
				continue
			}
			if got[d.Port] || c.ports.Held(d.Port) || !c.ports.InRange(d.Port) {
				t.Fatalf("%s given port %d: twice, held, or outside the range", d.AgentID, d.Port)
			}
			got[d.Port] = true
		}
		if len(got) != free {
			t.Errorf("placed %d, want %d (the free ports)", len(got), free)
		}
	})

	t.Run("capacity used by earlier decisions", func(t *testing.T) {
		c := newTestCluster(t, testConfig, []Node{readyNode("n1", 2500, 0, 0), readyNode("n2", 1000, 0, 0)}, nil, nil)
		ds := Place(c, creates(4, "o1", 1000), 1)
		perNode := map[string]int{}
		for _, d := range ds[:3] {
			wantPlaced(t, d, "", 0)
			perNode[d.NodeID]++
		}
		wantRefused(t, ds[3], ReasonNoNode, "no node has room")
		if perNode["n1"] != 2 || perNode["n2"] != 1 {
			t.Errorf("placements per node %v, want n1: 2, n2: 1", perNode)
		}
	})

	t.Run("MaxAgents used by earlier decisions", func(t *testing.T) {
		c := newTestCluster(t, testConfig, []Node{readyNode("n1", 0, 0, 1), readyNode("n2", 0, 0, 1)}, nil, nil)
		ds := Place(c, creates(3, "o1", 0), 1)
		wantPlaced(t, ds[0], "", 0)
		wantPlaced(t, ds[1], "", 0)
		if ds[0].NodeID == ds[1].NodeID {
			t.Errorf("both placed on %s, which takes one agent", ds[0].NodeID)
		}
		wantRefused(t, ds[2], ReasonNoNode, "no node has room")
	})

	t.Run("a start counts against maxRunning for later creates", func(t *testing.T) {
		c := newTestCluster(t, testConfig, big, []Org{{ID: "o1", MaxRunning: 2}}, []Agent{
			runningAgent("a1", "o1", "n1", 10000, 0, 0), stoppedAgent("a2", "o1", "n1", 10001, 0, 0),
		})
		ds := Place(c, []Request{startReq("a2"), createReq("new", "o1", 0, 0)}, 1)
		wantPlaced(t, ds[0], "n1", 10001)
		wantRefused(t, ds[1], ReasonRunningCap, "concurrent agent cap reached")
	})

	t.Run("a refused create consumes nothing", func(t *testing.T) {
		c := newTestCluster(t, Config{PortStart: 10000, PortEnd: 10000}, []Node{readyNode("n1", 1000, 0, 1)}, []Org{{ID: "o1", MaxAgents: 1}}, nil)
		ds := Place(c, []Request{createReq("huge", "o1", 5000, 0), createReq("small", "o1", 1000, 0)}, 1)
		wantRefused(t, ds[0], ReasonNoNode, "no node has room")
		wantPlaced(t, ds[1], "n1", 10000)
	})
}

func wantDistinctPorts(t rapid.TB, ds []Decision) {
	t.Helper()
	holder := map[int]string{}
	for _, d := range ds {
		if !d.OK() {
			continue
		}
		if other, ok := holder[d.Port]; ok {
			t.Errorf("port %d given to both %s and %s", d.Port, other, d.AgentID)
		}
		holder[d.Port] = d.AgentID
	}
}

// clusterView is a deep copy of everything a Cluster holds.
type clusterView struct {
	cfg      Config
	nodes    map[string]nodeState
	eligible []string
	orgs     map[string]orgState
	agents   map[string]Agent
	ports    PortSet
}

func viewOf(c *Cluster) clusterView {
	v := clusterView{cfg: c.cfg, nodes: map[string]nodeState{}, orgs: map[string]orgState{}, agents: map[string]Agent{}}
	for id, ns := range c.nodes {
		v.nodes[id] = *ns
	}
	for _, ns := range c.eligible {
		v.eligible = append(v.eligible, ns.ID)
	}
	for id, os := range c.orgs {
		v.orgs[id] = *os
	}
	for id, a := range c.agents {
		v.agents[id] = a
	}
	v.ports = *c.ports
	v.ports.words = slices.Clone(c.ports.words)
	return v
}

func TestPlaceDoesNotMutate(t *testing.T) {
	c := newTestCluster(t, Config{PortStart: 10000, PortEnd: 10009},
		[]Node{readyNode("n1", 4000, 8192, 4), readyNode("n2", 4000, 8192, 4), downNode(readyNode("n3", 0, 0, 0))},
		[]Org{{ID: "o1", MaxAgents: 6, MaxRunning: 4}},
		[]Agent{
			runningAgent("a1", "o1", "n1", 10000, 1000, 1024),
			stoppedAgent("a2", "o1", "n1", 10001, 1000, 1024),
			runningAgent("a3", "o1", "n3", 10002, 1000, 1024),
		})
	before := viewOf(c)
	reqs := []Request{
		createReq("new1", "o1", 1000, 1024), startReq("a2"), moveReq("a3"), createReq("new2", "o1", 1000, 1024),
		createReq("new3", "o1", 1000, 1024), createReq("new4", "o2", 1000, 1024), startReq("a1"), startReq("nobody"),
	}
	ds := Place(c, reqs, 42)
	placed := 0
	for _, d := range ds {
		if d.OK() {
			placed++
		}
	}
	if placed < 5 {
		t.Fatalf("only %d of %d requests placed; the batch should exercise every path: %+v", placed, len(reqs), ds)
	}
	if after := viewOf(c); !reflect.DeepEqual(before, after) {
		t.Errorf("Place changed the cluster:\nbefore %+v\nafter  %+v", before, after)
	}
	checkClusterConsistent(t, c)
}

func TestPlaceDeterministic(t *testing.T) {
	var nodes []Node
	for i := range 50 {
		nodes = append(nodes, readyNode(fmt.Sprintf("n%02d", i), int64(4000+1000*(i%4)), 8192, 8))
	}
	c := newTestCluster(t, Config{PortStart: 10000, PortEnd: 19999}, nodes, nil, nil)
	var reqs []Request
	for i := range 100 {
		reqs = append(reqs, createReq(fmt.Sprint("new", i), "o1", int64(250*(1+i%4)), 512))
	}

	t.Run("same seed, same decisions", func(t *testing.T) {
		for _, alg := range []Algorithm{Binpack, Spread} {
			c.SetConfig(Config{PortStart: 10000, PortEnd: 19999, Algorithm: alg})
			first := Place(c, reqs, 7)
			for range 5 {
				if again := Place(c, reqs, 7); !reflect.DeepEqual(first, again) {
					t.Fatalf("%s: two Place calls with seed 7 differ", alg)
				}
			}
		}
	})

	t.Run("different placeSeeds spread placements across nodes", func(t *testing.T) {
		var same []Node
		for i := range 50 {
			same = append(same, readyNode(fmt.Sprintf("n%02d", i), 4000, 8192, 8))
		}
		c := newTestCluster(t, Config{PortStart: 10000, PortEnd: 19999}, same, nil, nil)
		chosen := map[string]bool{}
		for seed := range uint64(200) {
			d := Place(c, reqs[:1], seed)[0]
			wantPlaced(t, d, "", 0)
			chosen[d.NodeID] = true
		}
		if len(chosen) < 20 {
			t.Errorf("200 placeSeeds chose only %d of 50 equally good nodes", len(chosen))
		}
	})
}

func TestPlaceRanking(t *testing.T) {
	nodes := []Node{readyNode("empty", 8000, 16384, 10), readyNode("half", 8000, 16384, 10), readyNode("full", 8000, 16384, 10)}
	agents := []Agent{
		runningAgent("h1", "o1", "half", 10000, 4000, 8192),
		runningAgent("f1", "o1", "full", 10001, 6000, 12288),
		runningAgent("f2", "o1", "full", 10002, 1000, 2048),
	}
	exact := func(alg Algorithm) Config {
		return Config{PortStart: testConfig.PortStart, PortEnd: testConfig.PortEnd, Algorithm: alg, SampleSize: 3}
	}
	req := createReq("new", "o1", 500, 1024)

	runPlaceCases(t, []placeCase{
		{name: "binpack fills the fuller node", cfg: exact(Binpack), nodes: nodes, agents: agents, req: req, wantNode: "full"},
		{name: "spread picks the emptier node", cfg: exact(Spread), nodes: nodes, agents: agents, req: req, wantNode: "empty"},
		{
			name: "binpack skips the fullest node when it does not fit", cfg: exact(Binpack), nodes: nodes, agents: agents,
			req: createReq("new", "o1", 2000, 1024), wantNode: "half",
		},
		{
			name: "binpack counts memory", cfg: exact(Binpack),
			nodes: nodes[:2], agents: []Agent{runningAgent("h1", "o1", "half", 10000, 0, 8192)},
			req: req, wantNode: "half",
		},
		{
			name: "binpack counts agents", cfg: exact(Binpack),
			nodes: nodes[:2], agents: []Agent{runningAgent("h1", "o1", "half", 10000, 0, 0)},
			req: req, wantNode: "half",
		},
		{
			name: "spread counts agents", cfg: exact(Spread),
			nodes: nodes[:2], agents: []Agent{runningAgent("e1", "o1", "empty", 10000, 0, 0)},
			req: req, wantNode: "half",
		},
		{
			name: "stopped agents do not make a node fuller", cfg: exact(Binpack), nodes: nodes[:2],
			agents: []Agent{runningAgent("h1", "o1", "half", 10000, 1000, 0), stoppedAgent("e1", "o1", "empty", 10001, 7000, 0)},
			req:    req, wantNode: "half",
		},
	})
}

func TestPlaceStart(t *testing.T) {
	// Under spread the other node, empty, would win a ranking: a start that
	// lands on its own node got there by preference.
	spread := Config{PortStart: testConfig.PortStart, PortEnd: testConfig.PortEnd, Algorithm: Spread}
	own, other := readyNode("own", 4000, 8192, 4), readyNode("other", 4000, 8192, 4)
	neighbour := runningAgent("b", "o2", "own", 10001, 1000, 1024)
	stopped := stoppedAgent("a", "o1", "own", 10005, 1000, 1024)
	running := runningAgent("a", "o1", "own", 10005, 1000, 1024)
	org := []Org{{ID: "o1", MaxAgents: 1, MaxRunning: 1}}
	noRunning := []Org{{ID: "o1", MaxRunning: 1}}

	runPlaceCases(t, []placeCase{
		{
			name: "already running: same node, no-op", cfg: spread, nodes: []Node{own, other}, orgs: org,
			agents: []Agent{running, neighbour}, req: startReq("a"), wantNode: "own", wantPort: 10005,
		},
		{
			name: "already running on a down node: still a no-op", cfg: spread, nodes: []Node{downNode(own), other}, orgs: org,
			agents: []Agent{running}, req: startReq("a"), wantNode: "own", wantPort: 10005,
		},
		{
			name: "own node when it fits", cfg: spread, nodes: []Node{own, other}, orgs: org,
			agents: []Agent{stopped, neighbour}, req: startReq("a"), wantNode: "own", wantPort: 10005,
		},
		{
			name: "own node even when draining", cfg: spread, nodes: []Node{drainingNode(own), other}, orgs: org,
			agents: []Agent{stopped, neighbour}, req: startReq("a"), wantNode: "own", wantPort: 10005,
		},
		{
			name: "another node when own is down", cfg: spread, nodes: []Node{downNode(own), other}, orgs: org,
			agents: []Agent{stopped}, req: startReq("a"), wantNode: "other", wantPort: 10005,
		},
		{
			name: "another node when own is full", cfg: spread, nodes: []Node{own, other}, orgs: org,
			agents: []Agent{stopped, runningAgent("b", "o2", "own", 10001, 3500, 1024)}, req: startReq("a"), wantNode: "other", wantPort: 10005,
		},
		{
			name: "another node when own is gone", cfg: spread, nodes: []Node{other}, orgs: org,
			agents: []Agent{stopped}, req: startReq("a"), wantNode: "other", wantPort: 10005,
		},
		{
			name: "no node: own down, other draining", cfg: spread, nodes: []Node{downNode(own), drainingNode(other)}, orgs: org,
			agents: []Agent{stopped}, req: startReq("a"), wantReason: ReasonNoNode, wantMessage: "no node has room",
		},
		{
			name: "at the running cap", cfg: spread, nodes: []Node{own, other}, orgs: noRunning,
			agents: []Agent{stopped, runningAgent("c", "o1", "other", 10002, 0, 0)}, req: startReq("a"),
			wantReason: ReasonRunningCap, wantMessage: "concurrent agent cap reached",
		},
		{
			name: "maxAgents is not checked: the agent exists", cfg: spread, nodes: []Node{own, other},
			orgs: []Org{{ID: "o1", MaxAgents: 1}}, agents: []Agent{stopped}, req: startReq("a"), wantNode: "own", wantPort: 10005,
		},
		{name: "unknown agent", nodes: []Node{own}, req: startReq("nobody"), wantReason: ReasonUnknownAgent, wantMessage: "agent nobody is not known"},
	})
}

func TestPlaceMove(t *testing.T) {
	exact := Config{PortStart: testConfig.PortStart, PortEnd: testConfig.PortEnd, Algorithm: Binpack, SampleSize: 4}
	own := readyNode("own", 4000, 8192, 4)
	a := runningAgent("a", "o1", "own", 10005, 1000, 1024)
	capped := []Org{{ID: "o1", MaxAgents: 1, MaxRunning: 1}}

	runPlaceCases(t, []placeCase{
		{
			name: "a different node, even when its own is eligible and fuller", cfg: exact,
			nodes: []Node{own, readyNode("other", 4000, 8192, 4)}, orgs: capped,
			agents: []Agent{a, runningAgent("b", "o2", "own", 10001, 2000, 1024)}, req: moveReq("a"), wantNode: "other", wantPort: 10005,
		},
		{
			name: "the eligible node, not a draining or down one", cfg: exact,
			nodes: []Node{downNode(own), drainingNode(readyNode("d", 0, 0, 0)), downNode(readyNode("x", 0, 0, 0)), readyNode("r", 4000, 8192, 4)},
			orgs:  capped, agents: []Agent{a}, req: moveReq("a"), wantNode: "r", wantPort: 10005,
		},
		{
			name: "caps are not checked", cfg: exact, nodes: []Node{downNode(own), readyNode("other", 0, 0, 0)},
			orgs: capped, agents: []Agent{a}, req: moveReq("a"), wantNode: "other", wantPort: 10005,
		},
		{
			name: "only its own node", cfg: exact, nodes: []Node{own}, agents: []Agent{a}, req: moveReq("a"),
			wantReason: ReasonNoNode, wantMessage: "no other node has room",
		},
		{
			name: "no other node with room", cfg: exact, nodes: []Node{downNode(own), readyNode("small", 500, 8192, 4)},
			agents: []Agent{a}, req: moveReq("a"), wantReason: ReasonNoNode, wantMessage: "no other node has room",
		},
		{name: "unknown agent", nodes: []Node{own}, req: moveReq("nobody"), wantReason: ReasonUnknownAgent, wantMessage: "agent nobody is not known"},
		{
			name: "unknown request kind", nodes: []Node{own}, req: Request{Kind: "restart", AgentID: "a"},
			wantReason: ReasonUnknownAgent, wantMessage: `unknown request kind "restart"`,
		},
	})
}

// TestPlaceStartAndMoveKeepTheAgentsRuntime: a start or move request names
// only the agent; its runtime and constraints come from the model, so that a
// rescheduled agent never lands on a node that cannot run it.
func TestPlaceStartAndMoveKeepTheAgentsRuntime(t *testing.T) {
	gvisorOnly := readyNode("gvisor", 0, 0, 0)
	gvisorOnly.Runtimes = []string{"gvisor"}
	wrongRegion := readyNode("us", 0, 0, 0)
	wrongRegion.Labels = map[string]string{"region": "us"}
	right := readyNode("right", 0, 0, 0)
	right.Runtimes, right.Labels = []string{"runc"}, map[string]string{"region": "eu"}
	a := runningAgent("a", "o1", "own", 10005, 1000, 1024)
	a.Runtime, a.Constraints = "runc", map[string]string{"region": "eu"}
	s := a
	s.Holds = false
	nodes := []Node{downNode(readyNode("own", 0, 0, 0)), gvisorOnly, wrongRegion, right}
	cfg := Config{PortStart: testConfig.PortStart, PortEnd: testConfig.PortEnd, SampleSize: 1}

	runPlaceCases(t, []placeCase{
		{name: "move", cfg: cfg, nodes: nodes, agents: []Agent{a}, req: moveReq("a"), wantNode: "right", wantPort: 10005},
		{name: "start", cfg: cfg, nodes: nodes, agents: []Agent{s}, req: startReq("a"), wantNode: "right", wantPort: 10005},
		{
			name: "move with nowhere to go", cfg: cfg, nodes: nodes[:3], agents: []Agent{a}, req: moveReq("a"),
			wantReason: ReasonNoNode, wantMessage: "no other node has room",
		},
	})
}
