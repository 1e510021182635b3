package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"time"

	"github.com/hashicorp/raft"
)

// Shared helpers of the store's FSM, command and snapshot tests. They drive an
// FSM directly with log entries, as raft would, without a cluster.

// reporter is what the helpers need from *testing.T and *rapid.T.
type reporter interface {
	Helper()
	Fatalf(format string, args ...any)
}

// testFSM feeds an FSM one log entry at a time, with increasing indexes.
type testFSM struct {
	t     reporter
	fsm   *FSM
	index uint64
}

func newTestFSM(t reporter) *testFSM {
	t.Helper()
	return &testFSM{t: t, fsm: NewFSM(nil, nil)}
}

// applyRaw hands data to FSM.Apply as the next log entry and returns what
// Apply returned and the entry's index.
func (f *testFSM) applyRaw(data []byte) (any, uint64) {
	f.t.Helper()
	f.index++
	return f.fsm.Apply(&raft.Log{Index: f.index, Term: 1, Type: raft.LogCommand, Data: data}), f.index
}

// apply encodes cmd, applies it as the next log entry and returns the entry's
// index and the error that refused the command, if any.
func (f *testFSM) apply(cmd Command) (uint64, error) {
	f.t.Helper()
	res, index := f.applyRaw(mustEncode(f.t, cmd))
	return index, applyResultError(f.t, res)
}

// mustApply applies cmds in order, failing on the first refusal, and returns
// the index of the last one.
func (f *testFSM) mustApply(cmds ...Command) uint64 {
	f.t.Helper()
	for _, cmd := range cmds {
		if _, err := f.apply(cmd); err != nil {
			f.t.Fatalf("apply %s %+v: %v", cmd.CommandType(), cmd, err)
		}
	}
	return f.index
}

// mustRefuse applies cmd, expects it refused with an error wrapping want, and
// checks that the state hash did not move: nothing was half applied.
func (f *testFSM) mustRefuse(cmd Command, want error) error {
	f.t.Helper()
	before := f.hash()
	_, err := f.apply(cmd)
	if !errors.Is(err, want) {
		f.t.Fatalf("apply %s: got error %v, want %v", cmd.CommandType(), err, want)
	}
	if after := f.hash(); after != before {
		f.t.Fatalf("apply %s was refused (%v) but changed the state hash", cmd.CommandType(), err)
	}
	return err
}

func (f *testFSM) state() *State { return f.fsm.State() }

func (f *testFSM) hash() [32]byte {
	f.t.Helper()
	return stateHash(f.t, f.state())
}

func stateHash(t reporter, s *State) [32]byte {
	t.Helper()
	h, err := s.Hash()
	if err != nil {
		t.Fatalf("state hash: %v", err)
	}
	return h
}

// applyResultError turns what FSM.Apply returned into an error, failing when
// it is neither nil nor an error.
func applyResultError(t reporter, res any) error {
	t.Helper()
	switch r := res.(type) {
	case nil:
		return nil
	case error:
		return r
	case *PlanResult:
		// A plan is refused as a whole only when every item was refused;
		// then, like any refusal, it must have changed nothing.
		for _, err := range r.Errors {
			if err == nil {
				return nil
			}
		}
		if len(r.Errors) > 0 {
			return r.Errors[0]
		}
		return nil
	}
	t.Fatalf("FSM.Apply returned %T (%v), want nil or an error", res, res)
	return nil
}

func mustEncode(t reporter, cmd Command) []byte {
	t.Helper()
	buf, err := Encode(cmd)
	if err != nil {
		t.Fatalf("encode %s: %v", cmd.CommandType(), err)
	}
	return buf
}

// Lookups that fail the test when the lookup itself fails; a missing object is nil.

func orgOf(t reporter, s *State, id string) *Org {
	t.Helper()
	o, err := s.Org(id)
	if err != nil {
		t.Fatalf("org %q: %v", id, err)
	}
	return o
}

func tokenOf(t reporter, s *State, id string) *Token {
	t.Helper()
	tok, err := s.Token(id)
	if err != nil {
		t.Fatalf("token %q: %v", id, err)
	}
	return tok
}

func agentOf(t reporter, s *State, id string) *Agent {
	t.Helper()
	a, err := s.Agent(id)
	if err != nil {
		t.Fatalf("agent %q: %v", id, err)
	}
	return a
}

func nodeOf(t reporter, s *State, id string) *Node {
	t.Helper()
	n, err := s.Node(id)
	if err != nil {
		t.Fatalf("node %q: %v", id, err)
	}
	return n
}

func scopeOf(t reporter, s *State, orgID, id string) *Scope {
	t.Helper()
	sc, err := s.Scope(orgID, id)
	if err != nil {
		t.Fatalf("scope %q: %v", id, err)
	}
	return sc
}

func secretOf(t reporter, s *State, orgID, scopeID, key string) *Secret {
	t.Helper()
	sec, err := s.Secret(orgID, scopeID, key)
	if err != nil {
		t.Fatalf("secret %s/%s/%s: %v", orgID, scopeID, key, err)
	}
	return sec
}

func secretsOf(t reporter, s *State, orgID, scopeID string) []*Secret {
	t.Helper()
	secs, err := s.Secrets(orgID, scopeID)
	if err != nil {
		t.Fatalf("secrets %s/%s: %v", orgID, scopeID, err)
	}
	return secs
}

func allocationOf(t reporter, s *State, nodeID string) NodeAllocation {
	t.Helper()
	alloc, err := s.NodeAllocation(nodeID)
	if err != nil {
		t.Fatalf("allocation of node %q: %v", nodeID, err)
	}
	return alloc
}

// Command fixtures. Every timestamp is derived from testTime so that
// encodings are reproducible.

var testTime = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newOrg(id, name string, plan Plan) *OrgCreate {
	return &OrgCreate{Org: Org{ID: id, Name: name, Plan: plan, CreatedAt: testTime}}
}

// newNode registers a node named after its id. Without runtimes it offers any.
func newNode(id string, capy NodeCapacity, runtimes ...string) *NodeRegister {
	return &NodeRegister{Node: Node{
		ID: id, Name: id, Address: id + ".internal:7000", Capacity: capy,
		Runtimes: runtimes, Labels: map[string]string{"zone": "z1"}, LastSeen: testTime,
	}}
}

func setNodeStatus(id string, status NodeStatus) *NodeSetStatus {
	return &NodeSetStatus{ID: id, Status: status}
}

// newAgent places a running "opencode" agent of 1000 millicores and 1024 MB;
// mods adjust it.
func newAgent(id, orgID, nodeID string, port int, mods ...func(*Agent)) *AgentCreate {
	a := Agent{
		ID: id, OrgID: orgID, Name: "agent " + id, Runtime: "opencode",
		Resources: Resources{CPUMillis: 1000, MemoryMB: 1024},
		Desired:   DesiredRunning, Status: StatusProvisioning,
		NodeID: nodeID, Port: port, CreatedAt: testTime,
	}
	for _, m := range mods {
		m(&a)
	}
	return &AgentCreate{Agent: a}
}

func stopped(a *Agent) { a.Desired, a.Status = DesiredStopped, StatusStopped }

// withPassword gives an agent a (pretend) sealed runtime password.
func withPassword(sealed, keyID string) func(*Agent) {
	return func(a *Agent) { a.RuntimePasswordSealed, a.RuntimePasswordKeyID = []byte(sealed), keyID }
}

func inScope(scopeID string) func(*Agent) { return func(a *Agent) { a.ScopeID = scopeID } }

func withResources(cpu, mem int64) func(*Agent) {
	return func(a *Agent) { a.Resources = Resources{CPUMillis: cpu, MemoryMB: mem} }
}

func setDesired(id string, d DesiredState) *AgentSetDesired {
	return &AgentSetDesired{ID: id, Desired: d}
}

// tokenHash is a fixture SHA-256 digest derived from id.
func tokenHash(id string) []byte {
	h := sha256.Sum256([]byte("secret-of-" + id))
	return h[:]
}

func newToken(id, orgID string, role TokenRole) *TokenCreate {
	return &TokenCreate{Token: Token{
		ID: id, OrgID: orgID, Label: "label " + id, Role: role,
		Hash: tokenHash(id), Last4: id[max(0, len(id)-4):], CreatedAt: testTime,
	}}
}

func newScope(id, orgID, name string) *ScopeCreate {
	return &ScopeCreate{Scope: Scope{ID: id, OrgID: orgID, Name: name, Description: "scope " + name, CreatedAt: testTime}}
}

func newSecret(id, orgID, scopeID, key, ciphertext string) *SecretPut {
	return &SecretPut{Secret: Secret{
		ID: id, OrgID: orgID, ScopeID: scopeID, Key: key,
		Ciphertext: []byte(ciphertext), KeyID: "k1", CreatedAt: testTime, UpdatedAt: testTime,
	}}
}

func newIdempotency(orgID, key string, expires time.Time) *IdempotencyPut {
	return &IdempotencyPut{Record: IdempotencyRecord{
		OrgID: orgID, Key: key, RequestHash: tokenHash(key), StatusCode: 201,
		Body: []byte(`{"id":"` + key + `"}`), CreatedAt: testTime, ExpiresAt: expires,
	}}
}

func strPtr(s string) *string { return &s }

// memSink is an in-memory raft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	// failAfter, when positive, makes writes fail once the buffer would
	// exceed that many bytes.
	failAfter int
	closed    bool
	cancelled bool
}

var errSinkFull = errors.New("sink full")

func (s *memSink) Write(p []byte) (int, error) {
	if s.failAfter > 0 && s.Len()+len(p) > s.failAfter {
		return 0, errSinkFull
	}
	return s.Buffer.Write(p)
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

// persist writes snap as raft would and returns the snapshot's bytes.
func persist(t reporter, snap raft.FSMSnapshot) []byte {
	t.Helper()
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("persist snapshot: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("persist left the sink closed=%v cancelled=%v, want closed only", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

// snapshotBytes snapshots an FSM's current state.
func snapshotBytes(t reporter, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return persist(t, snap)
}

// restoreBytes restores data into f as raft would, checking that Restore
// closes its reader.
func restoreBytes(t reporter, f *FSM, data []byte) error {
	t.Helper()
	rc := &closeTracker{Reader: bytes.NewReader(data)}
	err := f.Restore(rc)
	if !rc.closed {
		t.Fatalf("Restore did not close its reader")
	}
	return err
}

type closeTracker struct {
	io.Reader
	closed bool
}

func (c *closeTracker) Close() error { c.closed = true; return nil }

// testPasswordHash is an argon2id PHC string (of "password"; its shape is
// all the store checks).
const testPasswordHash = "$argon2id$v=19$m=65536,t=1,p=2$c2FsdHNhbHRzYWx0c2FsdA$ZjJmYjE4N2I1ZmY1ZTJmZjFiNTg0ZTE2YTQ0OGE2OGI"

// hexHash is the hex SHA-256 of s: a stored secret's digest.
func hexHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
