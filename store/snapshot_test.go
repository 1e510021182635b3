package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// richState fills f with some of everything a snapshot must carry: several
// orgs, tokens, nodes in every status, agents in every state (in and out of
// scopes), org-level and scoped secrets, idempotency records, a cluster
// configuration, non-ASCII names and timestamps in several zones.
func richState(f *testFSM) {
	f.t.Helper()
	kolkata := time.FixedZone("IST", 5*3600+1800)
	f.mustApply(
		&ClusterConfigSet{Config: ClusterConfig{PortRangeStart: 20000, PortRangeEnd: 20999, SchedulerAlgorithm: AlgorithmSpread, ReschedulePolicy: RescheduleFail}},
		newOrg("org-a", "Acme", Plan{MaxAgents: 10, MaxRunning: 5}),
		newOrg("org-b", "Bücher GmbH", Plan{}),
		&OrgCreate{Org: Org{ID: "org-c", Name: "日本語の組織", Plan: Plan{MaxAgents: 1}, CreatedAt: testTime.In(kolkata)}},
		newToken("tok-a1", "org-a", RoleTenant),
		newToken("tok-a2", "org-a", RoleOperator),
		newToken("tok-b1", "org-b", RoleTenant),
		&TokenTouch{LastUsed: map[string]time.Time{"tok-a1": testTime.Add(time.Hour), "tok-b1": testTime.Add(2 * time.Hour)}},
		newNode("node-1", NodeCapacity{CPUMillis: 16000, MemoryMB: 32768, MaxAgents: 20}, "opencode", "claude"),
		newNode("node-2", NodeCapacity{CPUMillis: 8000, MemoryMB: 16384}, "opencode"),
		newNode("node-3", NodeCapacity{}),
		newScope("sc-a1", "org-a", "dev"),
		newScope("sc-a2", "org-a", "prod"),
		newScope("sc-b1", "org-b", "dev"),
		newAgent("a1", "org-a", "node-1", 20001, inScope("sc-a1"), func(a *Agent) {
			a.Tags, a.Model, a.HiddenPrompt, a.Autostart = []string{"review", "go"}, "model-x", "be terse", true
		}),
		newAgent("a2", "org-a", "node-1", 20002, stopped, inScope("sc-a2"), withPassword("sealed", "k1")),
		newAgent("a3", "org-a", "node-2", 20003),
		&AgentSetStatus{ID: "a3", FromNode: "node-2", Status: StatusError, ErrorMsg: "image pull failed"},
		newAgent("b1", "org-b", "node-2", 20500, func(a *Agent) { a.Name = "Übersetzer 🤖" }),
		newAgent("b2", "org-b", "node-3", 20999, stopped),
		&AgentSetStatus{ID: "a1", FromNode: "node-1", Status: StatusRunning},
		setNodeStatus("node-2", NodeDraining),
		&NodeSetStatus{ID: "node-3", Status: NodeDown, LastSeen: testTime.Add(-time.Hour).In(kolkata)},
		newSecret("sec-a-org", "org-a", "", "API_KEY", "org-level"),
		newSecret("sec-a-db", "org-a", "", "DB_URL", "org-db"),
		newSecret("sec-a1", "org-a", "sc-a1", "API_KEY", "dev-key"),
		newSecret("sec-a2", "org-a", "sc-a2", "API_KEY", "prod-key"),
		newSecret("sec-b", "org-b", "sc-b1", "TOKEN", "b-token"),
		newIdempotency("org-a", "idem-1", testTime.Add(24*time.Hour)),
		newIdempotency("org-b", "idem-1", testTime.Add(24*time.Hour)),
		newIdempotency("org-a", "idem-2", testTime.Add(48*time.Hour)),
	)
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	src := newTestFSM(t)
	richState(src)
	data := snapshotBytes(t, src.fsm)

	dst := newTestFSM(t)
	if err := restoreBytes(t, dst.fsm, data); err != nil {
		t.Fatalf("restore: %v", err)
	}
	want, got := src.state(), dst.state()
	if stateHash(t, got) != stateHash(t, want) {
		t.Fatalf("restored state hash differs")
	}
	if got.Index() != want.Index() || dst.fsm.AppliedIndex() != src.fsm.AppliedIndex() || got.Index() == 0 {
		t.Errorf("restored index %d (applied %d), want %d", got.Index(), dst.fsm.AppliedIndex(), want.Index())
	}
	// Snapshots are deterministic: the restored state writes the same bytes.
	if again := snapshotBytes(t, dst.fsm); !bytes.Equal(again, data) {
		t.Errorf("snapshot of the restored state differs from the original (%d vs %d bytes)", len(again), len(data))
	}

	t.Run("secondary indexes", func(t *testing.T) {
		agents, err := want.Agents()
		if err != nil || len(agents) != 5 {
			t.Fatalf("source agents = %d, %v", len(agents), err)
		}
		for _, a := range agents {
			lookups := map[string]func(*State) (any, error){
				"by port": func(s *State) (any, error) { return s.AgentByPort(a.Port) },
				"by org":  func(s *State) (any, error) { return s.AgentsByOrg(a.OrgID) },
				"by name": func(s *State) (any, error) { return s.AgentsByOrgName(a.OrgID, a.Name) },
				"by node": func(s *State) (any, error) { return s.AgentsByNode(a.NodeID) },
			}
			if a.ScopeID != "" {
				lookups["by scope"] = func(s *State) (any, error) { return s.AgentsByScope(a.ScopeID) }
			}
			for name, lookup := range lookups {
				sameLookup(t, "agent "+a.ID+" "+name, want, got, lookup)
			}
		}
		for _, id := range []string{"tok-a1", "tok-a2", "tok-b1"} {
			sameLookup(t, "token by hash "+id, want, got, func(s *State) (any, error) { return s.TokenByHash(tokenHash(id)) })
		}
		for _, org := range []string{"org-a", "org-b"} {
			sameLookup(t, "tokens of "+org, want, got, func(s *State) (any, error) { return s.TokensByOrg(org) })
			sameLookup(t, "scopes of "+org, want, got, func(s *State) (any, error) { return s.ScopesByOrg(org) })
		}
		sameLookup(t, "org-level secrets", want, got, func(s *State) (any, error) { return s.Secrets("org-a", "") })
		for _, name := range []string{"Acme", "Bücher GmbH", "日本語の組織"} {
			sameLookup(t, "org by name "+name, want, got, func(s *State) (any, error) { return s.OrgByName(name) })
		}
		for _, name := range []string{"node-1", "node-2", "node-3"} {
			sameLookup(t, "node by name "+name, want, got, func(s *State) (any, error) { return s.NodeByName(name) })
		}
		for _, name := range []string{"node-1", "node-2"} { // node-3 hosts only a stopped agent
			sameLookup(t, "allocation of "+name, want, got, func(s *State) (any, error) { return s.NodeAllocation(name) })
		}
		for _, sc := range [][2]string{{"org-a", "sc-a1"}, {"org-a", "sc-a2"}, {"org-b", "sc-b1"}} {
			sameLookup(t, "secrets of "+sc[1], want, got, func(s *State) (any, error) { return s.Secrets(sc[0], sc[1]) })
		}
		sameLookup(t, "scope by name", want, got, func(s *State) (any, error) { return s.ScopeByName("org-a", "prod") })
		sameLookup(t, "secret", want, got, func(s *State) (any, error) { return s.Secret("org-a", "sc-a1", "API_KEY") })
		sameLookup(t, "idempotency", want, got, func(s *State) (any, error) { return s.Idempotency("org-a", "idem-2") })
		sameLookup(t, "cluster config", want, got, func(s *State) (any, error) { return s.ClusterConfig() })
		if secs := secretsOf(t, got, "org-a", ""); len(secs) != 2 || secs[0].Key != "API_KEY" || secs[1].Key != "DB_URL" {
			t.Errorf("org-level secrets of org-a after restore = %+v", secs)
		}
	})

	// The restored state enforces its invariants exactly as the original:
	// the same commands get the same answers and leave the same state.
	t.Run("applies like the original", func(t *testing.T) {
		dst.index = src.index
		next := []Command{
			newAgent("x1", "org-b", "node-1", 20001),  // port in use
			newOrg("org-x", "Acme", Plan{}),           // org name taken
			newToken("tok-x", "org-b", RoleTenant),    // accepted
			newScope("sc-x", "org-a", "dev"),          // scope name taken
			newAgent("c1", "org-c", "node-1", 20100),  // accepted
			newAgent("c2", "org-c", "node-1", 20101),  // org-c's maxAgents
			newAgent("x2", "org-b", "node-2", 20102),  // node draining
			&ScopeDelete{ID: "sc-a1", OrgID: "org-a"}, // API_KEY clash
			&IdempotencyDelete{Before: testTime.Add(30 * time.Hour)},
		}
		for _, cmd := range next {
			_, errSrc := src.apply(cmd)
			_, errDst := dst.apply(cmd)
			if ErrorCode(errSrc) != ErrorCode(errDst) || (errSrc == nil) != (errDst == nil) {
				t.Errorf("%s: original %v, restored %v", cmd.CommandType(), errSrc, errDst)
			}
		}
		if src.hash() != dst.hash() {
			t.Errorf("states diverged after the same commands")
		}
	})
}

// sameLookup runs lookup on both states and compares the results.
func sameLookup(t *testing.T, what string, want, got *State, lookup func(*State) (any, error)) {
	t.Helper()
	w, werr := lookup(want)
	g, gerr := lookup(got)
	if werr != nil || gerr != nil {
		t.Errorf("%s: errors %v, %v", what, werr, gerr)
		return
	}
	if reflect.ValueOf(w).IsZero() {
		t.Errorf("%s: nothing found in the original; the fixture is wrong", what)
	}
	if !reflect.DeepEqual(w, g) {
		t.Errorf("%s after restore:\n got %+v\nwant %+v", what, g, w)
	}
}

func TestSnapshotOfEmptyState(t *testing.T) {
	src := newTestFSM(t)
	data := snapshotBytes(t, src.fsm)
	dst := newTestFSM(t)
	seedFuzzState(dst)
	if err := restoreBytes(t, dst.fsm, data); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if dst.hash() != src.hash() || dst.fsm.AppliedIndex() != 0 {
		t.Errorf("restoring an empty snapshot left state behind (applied %d)", dst.fsm.AppliedIndex())
	}
}

// TestSnapshotIsPointInTime: Snapshot captures the state when it is called;
// commands applied before Persist runs must not leak into it.
func TestSnapshotIsPointInTime(t *testing.T) {
	f := newTestFSM(t)
	richState(f)
	wantHash, wantIndex := f.hash(), f.state().Index()
	snap, err := f.fsm.Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	f.mustApply(
		newOrg("org-late", "Late", Plan{}),
		&AgentDelete{ID: "a2"},
		newAgent("late", "org-b", "node-1", 20002),
		&ClusterConfigSet{Config: DefaultClusterConfig()},
		&SecretDelete{OrgID: "org-a", Key: "API_KEY"},
	)
	data := persist(t, snap)
	dst := newTestFSM(t)
	if err := restoreBytes(t, dst.fsm, data); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if dst.hash() != wantHash || dst.state().Index() != wantIndex {
		t.Errorf("snapshot holds index %d and a different state; want the state at %d", dst.state().Index(), wantIndex)
	}
	if o := orgOf(t, dst.state(), "org-late"); o != nil {
		t.Errorf("snapshot contains a later org")
	}
	if a := agentOf(t, dst.state(), "a2"); a == nil {
		t.Errorf("snapshot lost an agent deleted after it was taken")
	}
}

func TestRestoreRefusesBadSnapshots(t *testing.T) {
	src := newTestFSM(t)
	richState(src)
	good := snapshotBytes(t, src.fsm)
	versionAt := len(snapshotMagic)

	type badCase struct {
		name string
		data []byte
		// msg, when set, must appear in the error: it tells which check refused.
		msg string
	}
	var cases []badCase
	for k := range 7 {
		n := len(good) * k / 7
		cases = append(cases, badCase{name: fmt.Sprintf("truncated at %d/7", k), data: good[:n]})
	}
	cases = append(cases,
		badCase{name: "truncated at len-1", data: good[:len(good)-1]},
		badCase{name: "truncated before the checksum", data: good[:len(good)-32], msg: "checksum"},
		badCase{name: "flipped byte in an org name", data: flipAt(good, bytes.Index(good, []byte("Acme"))), msg: "checksum mismatch"},
		badCase{name: "flipped byte in the index", data: flipAt(good, len(good)-33), msg: "checksum mismatch"},
		badCase{name: "flipped byte in the checksum", data: flipAt(good, len(good)-1), msg: "checksum mismatch"},
		badCase{name: "foreign magic", data: append([]byte("NOMADSNP"), good[len(snapshotMagic):]...), msg: "not an agenthost snapshot"},
		badCase{name: "gzip stream", data: []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3}, msg: "not an agenthost snapshot"},
		badCase{name: "version 2", data: withVersion(good, versionAt, 2), msg: "version"},
		badCase{name: "version 0", data: withVersion(good, versionAt, 0), msg: "version"},
		badCase{name: "version 256", data: withVersion(good, versionAt, 256), msg: "version"},
		badCase{name: "trailing garbage", data: append(bytes.Clone(good), "garbage"...), msg: "trailing"},
		badCase{name: "trailing zero byte", data: append(bytes.Clone(good), 0), msg: "trailing"},
		badCase{name: "unknown table", data: withByte(good, versionAt+2, byte(len(tableOrder)+1)), msg: "table"},
		badCase{name: "two snapshots back to back", data: append(bytes.Clone(good), good...), msg: "trailing"},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := restoreIntoSeeded(t, tc.data)
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not mention %q", err, tc.msg)
			}
			if strings.HasPrefix(tc.name, "version") && strings.Contains(err.Error(), "checksum") {
				t.Errorf("version refused by the checksum, want it refused on version first: %v", err)
			}
		})
	}

	// A flipped byte is refused wherever it falls: every byte of a small
	// snapshot, and every 13th byte of the rich one.
	t.Run("flipped bytes", func(t *testing.T) {
		small := newTestFSM(t)
		seedFuzzState(small)
		target := newTestFSM(t)
		richState(target)
		before, index := target.hash(), target.fsm.AppliedIndex()
		for _, sweep := range []struct {
			data []byte
			step int
		}{{snapshotBytes(t, small.fsm), 1}, {good, 13}} {
			for i := 0; i < len(sweep.data); i += sweep.step {
				mask := byte(0x01) << (i % 8)
				bad := bytes.Clone(sweep.data)
				bad[i] ^= mask
				if err := restoreBytes(t, target.fsm, bad); !errors.Is(err, ErrSnapshotInvalid) {
					t.Fatalf("byte %d ^ %#x of %d: restore = %v, want ErrSnapshotInvalid", i, mask, len(sweep.data), err)
				}
			}
		}
		if target.hash() != before || target.fsm.AppliedIndex() != index {
			t.Fatalf("failed restores changed the state")
		}
	})
}

// restoreIntoSeeded restores data into an FSM holding other state, expects
// ErrSnapshotInvalid, and checks the FSM kept its state and index.
func restoreIntoSeeded(t *testing.T, data []byte) error {
	t.Helper()
	f := newTestFSM(t)
	seedFuzzState(f)
	held := f.state()
	before, index := f.hash(), f.fsm.AppliedIndex()
	err := restoreBytes(t, f.fsm, data)
	if !errors.Is(err, ErrSnapshotInvalid) {
		t.Fatalf("restore = %v, want ErrSnapshotInvalid", err)
	}
	if f.hash() != before || f.fsm.AppliedIndex() != index || f.state().Index() != index {
		t.Fatalf("failed restore changed the state (applied %d, was %d)", f.fsm.AppliedIndex(), index)
	}
	if a := agentOf(t, held, "agent-1"); a == nil {
		t.Fatalf("a State taken before the failed restore lost its data")
	}
	// The FSM still applies commands after a refused restore.
	f.mustApply(newAgent("agent-9", "org-1", "node-1", 10009))
	return err
}

func flipAt(data []byte, i int) []byte {
	out := bytes.Clone(data)
	out[i] ^= 0x01
	return out
}

func withByte(data []byte, i int, b byte) []byte {
	out := bytes.Clone(data)
	out[i] = b
	return out
}

func withVersion(data []byte, at int, v uint16) []byte {
	out := bytes.Clone(data)
	binary.BigEndian.PutUint16(out[at:], v)
	return out
}

func TestPersistFailureCancelsTheSink(t *testing.T) {
	f := newTestFSM(t)
	richState(f)
	size := len(snapshotBytes(t, f.fsm))
	for _, limit := range []int{1, size / 2, size - 1} {
		snap, err := f.fsm.Snapshot()
		if err != nil {
			t.Fatalf("snapshot: %v", err)
		}
		sink := &memSink{failAfter: limit}
		err = snap.Persist(sink)
		snap.Release()
		if !errors.Is(err, errSinkFull) {
			t.Errorf("limit %d of %d: Persist = %v, want the sink's error", limit, size, err)
		}
		if !sink.cancelled || sink.closed {
			t.Errorf("limit %d: sink cancelled=%v closed=%v, want cancelled only", limit, sink.cancelled, sink.closed)
		}
	}
}

// TestRestoredIsTheStateAsInstalled: FSM.Restored names the snapshot's
// state as installed — the backup's index and hash — and keeps doing so
// after commands change the state, which the live digest follows.
func TestRestoredIsTheStateAsInstalled(t *testing.T) {
	src := newTestFSM(t)
	richState(src)
	data := snapshotBytes(t, src.fsm)
	info, err := InspectSnapshot(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}

	dst := newTestFSM(t)
	if dst.fsm.Restored() != nil {
		t.Fatal("a fresh FSM says it installed a snapshot")
	}
	if err := restoreBytes(t, dst.fsm, data); err != nil {
		t.Fatalf("restore: %v", err)
	}
	installed := StateDigest{Index: info.Index, Hash: info.Hash}
	if got := dst.fsm.Restored(); got == nil || *got != installed {
		t.Fatalf("Restored = %+v, want the backup's %+v", got, installed)
	}
	if live, err := dst.state().Digest(); err != nil || live != installed {
		t.Fatalf("the live digest right after the restore = %+v (%v), want %+v", live, err, installed)
	}

	dst.index = dst.fsm.AppliedIndex() // the log goes on after the snapshot
	dst.mustApply(&TokenTouch{LastUsed: map[string]time.Time{"tok-a1": testTime.Add(3 * time.Hour)}})
	live, err := dst.state().Digest()
	if err != nil {
		t.Fatal(err)
	}
	if live.Index <= installed.Index || live.Hash == installed.Hash {
		t.Fatalf("a token's last use did not move the live digest: %+v", live)
	}
	if got := dst.fsm.Restored(); *got != installed {
		t.Fatalf("Restored moved with the state: %+v", got)
	}
}
