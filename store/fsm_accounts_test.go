package store

import (
	"testing"
	"time"
)

// account is a valid account of org in a sign-up command.
func account(id, org, email string) *AccountCreate {
	return &AccountCreate{Account: Account{ID: id, OrgID: org, Email: email, PasswordHash: testPasswordHash, CreatedAt: testTime}, Now: testTime}
}

func invitation(id, org, email string, expires time.Time) *InvitationCreate {
	return &InvitationCreate{Invitation: Invitation{ID: id, OrgID: org, Email: email, Hash: hexHash(id), CreatedAt: testTime, ExpiresAt: expires}}
}

func session(id, accountID string) *WebSessionCreate {
	return &WebSessionCreate{Session: WebSession{ID: id, AccountID: accountID, Hash: hexHash(id), CreatedAt: testTime, ExpiresAt: testTime.Add(time.Hour)}}
}

func accountsBase() []Command {
	return append(tenantBase(), account("acc-a", "org-a", "ada@example.com"))
}

func TestApplyAccountCreate(t *testing.T) {
	withOrg := func(c *AccountCreate, id, name string) *AccountCreate {
		c.Org = &Org{ID: id, Name: name, CreatedAt: testTime}
		return c
	}
	invited := func(c *AccountCreate, inv string) *AccountCreate {
		c.InvitationID = inv
		return c
	}
	hour := testTime.Add(time.Hour)
	runFSMCases(t, accountsBase(), []fsmCase{
		{name: "into an existing org", cmd: account("acc-new", "org-b", "bob@example.com"), check: func(t *testing.T, _, s *State, index uint64) {
			a, err := s.AccountByEmail("bob@example.com")
			if err != nil || a == nil || a.ID != "acc-new" || a.OrgID != "org-b" {
				t.Fatalf("AccountByEmail = %+v, %v", a, err)
			}
			wantIndexes(t, "account", a.CreateIndex, a.ModifyIndex, index, index)
		}},
		{name: "with an org of one's own, in one transaction", cmd: withOrg(account("acc-new", "org-new", "bob@example.com"), "org-new", "Bob's"), check: func(t *testing.T, _, s *State, _ uint64) {
			if o, _ := s.Org("org-new"); o == nil || o.Name != "Bob's" {
				t.Fatalf("org not created: %+v", o)
			}
			if list, _ := s.AccountsByOrg("org-new"); len(list) != 1 || list[0].ID != "acc-new" {
				t.Fatalf("org-new's accounts: %+v", list)
			}
		}},
		{name: "its org's name taken: nothing created", cmd: withOrg(account("acc-new", "org-new", "bob@example.com"), "org-new", "Acme"), want: ErrAlreadyExists, check: func(t *testing.T, before, s *State, _ uint64) {
			sameHash(t, before, s)
		}},
		{name: "account and org ids disagree", cmd: withOrg(account("acc-new", "org-a", "bob@example.com"), "org-new", "Bob's"), want: ErrInvalid},
		{name: "unknown org", cmd: account("acc-new", "org-x", "bob@example.com"), want: ErrNotFound},
		{name: "email taken", cmd: account("acc-new", "org-b", "ada@example.com"), want: ErrAlreadyExists},
		{name: "id taken", cmd: account("acc-a", "org-b", "bob@example.com"), want: ErrAlreadyExists},
		{name: "upper-case email", cmd: account("acc-new", "org-b", "Bob@example.com"), want: ErrInvalid},
		{name: "display name", cmd: account("acc-new", "org-b", "Bob <bob@example.com>"), want: ErrInvalid},
		{name: "no at sign", cmd: account("acc-new", "org-b", "bob"), want: ErrInvalid},
		{name: "a password, not a hash", cmd: func() Command {
			c := account("acc-new", "org-b", "bob@example.com")
			c.Account.PasswordHash = "hunter2"
			return c
		}(), want: ErrInvalid},
		{name: "invitation into its org, consumed", setup: []Command{invitation("inv", "org-b", "", hour)},
			cmd: invited(account("acc-new", "org-b", "bob@example.com"), "inv"), check: func(t *testing.T, _, s *State, _ uint64) {
				if inv, _ := s.InvitationByHash(hexHash("inv")); inv != nil {
					t.Errorf("invitation not consumed: %+v", inv)
				}
			}},
		{name: "invitation used twice", setup: []Command{invitation("inv", "org-b", "", hour), invited(account("acc-1", "org-b", "bob@example.com"), "inv")},
			cmd: invited(account("acc-2", "org-b", "eve@example.com"), "inv"), want: ErrNotFound},
		{name: "invitation expired", setup: []Command{invitation("inv", "org-b", "", testTime.Add(time.Minute))},
			cmd: func() Command {
				c := invited(account("acc-new", "org-b", "bob@example.com"), "inv")
				c.Now = testTime.Add(time.Minute)
				return c
			}(), want: ErrConflict},
		{name: "invitation for another email", setup: []Command{invitation("inv", "org-b", "carol@example.com", hour)},
			cmd: invited(account("acc-new", "org-b", "bob@example.com"), "inv"), want: ErrConflict, check: func(t *testing.T, before, s *State, _ uint64) {
				sameHash(t, before, s)
			}},
		{name: "invitation into another org", setup: []Command{invitation("inv", "org-a", "", hour)},
			cmd: invited(account("acc-new", "org-b", "bob@example.com"), "inv"), want: ErrConflict},
		{name: "invitation into an org used for an org of one's own", setup: []Command{invitation("inv", "org-a", "", hour)},
			cmd: invited(withOrg(account("acc-new", "org-new", "bob@example.com"), "org-new", "Bob's"), "inv"), want: ErrConflict},
		{name: "invitation to an org of one's own", setup: []Command{invitation("inv", "", "bob@example.com", hour)},
			cmd: invited(withOrg(account("acc-new", "org-new", "bob@example.com"), "org-new", "Bob's"), "inv")},
		{name: "invitation to an org of one's own used to join one", setup: []Command{invitation("inv", "", "", hour)},
			cmd: invited(account("acc-new", "org-b", "bob@example.com"), "inv"), want: ErrConflict},
		{name: "operator invitation makes an operator", setup: []Command{operatorInvitation("inv", "org-b", hour)},
			cmd: operator(invited(account("acc-new", "org-b", "bob@example.com"), "inv")), check: func(t *testing.T, _, s *State, _ uint64) {
				if a, _ := s.Account("acc-new"); a == nil || !a.Operator {
					t.Fatalf("account = %+v, want an operator", a)
				}
			}},
		{name: "operator without an invitation", cmd: operator(account("acc-new", "org-b", "bob@example.com")), want: ErrInvalid},
		{name: "operator by an ordinary invitation", setup: []Command{invitation("inv", "org-b", "", hour)},
			cmd: operator(invited(account("acc-new", "org-b", "bob@example.com"), "inv")), want: ErrInvalid},
		{name: "operator invitation used for an ordinary account", setup: []Command{operatorInvitation("inv", "org-b", hour)},
			cmd: invited(account("acc-new", "org-b", "bob@example.com"), "inv"), want: ErrInvalid, check: func(t *testing.T, before, s *State, _ uint64) {
				sameHash(t, before, s)
			}},
	})
}

func operatorInvitation(id, org string, expires time.Time) *InvitationCreate {
	c := invitation(id, org, "", expires)
	c.Invitation.Operator = true
	return c
}

func operator(c *AccountCreate) *AccountCreate {
	c.Account.Operator = true
	return c
}

func TestApplyAccountSetOperator(t *testing.T) {
	runFSMCases(t, accountsBase(), []fsmCase{
		{name: "made an operator", cmd: &AccountSetOperator{AccountID: "acc-a", Operator: true}, check: func(t *testing.T, _, s *State, index uint64) {
			a, _ := s.Account("acc-a")
			if a == nil || !a.Operator || a.ModifyIndex != index {
				t.Fatalf("account = %+v, want an operator modified at %d", a, index)
			}
		}},
		{name: "and back", setup: []Command{&AccountSetOperator{AccountID: "acc-a", Operator: true}}, cmd: &AccountSetOperator{AccountID: "acc-a"}, check: func(t *testing.T, _, s *State, _ uint64) {
			if a, _ := s.Account("acc-a"); a == nil || a.Operator {
				t.Fatalf("account = %+v, want no operator", a)
			}
		}},
		{name: "unknown account", cmd: &AccountSetOperator{AccountID: "acc-x", Operator: true}, want: ErrNotFound},
	})
}

func TestApplyWebSessions(t *testing.T) {
	runFSMCases(t, accountsBase(), []fsmCase{
		{name: "sign-in", cmd: session("ws", "acc-a"), check: func(t *testing.T, _, s *State, _ uint64) {
			if ws, _ := s.WebSessionByHash(hexHash("ws")); ws == nil || ws.AccountID != "acc-a" {
				t.Fatalf("WebSessionByHash = %+v", ws)
			}
		}},
		{name: "unknown account", cmd: session("ws", "acc-x"), want: ErrNotFound},
		{name: "hash taken", setup: []Command{session("ws", "acc-a")}, cmd: func() Command {
			c := session("ws2", "acc-a")
			c.Session.Hash = hexHash("ws")
			return c
		}(), want: ErrAlreadyExists},
		{name: "not a digest", cmd: func() Command {
			c := session("ws", "acc-a")
			c.Session.Hash = "cookie-value"
			return c
		}(), want: ErrInvalid},
		{name: "expires before it begins", cmd: func() Command {
			c := session("ws", "acc-a")
			c.Session.ExpiresAt = testTime
			return c
		}(), want: ErrInvalid},
		{name: "sign-out", setup: []Command{session("ws", "acc-a")}, cmd: &WebSessionDelete{ID: "ws"}, check: func(t *testing.T, _, s *State, _ uint64) {
			if ws, _ := s.WebSessionByHash(hexHash("ws")); ws != nil {
				t.Fatalf("session still there: %+v", ws)
			}
		}},
		{name: "sign-out twice is sign-out", cmd: &WebSessionDelete{ID: "ws"}},
		{name: "expiry removes only the expired", setup: []Command{session("old", "acc-a"), func() Command {
			c := session("new", "acc-a")
			c.Session.ExpiresAt = testTime.Add(3 * time.Hour)
			return c
		}()}, cmd: &WebSessionsExpire{Before: testTime.Add(2 * time.Hour)}, check: func(t *testing.T, _, s *State, _ uint64) {
			if ws, _ := s.WebSessionByHash(hexHash("old")); ws != nil {
				t.Error("expired session kept")
			}
			if ws, _ := s.WebSessionByHash(hexHash("new")); ws == nil {
				t.Error("live session removed")
			}
		}},
		{name: "deleting the account signs it out", setup: []Command{session("ws", "acc-a")}, cmd: &AccountDelete{ID: "acc-a"}, check: func(t *testing.T, _, s *State, _ uint64) {
			if ws, _ := s.WebSessionByHash(hexHash("ws")); ws != nil {
				t.Error("session of a deleted account kept")
			}
			if a, _ := s.Account("acc-a"); a != nil {
				t.Error("account kept")
			}
		}},
		{name: "deleting an unknown account", cmd: &AccountDelete{ID: "acc-x"}, want: ErrNotFound},
		{name: "deleting the org removes its accounts, sessions and invitations", setup: []Command{
			session("ws", "acc-a"), invitation("inv", "org-a", "", testTime.Add(time.Hour)), invitation("inv-b", "org-b", "", testTime.Add(time.Hour)),
		}, cmd: &OrgDelete{ID: "org-a"}, check: func(t *testing.T, _, s *State, _ uint64) {
			if a, _ := s.Account("acc-a"); a != nil {
				t.Error("account of a deleted org kept")
			}
			if ws, _ := s.WebSessionByHash(hexHash("ws")); ws != nil {
				t.Error("session of a deleted org kept")
			}
			if inv, _ := s.InvitationByHash(hexHash("inv")); inv != nil {
				t.Error("invitation into a deleted org kept")
			}
			if inv, _ := s.InvitationByHash(hexHash("inv-b")); inv == nil {
				t.Error("another org's invitation removed")
			}
		}},
	})
}

func TestApplyInvitations(t *testing.T) {
	runFSMCases(t, accountsBase(), []fsmCase{
		{name: "into an org", cmd: invitation("inv", "org-a", "bob@example.com", testTime.Add(time.Hour)), check: func(t *testing.T, _, s *State, _ uint64) {
			if list, _ := s.InvitationsByOrg("org-a"); len(list) != 1 || list[0].Email != "bob@example.com" {
				t.Fatalf("InvitationsByOrg = %+v", list)
			}
		}},
		{name: "to an org of one's own", cmd: invitation("inv", "", "", testTime.Add(time.Hour))},
		{name: "into an unknown org", cmd: invitation("inv", "org-x", "", testTime.Add(time.Hour)), want: ErrNotFound},
		{name: "bad email", cmd: invitation("inv", "org-a", "Bob@Example.com", testTime.Add(time.Hour)), want: ErrInvalid},
		{name: "expires before it is made", cmd: invitation("inv", "org-a", "", testTime), want: ErrInvalid},
		{name: "id taken", setup: []Command{invitation("inv", "org-a", "", testTime.Add(time.Hour))}, cmd: invitation("inv", "org-b", "", testTime.Add(time.Hour)), want: ErrAlreadyExists},
		{name: "withdrawn", setup: []Command{invitation("inv", "org-a", "", testTime.Add(time.Hour))}, cmd: &InvitationDelete{ID: "inv"}},
		{name: "withdrawing an unknown one", cmd: &InvitationDelete{ID: "inv"}, want: ErrNotFound},
		{name: "sign-up mode set", cmd: &ClusterConfigSet{Config: func() ClusterConfig { c := DefaultClusterConfig(); c.Signup = SignupOpen; return c }()}},
		{name: "unknown sign-up mode", cmd: &ClusterConfigSet{Config: func() ClusterConfig { c := DefaultClusterConfig(); c.Signup = "anyone"; return c }()}, want: ErrInvalid},
	})
}
