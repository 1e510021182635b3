package scheduler

import (
	"fmt"
	"testing"
)

// benchBatch is the batch size measured besides single requests.
const benchBatch = 64

// BenchmarkPlace measures Place on the simulated cluster (simulation.go): one
// create request per call, and batches of 64 creates, for each algorithm.
// decisions/s is the figure to hold against the target of 50,000 per second
// on one core; test/bench/scheduler prints the same against the target.
func BenchmarkPlace(b *testing.B) {
	c := SimulatedCluster()
	if want := SimPortEnd - SimPortStart + 1 - SimAgents; c.FreePorts() != want {
		b.Fatalf("simulated cluster: %d free ports, want %d", c.FreePorts(), want)
	}
	for _, alg := range []Algorithm{Binpack, Spread} {
		c.SetConfig(Config{PortStart: SimPortStart, PortEnd: SimPortEnd, Algorithm: alg})
		for _, size := range []int{1, benchBatch} {
			b.Run(fmt.Sprintf("%s/batch=%d", alg, size), func(b *testing.B) {
				reqs := SimulatedCreates(size)
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
