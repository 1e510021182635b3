package network

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkSetupTeardown sets up and tears down one agent's network per
// iteration and reports each half's time.
func BenchmarkSetupTeardown(b *testing.B) {
	n := newTestNetwork(b)
	ctx := context.Background()
	port := freePort(b)
	var setup, teardown time.Duration
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("nettest-bench-%d", i)
		began := time.Now()
		path, _, err := n.Setup(ctx, id, port, runtimePort)
		if err != nil {
			b.Fatal(err)
		}
		setup += time.Since(began)
		began = time.Now()
		if err := n.Teardown(ctx, id, path, port, runtimePort); err != nil {
			b.Fatal(err)
		}
		teardown += time.Since(began)
	}
	b.ReportMetric(float64(setup.Milliseconds())/float64(b.N), "setup-ms/op")
	b.ReportMetric(float64(teardown.Milliseconds())/float64(b.N), "teardown-ms/op")
}

// BenchmarkConcurrentSetupTeardown sets up the networks of 8 agents at once,
// as a node given a crashed node's agents does, then tears them down at
// once; it reports each batch's wall time.
func BenchmarkConcurrentSetupTeardown(b *testing.B) {
	const agents = 8
	n := newTestNetwork(b)
	ctx := context.Background()
	ports := make([]int, agents)
	for i := range ports {
		ports[i] = freePort(b)
	}
	var setup, teardown time.Duration
	for i := 0; b.Loop(); i++ {
		paths := make([]string, agents)
		errs := make([]error, agents)
		id := func(j int) string { return fmt.Sprintf("nettest-bench-%d-%d", i, j) }
		var wg sync.WaitGroup
		began := time.Now()
		for j := range agents {
			wg.Go(func() { paths[j], _, errs[j] = n.Setup(ctx, id(j), ports[j], runtimePort) })
		}
		wg.Wait()
		setup += time.Since(began)
		began = time.Now()
		for j := range agents {
			if paths[j] != "" {
				wg.Go(func() { n.Teardown(ctx, id(j), paths[j], ports[j], runtimePort) })
			}
		}
		wg.Wait()
		teardown += time.Since(began)
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(setup.Milliseconds())/float64(b.N), "setup-ms/batch")
	b.ReportMetric(float64(teardown.Milliseconds())/float64(b.N), "teardown-ms/batch")
}
