// Command store measures committed writes through the store on a 3-server
// loopback cluster (real TCP, bolt files with fsync) beside raw raft.Apply on
// the same cluster in the same run, with 1 and 64 concurrent writers.
//
// Both paths commit the same kind of entry (an encoded OrgCreate) and wait for
// the FSM to apply it; the store path adds command encoding, leader routing,
// metrics and result mapping. Rounds alternate raw and store runs so that
// drift on a shared machine hits both alike; the median round is reported.
//
// Run with `make bench` or `go run ./test/bench/store [-duration 2s -rounds 3]`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/raft"

	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

func main() {
	duration := flag.Duration("duration", 2*time.Second, "length of each measured run")
	rounds := flag.Int("rounds", 3, "alternating rounds per configuration; the median is reported")
	flag.Parse()
	if err := run(*duration, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type result struct {
	writes     int
	elapsed    time.Duration
	p50, p99   time.Duration
	perSecond  float64
	errorCount int64
}

func run(duration time.Duration, rounds int) error {
	servers, cleanup, err := startCluster(3)
	if err != nil {
		return err
	}
	defer cleanup()
	leader, follower := roles(servers)
	if leader == nil {
		return fmt.Errorf("no leader")
	}

	var seq atomic.Int64
	nextCommand := func() []byte {
		n := seq.Add(1)
		buf, err := store.Encode(&store.OrgCreate{Org: store.Org{
			ID: fmt.Sprintf("org-%d", n), Name: fmt.Sprintf("bench-org-%d", n),
			Plan: store.Plan{MaxAgents: 10, MaxRunning: 5}, CreatedAt: time.Now().UTC(),
		}})
		if err != nil {
			panic(err)
		}
		return buf
	}
	rawApply := func(r *raft.Raft) func() error {
		return func() error {
			f := r.Apply(nextCommand(), 0)
			if err := f.Error(); err != nil {
				return err
			}
			if err, ok := f.Response().(error); ok {
				return err
			}
			return nil
		}
	}
	storeApply := func(s *store.Store) func() error {
		return func() error {
			_, err := s.ApplyEncoded(context.Background(), nextCommand())
			return err
		}
	}

	fmt.Printf("store benchmark: 3 servers on loopback, raft-boltdb with fsync, %s per run, median of %d alternating rounds\n\n", duration, rounds)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "writers\tpath\twrites/s\tp50\tp99\terrors\tratio vs raw\t")
	for _, writers := range []int{1, 64} {
		var raw, via, fwd []result
		for range rounds {
			via = append(via, measure(writers, duration, storeApply(leader.Store)))
			raw = append(raw, measure(writers, duration, rawApply(leader.Store.Raft())))
			fwd = append(fwd, measure(writers, duration, storeApply(follower.Store)))
		}
		r, s, f := median(raw), median(via), median(fwd)
		row := func(path string, m result, ratio string) {
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%s\t%d\t%s\t\n", writers, path, m.perSecond, ms(m.p50), ms(m.p99), m.errorCount, ratio)
		}
		row("raw raft.Apply (leader)", r, "1.00")
		row("store.Apply (leader)", s, fmt.Sprintf("%.2f", s.perSecond/r.perSecond))
		row("store.Apply (via follower)", f, fmt.Sprintf("%.2f", f.perSecond/r.perSecond))
	}
	tw.Flush()
	return benchPlacement(leader, duration, rounds, rawApply(leader.Store.Raft()))
}

// benchPlacement measures agents created end to end through placement
// (scheduler decision, batching into PlanApply, FSM re-check) on the leader,
// beside raw raft.Apply at the same concurrency in the same run.
func benchPlacement(leader *clusterrpc.Server, duration time.Duration, rounds int, raw func() error) error {
	ctx := context.Background()
	s := leader.Store
	if _, err := s.Apply(ctx, &store.ClusterConfigSet{Config: store.ClusterConfig{
		PortRangeStart: 1024, PortRangeEnd: 65535,
		SchedulerAlgorithm: store.AlgorithmBinpack, ReschedulePolicy: store.RescheduleReschedule,
	}}); err != nil {
		return err
	}
	if _, err := s.Apply(ctx, &store.OrgCreate{Org: store.Org{ID: "bench", Name: "bench", CreatedAt: time.Now().UTC()}}); err != nil {
		return err
	}
	for i := range 100 {
		if _, err := s.Apply(ctx, &store.NodeRegister{Node: store.Node{
			ID: fmt.Sprintf("node-%d", i), Name: fmt.Sprintf("node-%d", i), Address: fmt.Sprintf("10.1.0.%d:7500", i),
			Capacity: store.NodeCapacity{MaxAgents: 1000}, LastSeen: time.Now().UTC(),
		}}); err != nil {
			return err
		}
	}
	var seq atomic.Int64
	create := func() error {
		n := seq.Add(1)
		_, err := s.Apply(ctx, &store.AgentCreate{Agent: store.Agent{
			ID: fmt.Sprintf("agent-%d", n), OrgID: "bench", Name: "bench", Runtime: "opencode",
			Desired: store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: time.Now().UTC(),
		}})
		return err
	}
	fmt.Printf("\nplacement benchmark: agents created through the scheduler and PlanApply on the leader, 100 nodes\n\n")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "writers\tpath\twrites/s\tp50\tp99\terrors\tratio vs raw\t")
	for _, writers := range []int{1, 64} {
		var r, p []result
		for range rounds {
			r = append(r, measure(writers, duration, raw))
			p = append(p, measure(writers, duration, create))
		}
		mr, mp := median(r), median(p)
		fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%s\t%d\t%s\t\n", writers, "raw raft.Apply (leader)", mr.perSecond, ms(mr.p50), ms(mr.p99), mr.errorCount, "1.00")
		fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%s\t%d\t%.2f\t\n", writers, "placed agent creates", mp.perSecond, ms(mp.p50), ms(mp.p99), mp.errorCount, mp.perSecond/mr.perSecond)
	}
	return tw.Flush()
}

// measure runs fn from n goroutines for d and reports throughput and latency.
func measure(n int, d time.Duration, fn func() error) result {
	var mu sync.Mutex
	var latencies []time.Duration
	var errs atomic.Int64
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			for time.Now().Before(deadline) {
				t := time.Now()
				if err := fn(); err != nil {
					errs.Add(1)
					continue
				}
				local = append(local, time.Since(t))
			}
			mu.Lock()
			latencies = append(latencies, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(latencies)
	r := result{writes: len(latencies), elapsed: elapsed, errorCount: errs.Load()}
	if len(latencies) > 0 {
		r.p50 = latencies[len(latencies)/2]
		r.p99 = latencies[len(latencies)*99/100]
	}
	r.perSecond = float64(r.writes) / elapsed.Seconds()
	return r
}

func median(rs []result) result {
	sort.Slice(rs, func(i, j int) bool { return rs[i].perSecond < rs[j].perSecond })
	return rs[len(rs)/2]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

func startCluster(n int) ([]*clusterrpc.Server, func(), error) {
	base, err := os.MkdirTemp("", "agenthost-bench-")
	if err != nil {
		return nil, nil, err
	}
	var listeners []net.Listener
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		listeners = append(listeners, ln)
		addrs = append(addrs, ln.Addr().String())
	}
	var servers []*clusterrpc.Server
	cleanup := func() {
		for _, s := range servers {
			s.Shutdown()
		}
		os.RemoveAll(base)
	}
	for i := range n {
		cfg := clusterrpc.DefaultServerConfig()
		cfg.Store.ServerID = fmt.Sprintf("bench-%d", i)
		cfg.Store.DataDir = fmt.Sprintf("%s/server-%d", base, i)
		cfg.Store.Logger = slog.New(slog.DiscardHandler)
		cfg.Store.HeartbeatTimeout = 200 * time.Millisecond
		cfg.Store.ElectionTimeout = 200 * time.Millisecond
		cfg.Store.LeaderLeaseTimeout = 200 * time.Millisecond
		cfg.NodeHeartbeatTTL = time.Hour // simulated nodes send no heartbeats
		cfg.GossipBind = "127.0.0.1:0"
		cfg.Listener = listeners[i]
		cfg.BootstrapExpect = n
		cfg.Join = addrs
		s, err := clusterrpc.StartServer(cfg)
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		servers = append(servers, s)
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if l, f := roles(servers); l != nil && f != nil {
			return servers, cleanup, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	cleanup()
	return nil, nil, fmt.Errorf("cluster elected no leader in 20s")
}

func roles(servers []*clusterrpc.Server) (leader, follower *clusterrpc.Server) {
	for _, s := range servers {
		if s.Store.IsLeader() {
			leader = s
		} else if follower == nil {
			follower = s
		}
	}
	return leader, follower
}
