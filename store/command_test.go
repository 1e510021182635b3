package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

// sampleCommands returns one command of every type, each of which applies
// cleanly, in this order, to the state built by seedFuzzState.
func sampleCommands() []Command {
	return []Command{
		newOrg("org-2", "Second", Plan{MaxAgents: 2}),
		&OrgUpdate{ID: "org-1", Name: strPtr("First Renamed"), Plan: &Plan{MaxAgents: 6, MaxRunning: 4}},
		&OrgDelete{ID: "org-2"},
		newToken("tok-2", "org-1", RoleTenant),
		&TokenRevoke{ID: "tok-2"},
		&TokenTouch{LastUsed: map[string]time.Time{"tok-1": testTime.Add(time.Hour)}},
		newAgent("agent-2", "org-1", "node-1", 10002, inScope("sc-1"), func(a *Agent) { a.Tags = []string{"t"} }, withPassword("sealed-k1", "k1")),
		&AgentSetDesired{ID: "agent-1", Desired: DesiredStopped, Status: StatusStopped},
		&AgentSetStatus{ID: "agent-2", FromNode: "node-1", Status: StatusError, ErrorMsg: "oom"},
		&AgentSetRuntimePassword{ID: "agent-2", Sealed: []byte("sealed-k2"), KeyID: "k2", IfSealed: []byte("sealed-k1"), IfKeyID: "k1"},
		&AgentDelete{ID: "agent-2"},
		newNode("node-2", NodeCapacity{CPUMillis: 2000, MemoryMB: 2048, MaxAgents: 2}, "opencode"),
		&NodeSetStatus{ID: "node-2", Status: NodeDraining, LastSeen: testTime.Add(time.Minute)},
		&NodeDelete{ID: "node-2"},
		newScope("sc-2", "org-1", "prod"),
		&ScopeUpdate{ID: "sc-2", OrgID: "org-1", Name: strPtr("production"), Description: strPtr("live"), UpdatedAt: testTime},
		&ScopeDelete{ID: "sc-2", OrgID: "org-1"},
		newSecret("sec-1", "org-1", "sc-1", "API_KEY", "sealed"),
		&SecretDelete{OrgID: "org-1", ScopeID: "sc-1", Key: "API_KEY"},
		newIdempotency("org-1", "idem-1", testTime.Add(time.Hour)),
		&IdempotencyDelete{Before: testTime.Add(2 * time.Hour)},
		&ClusterConfigSet{Config: ClusterConfig{PortRangeStart: 10000, PortRangeEnd: 10100, SchedulerAlgorithm: AlgorithmSpread, ReschedulePolicy: RescheduleFail}},
		&PlanApply{Items: []PlanItem{{Op: PlanStart, AgentID: "agent-1", NodeID: "node-1"}, {Op: PlanMove, AgentID: "agent-2", NodeID: "node-2"}}},
		&Noop{},
		&InvitationCreate{Invitation: Invitation{ID: "inv-1", OrgID: "org-1", Email: "ada@example.com", Hash: hexHash("inv-1"), CreatedAt: testTime, ExpiresAt: testTime.Add(time.Hour)}},
		&AccountCreate{Account: Account{ID: "acc-1", OrgID: "org-1", Email: "ada@example.com", PasswordHash: testPasswordHash, CreatedAt: testTime}, InvitationID: "inv-1", Now: testTime},
		&WebSessionCreate{Session: WebSession{ID: "ws-1", AccountID: "acc-1", Hash: hexHash("ws-1"), CreatedAt: testTime, ExpiresAt: testTime.Add(time.Hour)}},
		&WebSessionDelete{ID: "ws-1"},
		&WebSessionsExpire{Before: testTime.Add(2 * time.Hour)},
		&InvitationCreate{Invitation: Invitation{ID: "inv-2", Hash: hexHash("inv-2"), CreatedAt: testTime, ExpiresAt: testTime.Add(time.Hour)}},
		&InvitationDelete{ID: "inv-2"},
		&AccountSetOperator{AccountID: "acc-1", Operator: true},
		&AccountDelete{ID: "acc-1"},
	}
}

// seedFuzzState gives f an org, a node, a running agent, a token and a scope.
func seedFuzzState(f *testFSM) {
	f.t.Helper()
	f.mustApply(
		newOrg("org-1", "First", Plan{MaxAgents: 5, MaxRunning: 3}),
		newNode("node-1", NodeCapacity{CPUMillis: 8000, MemoryMB: 8192, MaxAgents: 10}, "opencode"),
		newScope("sc-1", "org-1", "dev"),
		newToken("tok-1", "org-1", RoleTenant),
		newAgent("agent-1", "org-1", "node-1", 10001),
	)
}

// TestCommandNumbersAreStable pins the command numbers: they are part of the
// on-disk log format and must never be renumbered or reused.
func TestCommandNumbersAreStable(t *testing.T) {
	want := []struct {
		typ  CommandType
		num  uint8
		name string
	}{
		{CmdOrgCreate, 1, "org_create"}, {CmdOrgUpdate, 2, "org_update"}, {CmdOrgDelete, 3, "org_delete"},
		{CmdTokenCreate, 4, "token_create"}, {CmdTokenRevoke, 5, "token_revoke"}, {CmdTokenTouch, 6, "token_touch"},
		{CmdAgentCreate, 7, "agent_create"}, {CmdAgentSetDesired, 8, "agent_set_desired"},
		{CmdAgentSetStatus, 9, "agent_set_status"}, {CmdAgentDelete, 10, "agent_delete"},
		{CmdNodeRegister, 11, "node_register"}, {CmdNodeSetStatus, 12, "node_set_status"}, {CmdNodeDelete, 13, "node_delete"},
		{CmdScopeCreate, 14, "scope_create"}, {CmdScopeUpdate, 15, "scope_update"}, {CmdScopeDelete, 16, "scope_delete"},
		{CmdSecretPut, 17, "secret_put"}, {CmdSecretDelete, 18, "secret_delete"},
		{CmdIdempotencyPut, 19, "idempotency_put"}, {CmdIdempotencyDelete, 20, "idempotency_delete"},
		{CmdClusterConfigSet, 21, "cluster_config_set"},
		{CmdPlanApply, 22, "plan_apply"},
		{CmdAgentSetRuntimePassword, 23, "agent_set_runtime_password"},
		{CmdNoop, 24 | 0x80, "noop"},
		{CmdAccountCreate, 25, "account_create"}, {CmdAccountDelete, 26, "account_delete"},
		{CmdWebSessionCreate, 27, "web_session_create"}, {CmdWebSessionDelete, 28, "web_session_delete"},
		{CmdInvitationCreate, 29, "invitation_create"}, {CmdInvitationDelete, 30, "invitation_delete"},
		{CmdWebSessionsExpire, 31, "web_sessions_expire"},
		{CmdAccountSetOperator, 32, "account_set_operator"},
	}
	if len(commandNames) != len(want) {
		t.Errorf("%d command types are named, want %d: add the new one here", len(commandNames), len(want))
	}
	for _, w := range want {
		if uint8(w.typ) != w.num || w.typ.String() != w.name {
			t.Errorf("%s = %d, want %s = %d", w.typ, uint8(w.typ), w.name, w.num)
		}
		// Only the no-op may be skipped by a server that does not know
		// it: skipping any other command would fork the state.
		if w.typ&IgnoreUnknownFlag != 0 && w.typ != CmdNoop {
			t.Errorf("%s carries the ignore-unknown flag", w.typ)
		}
	}
	for n := 0; n < 256; n++ {
		typ := CommandType(n)
		cmd := newCommand(typ)
		_, named := commandNames[typ]
		switch {
		case cmd == nil && named:
			t.Errorf("%s is named but cannot be decoded", typ)
		case cmd != nil && !named:
			t.Errorf("type %d decodes but has no name", n)
		case cmd != nil && cmd.CommandType() != typ:
			t.Errorf("type %d decodes into a %s", n, cmd.CommandType())
		}
	}
	if got := CommandType(200).String(); got != "unknown(200)" {
		t.Errorf("String of an unknown type = %q", got)
	}
}

func TestSampleCommandsCoverEveryType(t *testing.T) {
	seen := map[CommandType]bool{}
	for _, cmd := range sampleCommands() {
		seen[cmd.CommandType()] = true
	}
	for typ := range commandNames {
		if !seen[typ] {
			t.Errorf("sampleCommands has no %s", typ)
		}
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, cmd := range sampleCommands() {
		t.Run(cmd.CommandType().String(), func(t *testing.T) {
			buf := mustEncode(t, cmd)
			if CommandType(buf[0]) != cmd.CommandType() {
				t.Fatalf("type byte %d, want %d", buf[0], cmd.CommandType())
			}
			if !json.Valid(buf[1:]) {
				t.Fatalf("payload is not JSON: %q", buf[1:])
			}
			got, err := Decode(buf)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, cmd) {
				t.Errorf("round trip changed the command:\n got %+v\nwant %+v", got, cmd)
			}
		})
	}
}

// TestSampleCommandsApply checks the fuzz seeds are meaningful: each applies.
func TestSampleCommandsApply(t *testing.T) {
	f := newTestFSM(t)
	seedFuzzState(f)
	f.mustApply(sampleCommands()...)
}

// badInputs are log entries that no server may apply. want is the sentinel;
// nil means "skipped without effect" (an unknown type marked ignorable).
func badInputs(t reporter) []struct {
	name string
	data []byte
	want error
} {
	t.Helper()
	withType := func(typ CommandType, payload string) []byte { return append([]byte{byte(typ)}, payload...) }
	validOrg := mustEncode(t, newOrg("org-9", "Ninth", Plan{}))
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrMalformedCommand},
		{"type 0", []byte{0}, ErrUnknownCommand},
		{"first unassigned type", withType(24, `{}`), ErrUnknownCommand},
		{"type 100", []byte{100}, ErrUnknownCommand},
		{"type 127 with a payload", withType(127, `{"org":{"id":"x"}}`), ErrUnknownCommand},
		{"type byte only", []byte{byte(CmdAgentCreate)}, ErrMalformedCommand},
		{"truncated JSON", withType(CmdOrgCreate, `{"org":{"id":"o`), ErrMalformedCommand},
		{"wrong JSON type", withType(CmdAgentCreate, `{"agent":{"port":"10001"}}`), ErrMalformedCommand},
		{"array instead of object", withType(CmdNodeRegister, `[]`), ErrMalformedCommand},
		{"trailing garbage", withType(CmdOrgDelete, `{"id":"org-1"} x`), ErrMalformedCommand},
		{"binary payload", withType(CmdSecretPut, "\xff\xfe\x00"), ErrMalformedCommand},
		{"bad time", withType(CmdTokenTouch, `{"lastUsed":{"tok-1":"yesterday"}}`), ErrMalformedCommand},
		{"bad base64", withType(CmdTokenCreate, `{"token":{"hash":"!!"}}`), ErrMalformedCommand},
	}
	for _, cmd := range sampleCommands() {
		cases = append(cases, struct {
			name string
			data []byte
			want error
		}{"malformed " + cmd.CommandType().String(), withType(cmd.CommandType(), `{"x":`), ErrMalformedCommand})
	}
	ignorable := []struct {
		name string
		data []byte
	}{
		{"ignorable type alone", []byte{byte(IgnoreUnknownFlag | 30)}},
		// 200 is 0x80|72: any type of 128 or more carries the flag.
		{"type 200", append([]byte{200}, validOrg[1:]...)},
		{"ignorable flag on type 0", []byte{byte(IgnoreUnknownFlag)}},
		{"ignorable 0xff with garbage", []byte{0xff, 1, 2, 3}},
		{"ignorable flag on a known number", append([]byte{byte(IgnoreUnknownFlag | CmdOrgCreate)}, validOrg[1:]...)},
	}
	for _, c := range ignorable {
		cases = append(cases, struct {
			name string
			data []byte
			want error
		}{c.name, c.data, nil})
	}
	return cases
}

func TestDecodeBadInput(t *testing.T) {
	for _, tc := range badInputs(t) {
		t.Run(tc.name, func(t *testing.T) {
			cmd, err := Decode(tc.data)
			want := tc.want
			if want == nil {
				want = ErrUnknownCommand // Decode knows no flags; FSM.Apply skips these
			}
			if !errors.Is(err, want) || cmd != nil {
				t.Errorf("Decode = %v, %v; want nil, %v", cmd, err, want)
			}
		})
	}
}

func TestFSMApplyBadInput(t *testing.T) {
	for _, tc := range badInputs(t) {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFSM(t)
			seedFuzzState(f)
			before := f.hash()
			res, index := f.applyRaw(tc.data)
			if err := applyResultError(t, res); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Errorf("Apply = %v, want %v", err, tc.want)
			}
			if f.hash() != before {
				t.Errorf("state changed")
			}
			if got := f.fsm.AppliedIndex(); got != index {
				t.Errorf("AppliedIndex = %d, want %d: a refused entry is still applied", got, index)
			}
		})
	}
}

// FuzzFSMApply feeds arbitrary log entries to a seeded FSM. Whatever the
// bytes, Apply must not panic, a refused entry must leave the state as it
// was, and an accepted one must leave a state that still hashes and survives
// a snapshot round trip.
func FuzzFSMApply(f *testing.F) {
	for _, cmd := range sampleCommands() {
		f.Add(mustEncode(f, cmd))
	}
	for _, tc := range badInputs(f) {
		f.Add(tc.data)
	}
	// An operator token without an org fails inside memdb after some of its
	// indexes were written (see TestApplyTokenCreate): the one refusal that
	// proves Apply aborts rather than commits a refused transaction.
	f.Add(mustEncode(f, newToken("tok-op", "", RoleOperator)))
	f.Fuzz(func(t *testing.T, data []byte) {
		tf := newTestFSM(t)
		seedFuzzState(tf)
		before := tf.hash()
		res, _ := tf.applyRaw(data)
		err := applyResultError(t, res)
		after, herr := tf.state().Hash()
		if herr != nil {
			t.Fatalf("entry %q (apply error %v) left a state that does not hash: %v", data, err, herr)
		}
		if err != nil || (len(data) > 0 && newCommand(CommandType(data[0])) == nil) {
			if after != before {
				t.Fatalf("entry %q was refused or skipped (%v) but changed the state", data, err)
			}
			return
		}
		restored := NewFSM(nil, nil)
		if err := restoreBytes(t, restored, snapshotBytes(t, tf.fsm)); err != nil {
			t.Fatalf("entry %q: snapshot does not restore: %v", data, err)
		}
		if got := stateHash(t, restored.State()); got != after {
			t.Fatalf("entry %q: restored state differs", data)
		}
	})
}

// TestEncodeIsDeterministic: every server must write the same bytes for the
// same command, so encodings must not depend on map order.
func TestEncodeIsDeterministic(t *testing.T) {
	touch := &TokenTouch{LastUsed: map[string]time.Time{}}
	node := newNode("n", NodeCapacity{})
	for i := range 50 {
		id := string(rune('a' + i%26))
		touch.LastUsed[id+id] = testTime
		node.Node.Labels[id+"k"] = id
	}
	for _, cmd := range []Command{touch, node} {
		first := mustEncode(t, cmd)
		for range 20 {
			if !bytes.Equal(mustEncode(t, cmd), first) {
				t.Fatalf("%s encodes differently on each call", cmd.CommandType())
			}
		}
	}
}
