package scheduler

import (
	"fmt"
	"math/rand/v2"
)

// Simulated cluster for benchmarks (BenchmarkPlace and test/bench/scheduler):
// SimNodes nodes of mixed sizes in four regions, 3% draining and 1% down,
// some without every runtime; SimOrgs orgs, half with plan caps; SimAgents
// agents, about 10 per node, 85% running. 50,000 agents would fill the default
// port range exactly, so the simulation uses SimPortStart-SimPortEnd.
const (
	SimNodes     = 5000
	SimAgents    = 50000
	SimOrgs      = 300
	SimPortStart = 10000
	SimPortEnd   = 65000
)

// SimulatedCluster builds the simulated model, the same for every call.
func SimulatedCluster() *Cluster {
	rng := rand.New(rand.NewPCG(1, 2))
	c := NewCluster(Config{PortStart: SimPortStart, PortEnd: SimPortEnd})
	regions := []string{"eu-west", "eu-central", "us-east", "us-west"}
	ids := make([]string, SimNodes)
	for i := range ids {
		n := Node{
			ID:        fmt.Sprintf("node-%04d", i),
			Capacity:  Resources{CPUMillis: []int64{32000, 48000, 64000, 96000}[rng.IntN(4)], MemoryMB: []int64{65536, 131072, 262144}[rng.IntN(3)]},
			MaxAgents: []int{16, 24, 32}[rng.IntN(3)],
			Labels:    map[string]string{"region": regions[i%len(regions)]},
			Runtimes:  []string{"runc", "gvisor"},
			Eligible:  true,
		}
		if rng.IntN(5) == 0 {
			n.Runtimes = []string{"runc"}
		}
		switch r := rng.IntN(100); {
		case r < 3:
			n.Eligible = false // draining
		case r < 4:
			n.Eligible, n.Down = false, true
		}
		ids[i] = n.ID
		c.UpsertNode(n)
	}
	for i := range SimOrgs {
		o := Org{ID: fmt.Sprintf("org-%03d", i)}
		if i%2 == 1 {
			o.MaxAgents, o.MaxRunning = 1000, 800
		}
		c.UpsertOrg(o)
	}
	perNode := make([]int, SimNodes)
	for i := range SimAgents {
		k := rng.IntN(SimNodes)
		for perNode[k] >= 14 { // ~10 per node, never past the smallest MaxAgents
			k = rng.IntN(SimNodes)
		}
		perNode[k]++
		c.UpsertAgent(Agent{
			ID:        fmt.Sprintf("agent-%05d", i),
			OrgID:     fmt.Sprintf("org-%03d", rng.IntN(SimOrgs)),
			NodeID:    ids[k],
			Port:      SimPortStart + i,
			Resources: Resources{CPUMillis: []int64{250, 500, 1000, 2000}[rng.IntN(4)], MemoryMB: []int64{512, 1024, 2048, 4096}[rng.IntN(4)]},
			Runtime:   "runc",
			Holds:     rng.IntN(100) < 85,
		})
	}
	return c
}

// SimulatedCreates is n create requests spread over the simulated orgs.
func SimulatedCreates(n int) []Request {
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = Request{
			Kind: KindCreate, AgentID: fmt.Sprintf("new-%d", i), OrgID: fmt.Sprintf("org-%03d", i*7%SimOrgs),
			Runtime: "runc", Resources: Resources{CPUMillis: 1000, MemoryMB: 2048},
		}
	}
	return reqs
}
