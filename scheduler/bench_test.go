package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The benchmark model: 5,000 nodes of varied capacity (3% draining, 1% down),
// 300 orgs, and 50,000 agents, about 10 per node, 85% of them running. The
// agents hold ports 10000-59999, which is the whole default range (10000-59999);
// the model's range is widened to 10000-65000 so that creates find free ports,
// with the 50,000 held ports below them as in a cluster filled in order.
// test/bench/scheduler builds the same model.
const (
	benchNodes     = 5000
	benchAgents    = 50000
	benchOrgs      = 300
	benchPortStart = 10000
	benchPortEnd   = 65000
	benchBatch     = 64
)

func benchCluster(tb testing.TB) *Cluster {
	tb.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	c := NewCluster(Config{PortStart: benchPortStart, PortEnd: benchPortEnd})
	regions := []string{"eu-west", "eu-central", "us-east", "us-west"}
	nodes := make([]Node, benchNodes)
	for i := range nodes {
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
		nodes[i] = n
		c.UpsertNode(n)
	}
	for i := range benchOrgs {
		o := Org{ID: fmt.Sprintf("org-%03d", i)}
		if i%2 == 1 {
			o.MaxAgents, o.MaxRunning = 1000, 800
		}
		c.UpsertOrg(o)
	}
	perNode := make([]int, benchNodes)
	for i := range benchAgents {
		k := rng.IntN(benchNodes)
		for perNode[k] >= 14 { // ~10 per node, never past the smallest MaxAgents
			k = rng.IntN(benchNodes)
		}
		perNode[k]++
		c.UpsertAgent(Agent{
			ID:        fmt.Sprintf("agent-%05d", i),
			OrgID:     fmt.Sprintf("org-%03d", rng.IntN(benchOrgs)),
			NodeID:    nodes[k].ID,
			Port:      benchPortStart + i,
			Resources: Resources{CPUMillis: []int64{250, 500, 1000, 2000}[rng.IntN(4)], MemoryMB: []int64{512, 1024, 2048, 4096}[rng.IntN(4)]},
			Runtime:   "runc",
			Holds:     rng.IntN(100) < 85,
		})
	}
	if c.FreePorts() != benchPortEnd-benchPortStart+1-benchAgents {
		tb.Fatalf("benchmark model: %d free ports, want %d", c.FreePorts(), benchPortEnd-benchPortStart+1-benchAgents)
	}
	return c
}

// benchRequests is n create requests, spread over the orgs.
func benchRequests(n int) []Request {
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = Request{
			Kind: KindCreate, AgentID: fmt.Sprintf("new-%d", i), OrgID: fmt.Sprintf("org-%03d", i*7%benchOrgs),
			Runtime: "runc", Resources: Resources{CPUMillis: 1000, MemoryMB: 2048},
		}
	}
	return reqs
}

// BenchmarkPlace measures Place on the benchmark model: one create request
// per call, and batches of 64 creates, for each algorithm. decisions/s is
// the figure to hold against the target of 50,000 per second on one core.
func BenchmarkPlace(b *testing.B) {
	c := benchCluster(b)
	for _, alg := range []Algorithm{Binpack, Spread} {
		c.SetConfig(Config{PortStart: benchPortStart, PortEnd: benchPortEnd, Algorithm: alg})
		for _, size := range []int{1, benchBatch} {
			b.Run(fmt.Sprintf("%s/batch=%d", alg, size), func(b *testing.B) {
				reqs := benchRequests(size)
				b.ReportAllocs()
				var seed uint64
				for b.Loop() {
					seed++
					for _, d := range Place(c, reqs, seed) {
						if !d.OK() {
							b.Fatalf("refused: %s", d.Message)
						}
					}
				}
				b.ReportMetric(float64(seed)*float64(size)/b.Elapsed().Seconds(), "decisions/s")
			})
		}
	}
}
