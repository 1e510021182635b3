// Command scheduler measures placement decisions per second on one core
// (GOMAXPROCS=1) against the target of 50,000 per second.
//
// It builds the scheduler's in-memory model of a large cluster: 5,000 nodes of
// varied capacity (3% draining, 1% down, a fifth offering only one of the two
// runtimes), 300 orgs (half with plan caps), and 50,000 existing agents, about
// 10 per node, 85% of them running. The agents hold ports 10000-59999, which
// is the whole default range, so the model's range is widened to 10000-65000
// to leave room for creates. It then times scheduler.Place on that model, which
// does not change it, so every call sees the same cluster:
//
//   - single: one create request per call, the cost of an unbatched request;
//   - batch of 64: 64 creates per call, each seeing the ports, capacity and
//     caps taken by the ones before it, as the leader batches requests that
//     arrive together;
//
// for both node rankings (binpack and spread) with the default sample size.
// A decision is one placed request: a node and a port. Each configuration
// runs for -rounds timed rounds of -duration after a short warm-up, and the
// median round is reported. Raft, the store and the network are not involved:
// this is the scheduler's share of a placement, measured alone.
//
// Run with `make bench` or `go run ./test/bench/scheduler [-duration 1s -rounds 3]`.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/agenthost/agenthost/scheduler"
)

const (
	target    = 50000 // decisions per second on one core
	batchSize = 64
)

func main() {
	duration := flag.Duration("duration", time.Second, "length of each timed round")
	rounds := flag.Int("rounds", 3, "timed rounds per configuration; the median is reported")
	flag.Parse()
	runtime.GOMAXPROCS(1)
	if err := run(*duration, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(duration time.Duration, rounds int) error {
	began := time.Now()
	c := scheduler.SimulatedCluster()
	fmt.Printf("scheduler placement: %s, built in %s\n", c, time.Since(began).Round(time.Millisecond))
	fmt.Printf("GOMAXPROCS=%d, %s, %d rounds of %s per row (median), target %s decisions/s\n\n",
		runtime.GOMAXPROCS(0), runtime.Version(), rounds, duration, thousands(target))

	const row = "%-9s  %-14s  %12s  %11s  %8s  %s\n"
	fmt.Printf(row, "algorithm", "requests", "decisions/s", "ns/decision", "x target", "result")
	for _, alg := range []scheduler.Algorithm{scheduler.Binpack, scheduler.Spread} {
		c.SetConfig(scheduler.Config{PortStart: scheduler.SimPortStart, PortEnd: scheduler.SimPortEnd, Algorithm: alg})
		for _, size := range []int{1, batchSize} {
			rate, err := measure(c, size, duration, rounds)
			if err != nil {
				return fmt.Errorf("%s, %d per call: %w", alg, size, err)
			}
			shape, verdict := "single", "meets target"
			if size > 1 {
				shape = fmt.Sprintf("batches of %d", size)
			}
			if rate < target {
				verdict = "BELOW TARGET"
			}
			fmt.Printf(row, alg, shape, thousands(rate), fmt.Sprintf("%.0f", 1e9/rate), fmt.Sprintf("%.1f", rate/target), verdict)
		}
	}
	return nil
}

// thousands formats v rounded to an integer, with commas between thousands.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// measure returns the median over rounds of decisions per second, placing
// size create requests per call.
func measure(c *scheduler.Cluster, size int, duration time.Duration, rounds int) (float64, error) {
	reqs := scheduler.SimulatedCreates(size)
	chunk := max(1, 4096/size) // calls between clock reads
	var seed uint64
	round := func(d time.Duration) (float64, error) {
		runtime.GC()
		calls := 0
		start := time.Now()
		for time.Since(start) < d {
			for range chunk {
				seed++
				for _, dec := range scheduler.Place(c, reqs, seed) {
					if !dec.OK() {
						return 0, fmt.Errorf("request refused: %s", dec.Message)
					}
				}
			}
			calls += chunk
		}
		return float64(calls*size) / time.Since(start).Seconds(), nil
	}
	if _, err := round(duration / 10); err != nil { // warm-up
		return 0, err
	}
	rates := make([]float64, rounds)
	for i := range rates {
		r, err := round(duration)
		if err != nil {
			return 0, err
		}
		rates[i] = r
	}
	slices.Sort(rates)
	return rates[len(rates)/2], nil
}

// buildModel builds the model described in the package comment; the
// scheduler's BenchmarkPlace builds the same one.
