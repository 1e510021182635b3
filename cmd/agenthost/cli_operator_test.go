package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agenthost/agenthost/api"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// realAPI is a one-server control plane with its REST API, and its first
// operator token.
func realAPI(t *testing.T) (base, operator string, s *store.Store) {
	t.Helper()
	tc := clusterrpc.NewTestCluster(t, 1)
	s = tc.Servers[tc.WaitForLeader()].Store
	srv, err := api.New(api.Config{Store: s, Keyring: clusterrpc.TestKeyring(), PublicURL: &url.URL{Scheme: "http", Host: "localhost:7480"}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	if operator, err = srv.Bootstrap(context.Background(), "op"); err != nil {
		t.Fatal(err)
	}
	return hs.URL, operator, s
}

// TestCLIOperatorRaftAndSnapshots drives `agenthost operator` against real
// control planes: the Raft servers listed, a backup saved and inspected, a
// damaged one refused, and the backup restored into another cluster.
func TestCLIOperatorRaftAndSnapshots(t *testing.T) {
	base, op, s := realAPI(t)
	t.Setenv("AGENTHOST_ADDR", base)
	t.Setenv("AGENTHOST_OPERATOR_TOKEN", op)
	t.Setenv("AGENTHOST_TOKEN", "")

	res := runCLI(t, "", "operator", "raft", "list")
	if res.code != 0 || !strings.Contains(res.stdout, s.ServerID()) || !strings.Contains(res.stdout, "leader") {
		t.Fatalf("raft list: %d %q %q", res.code, res.stdout, res.stderr)
	}
	res = runCLI(t, "", "operator", "raft", "remove", "no-such-server")
	if res.code != exitNotFound {
		t.Fatalf("raft remove of an unknown server: exit %d %q", res.code, res.stderr)
	}

	if _, err := s.Apply(context.Background(), &store.OrgCreate{Org: store.Org{ID: "org-cli", Name: "cli org"}}); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "state.snap")
	res = runCLI(t, "", "operator", "snapshot", "save", backup, "--json")
	var saved store.SnapshotInfo
	if res.code != 0 || json.Unmarshal([]byte(res.stdout), &saved) != nil {
		t.Fatalf("snapshot save: %d %q %q", res.code, res.stdout, res.stderr)
	}
	want, _ := s.State().Hash()
	if fi, err := os.Stat(backup); err != nil || fi.Size() != saved.Size || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the saved file: %v %v", fi, err)
	}
	if res := runCLI(t, "", "operator", "snapshot", "inspect", backup); res.code != 0 || !strings.Contains(res.stdout, saved.Hash) || saved.Hash != fmt.Sprintf("%x", want) {
		t.Fatalf("inspect: %d %q; state hash %x", res.code, res.stdout, want)
	}
	b, _ := os.ReadFile(backup)
	damaged := backup + ".damaged"
	os.WriteFile(damaged, b[:len(b)-3], 0o600)
	if res := runCLI(t, "", "operator", "snapshot", "inspect", damaged); res.code != exitGeneric || !strings.Contains(res.stderr+res.err.Error(), "not a whole agenthost backup") {
		t.Fatalf("inspect of a damaged backup: %d %v", res.code, res.err)
	}

	// Into another cluster: its own operator's token restores, and the
	// state is the backup's afterwards.
	base2, op2, s2 := realAPI(t)
	if res := runCLI(t, "", "operator", "snapshot", "restore", damaged, "--addr", base2, "--token", op2); res.code != exitGeneric {
		t.Fatalf("restore of a damaged backup: %d %v", res.code, res.err)
	}
	if res := runCLI(t, "", "operator", "snapshot", "restore", backup, "--addr", base2, "--token", op2); res.code != 0 {
		t.Fatalf("restore: %d %q %v", res.code, res.stdout, res.err)
	}
	if got, _ := s2.State().Hash(); got != want {
		t.Fatal("the restored cluster's state is not the backup's")
	}
	res = runCLI(t, "", "operator", "raft", "list", "--addr", base2, "--token", op)
	if res.code != 0 {
		t.Fatalf("the backup's operator token on the restored cluster: %d %v", res.code, res.err)
	}
	if installed := fmt.Sprintf("last snapshot installed: index %d, hash %s", saved.Index, saved.Hash); !strings.Contains(res.stdout, installed) {
		t.Fatalf("raft list on the restored cluster does not say %q:\n%s", installed, res.stdout)
	}
}

// TestCLIAccountsAndInvitations drives the sign-up mode, invitations and
// accounts verbs against a real control plane: an operator invitation's
// link signs up an operator account, which is listed, demoted and removed
// by email; a tenant invites into its own org and withdraws it.
func TestCLIAccountsAndInvitations(t *testing.T) {
	base, op, _ := realAPI(t)
	t.Setenv("AGENTHOST_ADDR", base)
	t.Setenv("AGENTHOST_OPERATOR_TOKEN", op)
	t.Setenv("AGENTHOST_TOKEN", "")

	if res := runCLI(t, "", "operator", "signup"); res.code != 0 || res.stdout != "sign-up: invite\n" {
		t.Fatalf("signup: %d %q %v", res.code, res.stdout, res.err)
	}
	if res := runCLI(t, "", "operator", "signup", "anyone"); res.code != exitUsage {
		t.Fatalf("signup anyone: exit %d", res.code)
	}
	if res := runCLI(t, "", "operator", "signup", "closed"); res.code != 0 || res.stdout != "sign-up: closed\n" {
		t.Fatalf("signup closed: %d %q %v", res.code, res.stdout, res.err)
	}
	if res := runCLI(t, "", "operator", "invitations", "create"); res.code != exitConflict {
		t.Fatalf("an invitation while sign-up is closed: exit %d %q", res.code, res.stdout)
	}
	runCLI(t, "", "operator", "signup", "invite")

	res := runCLI(t, "", "operator", "invitations", "create", "--operator", "--email", "root@example.com", "-q")
	link, err := url.Parse(strings.TrimSpace(res.stdout))
	if res.code != 0 || err != nil || link.Query().Get("invitation") == "" {
		t.Fatalf("invitations create -q: %d %q %v", res.code, res.stdout, res.err)
	}
	signup, _ := json.Marshal(map[string]string{"email": "root@example.com", "password": "long enough password", "invitation": link.Query().Get("invitation")})
	resp, err := http.Post(base+"/api/v1/auth/signup", "application/json", bytes.NewReader(signup))
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("sign-up with the link's code: %v %v", resp, err)
	}
	resp.Body.Close()
	if res = runCLI(t, "", "operator", "accounts", "list"); !strings.Contains(res.stdout, "root@example.com") || !strings.Contains(res.stdout, "yes") {
		t.Fatalf("accounts list:\n%s", res.stdout)
	}
	if res = runCLI(t, "", "operator", "accounts", "demote", "root@example.com"); res.code != 0 || !strings.HasSuffix(res.stdout, "(root@example.com) operator: no\n") {
		t.Fatalf("demote: %d %q %v", res.code, res.stdout, res.err)
	}
	if res = runCLI(t, "", "operator", "accounts", "remove", "root@example.com"); res.code != 0 {
		t.Fatalf("remove: %v", res.err)
	}
	if res = runCLI(t, "", "operator", "accounts", "remove", "root@example.com"); res.code != exitNotFound {
		t.Fatalf("remove again: exit %d", res.code)
	}

	// A tenant's invitation into its own org.
	runCLI(t, "", "orgs", "create", "acme")
	tenant := strings.TrimSpace(runCLI(t, "", "tokens", "create", "--org", "acme", "-q").stdout)
	t.Setenv("AGENTHOST_TOKEN", tenant)
	res = runCLI(t, "", "invitations", "create", "--email", "bob@example.com", "--expires", "24h", "--json")
	var inv struct{ ID, Code string }
	if err := json.Unmarshal([]byte(res.stdout), &inv); err != nil || inv.Code == "" {
		t.Fatalf("invitations create: %q %v %v", res.stdout, res.err, err)
	}
	if res = runCLI(t, "", "invitations", "list"); !strings.Contains(res.stdout, inv.ID) || strings.Contains(res.stdout, inv.Code) {
		t.Fatalf("invitations list:\n%s", res.stdout)
	}
	if res = runCLI(t, "", "invitations", "withdraw", inv.ID); res.code != 0 {
		t.Fatalf("withdraw: %v", res.err)
	}
	if res = runCLI(t, "", "invitations", "withdraw", inv.ID); res.code != exitNotFound {
		t.Fatalf("withdraw again: exit %d", res.code)
	}
}
