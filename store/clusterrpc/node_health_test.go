package clusterrpc

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

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

// TestGossipDeathIsCheckedByTheLeader: a node gossip declares dead is marked
// down only when it does not answer the leader itself. A member cut off
// from the others gossips them all dead once its link is back; before this
// check the leader marked a healthy node down on that word and moved its
// agents (test/cluster TestNodeHostPartitioned, 1 run in 4 under load).
func TestGossipDeathIsCheckedByTheLeader(t *testing.T) {
	tc := NewTestCluster(t, 1)
	st := tc.Servers[tc.WaitForLeader()].Store
	ctx := context.Background()
	for _, id := range []string{"node-alive", "node-dead"} {
		if _, err := st.Apply(ctx, &store.NodeRegister{Node: store.Node{ID: id, Name: id, Address: "127.0.0.1"}}); err != nil {
			t.Fatal(err)
		}
	}
	asked := make(chan string, 2)
	h := NewNodeHealth(st, time.Hour, slog.New(slog.DiscardHandler))
	h.ConfirmWith(func(nodeID string) bool {
		asked <- nodeID
		return nodeID == "node-alive"
	})
	h.mu.Lock()
	h.active = true // as the leadership hook makes it
	h.mu.Unlock()

	status := func(id string) store.NodeStatus {
		n, err := st.State().Node(id)
		if err != nil || n == nil {
			t.Fatalf("node %s: %v", id, err)
		}
		return n.Status
	}
	h.GossipDead("node-dead")
	if got := <-asked; got != "node-dead" {
		t.Fatalf("asked about %s", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for status("node-dead") != store.NodeDown {
		if time.Now().After(deadline) {
			t.Fatal("a node gossiped dead that does not answer the leader was not marked down")
		}
		time.Sleep(10 * time.Millisecond)
	}

	h.GossipDead("node-alive")
	if got := <-asked; got != "node-alive" {
		t.Fatalf("asked about %s", got)
	}
	// The answer decides at once; a moment later the node is still ready.
	time.Sleep(200 * time.Millisecond)
	if got := status("node-alive"); got != store.NodeReady {
		t.Fatalf("a node gossiped dead that answers the leader is %s", got)
	}
}
