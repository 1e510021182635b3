package clusterrpc

import (
	"context"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/agenthost/agenthost/internal/h2c"
	nodev1 "github.com/agenthost/agenthost/proto/agenthost/node/v1"
	"github.com/agenthost/agenthost/proto/agenthost/node/v1/nodev1connect"
	"github.com/agenthost/agenthost/store"
)

// TestResumedWatchGetsTheWholeList: a node resuming its watch after an
// index is sent the whole list first, also when none of the agents left
// changed since — else it would never hear that others were deleted — and
// an empty list too. A watch that asks for progress hears the server's
// applied index when its list does not change.
func TestResumedWatchGetsTheWholeList(t *testing.T) {
	f := newPasswordFixture(t, 1)
	f.agent(TestKeyring(), "a1", "pw-one")
	f.agent(TestKeyring(), "a2", "pw-two")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nodes := nodev1connect.NewNodeServiceClient(h2c.NewClient(), "http://"+f.tc.Servers[0].Addr())
	first := func(after uint64, progress bool) (*connect.ServerStreamForClient[nodev1.WatchAssignmentsResponse], *nodev1.WatchAssignmentsResponse) {
		t.Helper()
		stream, err := nodes.WatchAssignments(ctx, connect.NewRequest(&nodev1.WatchAssignmentsRequest{NodeId: "n1", AfterIndex: after, Progress: progress}))
		if err != nil {
			t.Fatal(err)
		}
		if !stream.Receive() {
			t.Fatalf("watch after %d: no first message: %v", after, stream.Err())
		}
		return stream, stream.Msg()
	}
	ids := func(m *nodev1.WatchAssignmentsResponse) []string {
		var out []string
		for _, a := range m.GetAssignments() {
			out = append(out, a.GetAgentId())
		}
		slices.Sort(out)
		return out
	}

	stream, m := first(0, false)
	stream.Close()
	held := m.GetIndex()
	if got := ids(m); !slices.Equal(got, []string{"a1", "a2"}) || m.GetProgressOnly() {
		t.Fatalf("first list: %v (progress only %v)", got, m.GetProgressOnly())
	}

	f.apply(&store.AgentDelete{ID: "a2"})
	stream, m = first(held, false)
	stream.Close()
	if got := ids(m); !slices.Equal(got, []string{"a1"}) || m.GetIndex() <= held {
		t.Fatalf("resumed after %d: %v at index %d, want [a1] at a later index", held, got, m.GetIndex())
	}

	f.apply(&store.AgentDelete{ID: "a1"})
	stream, m = first(m.GetIndex(), true)
	defer stream.Close()
	if got := ids(m); len(got) != 0 || m.GetProgressOnly() {
		t.Fatalf("resumed once every agent was deleted: %v (progress only %v), want an empty list", got, m.GetProgressOnly())
	}
	listed := m.GetIndex()
	noop := f.apply(&store.Noop{}) // changes no list, moves the applied index
	for stream.Receive() {
		if m := stream.Msg(); m.GetProgressOnly() && m.GetIndex() >= noop {
			if len(m.GetAssignments()) != 0 {
				t.Fatalf("a progress message carries assignments: %v", m)
			}
			return
		}
	}
	t.Fatalf("no progress message past index %d (list at %d): %v", noop, listed, stream.Err())
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
