package clusterrpc

import (
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
