package cluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
)

// createAgentsOnEveryNode creates perNode agents of org through addr on
// each node in turn, the others drained meanwhile (the scheduler packs
// agents onto as few nodes as it can). Each create answers once its agent
// is RUNNING; any other answer fails the test. It returns the agents' ids
// by node name.
func (c *Cluster) createAgentsOnEveryNode(addr string, org Org, prefix string, perNode int) map[string][]string {
	c.t.Helper()
	byNode := map[string][]string{}
	for _, n := range c.Nodes {
		for _, other := range c.Nodes {
			if other != n {
				c.operatorPost(addr, "/api/v1/nodes/"+other.Name+"/drain")
			}
		}
		for i := range perNode {
			name := fmt.Sprintf("%s-%s-%d", prefix, n.Name, i)
			res, err := c.Do(context.Background(), addr, "POST", "/api/v1/agents", org.Token, map[string]any{"name": name})
			if err != nil || res.Code != http.StatusOK {
				c.t.Fatalf("create agent %s: %v %v", name, res, err)
			}
			var created struct {
				AgentID string `json:"agentId"`
			}
			res.Decode(c.t, &created)
			byNode[n.Name] = append(byNode[n.Name], created.AgentID)
		}
		for _, other := range c.Nodes {
			if other != n {
				c.operatorPost(addr, "/api/v1/nodes/"+other.Name+"/undrain")
			}
		}
	}
	return byNode
}

// operatorPost posts no body with the operator token and requires a 2xx.
func (c *Cluster) operatorPost(addr, path string) {
	c.t.Helper()
	res, err := c.Do(context.Background(), addr, "POST", path, c.OperatorToken, nil)
	if err != nil || !res.OK() {
		c.t.Fatalf("POST %s: %v %v", path, res, err)
	}
}

// requireRunningWhereCreated checks, on server i, that every agent of
// byNode is RUNNING, and that each runs on the node it was created on.
func (c *Cluster) requireRunningWhereCreated(i int, org Org, byNode map[string][]string) {
	c.t.Helper()
	list, err := c.Agents(c.Servers[i].HTTPAddr, org)
	if err != nil {
		c.t.Fatal(err)
	}
	status := map[string]string{}
	for _, a := range list {
		status[a.AgentID] = a.Status
	}
	for _, n := range c.Nodes {
		for _, id := range byNode[n.Name] {
			if status[id] != "RUNNING" {
				c.t.Fatalf("agent %s is %q on %s, want RUNNING", id, status[id], c.Servers[i].Name)
			}
			if _, err := os.Stat(c.agentDir(n, id)); err != nil {
				c.t.Fatalf("agent %s does not run on %s: %v", id, n.Name, err)
			}
		}
	}
}

// agentDir is where node n's process driver keeps agent id's files: it
// exists while the agent is placed there.
func (c *Cluster) agentDir(n *Proc, id string) string {
	return filepath.Join(c.Dir, n.Name, "agents", id)
}

// allAgents is every agent id of byNode.
func allAgents(byNode map[string][]string) []string {
	var ids []string
	for _, list := range byNode {
		ids = append(ids, list...)
	}
	return ids
}
