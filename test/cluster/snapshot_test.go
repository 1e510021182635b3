package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
)

// TestSnapshotRestoreIntoFreshCluster is scenario 2.6: a backup taken
// through the API, restored into a fresh cluster on the same addresses
// (every data directory wiped), is installed exactly — every server's state
// as installed has the backup's hash — and the servers go on agreeing; the
// backup's tokens, orgs, scopes, secrets and agents are back, and the node
// agents take their agents up again.
func TestSnapshotRestoreIntoFreshCluster(t *testing.T) {
	c := StartCluster(t)
	c.HTTP.Timeout = 90 * time.Second // creates wait up to 60 s for RUNNING
	api := c.Proxy.HTTPAddr

	a := c.CreateOrgAt(api, "snap-a")
	b := c.CreateOrgAt(api, "snap-b")
	var scope struct{ ID string }
	c.mustDo(api, "POST", "/api/v1/scopes", a.Token, map[string]any{"name": "backend"}, http.StatusCreated).Decode(t, &scope)
	c.mustDo(api, "PUT", "/api/v1/secrets", a.Token, map[string]any{"key": "ORG_KEY", "value": "org-secret"}, 0)
	c.mustDo(api, "PUT", "/api/v1/scopes/"+scope.ID+"/secrets", a.Token, map[string]any{"key": "SCOPE_KEY", "value": "scope-secret"}, 0)
	c.mustDo(api, "PUT", "/api/v1/secrets", b.Token, map[string]any{"key": "B_KEY", "value": "b-secret"}, 0)
	before := map[string]map[string]string{a.ID: {}, b.ID: {}}
	for _, org := range []Org{a, b} {
		for _, id := range allAgents(c.createAgentsOnEveryNode(api, org, "snap", 1)) {
			before[org.ID][id] = "RUNNING"
		}
	}
	var scoped struct {
		AgentID string `json:"agentId"`
	}
	c.mustDo(api, "POST", "/api/v1/agents", a.Token, map[string]any{"name": "scoped", "scopeId": scope.ID}, http.StatusOK).Decode(t, &scoped)
	c.mustDo(api, "POST", "/api/v1/agents/"+scoped.AgentID+"/stop", a.Token, nil, http.StatusOK)
	before[a.ID][scoped.AgentID] = "STOPPED"

	var ports []int
	for _, org := range []Org{a, b} {
		list, err := c.Agents(c.Servers[c.WaitForLeader(30*time.Second)].HTTPAddr, org)
		if err != nil {
			t.Fatal(err)
		}
		for _, ag := range list {
			ports = append(ports, ag.Port())
		}
	}
	backup := c.saveSnapshot(api)
	saved, err := store.InspectSnapshot(bytes.NewReader(backup))
	if err != nil {
		t.Fatalf("inspect the backup: %v", err)
	}
	t.Logf("backup: index %d, %d bytes, hash %s", saved.Index, saved.Size, saved.Hash)

	// Everything stops; the servers start again from nothing, on the same
	// addresses, and form a new cluster.
	for _, n := range c.Nodes {
		n.Stop(5 * time.Second)
	}
	c.Proxy.Kill9()
	for _, port := range ports {
		if standInAnswers(port) {
			t.Fatalf("an agent process still answers on port %d with its node agent stopped", port)
		}
	}
	for _, s := range c.Servers {
		s.Kill9()
		if err := os.RemoveAll(s.DataDir); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range c.Servers {
		s.start(t)
	}
	leader := c.WaitForLeader(60 * time.Second)
	var fresh struct{ Token string }
	c.mustDo(c.Servers[leader].HTTPAddr, "POST", "/api/v1/operator/bootstrap", "", map[string]string{"label": "restore"}, http.StatusCreated).Decode(t, &fresh)
	restored := c.restoreSnapshot(c.Servers[leader].HTTPAddr, fresh.Token, backup)
	if restored.Index != saved.Index || restored.Hash != saved.Hash {
		t.Fatalf("restore answered %+v, the backup is %+v", restored, saved)
	}

	// Every server installed exactly the backup. The backup's operator
	// token works again; the fresh cluster's does not.
	for i, s := range c.Servers {
		var v raftView
		waitFor(t, 30*time.Second, s.Name+" to install the backup", func() bool {
			v = c.raftView(i, c.OperatorToken)
			return v.Restored != nil && v.Restored.Index == saved.Index
		})
		if v.Restored.Hash != saved.Hash {
			t.Fatalf("%s installed index %d with hash %s; the backup's is %s", s.Name, v.Restored.Index, v.Restored.Hash, saved.Hash)
		}
	}
	t.Logf("every server installed index %d with the backup's hash", saved.Index)
	if res, err := c.Do(context.Background(), c.Servers[leader].HTTPAddr, "GET", "/api/v1/orgs", fresh.Token, nil); err != nil || res.Code != http.StatusUnauthorized {
		t.Fatalf("the fresh cluster's bootstrap token after the restore: %v %v, want 401", res, err)
	}

	// From there on the state changes (nodes are marked down, then come
	// back); the servers must agree at every index.
	c.requireServersAgree(30 * time.Second)

	for _, n := range c.Nodes {
		n.start(t)
	}
	c.Proxy.start(t)
	c.WaitForNodes(60 * time.Second)
	waitFor(t, 30*time.Second, "the proxy to serve the API", func() bool {
		res, err := c.Do(context.Background(), api, "GET", "/api/v1/orgs", c.OperatorToken, nil)
		return err == nil && res.Code == http.StatusOK
	})
	for _, org := range []Org{a, b} {
		var got map[string]string
		deadline := time.Now().Add(90 * time.Second)
		for got = c.agentStatuses(c.anyServer(), org); fmt.Sprint(got) != fmt.Sprint(before[org.ID]); got = c.agentStatuses(c.anyServer(), org) {
			if time.Now().After(deadline) {
				t.Fatalf("org %s's agents 90 s after the node agents came back: %v; at the backup: %v", org.ID, got, before[org.ID])
			}
			time.Sleep(100 * time.Millisecond)
		}
		// And they run, or not, as the state says: the node agents
		// stopped every agent process when they stopped.
		list, err := c.Agents(c.anyServer(), org)
		if err != nil {
			t.Fatal(err)
		}
		for _, ag := range list {
			if want := ag.Status == "RUNNING"; !want {
				if standInAnswers(ag.Port()) {
					t.Fatalf("agent %s is %s, but a process answers on its port %d", ag.AgentID, ag.Status, ag.Port())
				}
				continue
			}
			waitFor(t, 60*time.Second, "agent "+ag.AgentID+" to answer on its port", func() bool { return standInAnswers(ag.Port()) })
		}
	}
	var secrets struct {
		Secrets []struct{ Key string } `json:"secrets"`
	}
	c.mustDo(api, "GET", "/api/v1/scopes/"+scope.ID+"/secrets", a.Token, nil, http.StatusOK).Decode(t, &secrets)
	if len(secrets.Secrets) != 1 || secrets.Secrets[0].Key != "SCOPE_KEY" {
		t.Fatalf("scope %s's secrets after the restore: %+v", scope.ID, secrets)
	}
	c.requireServersAgree(30 * time.Second)
}

// standInAnswers reports whether an agent's stand-in runtime answers on
// port.
func standInAnswers(port int) bool {
	hc := &http.Client{Timeout: time.Second}
	res, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == http.StatusOK
}

// raftView is the part of GET /api/v1/operator/raft a restore is checked by.
type raftView struct {
	State    store.StateDigest  `json:"state"`
	Restored *store.StateDigest `json:"restored"`
}

// raftView asks server i for its state digests.
func (c *Cluster) raftView(i int, token string) raftView {
	var v raftView
	if err := c.Get(c.Servers[i].HTTPAddr, "/api/v1/operator/raft", token, &v); err != nil {
		return raftView{}
	}
	return v
}

// requireServersAgree waits until every server reports the same state index
// (requests change it: a token's last use, a node's heartbeat) and requires
// their hashes then to be equal.
func (c *Cluster) requireServersAgree(d time.Duration) {
	c.t.Helper()
	var views []raftView
	waitFor(c.t, d, "the servers to report one state index", func() bool {
		views = views[:0]
		for i := range c.Servers {
			views = append(views, c.raftView(i, c.OperatorToken))
		}
		return !slices.ContainsFunc(views, func(v raftView) bool { return v.State.Index == 0 || v.State.Index != views[0].State.Index })
	})
	for i, v := range views {
		if v.State.Hash != views[0].State.Hash {
			c.t.Fatalf("at index %d, %s's state hash is %s and %s's %s", v.State.Index, c.Servers[0].Name, views[0].State.Hash, c.Servers[i].Name, v.State.Hash)
		}
	}
}

// mustDo sends a request and requires the status want (any 2xx when 0).
func (c *Cluster) mustDo(addr, method, path, token string, body any, want int) *Response {
	c.t.Helper()
	res, err := c.Do(context.Background(), addr, method, path, token, body)
	if err != nil || (want == 0 && !res.OK()) || (want != 0 && res.Code != want) {
		c.t.Fatalf("%s %s: %v %v", method, path, res, err)
	}
	return res
}

// agentStatuses is every agent of org, by id, with its status.
func (c *Cluster) agentStatuses(addr string, org Org) map[string]string {
	c.t.Helper()
	list, err := c.Agents(addr, org)
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, a := range list {
		out[a.AgentID] = a.Status
	}
	return out
}

// saveSnapshot takes a backup through addr (GET /api/v1/operator/snapshot).
func (c *Cluster) saveSnapshot(addr string) []byte {
	c.t.Helper()
	res := c.rawRequest(addr, "GET", "/api/v1/operator/snapshot", c.OperatorToken, nil)
	if res.Code != http.StatusOK {
		c.t.Fatalf("save a snapshot: %v", res)
	}
	return res.Body
}

// restoreSnapshot restores backup through addr (POST
// /api/v1/operator/snapshot) and returns its answer.
func (c *Cluster) restoreSnapshot(addr, token string, backup []byte) store.SnapshotInfo {
	c.t.Helper()
	res := c.rawRequest(addr, "POST", "/api/v1/operator/snapshot", token, backup)
	var info store.SnapshotInfo
	if res.Code != http.StatusOK || json.Unmarshal(res.Body, &info) != nil {
		c.t.Fatalf("restore the snapshot: %v", res)
	}
	return info
}

// rawRequest sends body as it is (application/octet-stream).
func (c *Cluster) rawRequest(addr, method, path, token string, body []byte) *Response {
	c.t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if c.Proxy != nil && addr == c.Proxy.HTTPAddr {
		req.Host = c.Domain
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	res, err := c.HTTP.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return &Response{Code: res.StatusCode, Body: b}
}
