package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agenthost/agenthost/api"
	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// TestKeyRotation walks a rotation of the key-encryption key on a 3-server
// cluster whose servers each read their own copy of the key file, as
// docs/operations.md tells an operator to: rotate the file, copy it, reload
// every server, reseal through the API, retire the old key, reload again.
// Every secret and every agent's runtime password must open, to its value,
// with the new key alone; a reload that would lose a key still in use is
// refused.
func TestKeyRotation(t *testing.T) {
	dir := t.TempDir()
	files := []string{filepath.Join(dir, "s0.key"), filepath.Join(dir, "s1.key"), filepath.Join(dir, "s2.key")}
	if err := keyring.Create(files[0], "k1"); err != nil {
		t.Fatal(err)
	}
	copyKeyFile := func() {
		t.Helper()
		b, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files[1:] {
			if err := os.WriteFile(f, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	copyKeyFile()
	var rings []*keyring.Keyring
	tc := clusterrpc.NewTestClusterWith(t, 3, func(c *clusterrpc.ServerConfig) {
		kr, err := keyring.Load(files[len(rings)])
		if err != nil {
			t.Fatal(err)
		}
		rings = append(rings, kr)
		c.Keyring = kr
	})
	leader := tc.WaitForLeader()
	var bases []string
	var servers []*api.Server
	for i, s := range tc.Servers {
		// No node agent runs the agents made here: their creates time
		// out (504), soon, leaving them in the store.
		srv, err := api.New(api.Config{Store: s.Store, Keyring: rings[i], PublicURL: &url.URL{Scheme: "http", Host: "localhost:7480"},
			CreateTimeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv.Handler())
		t.Cleanup(hs.Close)
		servers, bases = append(servers, srv), append(bases, hs.URL)
	}
	ctx := context.Background()
	op, err := servers[leader].Bootstrap(ctx, "op")
	if err != nil {
		t.Fatal(err)
	}
	orgID, tenant, err := servers[leader].CreateOrg(ctx, "acme", store.Plan{}, "t")
	if err != nil {
		t.Fatal(err)
	}
	call := func(server int, token, method, path string, body any) map[string]any {
		t.Helper()
		return mustCall(t, bases[server]+path, token, method, "", body)
	}
	scope := call(0, tenant, "POST", "/api/v1/scopes", map[string]string{"name": "prod"})["id"].(string)
	values := map[[2]string]string{{"", "ORG_KEY"}: "org-value", {scope, "SCOPE_KEY"}: "scope-value", {"", "OTHER"}: "other-value"}
	for where, v := range values {
		path := "/api/v1/secrets"
		if where[0] != "" {
			path = "/api/v1/scopes/" + where[0] + "/secrets"
		}
		call(1, tenant, "PUT", path, map[string]string{"key": where[1], "value": v})
	}
	if _, err := tc.Servers[leader].Store.Apply(ctx, &store.NodeRegister{Node: store.Node{ID: "n1", Name: "n1", Address: "127.0.0.1",
		Capacity: store.NodeCapacity{MaxAgents: 10}, Runtimes: []string{"opencode"}, LastSeen: time.Now().UTC()}}); err != nil {
		t.Fatal(err)
	}
	// passwords are the agents' runtime passwords, opened when made.
	passwords := map[string]string{}
	createAgent := func(server int, name string) {
		t.Helper()
		req, _ := http.NewRequest("POST", bases[server]+"/api/v1/agents", strings.NewReader(`{"name":"`+name+`"}`))
		req.Header.Set("Authorization", "Bearer "+tenant)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusGatewayTimeout {
			t.Fatalf("create %s: %d, want 504 (no node agent)", name, res.StatusCode)
		}
		agents, err := tc.Servers[server].Store.State().AgentsByOrgName(orgID, name)
		if err != nil || len(agents) != 1 {
			t.Fatalf("agent %s: %v %v", name, agents, err)
		}
		if passwords[agents[0].ID], err = clusterrpc.OpenRuntimePassword(rings[server], agents[0]); err != nil {
			t.Fatal(err)
		}
	}
	createAgent(0, "first")
	createAgent(1, "second")

	reload := func() error {
		t.Helper()
		var errs []error
		for i, s := range tc.Servers {
			// As a server's SIGHUP does: against every acknowledged write.
			st, err := s.Store.ConsistentState(context.Background())
			if err != nil {
				return err
			}
			if err := clusterrpc.ReloadKeyring(st, rings[i], files[i]); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return errs[0]
		}
		return nil
	}
	byKey := func(server int) (secrets, passwords map[string]any) {
		v := call(server, op, "GET", "/api/v1/operator/secrets/keys", nil)
		return v["secretsByKey"].(map[string]any), v["runtimePasswordsByKey"].(map[string]any)
	}
	if secrets, pws := byKey(2); len(secrets) != 1 || secrets["k1"] != 3.0 || len(pws) != 1 || pws["k1"] != 2.0 {
		t.Fatalf("before rotation: %v %v", secrets, pws)
	}

	// 1-2: a new key first in every server's file, every server reloaded.
	if err := keyring.Rotate(files[0], "k2"); err != nil {
		t.Fatal(err)
	}
	copyKeyFile()
	if err := reload(); err != nil {
		t.Fatal(err)
	}
	for i, kr := range rings {
		if kr.CurrentID() != "k2" || !kr.Has("k1") {
			t.Fatalf("server %d after reload seals with %s", i, kr.CurrentID())
		}
	}
	// New values are sealed under the new key at once.
	values[[2]string{"", "NEW_KEY"}] = "new-value"
	call(2, tenant, "PUT", "/api/v1/secrets", map[string]string{"key": "NEW_KEY", "value": "new-value"})
	createAgent(2, "third")
	if secrets, pws := byKey(0); secrets["k2"] != 1.0 || pws["k1"] != 2.0 || pws["k2"] != 1.0 {
		t.Fatalf("after the reload: %v %v", secrets, pws)
	}

	// Retiring k1 before the reseal would lose secrets: the reload is refused.
	if err := keyring.Retire(files[0], "k1"); err != nil {
		t.Fatal(err)
	}
	copyKeyFile()
	if err := reload(); err == nil {
		t.Fatal("a key file without k1 was loaded while secrets are sealed under k1")
	}
	if !rings[0].Has("k1") {
		t.Fatal("the refused reload dropped k1")
	}

	// 3: reseal, through any server.
	resealed := call(1, op, "POST", "/api/v1/operator/secrets/reseal", nil)
	if resealed["resealed"] != 5.0 || resealed["currentKeyId"] != "k2" {
		t.Fatalf("reseal: %v", resealed)
	}
	if secrets, pws := byKey(0); len(secrets) != 1 || secrets["k2"] != 4.0 || len(pws) != 1 || pws["k2"] != 3.0 {
		t.Fatalf("after reseal: %v %v", secrets, pws)
	}
	if again := call(0, op, "POST", "/api/v1/operator/secrets/reseal", nil); again["resealed"] != 0.0 {
		t.Fatalf("second reseal: %v", again)
	}

	// 4: now the file without k1 loads, and k2 alone opens every secret,
	// on every server, to its value.
	if err := reload(); err != nil {
		t.Fatal(err)
	}
	st, err := tc.Servers[leader].Store.ConsistentState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tc.WaitForIndex(st.Index())
	for i, s := range tc.Servers {
		if rings[i].Has("k1") {
			t.Fatalf("server %d still holds k1", i)
		}
		for where, v := range values {
			sec, err := s.Store.State().Secret(orgID, where[0], where[1])
			if err != nil || sec == nil {
				t.Fatalf("server %d: secret %v: %v", i, where, err)
			}
			got, err := rings[i].Open(sec.KeyID, sec.Ciphertext, keyring.SecretAAD(orgID, where[0], where[1]))
			if err != nil || string(got) != v {
				t.Fatalf("server %d: secret %v opens to %q, %v", i, where, got, err)
			}
		}
		for id, want := range passwords {
			a, err := s.Store.State().Agent(id)
			if err != nil || a == nil {
				t.Fatalf("server %d: agent %s: %v", i, id, err)
			}
			if got, err := clusterrpc.OpenRuntimePassword(rings[i], a); err != nil || got != want {
				t.Fatalf("server %d: agent %s's runtime password opens to %q, %v", i, id, got, err)
			}
		}
	}
}
