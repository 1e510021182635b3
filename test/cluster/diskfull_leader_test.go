package cluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestLeaderDiskFull fills the leader's data directory and writes to it
// until it cannot append to its log: every write answers (created, or a
// documented 503), none hangs and none is a 500; the leader steps down and
// stays up, another is elected and takes creates of orgs and agents through
// the proxy, and once space is back the full server catches up, without a
// restart, and takes writes again.
func TestLeaderDiskFull(t *testing.T) {
	c := StartClusterWith(t, Options{ServerDiskMB: 64})
	c.HTTP.Timeout = 90 * time.Second // beyond any answer the API may take
	full := c.WaitForLeader(30 * time.Second)
	name := c.Servers[full].Name
	c.FillDisk(full)

	ctx := context.Background()
	var ids, committed, unwritten []string
	refused := 0
	deposed := func() bool {
		st, err := c.Status(full)
		return err == nil && st.State != "Leader"
	}
	for i := 0; i < 2000 && !(deposed() && refused > 0); i++ {
		start := time.Now()
		res, err := c.Do(ctx, c.Servers[full].HTTPAddr, "POST", "/api/v1/orgs", c.OperatorToken, map[string]any{"name": fmt.Sprintf("lfull-%d", i)})
		took := time.Since(start)
		if err != nil {
			t.Fatalf("write %d to %s, whose disk is full: no answer after %v: %v", i, name, took, err)
		}
		if took > 30*time.Second {
			t.Fatalf("write %d to %s answered only after %v: %v", i, name, took, res)
		}
		if res.Code == http.StatusCreated {
			var created struct{ ID string }
			res.Decode(t, &created)
			ids = append(ids, created.ID)
			continue
		}
		var body struct {
			Error struct{ Code, Message string }
		}
		res.Decode(t, &body)
		if res.Code != http.StatusServiceUnavailable || !slices.Contains([]string{"server_behind", "unavailable", "outcome_unknown"}, body.Error.Code) {
			t.Fatalf("write %d to %s, whose disk is full: %v, want 201 or a 503 server_behind, unavailable or outcome_unknown", i, name, res)
		}
		if refused == 0 {
			t.Logf("first write %s did not take (write %d, after %v): %v", name, i, took.Round(time.Millisecond), res)
		}
		refused++
		// A server_behind answer says whether the write was committed
		// anyway: checked once the cluster is back together.
		switch {
		case strings.Contains(body.Error.Message, "is committed"):
			committed = append(committed, fmt.Sprintf("lfull-%d", i))
		case strings.Contains(body.Error.Message, "nothing was written"):
			unwritten = append(unwritten, fmt.Sprintf("lfull-%d", i))
		}
	}
	if !deposed() {
		t.Fatalf("%s still leads with its disk full after %d writes", name, len(ids)+refused)
	}
	t.Logf("%s took %d writes, then refused %d cleanly", name, len(ids), refused)

	var leader int
	waitFor(t, 60*time.Second, "a leader other than "+name, func() bool {
		leader = c.Leader()
		return leader >= 0 && leader != full
	})
	t.Logf("%s leads", c.Servers[leader].Name)
	org := c.CreateOrgAt(c.Proxy.HTTPAddr, "after-lfull")
	byNode := c.createAgentsOnEveryNode(c.Proxy.HTTPAddr, org, "lfull", 2)
	c.requireRunningWhereCreated(leader, org, byNode)
	agents := allAgents(byNode)
	if !c.Servers[full].Running() {
		t.Fatalf("%s exited on a full disk", name)
	}
	if b, err := os.ReadFile(c.Servers[full].log); err == nil && strings.Contains(string(b), "cannot save Raft's") {
		t.Logf("%s waited for space to save a term or vote", name)
	}

	c.FreeDisk(full)
	freed := time.Now()
	waitFor(t, 60*time.Second, name+" to hold every write acknowledged while its disk was full", func() bool {
		return c.holdsOrgs(full, append(slices.Clone(ids), org.ID)) && c.holdsAgents(full, org, agents)
	})
	t.Logf("%s caught up %v after its space came back", name, time.Since(freed).Round(time.Millisecond))
	names := c.orgNames(c.Servers[full].HTTPAddr)
	for _, n := range committed {
		if !names[n] {
			t.Errorf("org %s, answered as committed, is not in the state", n)
		}
	}
	for _, n := range unwritten {
		if names[n] {
			t.Errorf("org %s, answered as not written, is in the state", n)
		}
	}
	if !c.Servers[full].Running() {
		t.Fatalf("%s exited", name)
	}
	waitFor(t, 30*time.Second, name+" to take writes again", func() bool {
		res, err := c.Do(ctx, c.Servers[full].HTTPAddr, "POST", "/api/v1/orgs", c.OperatorToken, map[string]any{"name": fmt.Sprintf("lfull-back-%d", time.Now().UnixNano())})
		return err == nil && res.Code == http.StatusCreated
	})
}

// orgNames is the set of org names server addr lists.
func (c *Cluster) orgNames(addr string) map[string]bool {
	c.t.Helper()
	var out struct {
		Orgs []struct{ Name string } `json:"orgs"`
	}
	if err := c.Get(addr, "/api/v1/orgs", c.OperatorToken, &out); err != nil {
		c.t.Fatal(err)
	}
	names := map[string]bool{}
	for _, o := range out.Orgs {
		names[o.Name] = true
	}
	return names
}
