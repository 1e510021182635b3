package clusterrpc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/agenthost/agenthost/internal/h2c"
	nodev1 "github.com/agenthost/agenthost/proto/agenthost/node/v1"
	"github.com/agenthost/agenthost/proto/agenthost/node/v1/nodev1connect"
	"github.com/agenthost/agenthost/store"
)

func createOrg(t *testing.T, s *store.Store, id string) (uint64, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return s.Apply(ctx, &store.OrgCreate{Org: store.Org{
		ID: id, Name: "name-" + id, Plan: store.Plan{MaxAgents: 10, MaxRunning: 5},
		CreatedAt: time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC),
	}})
}

func requireOrgs(t *testing.T, s *store.Store, ids []string) {
	t.Helper()
	st := s.State()
	for _, id := range ids {
		o, err := st.Org(id)
		if err != nil || o == nil {
			t.Fatalf("server %s: org %s missing (err %v)", s.ServerID(), id, err)
		}
	}
}

func TestClusterWriteThroughFollowerAndLeaderFailover(t *testing.T) {
	tc := NewTestCluster(t, 3)
	leader := tc.WaitForLeader()
	follower := tc.Follower()

	var acked []string
	var last uint64
	for i := range 20 {
		id := fmt.Sprintf("org-a%d", i)
		idx, err := createOrg(t, tc.Servers[follower].Store, id)
		if err != nil {
			t.Fatalf("write %d through follower: %v", i, err)
		}
		acked, last = append(acked, id), idx
	}
	tc.WaitForIndex(last)

	// A refusal on the leader reaches the follower's caller as the same sentinel.
	if _, err := createOrg(t, tc.Servers[follower].Store, "org-a0"); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("duplicate org through follower: got %v, want ErrAlreadyExists", err)
	}

	tc.Kill(leader)
	newLeader := tc.WaitForLeader()
	if newLeader == leader {
		t.Fatalf("killed server still leads")
	}
	// Writes go on through every surviving server, follower or leader.
	for i := range 20 {
		srv := tc.Servers[(leader+1+i%2)%3]
		id := fmt.Sprintf("org-b%d", i)
		idx, err := createOrg(t, srv.Store, id)
		if err != nil {
			t.Fatalf("write %d after failover: %v", i, err)
		}
		acked, last = append(acked, id), max(last, idx)
	}

	tc.Restart(leader)
	tc.WaitForIndex(last)
	for _, s := range tc.Servers {
		requireOrgs(t, s.Store, acked)
	}
	hashes := map[[32]byte][]string{}
	for _, s := range tc.Servers {
		h, err := s.Store.State().Hash()
		if err != nil {
			t.Fatal(err)
		}
		hashes[h] = append(hashes[h], s.Store.ServerID())
	}
	if len(hashes) != 1 {
		t.Fatalf("servers disagree on state: %v", hashes)
	}
}

func TestClusterConcurrentWritesAllAcknowledgedArePresent(t *testing.T) {
	tc := NewTestCluster(t, 3)
	var mu sync.Mutex
	var acked []string
	var last uint64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv := tc.Servers[w%3]
			for i := range 25 {
				id := fmt.Sprintf("org-w%d-%d", w, i)
				idx, err := createOrg(t, srv.Store, id)
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				mu.Lock()
				acked, last = append(acked, id), max(last, idx)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	tc.WaitForIndex(last)
	for _, s := range tc.Servers {
		requireOrgs(t, s.Store, acked)
	}
}

func TestClusterConsistentReadOnFollowerSeesAcknowledgedWrite(t *testing.T) {
	tc := NewTestCluster(t, 3)
	leader := tc.WaitForLeader()
	follower := tc.Follower()
	for i := range 10 {
		id := fmt.Sprintf("org-r%d", i)
		if _, err := createOrg(t, tc.Servers[leader].Store, id); err != nil {
			t.Fatal(err)
		}
		// No waiting: the consistent read itself must catch up.
		st, err := tc.Servers[follower].Store.ConsistentState(context.Background())
		if err != nil {
			t.Fatalf("consistent read: %v", err)
		}
		if o, _ := st.Org(id); o == nil {
			t.Fatalf("consistent read on follower missed acknowledged org %s", id)
		}
	}
}

func TestServerRestartedFromDataDirKeepsState(t *testing.T) {
	tc := NewTestCluster(t, 1)
	s := tc.Servers[0].Store
	for i := range 5 {
		if _, err := createOrg(t, s, fmt.Sprintf("org-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	before, err := s.State().Hash()
	if err != nil {
		t.Fatal(err)
	}
	index := s.State().Index()
	tc.Kill(0)

	restarted := tc.Restart(0).Store
	tc.WaitForLeader()
	if err := restarted.WaitForIndex(context.Background(), index); err != nil {
		t.Fatal(err)
	}
	after, err := restarted.State().Hash()
	if err != nil {
		t.Fatal(err)
	}
	if before != after {
		t.Fatalf("state after restart differs: index before %d, after %d", index, restarted.State().Index())
	}
	if _, err := createOrg(t, restarted, "org-after-restart"); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
}

func TestServerRestartedFromSnapshotAndLogKeepsState(t *testing.T) {
	tc := NewTestCluster(t, 1)
	s := tc.Servers[0].Store
	for i := range 5 {
		if _, err := createOrg(t, s, fmt.Sprintf("org-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Raft().Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	for i := 5; i < 8; i++ {
		if _, err := createOrg(t, s, fmt.Sprintf("org-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := s.State().Hash()
	index := s.State().Index()
	tc.Kill(0)

	restarted := tc.Restart(0).Store
	if err := restarted.WaitForIndex(context.Background(), index); err != nil {
		t.Fatal(err)
	}
	after, _ := restarted.State().Hash()
	if before != after {
		t.Fatalf("state restored from snapshot plus log differs")
	}
}

type recordingHook struct {
	mu          sync.Mutex
	established int
	revoked     int
	ctx         context.Context
}

func (h *recordingHook) EstablishLeadership(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.established++
	h.ctx = ctx
	return nil
}

func (h *recordingHook) RevokeLeadership() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.revoked++
}

func (h *recordingHook) counts() (int, int, context.Context) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.established, h.revoked, h.ctx
}

func TestLeadershipHooksFollowTheLeader(t *testing.T) {
	tc := NewTestCluster(t, 3)
	hooks := make([]*recordingHook, 3)
	for i, s := range tc.Servers {
		hooks[i] = &recordingHook{}
		s.Store.RegisterLeadershipHook(hooks[i])
	}
	leader := tc.WaitForLeader()
	waitFor(t, "hook established on leader", func() bool { e, _, _ := hooks[leader].counts(); return e == 1 })
	for i := range hooks {
		if e, _, _ := hooks[i].counts(); i != leader && e != 0 {
			t.Fatalf("hook established on follower %d", i)
		}
	}
	_, _, leaderCtx := hooks[leader].counts()

	tc.Kill(leader)
	waitFor(t, "hook revoked on old leader", func() bool { _, r, _ := hooks[leader].counts(); return r == 1 })
	if leaderCtx.Err() == nil {
		t.Fatalf("old leader's hook context not cancelled")
	}
	newLeader := tc.WaitForLeader()
	waitFor(t, "hook established on new leader", func() bool { e, _, _ := hooks[newLeader].counts(); return e == 1 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFiveServerClusterSurvivesTwoFailures(t *testing.T) {
	tc := NewTestCluster(t, 5)
	leader := tc.WaitForLeader()
	if _, err := createOrg(t, tc.Servers[tc.Follower()].Store, "org-before"); err != nil {
		t.Fatal(err)
	}
	tc.Kill(leader)
	tc.Kill(tc.Follower())
	tc.WaitForLeader()
	idx, err := createOrg(t, tc.Servers[tc.Follower()].Store, "org-after")
	if err != nil {
		t.Fatalf("write with 3 of 5 servers: %v", err)
	}
	tc.WaitForIndex(idx)
	for _, s := range tc.Servers {
		if s != nil {
			requireOrgs(t, s.Store, []string{"org-before", "org-after"})
		}
	}
}

func TestServerStartedWithJoinOnlyIsAddedToRunningCluster(t *testing.T) {
	tc := NewTestCluster(t, 3)
	idx, err := createOrg(t, tc.Servers[tc.WaitForLeader()].Store, "org-existing")
	if err != nil {
		t.Fatal(err)
	}
	cfg := TestServerConfig(t, "server-new", t.TempDir())
	cfg.BootstrapExpect = 0
	cfg.Join = []string{tc.Servers[tc.Follower()].Addr()}
	srv, err := StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := srv.Store.WaitForIndex(ctx, idx); err != nil {
		t.Fatalf("new server never caught up: %v", err)
	}
	requireOrgs(t, srv.Store, []string{"org-existing"})
	waitFor(t, "four voters", func() bool {
		st := tc.Servers[tc.WaitForLeader()].Store.Status()
		return len(st.Servers) == 4
	})
	// The new member takes writes like any other server.
	if _, err := createOrg(t, srv.Store, "org-from-new"); err != nil {
		t.Fatalf("write through the new server: %v", err)
	}
}

func TestHeartbeatFromUnknownNodeIsNotFound(t *testing.T) {
	tc := NewTestCluster(t, 1)
	srv := tc.Servers[0]
	client := nodev1connect.NewNodeServiceClient(h2c.NewClient(), "http://"+srv.Addr())
	_, err := client.Heartbeat(context.Background(), connect.NewRequest(&nodev1.HeartbeatRequest{NodeId: "never-registered"}))
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("heartbeat of an unknown node: %v, want NotFound (so that the node re-registers)", err)
	}
	if _, err := client.Register(context.Background(), connect.NewRequest(&nodev1.RegisterRequest{
		NodeId: "n1", Name: "n1", Address: "127.0.0.1", Capacity: &nodev1.Capacity{CpuMillis: 1000},
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Heartbeat(context.Background(), connect.NewRequest(&nodev1.HeartbeatRequest{NodeId: "n1"})); err != nil {
		t.Fatalf("heartbeat after registering: %v", err)
	}
}
