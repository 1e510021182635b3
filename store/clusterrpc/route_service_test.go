package clusterrpc

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/agenthost/agenthost/internal/h2c"
	routev1 "github.com/agenthost/agenthost/proto/agenthost/route/v1"
	"github.com/agenthost/agenthost/proto/agenthost/route/v1/routev1connect"
	"github.com/agenthost/agenthost/store"
)

// TestWatchRoutesSnapshotThenChanges watches the table through a follower:
// a snapshot with every agent and where it runs, then only what changes —
// a new agent, a stop, a node going down, a deletion — and a fresh watch
// (a reconnecting proxy) starts from a snapshot of the current table.
func TestWatchRoutesSnapshotThenChanges(t *testing.T) {
	tc := NewTestCluster(t, 3)
	leader := tc.WaitForLeader()
	s := tc.Servers[leader].Store
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	apply := func(cmd store.Command) uint64 {
		t.Helper()
		index, err := s.Apply(ctx, cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd.CommandType(), err)
		}
		return index
	}
	now := time.Now().UTC()
	apply(&store.OrgCreate{Org: store.Org{ID: "org", Name: "org", CreatedAt: now}})
	apply(&store.NodeRegister{Node: store.Node{ID: "n1", Name: "n1", Address: "10.0.0.7",
		Capacity: store.NodeCapacity{CPUMillis: 1 << 20, MemoryMB: 1 << 20, MaxAgents: 100}, Runtimes: []string{"opencode"}, LastSeen: now}})
	agent := func(id string, autostart bool) store.Agent {
		return WithTestRuntimePassword(store.Agent{ID: id, OrgID: "org", Name: id, Runtime: "opencode", Autostart: autostart,
			Desired: store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: now}, "pw-"+id)
	}
	tc.WaitForIndex(apply(&store.AgentCreate{Agent: agent("a1", true)}))

	follower := (leader + 1) % 3
	client := routev1connect.NewRouteServiceClient(h2c.NewClient(), "http://"+tc.Servers[follower].Addr())
	watch := func() *connect.ServerStreamForClient[routev1.WatchRoutesResponse] {
		t.Helper()
		stream, err := client.WatchRoutes(ctx, connect.NewRequest(&routev1.WatchRoutesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		return stream
	}
	next := func(stream *connect.ServerStreamForClient[routev1.WatchRoutesResponse]) *routev1.WatchRoutesResponse {
		t.Helper()
		if !stream.Receive() {
			t.Fatalf("stream ended: %v", stream.Err())
		}
		return stream.Msg()
	}
	// until reads responses until one holds a route for id that ok accepts.
	until := func(stream *connect.ServerStreamForClient[routev1.WatchRoutesResponse], what string, ok func(*routev1.Route) bool) *routev1.Route {
		t.Helper()
		for {
			m := next(stream)
			if m.Snapshot {
				t.Fatalf("a snapshot in the middle of a watch, waiting for %s", what)
			}
			for _, r := range m.Routes {
				if ok(r) {
					return r
				}
			}
		}
	}

	stream := watch()
	snap := next(stream)
	if !snap.Snapshot || len(snap.Routes) != 1 {
		t.Fatalf("first message: %+v", snap)
	}
	r := snap.Routes[0]
	if r.AgentId != "a1" || r.Port == 0 || r.NodeId != "n1" || r.NodeAddress != "10.0.0.7" || r.RuntimePassword != "pw-a1" ||
		!r.Autostart || r.Desired != "running" || r.NodeDown || r.Deleted {
		t.Fatalf("snapshot route: %+v", r)
	}

	apply(&store.AgentCreate{Agent: agent("a2", false)})
	if r := until(stream, "a2", func(r *routev1.Route) bool { return r.AgentId == "a2" }); r.NodeAddress != "10.0.0.7" || r.Autostart {
		t.Fatalf("a2: %+v", r)
	}
	apply(&store.AgentSetDesired{ID: "a1", Desired: store.DesiredStopped})
	until(stream, "a1 stopped", func(r *routev1.Route) bool { return r.AgentId == "a1" && r.Desired == "stopped" })
	apply(&store.NodeSetStatus{ID: "n1", Status: store.NodeDown})
	until(stream, "a2's node down", func(r *routev1.Route) bool { return r.AgentId == "a2" && r.NodeDown })
	deleted := apply(&store.AgentDelete{ID: "a2"})
	if r := until(stream, "a2 deleted", func(r *routev1.Route) bool { return r.AgentId == "a2" && r.Deleted }); r.Port == 0 {
		t.Fatalf("a deletion carries the port it frees: %+v", r)
	}

	// A new watch (a proxy that reconnected) gets the table as it is now.
	tc.WaitForIndex(deleted)
	again := watch()
	snap = next(again)
	if !snap.Snapshot || len(snap.Routes) != 1 || snap.Routes[0].AgentId != "a1" || snap.Routes[0].Desired != "stopped" {
		t.Fatalf("snapshot after changes: %+v", snap)
	}
}
