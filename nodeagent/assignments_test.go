package nodeagent

import (
	"fmt"
	"log/slog"
	"testing"

	nodev1 "github.com/agenthost/agenthost/proto/agenthost/node/v1"
)

// TestOlderAssignmentsAreIgnored: a list older than the one in hand (from a
// server behind the last one, after the watch moved) is not acted on — it
// could delete agents placed since — while newer and equal ones are.
func TestOlderAssignmentsAreIgnored(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ControlAddrs = []string{"127.0.0.1:1"}
	cfg.Name, cfg.AdvertiseAddr = "n1", "127.0.0.1"
	cfg.Logger = slog.New(slog.DiscardHandler)
	a, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	list := func(index uint64, ids ...string) *nodev1.WatchAssignmentsResponse {
		m := &nodev1.WatchAssignmentsResponse{Index: index}
		for _, id := range ids {
			m.Assignments = append(m.Assignments, &nodev1.Assignment{AgentId: id, Desired: "running"})
		}
		return m
	}
	held := func() (uint64, []string) {
		a.mu.Lock()
		defer a.mu.Unlock()
		var ids []string
		for _, as := range a.desired {
			ids = append(ids, as.AgentID)
		}
		return a.index, ids
	}
	for _, step := range []struct {
		msg   *nodev1.WatchAssignmentsResponse
		index uint64
		ids   string
	}{
		{list(30, "a1", "a2"), 30, "[a1 a2]"},
		{list(20), 30, "[a1 a2]"},             // older: ignored
		{list(30, "a1", "a2"), 30, "[a1 a2]"}, // the same again
		{list(31, "a1"), 31, "[a1]"},
		{list(40), 40, "[]"},
	} {
		a.setDesired(step.msg)
		index, ids := held()
		if got := fmt.Sprint(ids); index != step.index || got != step.ids {
			t.Fatalf("after a list at %d: holding %s at %d, want %s at %d", step.msg.GetIndex(), got, index, step.ids, step.index)
		}
	}
}
