package api_test

import (
	"context"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/agenthost/agenthost/api"
	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// TestKeyRotation walks a rotation of the key-encryption key on a 3-server
// cluster whose servers each read their own copy of the key file, as
// docs/operations.md tells an operator to: rotate the file, copy it, reload
// every server, reseal through the API, retire the old key, reload again.
// Every secret must open, to its value, with the new key alone; a reload
// that would lose a key still in use is refused.
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
		srv, err := api.New(api.Config{Store: s.Store, Keyring: rings[i], PublicURL: &url.URL{Scheme: "http", Host: "localhost:7480"}})
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
	reload := func() error {
		t.Helper()
		var errs []error
		for i, s := range tc.Servers {
			if err := clusterrpc.ReloadKeyring(s.Store.State(), rings[i], files[i]); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 {
			return errs[0]
		}
		return nil
	}
	byKey := func(server int) map[string]any {
		return call(server, op, "GET", "/api/v1/operator/secrets/keys", nil)["secretsByKey"].(map[string]any)
	}
	if got := byKey(2); len(got) != 1 || got["k1"] != 3.0 {
		t.Fatalf("before rotation: %v", got)
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
	if resealed["resealed"] != 3.0 || resealed["currentKeyId"] != "k2" {
		t.Fatalf("reseal: %v", resealed)
	}
	if got := byKey(0); len(got) != 1 || got["k2"] != 4.0 {
		t.Fatalf("after reseal: %v", got)
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
	}
}
