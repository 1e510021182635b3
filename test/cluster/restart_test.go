package cluster

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWholeClusterRestart is scenario 2.4: every server and node agent is
// stopped (kill -9; with -faults a SIGTERM round follows) and started again
// from its data directory. Orgs and agents are intact, stopped agents stay
// stopped, and running agents' containers are re-adopted without a restart:
// the node agents run on containerd hosts (Options.ContainerdHosts), whose
// containers outlive them, and every running agent's task keeps its PID and
// answers through the proxy throughout.
func TestWholeClusterRestart(t *testing.T) {
	c := StartClusterWith(t, Options{ContainerdHosts: true})
	orgs := []Org{c.CreateOrg("restart-a"), c.CreateOrg("restart-b")}
	perOrg := 4
	if *faults {
		perOrg = 12
	}
	ctx := context.Background()
	for _, org := range orgs {
		for i := range perOrg {
			res, err := c.Do(ctx, c.anyServer(), "POST", "/api/v1/agents", org.Token, map[string]any{"name": fmt.Sprintf("a%d", i)})
			if err != nil || !res.OK() {
				t.Fatalf("create: %v %v", res, err)
			}
		}
	}
	settled := func() bool {
		for _, org := range orgs {
			list, err := c.Agents(c.anyServer(), org)
			if err != nil {
				return false
			}
			for _, a := range list {
				if a.Status != "RUNNING" && a.Status != "STOPPED" {
					return false
				}
			}
		}
		return true
	}
	waitFor(t, 60*time.Second, "the agents to run", settled)
	// Stop every other agent, so that both states must survive.
	for _, org := range orgs {
		list, err := c.Agents(c.anyServer(), org)
		if err != nil {
			t.Fatal(err)
		}
		for i, a := range list {
			if i%2 == 1 {
				res, err := c.Do(ctx, c.anyServer(), "POST", "/api/v1/agents/"+a.AgentID+"/stop", org.Token, nil)
				if err != nil || !res.OK() {
					t.Fatalf("stop %s: %v %v", a.AgentID, res, err)
				}
			}
		}
	}
	waitFor(t, 60*time.Second, "the stops to settle", settled)
	before := c.snapshot(t, orgs)
	tasks := c.taskPIDs(t)
	running := 0
	for _, org := range orgs {
		for _, a := range before[org.ID] {
			if a.Status == "RUNNING" {
				running++
			}
		}
	}
	if len(tasks) != running {
		t.Fatalf("%d running tasks on the hosts for %d running agents: %v", len(tasks), running, tasks)
	}

	rounds := []string{"kill -9"}
	if *faults {
		rounds = append(rounds, "SIGTERM", "kill -9")
	}
	for _, how := range rounds {
		stop := func(p *Proc) { p.Kill9() }
		if how == "SIGTERM" {
			stop = func(p *Proc) { p.Stop(10 * time.Second) }
		}
		var wg sync.WaitGroup
		for _, p := range append(append([]*Proc{}, c.Servers...), c.Nodes...) {
			wg.Go(func() { stop(p) })
		}
		wg.Wait()
		// The containers outlived their node agents: each running agent's
		// task is the one it was, and answers while the control plane and
		// the node agents are down.
		checkSameTasks(t, c, tasks)
		for _, org := range orgs {
			for _, a := range before[org.ID] {
				if a.Status == "RUNNING" && !c.containerAnswers(a) {
					t.Errorf("agent %s stopped answering when its node agent died", a.AgentID)
				}
			}
		}

		started := time.Now()
		for _, s := range c.Servers {
			s.Restart(t)
		}
		c.WaitForLeader(30 * time.Second)
		elected := time.Since(started)
		for _, n := range c.Nodes {
			n.Restart(t)
		}
		c.WaitForNodes(30 * time.Second)
		var after map[string][]Agent
		waitFor(t, 60*time.Second, "the state as it was before the restart", func() bool {
			after = c.snapshot(t, orgs)
			return sameState(before, after)
		})
		listed := time.Since(started)

		// Running agents' runtimes answer again, through the proxy, on
		// their ports; stopped ones do not run.
		for _, org := range orgs {
			for _, a := range after[org.ID] {
				if a.Status != "RUNNING" {
					continue
				}
				waitFor(t, 30*time.Second, "agent "+a.AgentID+" to answer through the proxy", func() bool {
					return c.containerAnswers(a)
				})
			}
		}
		// Re-adopted, not restarted: the same tasks, and no others.
		checkSameTasks(t, c, tasks)
		t.Logf("%s of every server and node agent: leader after %v, listings as before after %v, every running agent answering through the proxy after %v",
			how, elected.Round(time.Millisecond), listed.Round(time.Millisecond), time.Since(started).Round(time.Millisecond))
	}

	// Tokens survived too: the tenant tokens made before are the ones used
	// above, and the operator token lists the orgs.
	var out struct {
		Orgs []struct{ ID string } `json:"orgs"`
	}
	if err := c.Get(c.anyServer(), "/api/v1/orgs", c.OperatorToken, &out); err != nil {
		t.Fatal(err)
	}
	for _, org := range orgs {
		if !slices.ContainsFunc(out.Orgs, func(o struct{ ID string }) bool { return o.ID == org.ID }) {
			t.Errorf("org %s missing after the restart", org.ID)
		}
	}
}

// snapshot lists each org's agents (the org's id to its agents).
func (c *Cluster) snapshot(t *testing.T, orgs []Org) map[string][]Agent {
	t.Helper()
	out := map[string][]Agent{}
	for _, org := range orgs {
		list, err := c.Agents(c.anyServer(), org)
		if err != nil {
			return nil
		}
		out[org.ID] = list
	}
	return out
}

func sameState(a, b map[string][]Agent) bool {
	if a == nil || b == nil || len(a) != len(b) {
		return false
	}
	for org, list := range a {
		if !slices.Equal(list, b[org]) {
			return false
		}
	}
	return true
}

// agentAnswers reports whether the agent's runtime answers through the
// proxy at a<port>.<domain>.
func (c *Cluster) agentAnswers(a Agent) bool {
	req, err := http.NewRequest("GET", "http://"+c.Proxy.HTTPAddr+"/", nil)
	if err != nil {
		return false
	}
	req.Host = fmt.Sprintf("a%d.%s", a.Port(), c.Domain)
	res, err := c.HTTP.Do(req)
	if err != nil {
		return false
	}
	defer res.Body.Close()
	buf := make([]byte, 256)
	n, _ := res.Body.Read(buf)
	return res.StatusCode == http.StatusOK && strings.HasPrefix(string(buf[:n]), "stand-in runtime")
}
