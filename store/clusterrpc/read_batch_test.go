package clusterrpc

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
	"github.com/prometheus/client_golang/prometheus"
)

// TestConsistentReadsShareReadIndexes: many concurrent consistent reads on
// a follower cost the leader a few read indexes, not one each, and no log
// entry at all — and each read still sees the write its caller made just
// before it.
func TestConsistentReadsShareReadIndexes(t *testing.T) {
	var regs []*prometheus.Registry
	tc := NewTestClusterWith(t, 3, func(cfg *ServerConfig) {
		// An election (tight test timings, a loaded machine) would add
		// its own entries to the log this test counts.
		ProductionTimings(cfg)
		reg := prometheus.NewRegistry()
		cfg.Store.Registerer = reg
		regs = append(regs, reg)
	})
	leader := tc.WaitForLeader()
	ls := tc.Servers[leader].Store
	fs := tc.Servers[(leader+1)%3].Store
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const readers = 200
	before := quietLogIndex(t, tc, ls)
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := fs.ConsistentState(ctx); err != nil {
				errs <- err
			}
			if i%20 != 0 {
				return
			}
			// Some readers write first: their read must see it.
			id := fmt.Sprintf("org-%d", i)
			if _, err := ls.Apply(ctx, &store.OrgCreate{Org: store.Org{ID: id, Name: id, CreatedAt: time.Now().UTC()}}); err != nil {
				errs <- err
				return
			}
			st, err := fs.ConsistentState(ctx)
			if err != nil {
				errs <- err
				return
			}
			if o, _ := st.Org(id); o == nil {
				errs <- fmt.Errorf("a consistent read missed %s, written before it", id)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every write (10 of them) is a log entry; a read index is none.
	if entries := int(ls.Raft().LastIndex() - before); entries != readers/20 {
		t.Errorf("%d writes and %d consistent reads made %d log entries", readers/20, readers+readers/20, entries)
	}
	readIndexes := readIndexesServed(t, regs[leader])
	t.Logf("%d consistent reads cost %d read indexes", readers+readers/20, readIndexes)
	if readIndexes < 1 || readIndexes > readers/4 {
		t.Fatalf("%d reads cost %d read indexes", readers+readers/20, readIndexes)
	}
}

// readIndexesServed is how many read indexes the server with registry reg
// confirmed.
func readIndexesServed(t *testing.T, reg *prometheus.Registry) int {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "agenthost_store_read_index_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "ok" {
					return int(m.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return 0
}

// quietLogIndex waits until every server of tc has state and s's log has
// not grown for half a second, and returns its last index. A founding server
// still joining the cluster it was bootstrapped into adds a configuration
// entry, which a test counting the entries its own calls made must not see.
func quietLogIndex(t *testing.T, tc *TestCluster, s *store.Store) uint64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for _, srv := range tc.Servers {
		for !srv.Store.HasState() {
			if time.Now().After(deadline) {
				t.Fatalf("%s has no state after 15 s", srv.Store.ServerID())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	last, since := s.Raft().LastIndex(), time.Now()
	for time.Since(since) < 500*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatal("the log kept growing for 15 s")
		}
		time.Sleep(20 * time.Millisecond)
		if i := s.Raft().LastIndex(); i != last {
			last, since = i, time.Now()
		}
	}
	return last
}
