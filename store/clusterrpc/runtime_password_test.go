package clusterrpc

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/agenthost/agenthost/internal/h2c"
	"github.com/agenthost/agenthost/internal/keyring"
	nodev1 "github.com/agenthost/agenthost/proto/agenthost/node/v1"
	"github.com/agenthost/agenthost/proto/agenthost/node/v1/nodev1connect"
	routev1 "github.com/agenthost/agenthost/proto/agenthost/route/v1"
	"github.com/agenthost/agenthost/proto/agenthost/route/v1/routev1connect"
	"github.com/agenthost/agenthost/store"
)

// passwordFixture is a test cluster with an org, a node and agents whose
// runtime passwords are sealed as the API seals them.
type passwordFixture struct {
	t   *testing.T
	tc  *TestCluster
	s   *store.Store
	now time.Time
}

func newPasswordFixture(t *testing.T, servers int) *passwordFixture {
	t.Helper()
	tc := NewTestCluster(t, servers)
	f := &passwordFixture{t: t, tc: tc, s: tc.Servers[tc.WaitForLeader()].Store, now: time.Now().UTC()}
	f.apply(&store.OrgCreate{Org: store.Org{ID: "org", Name: "org", CreatedAt: f.now}})
	f.apply(&store.NodeRegister{Node: store.Node{ID: "n1", Name: "n1", Address: "10.0.0.7",
		Capacity: store.NodeCapacity{CPUMillis: 1 << 20, MemoryMB: 1 << 20, MaxAgents: 100}, Runtimes: []string{"opencode"}, LastSeen: f.now}})
	return f
}

func (f *passwordFixture) apply(cmd store.Command) uint64 {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	index, err := f.s.Apply(ctx, cmd)
	if err != nil {
		f.t.Fatalf("%s: %v", cmd.CommandType(), err)
	}
	return index
}

// agent creates an agent named id with password sealed under kr.
func (f *passwordFixture) agent(kr *keyring.Keyring, id, password string) {
	f.t.Helper()
	a := store.Agent{ID: id, OrgID: "org", Name: id, Runtime: "opencode",
		Desired: store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: f.now}
	if err := SealRuntimePassword(kr, &a, password); err != nil {
		f.t.Fatal(err)
	}
	f.tc.WaitForIndex(f.apply(&store.AgentCreate{Agent: a}))
}

// TestNoRuntimePasswordInRaftLogSnapshotsOrState creates agents on a
// 3-server cluster, snapshots every server, and looks for their passwords,
// plain or base64-encoded at any alignment, in the FSM state and in every
// file of every data directory (the Raft log in bolt, the snapshots): they
// must not be there. A canary stored in the clear (an agent's name) must be
// found in both kinds of file, or the scan proves nothing.
func TestNoRuntimePasswordInRaftLogSnapshotsOrState(t *testing.T) {
	f := newPasswordFixture(t, 3)
	const canary = "canary-agent-name-51f0c3"
	passwords := map[string]string{canary: "runtime-password-canary-0123456789abcdef"}
	for _, id := range []string{"a1", "a2"} {
		passwords[id] = store.NewRuntimePassword()
	}
	for id, pw := range passwords {
		f.agent(TestKeyring(), id, pw)
	}
	needles := func(v string) [][]byte {
		out := [][]byte{[]byte(v)}
		for off := range 3 {
			b64 := base64.StdEncoding.EncodeToString(append(make([]byte, off), v...))
			out = append(out, []byte(b64[4:len(b64)-4]))
		}
		return out
	}
	scan := func(where string, b []byte) {
		t.Helper()
		for id, pw := range passwords {
			for _, n := range needles(pw) {
				if bytes.Contains(b, n) {
					t.Errorf("%s holds agent %s's runtime password", where, id)
				}
			}
		}
	}

	st := f.s.State()
	agents, err := st.Agents()
	if err != nil || len(agents) != len(passwords) {
		t.Fatalf("agents: %d, %v", len(agents), err)
	}
	for _, a := range agents {
		b, _ := json.Marshal(a)
		scan("the FSM state", b)
		if a.RuntimePasswordKeyID != "test" {
			t.Errorf("agent %s sealed under %q", a.ID, a.RuntimePasswordKeyID)
		}
	}

	f.tc.ScanDataFiles(canary, scan)
}

// TestNodesAndProxiesGetTheOpenedPassword: a node's assignments and a
// proxy's routes carry the password opened; an agent whose password is
// sealed under a key the server lacks goes out without one, logged, and
// the others are unaffected.
func TestNodesAndProxiesGetTheOpenedPassword(t *testing.T) {
	f := newPasswordFixture(t, 1)
	line, _ := keyring.NewKeyLine("elsewhere")
	foreign, _ := keyring.Parse([]byte(line))
	f.agent(TestKeyring(), "a1", "pw-one")
	f.agent(foreign, "a2", "pw-two")
	want := map[string]string{"a1": "pw-one", "a2": ""}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := "http://" + f.tc.Servers[0].Addr()
	nodes := nodev1connect.NewNodeServiceClient(h2c.NewClient(), base)
	assignments, err := nodes.WatchAssignments(ctx, connect.NewRequest(&nodev1.WatchAssignmentsRequest{NodeId: "n1"}))
	if err != nil {
		t.Fatal(err)
	}
	if !assignments.Receive() {
		t.Fatalf("assignments: %v", assignments.Err())
	}
	got := map[string]string{}
	for _, as := range assignments.Msg().GetAssignments() {
		got[as.GetAgentId()] = as.GetRuntimePassword()
	}
	if len(got) != 2 || got["a1"] != want["a1"] || got["a2"] != want["a2"] {
		t.Fatalf("assignments' passwords: %v, want %v", got, want)
	}

	routes, err := routev1connect.NewRouteServiceClient(h2c.NewClient(), base).WatchRoutes(ctx, connect.NewRequest(&routev1.WatchRoutesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if !routes.Receive() {
		t.Fatalf("routes: %v", routes.Err())
	}
	got = map[string]string{}
	for _, r := range routes.Msg().GetRoutes() {
		got[r.GetAgentId()] = r.GetRuntimePassword()
	}
	if len(got) != 2 || got["a1"] != want["a1"] || got["a2"] != want["a2"] {
		t.Fatalf("routes' passwords: %v, want %v", got, want)
	}

	// Both streams go on: a change reaches them with the same passwords.
	f.apply(&store.AgentSetStatus{ID: "a1", FromNode: "n1", Status: store.StatusRunning})
	for routes.Receive() {
		if r := routes.Msg().GetRoutes(); len(r) == 1 && r[0].GetStatus() == "RUNNING" {
			if r[0].GetRuntimePassword() != "pw-one" {
				t.Fatalf("route after a change: %+v", r[0])
			}
			break
		}
	}
	for assignments.Receive() {
		if as := assignments.Msg().GetAssignments(); len(as) == 2 {
			for _, a := range as {
				if a.GetAgentId() == "a1" && a.GetStatus() == "RUNNING" {
					if a.GetRuntimePassword() != "pw-one" {
						t.Fatalf("assignment after a change: %+v", a)
					}
					return
				}
			}
		}
	}
	t.Fatalf("streams ended: %v, %v", routes.Err(), assignments.Err())
}

// TestRuntimePasswordCacheRetriesOnceTheKeyIsBack: a password whose key the
// keyring lacks opens once a reloaded key file brings the key.
func TestRuntimePasswordCacheRetriesOnceTheKeyIsBack(t *testing.T) {
	l1, _ := keyring.NewKeyLine("k1")
	l2, _ := keyring.NewKeyLine("k2")
	sealer, _ := keyring.Parse([]byte(l2))
	a := &store.Agent{ID: "a1"}
	if err := SealRuntimePassword(sealer, a, "pw"); err != nil {
		t.Fatal(err)
	}
	kr, _ := keyring.Parse([]byte(l1))
	p := newRuntimePasswords(kr, testLogger())
	if got := p.open(a); got != "" {
		t.Fatalf("opened %q without its key", got)
	}
	both, _ := keyring.Parse([]byte(l1 + "\n" + l2))
	kr.Replace(both)
	if got := p.open(a); got != "pw" {
		t.Fatalf("after the key came back: %q", got)
	}
	if got := newRuntimePasswords(nil, testLogger()).open(a); got != "" {
		t.Fatalf("opened %q with no keyring", got)
	}
}
