package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/agenthost/agenthost/api"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// opCluster is a test cluster with an API server on each server.
type opCluster struct {
	tc    *clusterrpc.TestCluster
	apis  []*api.Server
	bases []string
}

func newOpCluster(t *testing.T, n int) *opCluster {
	t.Helper()
	c := &opCluster{tc: clusterrpc.NewTestCluster(t, n)}
	c.tc.WaitForLeader()
	for _, s := range c.tc.Servers {
		srv, err := api.New(api.Config{Store: s.Store, Keyring: clusterrpc.TestKeyring(), PublicURL: &url.URL{Scheme: "http", Host: "localhost:7480"}})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv.Handler())
		t.Cleanup(hs.Close)
		c.apis, c.bases = append(c.apis, srv), append(c.bases, hs.URL)
	}
	return c
}

// raw sends a request and returns the status and body.
func raw(t *testing.T, method, url, token string, body io.Reader) (int, []byte, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b, res.Header
}

type raftServers struct {
	LeaderID string `json:"leaderId"`
	Servers  []struct {
		ID      string `json:"id"`
		Address string `json:"address"`
		Voter   bool   `json:"voter"`
		Leader  bool   `json:"leader"`
	} `json:"servers"`
}

func TestOperatorRaftMembership(t *testing.T) {
	c := newOpCluster(t, 3)
	leader := c.tc.WaitForLeader()
	follower := c.tc.Follower()
	victim := 3 - leader - follower
	op, err := c.apis[leader].Bootstrap(context.Background(), "op")
	if err != nil {
		t.Fatal(err)
	}
	list := func(server int) raftServers {
		t.Helper()
		var v raftServers
		b, _ := json.Marshal(mustCall(t, c.bases[server]+"/api/v1/operator/raft", op, "GET", "", nil))
		json.Unmarshal(b, &v)
		return v
	}
	v := list(follower)
	leaders := 0
	for _, s := range v.Servers {
		if s.Leader {
			leaders++
			if s.ID != v.LeaderID {
				t.Errorf("leader flag on %s, leaderId %s", s.ID, v.LeaderID)
			}
		}
	}
	if len(v.Servers) != 3 || leaders != 1 {
		t.Fatalf("peers: %+v", v)
	}
	victimID, victimAddr := c.tc.Servers[victim].Store.ServerID(), c.tc.Servers[victim].Addr()

	// A dead server is removed; a follower asked directly names the leader.
	c.tc.Kill(victim)
	path := "/api/v1/operator/raft/servers/" + victimID
	if code, body, _ := raw(t, "DELETE", c.bases[follower]+path, op, nil); code != http.StatusMisdirectedRequest || !bytes.Contains(body, []byte(`"not_leader"`)) {
		t.Fatalf("remove on a follower: %d %s", code, body)
	}
	for _, bad := range []struct {
		method, path, body string
		want               int
	}{
		{"DELETE", "/api/v1/operator/raft/servers/no-such-server", "", http.StatusNotFound},
		{"POST", "/api/v1/operator/raft/servers", `{"id":"x"}`, http.StatusBadRequest},
		{"DELETE", "/api/v1/operator/raft/servers/" + c.tc.Servers[leader].Store.ServerID(), "", http.StatusConflict},
	} {
		if code, body, _ := raw(t, bad.method, c.bases[leader]+bad.path, op, bytes.NewReader([]byte(bad.body))); code != bad.want {
			t.Errorf("%s %s: %d %s, want %d", bad.method, bad.path, code, body, bad.want)
		}
	}
	mustCall(t, c.bases[leader]+path, op, "DELETE", "", nil)
	if v := list(leader); len(v.Servers) != 2 {
		t.Fatalf("after removing %s: %+v", victimID, v)
	}

	// It comes back and is added again; the cluster writes with all three.
	c.tc.Restart(victim)
	mustCall(t, c.bases[leader]+"/api/v1/operator/raft/servers", op, "POST", "", map[string]any{"id": victimID, "address": victimAddr})
	if v := list(leader); len(v.Servers) != 3 {
		t.Fatalf("after adding %s back: %+v", victimID, v)
	}
	index, err := c.tc.Servers[leader].Store.Apply(context.Background(), &store.OrgCreate{Org: store.Org{ID: "o", Name: "o", CreatedAt: time.Now().UTC()}})
	if err != nil {
		t.Fatal(err)
	}
	c.tc.WaitForIndex(index)
}

func TestOperatorSnapshotSaveAndRestore(t *testing.T) {
	src := newOpCluster(t, 3)
	leader := src.tc.WaitForLeader()
	ctx := context.Background()
	op, err := src.apis[leader].Bootstrap(ctx, "op")
	if err != nil {
		t.Fatal(err)
	}
	_, tenant, err := src.apis[leader].CreateOrg(ctx, "acme", store.Plan{}, "t")
	if err != nil {
		t.Fatal(err)
	}
	scope := mustCall(t, src.bases[0]+"/api/v1/scopes", tenant, "POST", "", map[string]string{"name": "prod"})["id"].(string)
	mustCall(t, src.bases[1]+"/api/v1/secrets", tenant, "PUT", "", map[string]string{"key": "K", "value": "v"})

	// Saved through a follower, whole and consistent.
	code, backup, header := raw(t, "GET", src.bases[src.tc.Follower()]+"/api/v1/operator/snapshot", op, nil)
	if code != 200 || header.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("save: %d %s", code, header)
	}
	info, err := store.InspectSnapshot(bytes.NewReader(backup))
	if err != nil || fmt.Sprint(info.Index) != header.Get("X-Agenthost-Index") {
		t.Fatalf("inspect: %+v %v (header index %s)", info, err, header.Get("X-Agenthost-Index"))
	}
	want, err := src.tc.Servers[leader].Store.State().Hash()
	if err != nil || info.Hash != fmt.Sprintf("%x", want) {
		t.Fatalf("the backup's state is not the cluster's: %v", err)
	}

	// Into a fresh cluster, with its own operator until the restore.
	dst := newOpCluster(t, 1)
	dstOp, err := dst.apis[0].Bootstrap(ctx, "op")
	if err != nil {
		t.Fatal(err)
	}
	if code, body, _ := raw(t, "POST", dst.bases[0]+"/api/v1/operator/snapshot", dstOp, bytes.NewReader(backup[:len(backup)/2])); code != http.StatusBadRequest {
		t.Fatalf("restore of half a backup: %d %s", code, body)
	}
	if code, body, _ := raw(t, "POST", dst.bases[0]+"/api/v1/operator/snapshot", dstOp, bytes.NewReader(backup)); code != 200 {
		t.Fatalf("restore: %d %s", code, body)
	}
	// The restored cluster is the old one: its tokens, its scopes.
	got, err := dst.tc.Servers[0].Store.State().Hash()
	if err != nil || got != want {
		t.Fatalf("restored state differs: %v", err)
	}
	if code, body, _ := raw(t, "GET", dst.bases[0]+"/api/v1/scopes/"+scope, tenant, nil); code != 200 {
		t.Fatalf("the old tenant's scope after restore: %d %s", code, body)
	}
	if code, _, _ := raw(t, "GET", dst.bases[0]+"/api/v1/operator/raft", dstOp, nil); code != http.StatusUnauthorized {
		t.Fatalf("the fresh cluster's own operator token after restore: %d, want 401", code)
	}
}
