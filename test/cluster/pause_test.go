package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestLeaderPaused stops the leader with SIGSTOP: the other two elect a
// leader and take writes; when the old leader continues it follows the new
// one and holds what was written while it slept.
func TestLeaderPaused(t *testing.T) {
	c := StartCluster(t)
	org := c.CreateOrg("pause")
	leader := c.WaitForLeader(30 * time.Second)
	follower := c.Servers[(leader+1)%len(c.Servers)].HTTPAddr

	paused := time.Now()
	c.Pause(leader)
	var id string
	ctx := context.Background()
	waitFor(t, 15*time.Second, "a write accepted while the leader is paused", func() bool {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		res, err := c.Do(rctx, follower, "POST", "/api/v1/agents", org.Token, map[string]any{"name": fmt.Sprintf("paused-%d", time.Now().UnixNano())})
		if err != nil || !res.OK() {
			return false
		}
		var created struct {
			AgentID string `json:"agentId"`
		}
		res.Decode(t, &created)
		id = created.AgentID
		return true
	})
	t.Logf("leader %s paused: writes accepted again after %v", c.Servers[leader].Name, time.Since(paused).Round(time.Millisecond))

	c.Resume(leader)
	newLeader := c.WaitForLeader(30 * time.Second)
	waitFor(t, 30*time.Second, "the old leader to hold the write made while it slept", func() bool {
		list, err := c.Agents(c.Servers[leader].HTTPAddr, org)
		if err != nil {
			return false
		}
		for _, a := range list {
			if a.AgentID == id {
				return true
			}
		}
		return false
	})
	t.Logf("after resuming, %s leads and %s holds agent %s", c.Servers[newLeader].Name, c.Servers[leader].Name, id)
}
