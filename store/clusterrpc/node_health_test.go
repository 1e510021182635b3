package clusterrpc

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/agenthost/agenthost/internal/h2c"
	nodev1 "github.com/agenthost/agenthost/proto/agenthost/node/v1"
	"github.com/agenthost/agenthost/proto/agenthost/node/v1/nodev1connect"
	"github.com/agenthost/agenthost/store"
)

// TestNodeHealthJudgesANodeFromWhenItFirstSeesIt: a node the leader hears
// of only after it began (registered through a follower) is not marked down
// before a full TTL has passed since then, however long the leader has led;
// a node heard from stays up; a silent one expires after the TTL; a node
// marked down is not listed again, and a removed node is forgotten.
func TestNodeHealthJudgesANodeFromWhenItFirstSeesIt(t *testing.T) {
	ttl := 2 * time.Second
	h := NewNodeHealth(nil, ttl, slog.New(slog.DiscardHandler))
	t0 := time.Now().Add(time.Hour) // long after the leader began
	a := &store.Node{ID: "node-a", Status: store.NodeReady}
	b := &store.Node{ID: "node-b", Status: store.NodeReady}

	if got := h.expired([]*store.Node{a}, t0); len(got) != 0 {
		t.Fatalf("a node first seen now expired at once: %v", got)
	}
	if got := h.expired([]*store.Node{a, b}, t0.Add(ttl)); len(got) != 0 {
		t.Fatalf("expired at exactly the TTL: %v", got)
	}
	h.mu.Lock()
	h.lastSeen["node-b"] = t0.Add(2 * ttl) // b heartbeats
	h.mu.Unlock()
	if got := h.expired([]*store.Node{a, b}, t0.Add(2*ttl)); !slices.Equal(got, []string{"node-a"}) {
		t.Fatalf("after 2 TTLs without a heartbeat from a: %v, want [node-a]", got)
	}
	if got := h.expired([]*store.Node{a, b}, t0.Add(3*ttl-time.Millisecond)); !slices.Equal(got, []string{"node-a"}) {
		t.Fatalf("b heartbeat at t0+2TTL, so at t0+3TTL-1ms: %v, want [node-a]", got)
	}
	if got := h.expired([]*store.Node{a, b}, t0.Add(3*ttl+time.Millisecond)); !slices.Equal(got, []string{"node-a", "node-b"}) {
		t.Fatalf("at t0+3TTL+1ms: %v, want both", got)
	}
	down := &store.Node{ID: "node-a", Status: store.NodeDown}
	if got := h.expired([]*store.Node{down}, t0.Add(10*ttl)); len(got) != 0 {
		t.Fatalf("a node already down listed again: %v", got)
	}
	h.mu.Lock()
	_, kept := h.lastSeen["node-b"]
	h.mu.Unlock()
	if kept {
		t.Fatal("a removed node is still tracked")
	}
}

// TestWatchAssignmentsSendsAnEmptyFirstList: a node without agents gets its
// (empty) list at once — its node agent acts only after a first list, and a
// node whose agents moved away while it was down must remove their stale
// containers — and then its first agent when one is placed.
func TestWatchAssignmentsSendsAnEmptyFirstList(t *testing.T) {
	f := newPasswordFixture(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes := nodev1connect.NewNodeServiceClient(h2c.NewClient(), "http://"+f.tc.Servers[0].Addr())
	for _, after := range []uint64{0, 5} { // a new watch, and one resuming
		stream, err := nodes.WatchAssignments(ctx, connect.NewRequest(&nodev1.WatchAssignmentsRequest{NodeId: "n1", AfterIndex: after}))
		if err != nil {
			t.Fatal(err)
		}
		if !stream.Receive() {
			t.Fatalf("after index %d: no first list: %v", after, stream.Err())
		}
		if got := stream.Msg().GetAssignments(); len(got) != 0 {
			t.Fatalf("after index %d: first list %v, want empty", after, got)
		}
		stream.Close()
	}
	stream, err := nodes.WatchAssignments(ctx, connect.NewRequest(&nodev1.WatchAssignmentsRequest{NodeId: "n1"}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() || len(stream.Msg().GetAssignments()) != 0 {
		t.Fatalf("first list: %v", stream.Err())
	}
	f.agent(TestKeyring(), "a1", "pw")
	if !stream.Receive() {
		t.Fatalf("no list after an agent was placed: %v", stream.Err())
	}
	if got := stream.Msg().GetAssignments(); len(got) != 1 || got[0].GetAgentId() != "a1" {
		t.Fatalf("second list %v, want a1", got)
	}
}
