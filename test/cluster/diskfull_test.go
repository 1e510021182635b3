package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestFollowerDiskFull fills the data directory of the follower that both
// node agents watch their assignments through: the other two servers go on
// committing writes, agents created meanwhile start on both nodes (the node
// agents notice that their server stopped applying the log and watch
// through another one), and once the space is back the follower catches up
// without a restart.
func TestFollowerDiskFull(t *testing.T) {
	c := StartClusterWith(t, Options{ServerDiskMB: 64})
	c.HTTP.Timeout = 90 * time.Second // creates wait up to 60 s for RUNNING
	leader := c.WaitForLeader(30 * time.Second)
	full := (leader + 1) % len(c.Servers)
	c.watchThrough(full)
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
	// Not asserted: bolt may still write a few entries into pages of its
	// file that it freed earlier, which a full disk does not refuse.
	t.Logf("with its disk full, %s holds all 10 writes: %v", c.Servers[full].Name, c.holdsOrgs(full, ids))

	org := c.CreateOrgAt(c.Proxy.HTTPAddr, "full-agents")
	start := time.Now()
	byNode := c.createAgentsOnEveryNode(c.Proxy.HTTPAddr, org, "full", 3)
	t.Logf("3 agents on each node RUNNING %v after the first create, with %s's disk full", time.Since(start).Round(time.Millisecond), c.Servers[full].Name)
	c.requireRunningWhereCreated(leader, org, byNode)
	agents := allAgents(byNode)
	// Through the proxy too: its route watch and its reads pass over the
	// full server.
	for range 2 * len(c.Servers) {
		if !c.holdsAgentsAt(c.Proxy.HTTPAddr, org, agents) {
			t.Fatalf("the proxy's API lists org %s's agents without all of %v RUNNING", org.ID, agents)
		}
	}
	list, err := c.Agents(c.Servers[leader].HTTPAddr, org)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list {
		waitFor(t, 30*time.Second, "agent "+a.AgentID+" to answer through the proxy", func() bool { return c.agentAnswers(a) })
	}
	if !c.Servers[full].Running() {
		t.Fatalf("%s exited on a full disk", c.Servers[full].Name)
	}

	// A write sent to the full follower is forwarded and committed, but
	// the follower cannot apply it: it says so instead of holding the
	// request until the space is back, then refuses writes up front.
	behind := c.writeToBehind(full, "sent-to-full")
	if !strings.Contains(behind.String(), "is committed") || !c.orgNames(c.Servers[leader].HTTPAddr)["sent-to-full"] {
		t.Fatalf("%s answered %v, but the write is not committed", c.Servers[full].Name, behind)
	}
	refused := c.writeToBehind(full, "refused-by-full")
	if !strings.Contains(refused.String(), "nothing was written") || c.orgNames(c.Servers[leader].HTTPAddr)["refused-by-full"] {
		t.Fatalf("a second write to %s: %v, want it refused with nothing written", c.Servers[full].Name, refused)
	}

	c.FreeDisk(full)
	freed := time.Now()
	waitFor(t, 30*time.Second, c.Servers[full].Name+" to hold the writes made while its disk was full", func() bool {
		return c.holdsOrgs(full, ids) && c.holdsAgents(full, org, agents)
	})
	t.Logf("%s caught up %v after its space came back", c.Servers[full].Name, time.Since(freed).Round(time.Millisecond))
	if !c.orgNames(c.Servers[full].HTTPAddr)["sent-to-full"] {
		t.Fatalf("%s caught up without the write it forwarded while full", c.Servers[full].Name)
	}
	waitFor(t, 30*time.Second, c.Servers[full].Name+" to take writes again", func() bool {
		res, err := c.Do(ctx, c.Servers[full].HTTPAddr, "POST", "/api/v1/orgs", c.OperatorToken, map[string]any{"name": fmt.Sprintf("full-back-%d", time.Now().UnixNano())})
		return err == nil && res.Code == http.StatusCreated
	})
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

// writeToBehind creates an org named name through server i, whose log does
// not advance, and requires the documented answer: 503 server_behind, in
// well under the client's timeout.
func (c *Cluster) writeToBehind(i int, name string) *Response {
	c.t.Helper()
	start := time.Now()
	res, err := c.Do(context.Background(), c.Servers[i].HTTPAddr, "POST", "/api/v1/orgs", c.OperatorToken, map[string]any{"name": name})
	if err != nil {
		c.t.Fatalf("write to %s, which is behind: no answer after %v: %v", c.Servers[i].Name, time.Since(start), err)
	}
	var body struct{ Error struct{ Code string } }
	if res.Code != http.StatusServiceUnavailable || json.Unmarshal(res.Body, &body) != nil || body.Error.Code != "server_behind" {
		c.t.Fatalf("write to %s, which is behind: %v, want 503 server_behind", c.Servers[i].Name, res)
	}
	c.t.Logf("write to %s, which is behind, answered after %v: %v", c.Servers[i].Name, time.Since(start).Round(time.Millisecond), res)
	return res
}

// holdsAgents reports whether server i lists every agent of ids as RUNNING.
func (c *Cluster) holdsAgents(i int, org Org, ids []string) bool {
	return c.holdsAgentsAt(c.Servers[i].HTTPAddr, org, ids)
}

// holdsAgentsAt is holdsAgents through addr (a server's or the proxy's).
func (c *Cluster) holdsAgentsAt(addr string, org Org, ids []string) bool {
	list, err := c.Agents(addr, org)
	if err != nil {
		return false
	}
	running := map[string]bool{}
	for _, a := range list {
		running[a.AgentID] = a.Status == "RUNNING"
	}
	for _, id := range ids {
		if !running[id] {
			return false
		}
	}
	return true
}

// watchThrough restarts both node agents and the proxy with server i first
// among their control nodes, so that the node agents register and watch
// their assignments, and the proxy watches its routes, through it; it waits
// until their logs say so.
func (c *Cluster) watchThrough(i int) {
	c.t.Helper()
	first := c.Servers[i].ClusterAddr
	for _, p := range append(slices.Clone(c.Nodes), c.Proxy) {
		at := slices.Index(p.args, "--control")
		addrs := strings.Split(p.args[at+1], ",")
		addrs = slices.DeleteFunc(addrs, func(a string) bool { return a == first })
		p.args[at+1] = strings.Join(append([]string{first}, addrs...), ",")
		p.Stop(5 * time.Second)
		p.start(c.t)
	}
	for _, n := range c.Nodes {
		waitFor(c.t, 30*time.Second, n.Name+" to watch its assignments through "+c.Servers[i].Name, func() bool {
			return c.lastWatch(n, "watching assignments") == first
		})
	}
	waitFor(c.t, 30*time.Second, "the proxy to watch its routes through "+c.Servers[i].Name, func() bool {
		return c.lastWatch(c.Proxy, "watching routes") == first
	})
	// Registered is not yet heard by the leader: a node agent's first
	// heartbeats may go to a follower, and a leader that has not heard
	// from a node for its TTL (2 s) marks it down. Ready for longer than
	// that, it has been heard.
	var readySince time.Time
	waitFor(c.t, 60*time.Second, "the node agents to stay ready for 3 s", func() bool {
		if !c.nodesReady() {
			readySince = time.Time{}
			return false
		}
		if readySince.IsZero() {
			readySince = time.Now()
		}
		return time.Since(readySince) >= 3*time.Second
	})
}

// nodesReady reports whether every node agent is registered and ready.
func (c *Cluster) nodesReady() bool {
	var out struct {
		Nodes []struct{ Status string } `json:"nodes"`
	}
	if err := c.Get(c.Servers[c.WaitForLeader(30*time.Second)].HTTPAddr, "/api/v1/nodes", c.OperatorToken, &out); err != nil {
		return false
	}
	ready := 0
	for _, n := range out.Nodes {
		if strings.EqualFold(n.Status, "ready") {
			ready++
		}
	}
	return ready == len(c.Nodes)
}

// lastWatch is the control node a process's log says it last opened a
// watch on (log message msg), "" before the first.
func (c *Cluster) lastWatch(p *Proc, msg string) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	last := ""
	for line := range strings.Lines(string(b)) {
		if !strings.Contains(line, `msg="`+msg+`"`) {
			continue
		}
		for f := range strings.FieldsSeq(line) {
			if addr, ok := strings.CutPrefix(f, "control="); ok {
				last = addr
			}
		}
	}
	return last
}
