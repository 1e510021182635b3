package store

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

// One table per command type: each case applies one command to a prepared
// state and either checks its effect (want == nil) or checks that it was
// refused with the right sentinel and left the state hash untouched.

type fsmCase struct {
	name string
	// setup is applied, after the table's base, before cmd; it must succeed.
	setup []Command
	cmd   Command
	// want is the sentinel cmd must be refused with; nil means accepted.
	want error
	// check, when set, inspects the states before and after cmd; index is
	// the log index cmd was applied at.
	check func(t *testing.T, before, after *State, index uint64)
}

func runFSMCases(t *testing.T, base []Command, cases []fsmCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFSM(t)
			f.mustApply(base...)
			f.mustApply(tc.setup...)
			before := f.state()
			var index uint64
			if tc.want != nil {
				f.mustRefuse(tc.cmd, tc.want)
				index = f.index
			} else {
				var err error
				if index, err = f.apply(tc.cmd); err != nil {
					t.Fatalf("apply %s: %v, want accepted", tc.cmd.CommandType(), err)
				}
			}
			if got := f.fsm.AppliedIndex(); got != index {
				t.Errorf("AppliedIndex = %d, want %d (refused commands are applied too)", got, index)
			}
			if tc.check != nil {
				tc.check(t, before, f.state(), index)
			}
		})
	}
}

// sameHash fails unless both states hash identically.
func sameHash(t *testing.T, before, after *State) {
	t.Helper()
	if stateHash(t, before) != stateHash(t, after) {
		t.Errorf("state hash changed; want the command to be a no-op")
	}
}

func wantIndexes(t *testing.T, what string, create, modify, wantCreate, wantModify uint64) {
	t.Helper()
	if create != wantCreate || modify != wantModify {
		t.Errorf("%s: CreateIndex, ModifyIndex = %d, %d; want %d, %d", what, create, modify, wantCreate, wantModify)
	}
}

// tenantBase holds two orgs with tokens, scopes, secrets and idempotency
// records.
func tenantBase() []Command {
	return []Command{
		newOrg("org-a", "Acme", Plan{MaxAgents: 5, MaxRunning: 3}),
		newOrg("org-b", "Beta", Plan{}),
		newToken("tok-a1", "org-a", RoleTenant),
		newToken("tok-a2", "org-a", RoleOperator),
		newToken("tok-b1", "org-b", RoleTenant),
		newScope("sc-a1", "org-a", "dev"),
		newScope("sc-b1", "org-b", "dev"),
		newSecret("sec-a-org", "org-a", "", "API_KEY", "org-value"),
		newSecret("sec-a-sc", "org-a", "sc-a1", "API_KEY", "scoped-value"),
		newSecret("sec-a-db", "org-a", "sc-a1", "DB_URL", "db-value"),
		newSecret("sec-b-org", "org-b", "", "API_KEY", "b-value"),
		newSecret("sec-b-sc", "org-b", "sc-b1", "DB_URL", "b-db-value"),
		newIdempotency("org-a", "k1", testTime.Add(time.Hour)),
		newIdempotency("org-b", "k1", testTime.Add(time.Hour)),
	}
}

// placementBase holds org-a (3 agents, 2 running), unlimited org-b, a scope
// in each, and nodes: node-1 ready (4000 millicores, 4096 MB, 3 agents;
// opencode and claude), node-2 draining, node-3 down, node-big ready with no
// limits and no runtime list.
func placementBase() []Command {
	return []Command{
		newOrg("org-a", "Acme", Plan{MaxAgents: 3, MaxRunning: 2}),
		newOrg("org-b", "Beta", Plan{}),
		newScope("sc-a1", "org-a", "dev"),
		newScope("sc-b1", "org-b", "dev"),
		newNode("node-1", NodeCapacity{CPUMillis: 4000, MemoryMB: 4096, MaxAgents: 3}, "opencode", "claude"),
		newNode("node-2", NodeCapacity{}, "opencode"),
		setNodeStatus("node-2", NodeDraining),
		newNode("node-3", NodeCapacity{}, "opencode"),
		setNodeStatus("node-3", NodeDown),
		newNode("node-big", NodeCapacity{}),
	}
}

func TestApplyOrgCreate(t *testing.T) {
	runFSMCases(t, tenantBase(), []fsmCase{
		{name: "accepted", cmd: &OrgCreate{Org: Org{
			ID: "org-c", Name: "Gamma", Plan: Plan{MaxAgents: 2, MaxRunning: 1}, CreatedAt: testTime,
			CreateIndex: 999, ModifyIndex: 999, // set by the FSM, never by proposers
		}}, check: func(t *testing.T, _, s *State, index uint64) {
			o := orgOf(t, s, "org-c")
			if o == nil || o.Name != "Gamma" || o.Plan != (Plan{MaxAgents: 2, MaxRunning: 1}) || !o.CreatedAt.Equal(testTime) {
				t.Fatalf("org = %+v", o)
			}
			wantIndexes(t, "org", o.CreateIndex, o.ModifyIndex, index, index)
			if byName, _ := s.OrgByName("Gamma"); byName == nil || byName.ID != "org-c" {
				t.Errorf("OrgByName(Gamma) = %+v", byName)
			}
		}},
		{name: "name of 100 multi-byte characters", cmd: newOrg("org-c", strings.Repeat("日", 100), Plan{})},
		{name: "empty id", cmd: newOrg("", "Gamma", Plan{}), want: ErrInvalid},
		{name: "empty name", cmd: newOrg("org-c", "", Plan{}), want: ErrInvalid},
		{name: "name of 101 characters", cmd: newOrg("org-c", strings.Repeat("x", 101), Plan{}), want: ErrInvalid},
		{name: "name of 101 multi-byte characters", cmd: newOrg("org-c", strings.Repeat("é", 101), Plan{}), want: ErrInvalid},
		{name: "negative maxAgents", cmd: newOrg("org-c", "Gamma", Plan{MaxAgents: -1}), want: ErrInvalid},
		{name: "negative maxRunning", cmd: newOrg("org-c", "Gamma", Plan{MaxRunning: -1}), want: ErrInvalid},
		{name: "default model", cmd: &OrgCreate{Org: Org{ID: "org-c", Name: "Gamma", DefaultModel: "anthropic/claude-sonnet-4-6", CreatedAt: testTime}},
			check: func(t *testing.T, _, s *State, _ uint64) {
				if o := orgOf(t, s, "org-c"); o.DefaultModel != "anthropic/claude-sonnet-4-6" {
					t.Errorf("org = %+v", o)
				}
			}},
		{name: "default model without a provider", cmd: &OrgCreate{Org: Org{ID: "org-c", Name: "Gamma", DefaultModel: "claude", CreatedAt: testTime}}, want: ErrInvalid},
		{name: "default model with a space", cmd: &OrgCreate{Org: Org{ID: "org-c", Name: "Gamma", DefaultModel: "a/b c", CreatedAt: testTime}}, want: ErrInvalid},
		{name: "id taken", cmd: newOrg("org-a", "Gamma", Plan{}), want: ErrAlreadyExists},
		{name: "name taken", cmd: newOrg("org-c", "Acme", Plan{}), want: ErrAlreadyExists},
	})
}

func TestApplyOrgUpdate(t *testing.T) {
	runFSMCases(t, tenantBase(), []fsmCase{
		{name: "rename", cmd: &OrgUpdate{ID: "org-a", Name: strPtr("Acme Corp")}, check: func(t *testing.T, before, s *State, index uint64) {
			o := orgOf(t, s, "org-a")
			if o.Name != "Acme Corp" || o.Plan != orgOf(t, before, "org-a").Plan {
				t.Errorf("org = %+v", o)
			}
			wantIndexes(t, "org", o.CreateIndex, o.ModifyIndex, orgOf(t, before, "org-a").CreateIndex, index)
			if old, _ := s.OrgByName("Acme"); old != nil {
				t.Errorf("old name still resolves to %+v", old)
			}
			if n, _ := s.OrgByName("Acme Corp"); n == nil || n.ID != "org-a" {
				t.Errorf("OrgByName(new) = %+v", n)
			}
		}},
		{name: "rename to its own name", cmd: &OrgUpdate{ID: "org-a", Name: strPtr("Acme")}},
		{name: "plan", cmd: &OrgUpdate{ID: "org-b", Plan: &Plan{MaxAgents: 7, MaxRunning: 2}}, check: func(t *testing.T, _, s *State, index uint64) {
			if o := orgOf(t, s, "org-b"); o.Plan != (Plan{MaxAgents: 7, MaxRunning: 2}) || o.Name != "Beta" || o.ModifyIndex != index {
				t.Errorf("org = %+v", o)
			}
		}},
		{
			name: "plan lowered below current use",
			setup: []Command{
				newNode("node-1", NodeCapacity{}),
				newAgent("a1", "org-a", "node-1", 10001),
				newAgent("a2", "org-a", "node-1", 10002),
			},
			cmd: &OrgUpdate{ID: "org-a", Plan: &Plan{MaxAgents: 1, MaxRunning: 1}},
			check: func(t *testing.T, _, s *State, _ uint64) {
				if agents, _ := s.AgentsByOrg("org-a"); len(agents) != 2 {
					t.Errorf("org-a has %d agents after lowering its plan, want both kept", len(agents))
				}
			},
		},
		{name: "default model", cmd: &OrgUpdate{ID: "org-a", DefaultModel: strPtr("agenthost/offline")}, check: func(t *testing.T, _, s *State, index uint64) {
			if o := orgOf(t, s, "org-a"); o.DefaultModel != "agenthost/offline" || o.Name != "Acme" || o.ModifyIndex != index {
				t.Errorf("org = %+v", o)
			}
		}},
		{name: "bad default model", cmd: &OrgUpdate{ID: "org-a", DefaultModel: strPtr("nope")}, want: ErrInvalid},
		{name: "unknown org", cmd: &OrgUpdate{ID: "org-x", Name: strPtr("X")}, want: ErrNotFound},
		{name: "nothing to change", cmd: &OrgUpdate{ID: "org-a"}, want: ErrInvalid},
		{name: "name taken by another org", cmd: &OrgUpdate{ID: "org-a", Name: strPtr("Beta")}, want: ErrAlreadyExists},
		{name: "empty name", cmd: &OrgUpdate{ID: "org-a", Name: strPtr("")}, want: ErrInvalid},
		{name: "name of 101 characters", cmd: &OrgUpdate{ID: "org-a", Name: strPtr(strings.Repeat("x", 101))}, want: ErrInvalid},
		{name: "negative plan", cmd: &OrgUpdate{ID: "org-a", Plan: &Plan{MaxRunning: -1}}, want: ErrInvalid},
		{name: "valid plan with invalid name", cmd: &OrgUpdate{ID: "org-a", Name: strPtr(""), Plan: &Plan{MaxAgents: 1}}, want: ErrInvalid},
	})
}

func TestApplyOrgDelete(t *testing.T) {
	withAgentOf := func(org string, mods ...func(*Agent)) []Command {
		return []Command{newNode("node-1", NodeCapacity{}), newAgent("a1", org, "node-1", 10001, mods...)}
	}
	runFSMCases(t, tenantBase(), []fsmCase{
		{name: "cascades to tokens, scopes, secrets and idempotency records", cmd: &OrgDelete{ID: "org-a"}, check: func(t *testing.T, before, s *State, _ uint64) {
			if o := orgOf(t, s, "org-a"); o != nil {
				t.Fatalf("org still there: %+v", o)
			}
			if o, _ := s.OrgByName("Acme"); o != nil {
				t.Errorf("OrgByName still finds %+v", o)
			}
			if toks, _ := s.TokensByOrg("org-a"); len(toks) != 0 {
				t.Errorf("tokens left: %d", len(toks))
			}
			if tok, _ := s.TokenByHash(tokenHash("tok-a1")); tok != nil {
				t.Errorf("token hash still resolves: %+v", tok)
			}
			if scopes, _ := s.ScopesByOrg("org-a"); len(scopes) != 0 {
				t.Errorf("scopes left: %d", len(scopes))
			}
			if sc, _ := s.ScopeByName("org-a", "dev"); sc != nil {
				t.Errorf("scope name still resolves: %+v", sc)
			}
			if n := len(secretsOf(t, s, "org-a", "")) + len(secretsOf(t, s, "org-a", "sc-a1")); n != 0 {
				t.Errorf("secrets left: %d", n)
			}
			if r, _ := s.Idempotency("org-a", "k1"); r != nil {
				t.Errorf("idempotency record left: %+v", r)
			}
			// Everything of org-b is untouched.
			if tok := tokenOf(t, s, "tok-b1"); tok == nil {
				t.Errorf("org-b's token was deleted")
			}
			if sc := scopeOf(t, s, "org-b", "sc-b1"); sc == nil {
				t.Errorf("org-b's scope was deleted")
			}
			if n := len(secretsOf(t, s, "org-b", "")) + len(secretsOf(t, s, "org-b", "sc-b1")); n != 2 {
				t.Errorf("org-b has %d secrets, want 2", n)
			}
			if r, _ := s.Idempotency("org-b", "k1"); r == nil {
				t.Errorf("org-b's idempotency record was deleted")
			}
		}},
		{name: "refused while it owns a running agent", setup: withAgentOf("org-a"), cmd: &OrgDelete{ID: "org-a"}, want: ErrConflict},
		{name: "refused while it owns a stopped agent", setup: withAgentOf("org-a", stopped), cmd: &OrgDelete{ID: "org-a"}, want: ErrConflict},
		{name: "accepted once its agents are deleted", setup: append(withAgentOf("org-a"), &AgentDelete{ID: "a1"}), cmd: &OrgDelete{ID: "org-a"}},
		{name: "another org's agents do not matter", setup: withAgentOf("org-b"), cmd: &OrgDelete{ID: "org-a"}},
		{name: "unknown org", cmd: &OrgDelete{ID: "org-x"}, want: ErrNotFound},
	})
}

func TestApplyTokenCreate(t *testing.T) {
	// token is a valid tenant token of org-a changed by mod.
	token := func(mod func(*Token)) *TokenCreate {
		c := newToken("tok-new", "org-a", RoleTenant)
		mod(&c.Token)
		return c
	}
	runFSMCases(t, tenantBase(), []fsmCase{
		{name: "tenant token", cmd: newToken("tok-new", "org-a", RoleTenant), check: func(t *testing.T, _, s *State, index uint64) {
			tok, err := s.TokenByHash(tokenHash("tok-new"))
			if err != nil || tok == nil || tok.ID != "tok-new" || tok.OrgID != "org-a" || tok.Role != RoleTenant || tok.Last4 != "-new" {
				t.Fatalf("TokenByHash = %+v, %v", tok, err)
			}
			wantIndexes(t, "token", tok.CreateIndex, tok.ModifyIndex, index, index)
		}},
		{name: "operator token without an org", cmd: newToken("tok-op2", "", RoleOperator)},
		{name: "operator token of an org", cmd: newToken("tok-op2", "org-b", RoleOperator)},
		{name: "operator token of an unknown org", cmd: newToken("tok-new", "org-x", RoleOperator), want: ErrNotFound},
		{name: "tenant token without an org", cmd: newToken("tok-new", "", RoleTenant), want: ErrNotFound},
		{name: "tenant token of an unknown org", cmd: newToken("tok-new", "org-x", RoleTenant), want: ErrNotFound},
		{name: "unknown role", cmd: newToken("tok-new", "org-a", "admin"), want: ErrInvalid},
		{name: "empty role", cmd: newToken("tok-new", "org-a", ""), want: ErrInvalid},
		{name: "empty id", cmd: token(func(tok *Token) { tok.ID = "" }), want: ErrInvalid},
		{name: "hash of 31 bytes", cmd: token(func(tok *Token) { tok.Hash = tok.Hash[:31] }), want: ErrInvalid},
		{name: "hash of 33 bytes", cmd: token(func(tok *Token) { tok.Hash = append(tok.Hash, 0) }), want: ErrInvalid},
		{name: "no hash", cmd: token(func(tok *Token) { tok.Hash = nil }), want: ErrInvalid},
		{name: "id taken", cmd: token(func(tok *Token) { tok.ID = "tok-a1" }), want: ErrAlreadyExists},
		{name: "hash taken", cmd: token(func(tok *Token) { tok.Hash = tokenHash("tok-a1") }), want: ErrAlreadyExists},
		{name: "hash taken by a token of another org", cmd: token(func(tok *Token) { tok.Hash = tokenHash("tok-b1") }), want: ErrAlreadyExists},
	})
}

func TestApplyTokenRevoke(t *testing.T) {
	runFSMCases(t, tenantBase(), []fsmCase{
		{name: "accepted", cmd: &TokenRevoke{ID: "tok-a1"}, check: func(t *testing.T, _, s *State, _ uint64) {
			if tok := tokenOf(t, s, "tok-a1"); tok != nil {
				t.Errorf("token still there: %+v", tok)
			}
			if tok, _ := s.TokenByHash(tokenHash("tok-a1")); tok != nil {
				t.Errorf("hash still resolves: %+v", tok)
			}
			if toks, _ := s.TokensByOrg("org-a"); len(toks) != 1 || toks[0].ID != "tok-a2" {
				t.Errorf("org-a tokens = %+v, want only tok-a2", toks)
			}
		}},
		{name: "unknown token", cmd: &TokenRevoke{ID: "tok-x"}, want: ErrNotFound},
		{name: "revoked twice", setup: []Command{&TokenRevoke{ID: "tok-a1"}}, cmd: &TokenRevoke{ID: "tok-a1"}, want: ErrNotFound},
	})
}

func TestApplyTokenTouch(t *testing.T) {
	later := testTime.Add(2 * time.Hour)
	touched := func(id string, at time.Time) *TokenTouch {
		return &TokenTouch{LastUsed: map[string]time.Time{id: at}}
	}
	runFSMCases(t, tenantBase(), []fsmCase{
		{name: "newer time recorded in UTC", cmd: touched("tok-a1", later.In(time.FixedZone("CEST", 2*3600))), check: func(t *testing.T, before, s *State, index uint64) {
			tok := tokenOf(t, s, "tok-a1")
			if !tok.LastUsedAt.Equal(later) || tok.LastUsedAt.Location() != time.UTC {
				t.Errorf("LastUsedAt = %v, want %v in UTC", tok.LastUsedAt, later)
			}
			wantIndexes(t, "token", tok.CreateIndex, tok.ModifyIndex, tokenOf(t, before, "tok-a1").CreateIndex, index)
		}},
		{name: "older time ignored", setup: []Command{touched("tok-a1", later)}, cmd: touched("tok-a1", later.Add(-time.Minute)), check: func(t *testing.T, before, s *State, _ uint64) {
			sameHash(t, before, s)
			if tok := tokenOf(t, s, "tok-a1"); !tok.LastUsedAt.Equal(later) {
				t.Errorf("LastUsedAt = %v, want %v kept", tok.LastUsedAt, later)
			}
		}},
		{name: "same time ignored", setup: []Command{touched("tok-a1", later)}, cmd: touched("tok-a1", later), check: func(t *testing.T, before, s *State, _ uint64) {
			sameHash(t, before, s)
		}},
		{name: "unknown ids skipped, known ones recorded", cmd: &TokenTouch{LastUsed: map[string]time.Time{
			"tok-gone": later, "tok-a1": later, "tok-b1": later.Add(time.Second),
		}}, check: func(t *testing.T, _, s *State, index uint64) {
			for id, at := range map[string]time.Time{"tok-a1": later, "tok-b1": later.Add(time.Second)} {
				if tok := tokenOf(t, s, id); !tok.LastUsedAt.Equal(at) || tok.ModifyIndex != index {
					t.Errorf("%s: LastUsedAt %v ModifyIndex %d, want %v %d", id, tok.LastUsedAt, tok.ModifyIndex, at, index)
				}
			}
			if tok := tokenOf(t, s, "tok-gone"); tok != nil {
				t.Errorf("touch created token %+v", tok)
			}
		}},
		{name: "only unknown ids", cmd: touched("tok-gone", later), check: func(t *testing.T, before, s *State, _ uint64) {
			sameHash(t, before, s)
		}},
		{name: "empty batch", cmd: &TokenTouch{}, check: func(t *testing.T, before, s *State, _ uint64) {
			sameHash(t, before, s)
		}},
	})
}

// TestApplyTokenTouchKeepsStateSerializable: every accepted command must
// leave a state that can be hashed and snapshotted. A last-used time that is
// valid JSON in its own zone (9999-12-31T23:59:59-01:00) lies in year 10000
// once converted to UTC, which encoding/json refuses to marshal.
func TestApplyTokenTouchKeepsStateSerializable(t *testing.T) {
	for _, at := range []time.Time{
		time.Date(9999, 12, 31, 23, 59, 59, 0, time.FixedZone("", -3600)),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.FixedZone("", 3600)),
	} {
		t.Run(at.String(), func(t *testing.T) {
			f := newTestFSM(t)
			f.mustApply(tenantBase()...)
			before := f.hash()
			_, err := f.apply(&TokenTouch{LastUsed: map[string]time.Time{"tok-a1": at}})
			if _, herr := f.state().Hash(); herr != nil {
				t.Fatalf("touch at %v accepted (err=%v) but the state no longer hashes: %v", at, err, herr)
			}
			if err != nil && f.hash() != before {
				t.Fatalf("refused touch changed the state")
			}
			snapshotBytes(t, f.fsm)
		})
	}
}

func TestApplyScopeCreate(t *testing.T) {
	created := testTime.Add(time.Minute)
	runFSMCases(t, tenantBase(), []fsmCase{
		{name: "accepted", cmd: &ScopeCreate{Scope: Scope{ID: "sc-new", OrgID: "org-a", Name: "prod", Description: "production", CreatedAt: created}}, check: func(t *testing.T, _, s *State, index uint64) {
			sc, err := s.ScopeByName("org-a", "prod")
			if err != nil || sc == nil || sc.ID != "sc-new" || sc.Description != "production" {
				t.Fatalf("ScopeByName = %+v, %v", sc, err)
			}
			if !sc.UpdatedAt.Equal(created) {
				t.Errorf("UpdatedAt = %v, want CreatedAt %v", sc.UpdatedAt, created)
			}
			wantIndexes(t, "scope", sc.CreateIndex, sc.ModifyIndex, index, index)
		}},
		{name: "same name in another org", setup: []Command{newScope("sc-a2", "org-a", "staging")}, cmd: newScope("sc-b2", "org-b", "staging")},
		{name: "name taken in the org", cmd: newScope("sc-new", "org-a", "dev"), want: ErrAlreadyExists},
		{name: "id taken by another org's scope", cmd: newScope("sc-b1", "org-a", "other"), want: ErrAlreadyExists},
		{name: "empty id", cmd: newScope("", "org-a", "prod"), want: ErrInvalid},
		{name: "empty name", cmd: newScope("sc-new", "org-a", ""), want: ErrInvalid},
		{name: "name of 101 characters", cmd: newScope("sc-new", "org-a", strings.Repeat("ß", 101)), want: ErrInvalid},
		{name: "name of 100 characters", cmd: newScope("sc-new", "org-a", strings.Repeat("ß", 100))},
		{name: "description of 1000 multi-byte characters", cmd: &ScopeCreate{Scope: Scope{ID: "sc-new", OrgID: "org-a", Name: "prod", Description: strings.Repeat("日", 1000)}}},
		{name: "description of 1001 characters", cmd: &ScopeCreate{Scope: Scope{ID: "sc-new", OrgID: "org-a", Name: "prod", Description: strings.Repeat("d", 1001)}}, want: ErrInvalid},
		{name: "unknown org", cmd: newScope("sc-new", "org-x", "prod"), want: ErrNotFound},
	})
}

func TestApplyScopeUpdate(t *testing.T) {
	updated := testTime.Add(time.Hour)
	runFSMCases(t, tenantBase(), []fsmCase{
		{name: "rename", cmd: &ScopeUpdate{ID: "sc-a1", OrgID: "org-a", Name: strPtr("development"), UpdatedAt: updated}, check: func(t *testing.T, before, s *State, index uint64) {
			old := scopeOf(t, before, "org-a", "sc-a1")
			sc := scopeOf(t, s, "org-a", "sc-a1")
			if sc.Name != "development" || sc.Description != old.Description || !sc.UpdatedAt.Equal(updated) || !sc.CreatedAt.Equal(old.CreatedAt) {
				t.Errorf("scope = %+v", sc)
			}
			wantIndexes(t, "scope", sc.CreateIndex, sc.ModifyIndex, old.CreateIndex, index)
			if gone, _ := s.ScopeByName("org-a", "dev"); gone != nil {
				t.Errorf("old name still resolves")
			}
			if byName, _ := s.ScopeByName("org-a", "development"); byName == nil || byName.ID != "sc-a1" {
				t.Errorf("new name resolves to %+v", byName)
			}
		}},
		{name: "description only", cmd: &ScopeUpdate{ID: "sc-a1", OrgID: "org-a", Description: strPtr(""), UpdatedAt: updated}, check: func(t *testing.T, _, s *State, _ uint64) {
			if sc := scopeOf(t, s, "org-a", "sc-a1"); sc.Name != "dev" || sc.Description != "" {
				t.Errorf("scope = %+v", sc)
			}
		}},
		{name: "rename to its own name", cmd: &ScopeUpdate{ID: "sc-a1", OrgID: "org-a", Name: strPtr("dev")}},
		{name: "name used in another org", setup: []Command{newScope("sc-b2", "org-b", "prod")}, cmd: &ScopeUpdate{ID: "sc-a1", OrgID: "org-a", Name: strPtr("prod")}},
		{name: "nothing to change", cmd: &ScopeUpdate{ID: "sc-a1", OrgID: "org-a", UpdatedAt: updated}, want: ErrInvalid},
		{name: "another org's scope", cmd: &ScopeUpdate{ID: "sc-b1", OrgID: "org-a", Name: strPtr("mine")}, want: ErrNotFound},
		{name: "unknown scope", cmd: &ScopeUpdate{ID: "sc-x", OrgID: "org-a", Name: strPtr("x")}, want: ErrNotFound},
		{name: "name taken in the org", setup: []Command{newScope("sc-a2", "org-a", "prod")}, cmd: &ScopeUpdate{ID: "sc-a1", OrgID: "org-a", Name: strPtr("prod")}, want: ErrAlreadyExists},
		{name: "empty name", cmd: &ScopeUpdate{ID: "sc-a1", OrgID: "org-a", Name: strPtr("")}, want: ErrInvalid},
		{name: "description of 1001 characters", cmd: &ScopeUpdate{ID: "sc-a1", OrgID: "org-a", Description: strPtr(strings.Repeat("d", 1001))}, want: ErrInvalid},
	})
}

func TestApplyScopeDelete(t *testing.T) {
	agentsInScope := []Command{
		newNode("node-1", NodeCapacity{}),
		newAgent("a1", "org-a", "node-1", 10001, inScope("sc-a1")),
		newAgent("a2", "org-a", "node-1", 10002, inScope("sc-a1"), stopped),
		newAgent("a3", "org-a", "node-1", 10003),
		newScope("sc-a2", "org-a", "other"),
		newAgent("a4", "org-a", "node-1", 10004, inScope("sc-a2")),
		newSecret("sec-a2", "org-a", "sc-a2", "DB_URL", "other-db"),
	}
	runFSMCases(t, tenantBase(), []fsmCase{
		{name: "agents and secrets move to org level; the org-level secret wins a clash", setup: agentsInScope, cmd: &ScopeDelete{ID: "sc-a1", OrgID: "org-a"}, check: func(t *testing.T, before, s *State, index uint64) {
			if sc := scopeOf(t, s, "org-a", "sc-a1"); sc != nil {
				t.Fatalf("scope still there")
			}
			if sc, _ := s.ScopeByName("org-a", "dev"); sc != nil {
				t.Errorf("scope name still resolves")
			}
			for _, id := range []string{"a1", "a2"} {
				if a := agentOf(t, s, id); a.ScopeID != "" || a.ModifyIndex != index {
					t.Errorf("agent %s: scope %q ModifyIndex %d, want org level at %d", id, a.ScopeID, a.ModifyIndex, index)
				}
			}
			if a := agentOf(t, s, "a4"); a.ScopeID != "sc-a2" {
				t.Errorf("agent of another scope moved: %+v", a)
			}
			if left, _ := s.AgentsByScope("sc-a1"); len(left) != 0 {
				t.Errorf("AgentsByScope still lists %d agents", len(left))
			}
			// API_KEY clashed: the org-level value stays, the scoped copy is gone.
			api := secretOf(t, s, "org-a", "", "API_KEY")
			if api.ID != "sec-a-org" || string(api.Ciphertext) != "org-value" || api.ModifyIndex != secretOf(t, before, "org-a", "", "API_KEY").ModifyIndex {
				t.Errorf("org-level API_KEY = %+v, want it untouched", api)
			}
			// DB_URL did not clash: it moved, keeping its id and CreateIndex.
			db := secretOf(t, s, "org-a", "", "DB_URL")
			oldDB := secretOf(t, before, "org-a", "sc-a1", "DB_URL")
			if db == nil || db.ID != "sec-a-db" || string(db.Ciphertext) != "db-value" {
				t.Fatalf("moved DB_URL = %+v", db)
			}
			wantIndexes(t, "moved secret", db.CreateIndex, db.ModifyIndex, oldDB.CreateIndex, index)
			if got := secretsOf(t, s, "org-a", "sc-a1"); len(got) != 0 {
				t.Errorf("scope still has %d secrets", len(got))
			}
			if got := secretsOf(t, s, "org-a", ""); len(got) != 2 {
				t.Errorf("org level has %d secrets, want API_KEY and DB_URL", len(got))
			}
			if sec := secretOf(t, s, "org-a", "sc-a2", "DB_URL"); sec == nil || string(sec.Ciphertext) != "other-db" {
				t.Errorf("another scope's secret changed: %+v", sec)
			}
		}},
		{name: "empty scope", setup: []Command{newScope("sc-a9", "org-a", "empty")}, cmd: &ScopeDelete{ID: "sc-a9", OrgID: "org-a"}},
		{name: "another org's scope", cmd: &ScopeDelete{ID: "sc-b1", OrgID: "org-a"}, want: ErrNotFound},
		{name: "unknown scope", cmd: &ScopeDelete{ID: "sc-x", OrgID: "org-a"}, want: ErrNotFound},
	})
}

func TestApplySecretPut(t *testing.T) {
	withKey := func(key string) *SecretPut { return newSecret("sec-new", "org-a", "", key, "v") }
	runFSMCases(t, tenantBase(), []fsmCase{
		{name: "new org-level secret", cmd: &SecretPut{Secret: Secret{ID: "sec-new", OrgID: "org-a", Key: "TOKEN", Ciphertext: []byte("c"), KeyID: "k1", CreatedAt: testTime}}, check: func(t *testing.T, _, s *State, index uint64) {
			sec := secretOf(t, s, "org-a", "", "TOKEN")
			if sec == nil || sec.ID != "sec-new" || string(sec.Ciphertext) != "c" || !sec.UpdatedAt.Equal(testTime) {
				t.Fatalf("secret = %+v", sec)
			}
			wantIndexes(t, "secret", sec.CreateIndex, sec.ModifyIndex, index, index)
		}},
		{name: "new scoped secret beside an org-level one with the same key", cmd: newSecret("sec-new", "org-a", "sc-a1", "TOKEN", "s"), setup: []Command{newSecret("sec-org", "org-a", "", "TOKEN", "o")}, check: func(t *testing.T, _, s *State, _ uint64) {
			if sec := secretOf(t, s, "org-a", "sc-a1", "TOKEN"); sec == nil || string(sec.Ciphertext) != "s" {
				t.Errorf("scoped = %+v", sec)
			}
			if sec := secretOf(t, s, "org-a", "", "TOKEN"); sec == nil || string(sec.Ciphertext) != "o" {
				t.Errorf("org-level = %+v", sec)
			}
		}},
		{name: "put twice keeps id and creation, replaces the ciphertext", cmd: &SecretPut{Secret: Secret{
			ID: "sec-retry", OrgID: "org-a", Key: "API_KEY", Ciphertext: []byte("v2"), KeyID: "k2",
			CreatedAt: testTime.Add(time.Hour), UpdatedAt: testTime.Add(time.Hour),
		}}, check: func(t *testing.T, before, s *State, index uint64) {
			old := secretOf(t, before, "org-a", "", "API_KEY")
			sec := secretOf(t, s, "org-a", "", "API_KEY")
			if sec.ID != old.ID || !sec.CreatedAt.Equal(old.CreatedAt) {
				t.Errorf("id, CreatedAt = %s, %v; want %s, %v kept", sec.ID, sec.CreatedAt, old.ID, old.CreatedAt)
			}
			if string(sec.Ciphertext) != "v2" || sec.KeyID != "k2" || !sec.UpdatedAt.Equal(testTime.Add(time.Hour)) {
				t.Errorf("secret = %+v, want ciphertext v2 sealed by k2", sec)
			}
			wantIndexes(t, "secret", sec.CreateIndex, sec.ModifyIndex, old.CreateIndex, index)
			if other := secretOf(t, s, "org-a", "sc-a1", "API_KEY"); !bytes.Equal(other.Ciphertext, []byte("scoped-value")) {
				t.Errorf("scoped copy changed: %+v", other)
			}
		}},
		{name: "key of digits and underscores", cmd: withKey("_9_A")},
		{name: "lower-case key", cmd: withKey("api_key"), want: ErrInvalid},
		{name: "key with a dash", cmd: withKey("API-KEY"), want: ErrInvalid},
		{name: "key with a space", cmd: withKey("API KEY"), want: ErrInvalid},
		{name: "key with a trailing newline", cmd: withKey("API_KEY\n"), want: ErrInvalid},
		{name: "non-ASCII key", cmd: withKey("ÄPI"), want: ErrInvalid},
		{name: "empty key", cmd: withKey(""), want: ErrInvalid},
		{name: "no ciphertext", cmd: newSecret("sec-new", "org-a", "", "TOKEN", ""), want: ErrInvalid},
		{name: "no key id", cmd: &SecretPut{Secret: Secret{ID: "sec-new", OrgID: "org-a", Key: "TOKEN", Ciphertext: []byte("c")}}, want: ErrInvalid},
		{name: "empty id", cmd: newSecret("", "org-a", "", "TOKEN", "c"), want: ErrInvalid},
		{name: "unknown org", cmd: newSecret("sec-new", "org-x", "", "TOKEN", "c"), want: ErrNotFound},
		{name: "another org's scope", cmd: newSecret("sec-new", "org-a", "sc-b1", "TOKEN", "c"), want: ErrNotFound},
		{name: "unknown scope", cmd: newSecret("sec-new", "org-a", "sc-x", "TOKEN", "c"), want: ErrNotFound},
		{name: "id of another secret", cmd: newSecret("sec-b-org", "org-a", "", "TOKEN", "c"), want: ErrAlreadyExists},
	})
}

func TestApplySecretDelete(t *testing.T) {
	runFSMCases(t, tenantBase(), []fsmCase{
		{name: "org-level, keeping the scoped copy", cmd: &SecretDelete{OrgID: "org-a", Key: "API_KEY"}, check: func(t *testing.T, _, s *State, _ uint64) {
			if sec := secretOf(t, s, "org-a", "", "API_KEY"); sec != nil {
				t.Errorf("org-level secret still there")
			}
			if sec := secretOf(t, s, "org-a", "sc-a1", "API_KEY"); sec == nil {
				t.Errorf("scoped copy deleted too")
			}
		}},
		{name: "scoped, keeping the org-level one", cmd: &SecretDelete{OrgID: "org-a", ScopeID: "sc-a1", Key: "API_KEY"}, check: func(t *testing.T, _, s *State, _ uint64) {
			if sec := secretOf(t, s, "org-a", "sc-a1", "API_KEY"); sec != nil {
				t.Errorf("scoped secret still there")
			}
			if sec := secretOf(t, s, "org-a", "", "API_KEY"); sec == nil {
				t.Errorf("org-level secret deleted too")
			}
		}},
		{name: "unknown key", cmd: &SecretDelete{OrgID: "org-a", Key: "NOPE"}, want: ErrNotFound},
		{name: "key only in a scope, asked at org level", cmd: &SecretDelete{OrgID: "org-a", Key: "DB_URL"}, want: ErrNotFound},
		{name: "another org's scope", cmd: &SecretDelete{OrgID: "org-b", ScopeID: "sc-a1", Key: "API_KEY"}, want: ErrNotFound},
	})
}

func TestApplyIdempotencyPut(t *testing.T) {
	runFSMCases(t, tenantBase(), []fsmCase{
		{name: "new record", cmd: newIdempotency("org-a", "k2", testTime.Add(time.Hour)), check: func(t *testing.T, _, s *State, index uint64) {
			r, err := s.Idempotency("org-a", "k2")
			if err != nil || r == nil || r.StatusCode != 201 || string(r.Body) != `{"id":"k2"}` || r.CreateIndex != index {
				t.Fatalf("record = %+v, %v", r, err)
			}
		}},
		{name: "first answer wins", cmd: &IdempotencyPut{Record: IdempotencyRecord{OrgID: "org-a", Key: "k1", StatusCode: 500, Body: []byte("second")}}, check: func(t *testing.T, before, s *State, _ uint64) {
			sameHash(t, before, s)
			if r, _ := s.Idempotency("org-a", "k1"); r.StatusCode != 201 {
				t.Errorf("record replaced: %+v", r)
			}
		}},
		{name: "same key in another org", cmd: newIdempotency("org-b", "k2", testTime), check: func(t *testing.T, _, s *State, _ uint64) {
			if r, _ := s.Idempotency("org-a", "k2"); r != nil {
				t.Errorf("record leaked to org-a")
			}
		}},
		{name: "no org", cmd: newIdempotency("", "k2", testTime), want: ErrInvalid},
		{name: "no key", cmd: newIdempotency("org-a", "", testTime), want: ErrInvalid},
	})
}

func TestApplyIdempotencyDelete(t *testing.T) {
	records := []Command{
		newIdempotency("org-a", "old", testTime.Add(-time.Hour)),
		newIdempotency("org-b", "old", testTime.Add(-time.Nanosecond)),
		newIdempotency("org-a", "edge", testTime),
	}
	runFSMCases(t, tenantBase(), []fsmCase{
		{name: "removes only expired records", setup: records, cmd: &IdempotencyDelete{Before: testTime}, check: func(t *testing.T, _, s *State, _ uint64) {
			for _, k := range []struct {
				org, key string
				kept     bool
			}{{"org-a", "old", false}, {"org-b", "old", false}, {"org-a", "edge", true}, {"org-a", "k1", true}, {"org-b", "k1", true}} {
				if r, _ := s.Idempotency(k.org, k.key); (r != nil) != k.kept {
					t.Errorf("%s/%s kept = %v, want %v", k.org, k.key, r != nil, k.kept)
				}
			}
		}},
		{name: "nothing expired", setup: records, cmd: &IdempotencyDelete{Before: testTime.Add(-2 * time.Hour)}, check: func(t *testing.T, before, s *State, _ uint64) {
			sameHash(t, before, s)
		}},
	})
}

func TestApplyClusterConfigSet(t *testing.T) {
	valid := ClusterConfig{PortRangeStart: 20000, PortRangeEnd: 20100, SchedulerAlgorithm: AlgorithmSpread, ReschedulePolicy: RescheduleFail}
	with := func(mod func(*ClusterConfig)) *ClusterConfigSet {
		c := valid
		mod(&c)
		return &ClusterConfigSet{Config: c}
	}
	runFSMCases(t, nil, []fsmCase{
		{name: "accepted", cmd: &ClusterConfigSet{Config: valid}, check: func(t *testing.T, before, s *State, index uint64) {
			if old, _ := before.ClusterConfig(); old != DefaultClusterConfig() {
				t.Errorf("config before any set = %+v, want the default", old)
			}
			want := valid
			want.ModifyIndex = index
			if got, err := s.ClusterConfig(); err != nil || got != want {
				t.Errorf("ClusterConfig = %+v, %v; want %+v", got, err, want)
			}
		}},
		{name: "replaced", setup: []Command{&ClusterConfigSet{Config: DefaultClusterConfig()}}, cmd: &ClusterConfigSet{Config: valid}},
		{name: "range of one port", cmd: with(func(c *ClusterConfig) { c.PortRangeEnd = c.PortRangeStart })},
		{name: "whole port space", cmd: with(func(c *ClusterConfig) { c.PortRangeStart, c.PortRangeEnd = 1, 65535 })},
		{name: "start 0", cmd: with(func(c *ClusterConfig) { c.PortRangeStart = 0 }), want: ErrInvalid},
		{name: "end above 65535", cmd: with(func(c *ClusterConfig) { c.PortRangeEnd = 65536 }), want: ErrInvalid},
		{name: "start after end", cmd: with(func(c *ClusterConfig) { c.PortRangeStart = c.PortRangeEnd + 1 }), want: ErrInvalid},
		{name: "unknown algorithm", cmd: with(func(c *ClusterConfig) { c.SchedulerAlgorithm = "random" }), want: ErrInvalid},
		{name: "no algorithm", cmd: with(func(c *ClusterConfig) { c.SchedulerAlgorithm = "" }), want: ErrInvalid},
		{name: "unknown policy", cmd: with(func(c *ClusterConfig) { c.ReschedulePolicy = "ignore" }), want: ErrInvalid},
		{name: "no policy", cmd: with(func(c *ClusterConfig) { c.ReschedulePolicy = "" }), want: ErrInvalid},
		{name: "invalid after a valid one", setup: []Command{&ClusterConfigSet{Config: valid}}, cmd: with(func(c *ClusterConfig) { c.PortRangeStart = -5 }), want: ErrInvalid},
		{name: "conditional on the config read", setup: []Command{&ClusterConfigSet{Config: DefaultClusterConfig()}},
			cmd: &ClusterConfigSet{Config: valid, ExpectedModifyIndex: 1}},
		{name: "conditional, changed since read", setup: []Command{&ClusterConfigSet{Config: DefaultClusterConfig()}, &ClusterConfigSet{Config: DefaultClusterConfig()}},
			cmd: &ClusterConfigSet{Config: valid, ExpectedModifyIndex: 1}, want: ErrConflict, check: func(t *testing.T, before, s *State, _ uint64) {
				sameHash(t, before, s)
			}},
		{name: "conditional, never set", cmd: &ClusterConfigSet{Config: valid, ExpectedModifyIndex: 1}, want: ErrConflict},
	})
}

func TestApplyNodeRegister(t *testing.T) {
	base := []Command{
		newNode("node-1", NodeCapacity{CPUMillis: 1000}),
		newNode("node-2", NodeCapacity{}),
	}
	reRegister := &NodeRegister{Node: Node{ID: "node-1", Name: "node-1", Address: "10.0.0.9:7000", Capacity: NodeCapacity{CPUMillis: 8000}, Runtimes: []string{"claude"}}}
	runFSMCases(t, base, []fsmCase{
		{name: "new node is ready whatever the command says", cmd: &NodeRegister{Node: Node{ID: "node-9", Name: "n9", Address: "a:1", Status: NodeDown, CreateIndex: 999}}, check: func(t *testing.T, _, s *State, index uint64) {
			n, err := s.NodeByName("n9")
			if err != nil || n == nil || n.ID != "node-9" || n.Status != NodeReady {
				t.Fatalf("NodeByName = %+v, %v", n, err)
			}
			wantIndexes(t, "node", n.CreateIndex, n.ModifyIndex, index, index)
		}},
		{name: "re-register updates address, capacity and runtimes", cmd: reRegister, check: func(t *testing.T, before, s *State, index uint64) {
			n := nodeOf(t, s, "node-1")
			if n.Address != "10.0.0.9:7000" || n.Capacity.CPUMillis != 8000 || len(n.Runtimes) != 1 || n.Status != NodeReady {
				t.Errorf("node = %+v", n)
			}
			wantIndexes(t, "node", n.CreateIndex, n.ModifyIndex, nodeOf(t, before, "node-1").CreateIndex, index)
		}},
		{name: "draining node stays draining", setup: []Command{setNodeStatus("node-1", NodeDraining)}, cmd: reRegister, check: func(t *testing.T, _, s *State, _ uint64) {
			if n := nodeOf(t, s, "node-1"); n.Status != NodeDraining {
				t.Errorf("status = %s, want draining", n.Status)
			}
		}},
		{name: "down node comes back ready", setup: []Command{setNodeStatus("node-1", NodeDown)}, cmd: reRegister, check: func(t *testing.T, _, s *State, _ uint64) {
			if n := nodeOf(t, s, "node-1"); n.Status != NodeReady {
				t.Errorf("status = %s, want ready", n.Status)
			}
		}},
		{name: "rename frees the old name", cmd: &NodeRegister{Node: Node{ID: "node-1", Name: "renamed", Address: "a:1"}}, check: func(t *testing.T, _, s *State, _ uint64) {
			if n, _ := s.NodeByName("node-1"); n != nil {
				t.Errorf("old name resolves to %+v", n)
			}
		}},
		{name: "name taken by another node", cmd: &NodeRegister{Node: Node{ID: "node-9", Name: "node-1", Address: "a:1"}}, want: ErrAlreadyExists},
		{name: "empty id", cmd: &NodeRegister{Node: Node{Name: "n", Address: "a:1"}}, want: ErrInvalid},
		{name: "empty name", cmd: &NodeRegister{Node: Node{ID: "node-9", Address: "a:1"}}, want: ErrInvalid},
		{name: "empty address", cmd: &NodeRegister{Node: Node{ID: "node-9", Name: "n9"}}, want: ErrInvalid},
		{name: "negative cpu", cmd: newNode("node-9", NodeCapacity{CPUMillis: -1}), want: ErrInvalid},
		{name: "negative memory", cmd: newNode("node-9", NodeCapacity{MemoryMB: -1}), want: ErrInvalid},
		{name: "negative max agents", cmd: newNode("node-9", NodeCapacity{MaxAgents: -1}), want: ErrInvalid},
	})
}

func TestApplyNodeSetStatus(t *testing.T) {
	seen := testTime.Add(time.Minute)
	runFSMCases(t, []Command{newNode("node-1", NodeCapacity{})}, []fsmCase{
		{name: "drain with last-seen in UTC", cmd: &NodeSetStatus{ID: "node-1", Status: NodeDraining, LastSeen: seen.In(time.FixedZone("", -5*3600))}, check: func(t *testing.T, before, s *State, index uint64) {
			n := nodeOf(t, s, "node-1")
			if n.Status != NodeDraining || !n.LastSeen.Equal(seen) || n.LastSeen.Location() != time.UTC {
				t.Errorf("node = %+v", n)
			}
			wantIndexes(t, "node", n.CreateIndex, n.ModifyIndex, nodeOf(t, before, "node-1").CreateIndex, index)
		}},
		{name: "zero last-seen keeps the old one", cmd: setNodeStatus("node-1", NodeDown), check: func(t *testing.T, _, s *State, _ uint64) {
			if n := nodeOf(t, s, "node-1"); n.Status != NodeDown || !n.LastSeen.Equal(testTime) {
				t.Errorf("node = %+v", n)
			}
		}},
		{name: "undrain", setup: []Command{setNodeStatus("node-1", NodeDraining)}, cmd: setNodeStatus("node-1", NodeReady)},
		{name: "unknown node", cmd: setNodeStatus("node-x", NodeDraining), want: ErrNotFound},
		{name: "unknown status", cmd: setNodeStatus("node-1", "gone"), want: ErrInvalid},
		{name: "empty status", cmd: setNodeStatus("node-1", ""), want: ErrInvalid},
		{name: "drain that moves, deadline in UTC", cmd: &NodeSetStatus{ID: "node-1", Status: NodeDraining, Drain: &NodeDrain{Agents: DrainMove, Deadline: seen.In(time.FixedZone("", 3600))}},
			check: func(t *testing.T, _, s *State, _ uint64) {
				if n := nodeOf(t, s, "node-1"); n.Drain == nil || n.Drain.Agents != DrainMove || !n.Drain.Deadline.Equal(seen) || n.Drain.Deadline.Location() != time.UTC {
					t.Errorf("node = %+v drain %+v", n, n.Drain)
				}
			}},
		{name: "undrain clears the drain", setup: []Command{&NodeSetStatus{ID: "node-1", Status: NodeDraining, Drain: &NodeDrain{Agents: DrainStop}}}, cmd: setNodeStatus("node-1", NodeReady),
			check: func(t *testing.T, _, s *State, _ uint64) {
				if n := nodeOf(t, s, "node-1"); n.Drain != nil {
					t.Errorf("drain left after undrain: %+v", n.Drain)
				}
			}},
		{name: "down keeps the drain", setup: []Command{&NodeSetStatus{ID: "node-1", Status: NodeDraining, Drain: &NodeDrain{Agents: DrainStop}}}, cmd: setNodeStatus("node-1", NodeDown),
			check: func(t *testing.T, _, s *State, _ uint64) {
				if n := nodeOf(t, s, "node-1"); n.Drain == nil {
					t.Error("a node that went down forgot its drain")
				}
			}},
		{name: "unknown drain", cmd: &NodeSetStatus{ID: "node-1", Status: NodeDraining, Drain: &NodeDrain{Agents: "evict"}}, want: ErrInvalid},
		{name: "drain without draining", cmd: &NodeSetStatus{ID: "node-1", Status: NodeReady, Drain: &NodeDrain{Agents: DrainKeep}}, want: ErrInvalid},
	})
}

// TestApplyNodeSetStatusKeepsStateSerializable: as for token touches, a
// last-seen time accepted by JSON in its own zone must not leave a state
// that cannot be hashed or snapshotted once converted to UTC.
func TestApplyNodeSetStatusKeepsStateSerializable(t *testing.T) {
	f := newTestFSM(t)
	f.mustApply(newNode("node-1", NodeCapacity{}))
	at := time.Date(9999, 12, 31, 23, 30, 0, 0, time.FixedZone("", -3600))
	before := f.hash()
	_, err := f.apply(&NodeSetStatus{ID: "node-1", Status: NodeReady, LastSeen: at})
	if _, herr := f.state().Hash(); herr != nil {
		t.Fatalf("last-seen %v accepted (err=%v) but the state no longer hashes: %v", at, err, herr)
	}
	if err != nil && f.hash() != before {
		t.Fatalf("refused command changed the state")
	}
	snapshotBytes(t, f.fsm)
}

func TestApplyNodeDelete(t *testing.T) {
	base := []Command{newOrg("org-a", "Acme", Plan{}), newNode("node-1", NodeCapacity{}), newNode("node-2", NodeCapacity{})}
	runFSMCases(t, base, []fsmCase{
		{name: "accepted", cmd: &NodeDelete{ID: "node-1"}, check: func(t *testing.T, _, s *State, _ uint64) {
			if n := nodeOf(t, s, "node-1"); n != nil {
				t.Errorf("node still there")
			}
			if n, _ := s.NodeByName("node-1"); n != nil {
				t.Errorf("name still resolves")
			}
		}},
		{name: "refused while it hosts a running agent", setup: []Command{newAgent("a1", "org-a", "node-1", 10001)}, cmd: &NodeDelete{ID: "node-1"}, want: ErrConflict},
		{name: "refused while it hosts a stopped agent", setup: []Command{newAgent("a1", "org-a", "node-1", 10001, stopped)}, cmd: &NodeDelete{ID: "node-1"}, want: ErrConflict},
		{name: "refused while a down node hosts an agent", setup: []Command{newAgent("a1", "org-a", "node-1", 10001), setNodeStatus("node-1", NodeDown)}, cmd: &NodeDelete{ID: "node-1"}, want: ErrConflict},
		{name: "accepted once its agents are deleted", setup: []Command{newAgent("a1", "org-a", "node-1", 10001), &AgentDelete{ID: "a1"}}, cmd: &NodeDelete{ID: "node-1"}},
		{name: "another node's agents do not matter", setup: []Command{newAgent("a1", "org-a", "node-2", 10001)}, cmd: &NodeDelete{ID: "node-1"}},
		{name: "unknown node", cmd: &NodeDelete{ID: "node-x"}, want: ErrNotFound},
	})
}

func TestApplyAgentCreate(t *testing.T) {
	named := func(name string) func(*Agent) { return func(a *Agent) { a.Name = name } }
	// full fills org-a's plan (3 agents, 2 running) on node-big.
	full := []Command{
		newAgent("a1", "org-a", "node-big", 10001),
		newAgent("a2", "org-a", "node-big", 10002),
		newAgent("a3", "org-a", "node-big", 10003, stopped),
	}
	runFSMCases(t, placementBase(), []fsmCase{
		{name: "running agent", cmd: &AgentCreate{Agent: Agent{
			ID: "a1", OrgID: "org-a", Name: "reviewer", ScopeID: "sc-a1", Runtime: "claude", Model: "m1",
			Resources: Resources{CPUMillis: 1500, MemoryMB: 2048}, Tags: []string{"x"}, Autostart: true,
			Desired: DesiredRunning, Status: StatusProvisioning, NodeID: "node-1", Port: 12345,
			CreatedAt: testTime, CreateIndex: 999, ModifyIndex: 999,
		}}, check: func(t *testing.T, _, s *State, index uint64) {
			a, err := s.AgentByPort(12345)
			if err != nil || a == nil || a.ID != "a1" || a.Name != "reviewer" || a.NodeID != "node-1" || a.Runtime != "claude" {
				t.Fatalf("AgentByPort = %+v, %v", a, err)
			}
			wantIndexes(t, "agent", a.CreateIndex, a.ModifyIndex, index, index)
			if got := allocationOf(t, s, "node-1"); got != (NodeAllocation{CPUMillis: 1500, MemoryMB: 2048, Agents: 1}) {
				t.Errorf("allocation = %+v", got)
			}
			if list, _ := s.AgentsByScope("sc-a1"); len(list) != 1 {
				t.Errorf("AgentsByScope = %d agents", len(list))
			}
			if list, _ := s.AgentsByOrgName("org-a", "reviewer"); len(list) != 1 {
				t.Errorf("AgentsByOrgName = %d agents", len(list))
			}
		}},
		{name: "stopped agent reserves nothing", cmd: newAgent("a1", "org-a", "node-1", 10001, stopped), check: func(t *testing.T, _, s *State, _ uint64) {
			if got := allocationOf(t, s, "node-1"); got != (NodeAllocation{}) {
				t.Errorf("allocation = %+v, want none", got)
			}
		}},

		// Fields.
		{name: "name of 100 characters", cmd: newAgent("a1", "org-a", "node-1", 10001, named(strings.Repeat("n", 100)))},
		{name: "name of 101 characters", cmd: newAgent("a1", "org-a", "node-1", 10001, named(strings.Repeat("n", 101))), want: ErrInvalid},
		{name: "name of 100 three-byte characters", cmd: newAgent("a1", "org-a", "node-1", 10001, named(strings.Repeat("日", 100)))},
		{name: "name of 100 four-byte characters", cmd: newAgent("a1", "org-a", "node-1", 10001, named(strings.Repeat("🤖", 100)))},
		{name: "name of 101 two-byte characters", cmd: newAgent("a1", "org-a", "node-1", 10001, named(strings.Repeat("é", 101))), want: ErrInvalid},
		{name: "empty name", cmd: newAgent("a1", "org-a", "node-1", 10001, named("")), want: ErrInvalid},
		{name: "empty id", cmd: newAgent("", "org-a", "node-1", 10001), want: ErrInvalid},
		{name: "no runtime", cmd: newAgent("a1", "org-a", "node-1", 10001, func(a *Agent) { a.Runtime = "" }), want: ErrInvalid},
		{name: "unknown desired state", cmd: newAgent("a1", "org-a", "node-1", 10001, func(a *Agent) { a.Desired = "paused" }), want: ErrInvalid},
		{name: "unknown status", cmd: newAgent("a1", "org-a", "node-1", 10001, func(a *Agent) { a.Status = "DONE" }), want: ErrInvalid},
		{name: "no status", cmd: newAgent("a1", "org-a", "node-1", 10001, func(a *Agent) { a.Status = "" }), want: ErrInvalid},
		{name: "negative cpu", cmd: newAgent("a1", "org-a", "node-1", 10001, withResources(-1, 0)), want: ErrInvalid},
		{name: "negative memory", cmd: newAgent("a1", "org-a", "node-1", 10001, withResources(0, -1)), want: ErrInvalid},
		{name: "no node", cmd: newAgent("a1", "org-a", "", 10001), want: ErrInvalid},
		{name: "port 0", cmd: newAgent("a1", "org-a", "node-1", 0), want: ErrInvalid},
		{name: "negative port", cmd: newAgent("a1", "org-a", "node-1", -10001), want: ErrInvalid},
		{name: "sealed runtime password", cmd: newAgent("a1", "org-a", "node-1", 10001, withPassword("sealed", "k1"))},
		{name: "sealed runtime password without its key id", cmd: newAgent("a1", "org-a", "node-1", 10001, withPassword("sealed", "")), want: ErrInvalid},
		{name: "key id without a sealed runtime password", cmd: newAgent("a1", "org-a", "node-1", 10001, withPassword("", "k1")), want: ErrInvalid},
		{name: "id taken", setup: []Command{newAgent("a1", "org-b", "node-1", 10001)}, cmd: newAgent("a1", "org-a", "node-1", 10002), want: ErrAlreadyExists},

		// Ownership.
		{name: "unknown org", cmd: newAgent("a1", "org-x", "node-1", 10001), want: ErrNotFound},
		{name: "scope of another org", cmd: newAgent("a1", "org-a", "node-1", 10001, inScope("sc-b1")), want: ErrNotFound},
		{name: "unknown scope", cmd: newAgent("a1", "org-a", "node-1", 10001, inScope("sc-x")), want: ErrNotFound},

		// Plan caps.
		{name: "maxAgents reached", setup: full, cmd: newAgent("a4", "org-a", "node-big", 10004, stopped), want: ErrAgentLimit},
		{name: "maxAgents is checked before maxRunning", setup: full, cmd: newAgent("a4", "org-a", "node-big", 10004), want: ErrAgentLimit},
		{name: "maxAgents counts stopped agents", setup: []Command{
			newAgent("a1", "org-a", "node-big", 10001),
			newAgent("a2", "org-a", "node-big", 10002, stopped),
			newAgent("a3", "org-a", "node-big", 10003, stopped),
		}, cmd: newAgent("a4", "org-a", "node-big", 10004, stopped), want: ErrAgentLimit},
		{name: "maxRunning reached", setup: full[:2], cmd: newAgent("a3", "org-a", "node-big", 10003), want: ErrRunningCap},
		{name: "maxRunning reached, stopped agent accepted", setup: full[:2], cmd: newAgent("a3", "org-a", "node-big", 10003, stopped)},
		{name: "maxRunning does not count stopped agents", setup: []Command{
			newAgent("a1", "org-a", "node-big", 10001),
			newAgent("a2", "org-a", "node-big", 10002, stopped),
		}, cmd: newAgent("a3", "org-a", "node-big", 10003)},
		{name: "deleting an agent frees its plan slot", setup: append(full[:3:3], &AgentDelete{ID: "a1"}), cmd: newAgent("a4", "org-a", "node-big", 10004)},
		{name: "another org's agents do not count", setup: full, cmd: newAgent("b1", "org-b", "node-big", 10004)},
		{name: "lowered plan refuses new agents", setup: []Command{
			newAgent("a1", "org-a", "node-big", 10001),
			&OrgUpdate{ID: "org-a", Plan: &Plan{MaxAgents: 1}},
		}, cmd: newAgent("a2", "org-a", "node-big", 10002, stopped), want: ErrAgentLimit},

		// Ports.
		{name: "first port of the range", cmd: newAgent("a1", "org-a", "node-1", 10000)},
		{name: "last port of the range", cmd: newAgent("a1", "org-a", "node-1", 59999)},
		{name: "port below the range", cmd: newAgent("a1", "org-a", "node-1", 9999), want: ErrPortOutOfRange},
		{name: "port above the range", cmd: newAgent("a1", "org-a", "node-1", 60000), want: ErrPortOutOfRange},
		{name: "port outside a narrowed range", setup: []Command{&ClusterConfigSet{Config: ClusterConfig{PortRangeStart: 20000, PortRangeEnd: 20010, SchedulerAlgorithm: AlgorithmBinpack, ReschedulePolicy: RescheduleReschedule}}}, cmd: newAgent("a1", "org-a", "node-1", 10000), want: ErrPortOutOfRange},
		{name: "port inside a narrowed range", setup: []Command{&ClusterConfigSet{Config: ClusterConfig{PortRangeStart: 20000, PortRangeEnd: 20010, SchedulerAlgorithm: AlgorithmBinpack, ReschedulePolicy: RescheduleReschedule}}}, cmd: newAgent("a1", "org-a", "node-1", 20010)},
		{name: "port held by another agent", setup: []Command{newAgent("b1", "org-b", "node-big", 10001)}, cmd: newAgent("a1", "org-a", "node-1", 10001), want: ErrPortInUse},
		{name: "port held by a stopped agent", setup: []Command{newAgent("b1", "org-b", "node-big", 10001, stopped)}, cmd: newAgent("a1", "org-a", "node-1", 10001), want: ErrPortInUse},
		{name: "stop does not free the port", setup: []Command{newAgent("b1", "org-b", "node-big", 10001), setDesired("b1", DesiredStopped)}, cmd: newAgent("a1", "org-a", "node-1", 10001), want: ErrPortInUse},
		{name: "delete frees the port", setup: []Command{newAgent("b1", "org-b", "node-big", 10001), &AgentDelete{ID: "b1"}}, cmd: newAgent("a1", "org-a", "node-1", 10001), check: func(t *testing.T, _, s *State, _ uint64) {
			if a, _ := s.AgentByPort(10001); a == nil || a.ID != "a1" {
				t.Errorf("AgentByPort = %+v", a)
			}
		}},

		// Node eligibility.
		{name: "draining node", cmd: newAgent("a1", "org-a", "node-2", 10001), want: ErrNodeNotEligible},
		{name: "draining node, stopped agent", cmd: newAgent("a1", "org-a", "node-2", 10001, stopped), want: ErrNodeNotEligible},
		{name: "down node", cmd: newAgent("a1", "org-a", "node-3", 10001), want: ErrNodeNotEligible},
		{name: "unknown node", cmd: newAgent("a1", "org-a", "node-x", 10001), want: ErrNodeNotEligible},
		{name: "node without the runtime", cmd: newAgent("a1", "org-a", "node-1", 10001, func(a *Agent) { a.Runtime = "aider" }), want: ErrNodeNotEligible},
		{name: "node listing no runtimes offers any", cmd: newAgent("a1", "org-a", "node-big", 10001, func(a *Agent) { a.Runtime = "aider" })},
		{name: "undrained node", setup: []Command{setNodeStatus("node-2", NodeReady)}, cmd: newAgent("a1", "org-a", "node-2", 10001)},

		// Node capacity (node-1: 4000 millicores, 4096 MB, 3 agents).
		{name: "cpu exhausted", setup: []Command{newAgent("b1", "org-b", "node-1", 10001, withResources(3500, 0))}, cmd: newAgent("b2", "org-b", "node-1", 10002, withResources(501, 0)), want: ErrNoCapacity},
		{name: "cpu exactly filled", setup: []Command{newAgent("b1", "org-b", "node-1", 10001, withResources(3500, 0))}, cmd: newAgent("b2", "org-b", "node-1", 10002, withResources(500, 0))},
		{name: "memory exhausted", setup: []Command{newAgent("b1", "org-b", "node-1", 10001, withResources(0, 4000))}, cmd: newAgent("b2", "org-b", "node-1", 10002, withResources(0, 97)), want: ErrNoCapacity},
		{name: "memory exactly filled", setup: []Command{newAgent("b1", "org-b", "node-1", 10001, withResources(0, 4000))}, cmd: newAgent("b2", "org-b", "node-1", 10002, withResources(0, 96))},
		{name: "max agents of the node reached", setup: []Command{
			newAgent("b1", "org-b", "node-1", 10001, withResources(0, 0)),
			newAgent("b2", "org-b", "node-1", 10002, withResources(0, 0)),
			newAgent("b3", "org-b", "node-1", 10003, withResources(0, 0)),
		}, cmd: newAgent("b4", "org-b", "node-1", 10004, withResources(0, 0)), want: ErrNoCapacity},
		{name: "stopped agents hold no node capacity", setup: []Command{
			newAgent("b1", "org-b", "node-1", 10001, withResources(4000, 4096), stopped),
			newAgent("b2", "org-b", "node-1", 10002, stopped),
			newAgent("b3", "org-b", "node-1", 10003, stopped),
		}, cmd: newAgent("b4", "org-b", "node-1", 10004, withResources(4000, 4096))},
		{name: "oversized stopped agent is not checked against capacity", cmd: newAgent("b1", "org-b", "node-1", 10001, withResources(1e6, 1e6), stopped)},
		{name: "zero capacity is unlimited", setup: []Command{
			newAgent("b1", "org-b", "node-big", 10001, withResources(1e9, 1e9)),
			newAgent("b2", "org-b", "node-big", 10002, withResources(1e9, 1e9)),
		}, cmd: newAgent("b3", "org-b", "node-big", 10003, withResources(1e9, 1e9))},
	})
}

func TestApplyAgentSetDesired(t *testing.T) {
	base := append(placementBase(),
		newAgent("a1", "org-a", "node-1", 10001, inScope("sc-a1")),
		newAgent("a2", "org-a", "node-1", 10002, stopped),
	)
	runFSMCases(t, base, []fsmCase{
		{name: "stop keeps the port and frees the node", cmd: &AgentSetDesired{ID: "a1", Desired: DesiredStopped, Status: StatusStopped}, check: func(t *testing.T, before, s *State, index uint64) {
			a := agentOf(t, s, "a1")
			if a.Desired != DesiredStopped || a.Status != StatusStopped || a.Port != 10001 {
				t.Errorf("agent = %+v", a)
			}
			wantIndexes(t, "agent", a.CreateIndex, a.ModifyIndex, agentOf(t, before, "a1").CreateIndex, index)
			if holder, _ := s.AgentByPort(10001); holder == nil || holder.ID != "a1" {
				t.Errorf("port 10001 held by %+v, want a1 still", holder)
			}
			if got := allocationOf(t, s, "node-1"); got != (NodeAllocation{}) {
				t.Errorf("allocation = %+v, want none", got)
			}
		}},
		{name: "start a stopped agent", cmd: &AgentSetDesired{ID: "a2", Desired: DesiredRunning, Status: StatusProvisioning}, check: func(t *testing.T, _, s *State, _ uint64) {
			if a := agentOf(t, s, "a2"); a.Desired != DesiredRunning || a.Status != StatusProvisioning {
				t.Errorf("agent = %+v", a)
			}
			if got := allocationOf(t, s, "node-1"); got.Agents != 2 {
				t.Errorf("allocation = %+v, want 2 agents", got)
			}
		}},
		{name: "empty status keeps the observed one", cmd: setDesired("a2", DesiredRunning), check: func(t *testing.T, _, s *State, _ uint64) {
			if a := agentOf(t, s, "a2"); a.Status != StatusStopped {
				t.Errorf("status = %s, want STOPPED kept", a.Status)
			}
		}},
		{name: "start clears the error message", setup: []Command{
			&AgentSetStatus{ID: "a2", Status: StatusError, ErrorMsg: "boom"},
		}, cmd: &AgentSetDesired{ID: "a2", Desired: DesiredRunning, Status: StatusProvisioning}, check: func(t *testing.T, _, s *State, _ uint64) {
			if a := agentOf(t, s, "a2"); a.ErrorMsg != "" {
				t.Errorf("errorMsg = %q, want cleared", a.ErrorMsg)
			}
		}},
		{name: "ERROR status keeps the error message", setup: []Command{
			&AgentSetStatus{ID: "a2", Status: StatusError, ErrorMsg: "boom"},
		}, cmd: &AgentSetDesired{ID: "a2", Desired: DesiredStopped, Status: StatusError}, check: func(t *testing.T, _, s *State, _ uint64) {
			if a := agentOf(t, s, "a2"); a.ErrorMsg != "boom" {
				t.Errorf("errorMsg = %q, want boom kept", a.ErrorMsg)
			}
		}},
		{name: "start beyond maxRunning", setup: []Command{newAgent("a3", "org-a", "node-big", 10003)}, cmd: setDesired("a2", DesiredRunning), want: ErrRunningCap},
		{name: "start after another agent of the org stopped", setup: []Command{
			newAgent("a3", "org-a", "node-big", 10003), setDesired("a3", DesiredStopped),
		}, cmd: setDesired("a2", DesiredRunning)},
		{name: "running again is not re-checked against a lowered plan", setup: []Command{
			&OrgUpdate{ID: "org-a", Plan: &Plan{MaxAgents: 1, MaxRunning: 1}},
			newAgent("b1", "org-b", "node-1", 10009, withResources(3000, 3000)),
		}, cmd: setDesired("a1", DesiredRunning)},
		{name: "start on a node without cpu", setup: []Command{newAgent("b1", "org-b", "node-1", 10009, withResources(2001, 0))}, cmd: setDesired("a2", DesiredRunning), want: ErrNoCapacity},
		{name: "start on a node without memory", setup: []Command{newAgent("b1", "org-b", "node-1", 10009, withResources(0, 2049))}, cmd: setDesired("a2", DesiredRunning), want: ErrNoCapacity},
		{name: "start on a node at max agents", setup: []Command{
			newAgent("b1", "org-b", "node-1", 10008, withResources(0, 0)),
			newAgent("b2", "org-b", "node-1", 10009, withResources(0, 0)),
		}, cmd: setDesired("a2", DesiredRunning), want: ErrNoCapacity},
		{name: "start on a draining node", setup: []Command{setNodeStatus("node-1", NodeDraining)}, cmd: setDesired("a2", DesiredRunning)},
		{name: "start on a down node", setup: []Command{setNodeStatus("node-1", NodeDown)}, cmd: setDesired("a2", DesiredRunning), want: ErrNodeNotEligible},
		{name: "stop on a down node", setup: []Command{setNodeStatus("node-1", NodeDown)}, cmd: setDesired("a1", DesiredStopped)},
		{name: "unknown desired state", cmd: setDesired("a1", "paused"), want: ErrInvalid},
		{name: "unknown status", cmd: &AgentSetDesired{ID: "a1", Desired: DesiredStopped, Status: "DONE"}, want: ErrInvalid},
		{name: "unknown agent", cmd: setDesired("a9", DesiredStopped), want: ErrNotFound},
	})
}

func TestApplyAgentSetStatus(t *testing.T) {
	base := append(placementBase(), newAgent("a1", "org-a", "node-1", 10001))
	report := func(from string, status AgentStatus, msg string) *AgentSetStatus {
		return &AgentSetStatus{ID: "a1", FromNode: from, Status: status, ErrorMsg: msg}
	}
	runFSMCases(t, base, []fsmCase{
		{name: "from the agent's node", cmd: report("node-1", StatusRunning, ""), check: func(t *testing.T, before, s *State, index uint64) {
			a := agentOf(t, s, "a1")
			if a.Status != StatusRunning || a.Desired != DesiredRunning {
				t.Errorf("agent = %+v", a)
			}
			wantIndexes(t, "agent", a.CreateIndex, a.ModifyIndex, agentOf(t, before, "a1").CreateIndex, index)
		}},
		{name: "from the leader on a lost node's behalf", cmd: report("", StatusError, "node lost"), check: func(t *testing.T, _, s *State, _ uint64) {
			if a := agentOf(t, s, "a1"); a.Status != StatusError || a.ErrorMsg != "node lost" {
				t.Errorf("agent = %+v", a)
			}
		}},
		{name: "from another node", cmd: report("node-big", StatusStopped, ""), want: ErrStaleNode},
		{name: "other status clears the error message", setup: []Command{report("node-1", StatusError, "boom")}, cmd: report("node-1", StatusRunning, "ignored"), check: func(t *testing.T, _, s *State, _ uint64) {
			if a := agentOf(t, s, "a1"); a.Status != StatusRunning || a.ErrorMsg != "" {
				t.Errorf("agent = %+v", a)
			}
		}},
		{name: "new error message replaces the old", setup: []Command{report("node-1", StatusError, "boom")}, cmd: report("node-1", StatusError, "bang"), check: func(t *testing.T, _, s *State, _ uint64) {
			if a := agentOf(t, s, "a1"); a.ErrorMsg != "bang" {
				t.Errorf("errorMsg = %q", a.ErrorMsg)
			}
		}},
		{name: "no-op report does not bump ModifyIndex", setup: []Command{report("node-1", StatusRunning, "")}, cmd: report("node-1", StatusRunning, ""), check: func(t *testing.T, before, s *State, _ uint64) {
			sameHash(t, before, s)
			if got, was := agentOf(t, s, "a1").ModifyIndex, agentOf(t, before, "a1").ModifyIndex; got != was {
				t.Errorf("ModifyIndex %d, want %d", got, was)
			}
		}},
		{name: "no-op ERROR report does not bump ModifyIndex", setup: []Command{report("node-1", StatusError, "boom")}, cmd: report("", StatusError, "boom"), check: func(t *testing.T, before, s *State, _ uint64) {
			sameHash(t, before, s)
		}},
		{name: "non-ERROR report with a message is still a no-op", setup: []Command{report("node-1", StatusRunning, "")}, cmd: report("node-1", StatusRunning, "noise"), check: func(t *testing.T, before, s *State, _ uint64) {
			sameHash(t, before, s)
		}},
		{name: "unknown status", cmd: report("node-1", "DONE", ""), want: ErrInvalid},
		{name: "unknown agent", cmd: &AgentSetStatus{ID: "a9", Status: StatusRunning}, want: ErrNotFound},
	})
}

func TestApplyAgentSetRuntimePassword(t *testing.T) {
	base := append(placementBase(), newAgent("a1", "org-a", "node-1", 10001, withPassword("old", "k1")))
	reseal := func(sealed, keyID, ifSealed, ifKeyID string) *AgentSetRuntimePassword {
		return &AgentSetRuntimePassword{ID: "a1", Sealed: []byte(sealed), KeyID: keyID, IfSealed: []byte(ifSealed), IfKeyID: ifKeyID}
	}
	runFSMCases(t, base, []fsmCase{
		{name: "re-sealed under the new key", cmd: reseal("new", "k2", "old", "k1"), check: func(t *testing.T, before, after *State, index uint64) {
			a := agentOf(t, after, "a1")
			if string(a.RuntimePasswordSealed) != "new" || a.RuntimePasswordKeyID != "k2" || a.ModifyIndex != index {
				t.Fatalf("agent after the re-seal: %+v", a)
			}
			was := agentOf(t, before, "a1")
			a.RuntimePasswordSealed, a.RuntimePasswordKeyID, a.ModifyIndex = was.RuntimePasswordSealed, was.RuntimePasswordKeyID, was.ModifyIndex
			if !reflect.DeepEqual(a, was) {
				t.Errorf("the re-seal changed more than the password:\n got %+v\nwant %+v", a, was)
			}
		}},
		{name: "sealed value changed since read", setup: []Command{reseal("other", "k1", "old", "k1")}, cmd: reseal("new", "k2", "old", "k1"), want: ErrConflict},
		{name: "key changed since read", cmd: reseal("new", "k2", "old", "k0"), want: ErrConflict},
		{name: "deleted agent is not made again", setup: []Command{&AgentDelete{ID: "a1"}}, cmd: reseal("new", "k2", "old", "k1"), want: ErrNotFound},
		{name: "unknown agent", cmd: &AgentSetRuntimePassword{ID: "a9", Sealed: []byte("new"), KeyID: "k2"}, want: ErrNotFound},
		{name: "no sealed value", cmd: reseal("", "k2", "old", "k1"), want: ErrInvalid},
		{name: "no key id", cmd: reseal("new", "", "old", "k1"), want: ErrInvalid},
	})
}

func TestApplyAgentDelete(t *testing.T) {
	base := append(placementBase(),
		newAgent("a1", "org-a", "node-1", 10001, inScope("sc-a1")),
		newAgent("a2", "org-a", "node-1", 10002),
	)
	runFSMCases(t, base, []fsmCase{
		{name: "frees the port and the node", cmd: &AgentDelete{ID: "a1"}, check: func(t *testing.T, _, s *State, _ uint64) {
			if a := agentOf(t, s, "a1"); a != nil {
				t.Fatalf("agent still there")
			}
			if a, _ := s.AgentByPort(10001); a != nil {
				t.Errorf("port still held by %+v", a)
			}
			if got := allocationOf(t, s, "node-1"); got != (NodeAllocation{CPUMillis: 1000, MemoryMB: 1024, Agents: 1}) {
				t.Errorf("allocation = %+v, want only a2's", got)
			}
			for name, list := range map[string]func() ([]*Agent, error){
				"scope": func() ([]*Agent, error) { return s.AgentsByScope("sc-a1") },
				"org":   func() ([]*Agent, error) { return s.AgentsByOrg("org-a") },
				"node":  func() ([]*Agent, error) { return s.AgentsByNode("node-1") },
			} {
				agents, err := list()
				if err != nil {
					t.Fatalf("agents by %s: %v", name, err)
				}
				for _, a := range agents {
					if a.ID == "a1" {
						t.Errorf("agents by %s still lists a1", name)
					}
				}
			}
		}},
		{name: "stopped agent", setup: []Command{setDesired("a1", DesiredStopped)}, cmd: &AgentDelete{ID: "a1"}},
		{name: "unknown agent", cmd: &AgentDelete{ID: "a9"}, want: ErrNotFound},
		{name: "deleted twice", setup: []Command{&AgentDelete{ID: "a1"}}, cmd: &AgentDelete{ID: "a1"}, want: ErrNotFound},
	})
}

// panickyHandler is a change handler that panics on every change, as a
// buggy scheduler model might.
type panickyHandler struct{ resets int }

func (h *panickyHandler) StateChanged(uint64, []Change) { panic("a bug in a change handler") }
func (h *panickyHandler) StateReset()                   { h.resets++ }

// TestChangeHandlerPanicDoesNotStopTheFSM: the command is applied, the
// server goes on, and the handler is told to start over.
func TestChangeHandlerPanicDoesNotStopTheFSM(t *testing.T) {
	f := newTestFSM(t)
	h := &panickyHandler{}
	f.fsm.SetChangeHandler(h)
	f.mustApply(newNode("node-1", NodeCapacity{}), newNode("node-2", NodeCapacity{}))
	if h.resets != 2 {
		t.Fatalf("the handler was reset %d times, want 2", h.resets)
	}
	if n, err := f.fsm.State().Node("node-2"); err != nil || n == nil {
		t.Fatalf("the command after a panicking handler: %v %v", n, err)
	}
}
