package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/agenthost/agenthost/api"
	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// scanNeedles are the forms in which a value could sit in the store's files:
// as it is, or base64-encoded inside a JSON []byte field, at any alignment.
func scanNeedles(v string) [][]byte {
	out := [][]byte{[]byte(v)}
	for off := range 3 {
		b64 := base64.StdEncoding.EncodeToString(append(make([]byte, off), v...))
		// The first 4 characters carry the padding bytes, the last 4 the
		// tail's alignment: the middle is the value's alone.
		out = append(out, []byte(b64[4:len(b64)-4]))
	}
	return out
}

// mustCall sends a JSON request (no body when body is nil) with a bearer
// token, and an Idempotency-Key when key is not empty, and returns the
// decoded answer; a status of 300 or more ends the test.
func mustCall(t testing.TB, url, token, method, key string, body any) map[string]any {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %s", method, url, res.StatusCode, out)
	}
	var m map[string]any
	json.Unmarshal(out, &m)
	return m
}

// TestNoSecretOrTokenInRaftLogBoltOrSnapshots writes secrets, makes tokens
// and creates an agent through the API of a 3-server cluster, snapshots
// every server, and scans every file of every data directory (the Raft log
// and stable store in bolt, the snapshots) for the secret values, tokens and
// the agent's runtime password, in plain and in base64: none may appear. A
// canary stored in the clear (a scope name) must be found, in the bolt file
// and in a snapshot, or the scan proves nothing.
func TestNoSecretOrTokenInRaftLogBoltOrSnapshots(t *testing.T) {
	line, err := keyring.NewKeyLine("k1")
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.Parse([]byte(line + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	tc := clusterrpc.NewTestClusterWith(t, 3, func(c *clusterrpc.ServerConfig) {
		c.Keyring = kr
	})
	leader := tc.WaitForLeader()
	follower := (leader + 1) % 3
	// No node agent runs the agent created below: its create times out
	// (504), soon, leaving the agent in the store.
	srv, err := api.New(api.Config{Store: tc.Servers[follower].Store, Keyring: kr, PublicURL: &url.URL{Scheme: "http", Host: "localhost:7480"},
		CreateTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	ctx := context.Background()
	operatorToken, err := srv.Bootstrap(ctx, "op")
	if err != nil {
		t.Fatal(err)
	}
	_, tenantToken, err := srv.CreateOrg(ctx, "acme", store.Plan{}, "t")
	if err != nil {
		t.Fatal(err)
	}
	call := func(token, method, path, idemKey string, body any) map[string]any {
		t.Helper()
		return mustCall(t, hs.URL+"/api/v1"+path, token, method, idemKey, body)
	}
	const canary = "scan-canary-scope-name-7d1c2b"
	secrets := []string{
		"sk-ant-org-level-value-0123456789abcdef",
		"sk-ant-replaced-value-fedcba9876543210",
		"sk-ant-scope-value-aaaabbbbccccdddd0000",
	}
	scope := call(tenantToken, "POST", "/scopes", "", map[string]string{"name": canary})
	call(tenantToken, "PUT", "/secrets", "", map[string]string{"key": "ORG_KEY", "value": secrets[0]})
	call(tenantToken, "PUT", "/secrets", "", map[string]string{"key": "ORG_KEY", "value": secrets[1]})
	call(tenantToken, "PUT", "/scopes/"+scope["id"].(string)+"/secrets", "", map[string]string{"key": "SCOPE_KEY", "value": secrets[2]})
	tokens := []string{operatorToken, tenantToken}
	// Tokens made through the API, one with an Idempotency-Key (its
	// response, holding the token, is kept for replays).
	tokens = append(tokens, call(tenantToken, "POST", "/tokens", "idem-1", map[string]string{"label": "ci"})["token"].(string))
	replayed := call(tenantToken, "POST", "/tokens", "idem-1", map[string]string{"label": "ci"})["token"].(string)
	if replayed != tokens[2] {
		t.Fatal("the idempotent replay returned another token")
	}
	orgs := call(operatorToken, "GET", "/orgs", "", nil)["orgs"].([]any)
	orgID := orgs[0].(map[string]any)["id"].(string)
	tokens = append(tokens, call(operatorToken, "POST", "/orgs/"+orgID+"/tokens", "", map[string]string{"label": "ops"})["token"].(string))

	// An agent: its runtime password is made and sealed by the API; opened
	// here, it joins the values that must not be found.
	if _, err := tc.Servers[leader].Store.Apply(ctx, &store.NodeRegister{Node: store.Node{ID: "n1", Name: "n1", Address: "127.0.0.1",
		Capacity: store.NodeCapacity{MaxAgents: 10}, Runtimes: []string{"opencode"}, LastSeen: time.Now().UTC()}}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", hs.URL+"/api/v1/agents", strings.NewReader(`{"name":"scanned"}`))
	req.Header.Set("Authorization", "Bearer "+tenantToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("create with no node agent: %d, want 504", res.StatusCode)
	}
	agents, err := tc.Servers[follower].Store.State().AgentsByOrg(orgID)
	if err != nil || len(agents) != 1 || agents[0].RuntimePasswordKeyID != "k1" {
		t.Fatalf("agents after create: %+v, %v", agents, err)
	}
	password, err := clusterrpc.OpenRuntimePassword(kr, agents[0])
	if err != nil || len(password) != 64 {
		t.Fatalf("the agent's runtime password opens to %q, %v", password, err)
	}
	secrets = append(secrets, password)

	// Every server has applied everything; each takes a snapshot.
	st, err := tc.Servers[leader].Store.ConsistentState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tc.WaitForIndex(st.Index())
	tc.ScanDataFiles(canary, func(path string, b []byte) {
		for _, v := range append(append([]string{}, secrets...), tokens...) {
			for _, n := range scanNeedles(v) {
				if bytes.Contains(b, n) {
					t.Errorf("%s holds a secret, token or runtime password (%q…)", path, v[:12])
				}
			}
		}
	})
}
