package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestFollowerDiskFull fills a follower's data directory: the other two go
// on committing writes, and once the space is back the follower catches up
// without a restart. The writes are orgs, which need no node agent: with a
// node agent connected to the full follower, agents placed on that node do
// not start until the space is back (the follower serves it a state that
// no longer advances), which is scenario 2.5's to settle.
func TestFollowerDiskFull(t *testing.T) {
	c := StartClusterWith(t, Options{ServerDiskMB: 64})
	leader := c.WaitForLeader(30 * time.Second)
	full := (leader + 1) % len(c.Servers)
	c.FillDisk(full)

	ctx := context.Background()
	var ids []string
	for i := range 10 {
		res, err := c.Do(ctx, c.Servers[leader].HTTPAddr, "POST", "/api/v1/orgs", c.OperatorToken, map[string]any{"name": fmt.Sprintf("full-%d", i)})
		if err != nil || !res.OK() {
			t.Fatalf("create org %d with %s's disk full: %v %v", i, c.Servers[full].Name, res, err)
		}
		var created struct{ ID string }
		res.Decode(t, &created)
		ids = append(ids, created.ID)
	}
	if !c.Servers[full].Running() {
		t.Fatalf("%s exited on a full disk", c.Servers[full].Name)
	}
	// Not asserted: bolt may still write a few entries into pages of its
	// file that it freed earlier, which a full disk does not refuse.
	t.Logf("with its disk full, %s holds all 10 writes: %v", c.Servers[full].Name, c.holdsOrgs(full, ids))

	c.FreeDisk(full)
	freed := time.Now()
	waitFor(t, 30*time.Second, c.Servers[full].Name+" to hold the writes made while its disk was full", func() bool {
		return c.holdsOrgs(full, ids)
	})
	t.Logf("%s caught up %v after its space came back", c.Servers[full].Name, time.Since(freed).Round(time.Millisecond))
}

// holdsOrgs reports whether server i lists every org of ids (from its own
// state: a follower answers reads locally).
func (c *Cluster) holdsOrgs(i int, ids []string) bool {
	var out struct {
		Orgs []struct{ ID string } `json:"orgs"`
	}
	if err := c.Get(c.Servers[i].HTTPAddr, "/api/v1/orgs", c.OperatorToken, &out); err != nil {
		return false
	}
	held := map[string]bool{}
	for _, o := range out.Orgs {
		held[o.ID] = true
	}
	for _, id := range ids {
		if !held[id] {
			return false
		}
	}
	return true
}
