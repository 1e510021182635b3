package api

import (
	"net/url"
	"strings"
	"testing"

	"github.com/agenthost/agenthost/store"
)

// signUpWith signs up email with an invitation code and returns the
// session's cookie header pair and CSRF token.
func (h *htHarness) signUpWith(email, code string, want int) (cookie []string, csrf string) {
	h.t.Helper()
	r := h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", map[string]any{"email": email, "password": "long enough password", "invitation": code}), want)
	if want != 201 {
		return nil, ""
	}
	value, _ := sessionCookieOf(r)
	var view signedInView
	r.decode(h.t, &view)
	return []string{"Cookie", sessionCookie + "=" + value}, view.CSRFToken
}

// TestInvitationsIntoOwnOrg: a tenant invites someone into its org; the
// code is shown once (the list never has it), admits only the email it
// names, once, into that org; a tenant cannot make operator invitations or
// invitations into another org, nor see or withdraw another org's; while
// sign-up is closed no invitation is made.
func TestInvitationsIntoOwnOrg(t *testing.T) {
	h := htNew(t, htOptions{})
	acme, other := h.org("acme", store.Plan{}), h.org("other", store.Plan{})

	r := h.mustStatus(h.do(nil, "POST", "/api/v1/invitations", acme.Token, map[string]any{"email": "Bob@Example.com"}), 201)
	var inv createdInvitation
	r.decode(t, &inv)
	if !strings.HasPrefix(inv.Code, "ahi_") || inv.OrgID == nil || *inv.OrgID != acme.ID || inv.Email == nil || *inv.Email != "bob@example.com" || inv.Operator {
		t.Fatalf("invitation %+v", inv)
	}
	u, err := url.Parse(inv.SignupURL)
	if err != nil || u.Path != "/app/signup" || u.Query().Get("invitation") != inv.Code {
		t.Fatalf("signupUrl %q", inv.SignupURL)
	}
	if stored, _ := h.st.State().Invitation(inv.ID); stored == nil || stored.Hash != hexSHA256(inv.Code) || strings.Contains(string(h.do(nil, "GET", "/api/v1/invitations", acme.Token, nil).body), inv.Code) {
		t.Fatalf("stored %+v; the code must be kept only as its hash and never listed", stored)
	}
	var list struct{ Invitations []invitationView }
	h.mustStatus(h.do(nil, "GET", "/api/v1/invitations", acme.Token, nil), 200).decode(t, &list)
	if len(list.Invitations) != 1 || list.Invitations[0].ID != inv.ID {
		t.Fatalf("acme's invitations %+v", list)
	}
	h.mustStatus(h.do(nil, "GET", "/api/v1/invitations", other.Token, nil), 200).decode(t, &list)
	if len(list.Invitations) != 0 {
		t.Fatalf("other sees %+v", list)
	}

	h.signUpWith("carol@example.com", inv.Code, 403) // another email
	cookie, _ := h.signUpWith("bob@example.com", inv.Code, 201)
	var session signedInView
	h.mustStatus(h.do(nil, "GET", "/api/v1/auth/session", "", nil, cookie...), 200).decode(t, &session)
	if session.Org.ID != acme.ID || session.Account.Operator {
		t.Fatalf("bob's session %+v", session)
	}
	h.signUpWith("bob2@example.com", inv.Code, 403) // used
	h.mustStatus(h.do(nil, "POST", "/api/v1/invitations", acme.Token, map[string]any{"email": "bob@example.com"}), 409)

	// What a tenant may not do.
	h.mustStatus(h.do(nil, "POST", "/api/v1/invitations", acme.Token, map[string]any{"operator": true}), 403)
	h.mustStatus(h.do(nil, "POST", "/api/v1/invitations", acme.Token, map[string]any{"orgId": other.ID}), 403)
	h.mustStatus(h.do(nil, "POST", "/api/v1/invitations", acme.Token, map[string]any{"email": "not an address"}), 400)
	h.mustStatus(h.do(nil, "POST", "/api/v1/invitations", acme.Token, map[string]any{"expiresInHours": 721}), 400)
	h.mustStatus(h.do(nil, "GET", "/api/v1/operator/invitations", acme.Token, nil), 403)

	// Withdrawn, an invitation admits no one; another org cannot withdraw it.
	r = h.mustStatus(h.do(nil, "POST", "/api/v1/invitations", acme.Token, nil, "Idempotency-Key", "invite-1"), 201)
	r.decode(t, &inv)
	h.mustStatus(h.do(nil, "DELETE", "/api/v1/invitations/"+inv.ID, other.Token, nil), 404)
	h.mustStatus(h.do(nil, "DELETE", "/api/v1/invitations/"+inv.ID, acme.Token, nil), 200)
	h.mustStatus(h.do(nil, "DELETE", "/api/v1/invitations/"+inv.ID, acme.Token, nil), 404)
	h.signUpWith("dave@example.com", inv.Code, 403)

	h.setSignup(store.SignupClosed)
	h.mustStatus(h.do(nil, "POST", "/api/v1/invitations", acme.Token, nil), 409)
}

// TestOperatorAccountsAndSignupMode: an operator sets the sign-up mode and
// makes an operator invitation; the account signed up with it administers
// the cluster with its session cookie (CSRF rules as for any cookie
// write); an ordinary account does not until an operator makes it one, and
// stops at once when made ordinary again; deleting an account signs it out.
func TestOperatorAccountsAndSignupMode(t *testing.T) {
	h := htNew(t, htOptions{})
	op, _ := h.token("", store.RoleOperator, "op")
	acme := h.org("acme", store.Plan{})

	var cfg clusterConfigView
	h.mustStatus(h.do(nil, "GET", "/api/v1/operator/config", op, nil), 200).decode(t, &cfg)
	if cfg.Signup != store.SignupInvite || cfg.SchedulerAlgorithm == "" {
		t.Fatalf("config %+v", cfg)
	}
	h.mustStatus(h.do(nil, "PATCH", "/api/v1/operator/config", op, map[string]any{"signup": "anyone"}), 400)
	h.mustStatus(h.do(nil, "PATCH", "/api/v1/operator/config", op, map[string]any{}), 400)
	h.mustStatus(h.do(nil, "PATCH", "/api/v1/operator/config", acme.Token, map[string]any{"signup": "open"}), 403)
	h.mustStatus(h.do(nil, "PATCH", "/api/v1/operator/config", op, map[string]any{"signup": "open", "schedulerAlgorithm": store.AlgorithmSpread}), 200).decode(t, &cfg)
	if stored, _ := h.st.State().ClusterConfig(); cfg.Signup != store.SignupOpen || stored.Signup != store.SignupOpen || stored.SchedulerAlgorithm != store.AlgorithmSpread {
		t.Fatalf("after PATCH: answered %+v, stored %+v", cfg, stored)
	}

	// An operator invitation makes an operator account.
	r := h.mustStatus(h.do(nil, "POST", "/api/v1/operator/invitations", op, map[string]any{"email": "root@example.com", "operator": true}), 201)
	var inv createdInvitation
	r.decode(t, &inv)
	h.mustStatus(h.do(nil, "POST", "/api/v1/operator/invitations", op, map[string]any{"orgId": "org-nope"}), 404)
	h.mustStatus(h.do(nil, "POST", "/api/v1/operator/invitations", op, map[string]any{"orgId": acme.ID, "operator": true}), 201)
	var list struct{ Invitations []invitationView }
	h.mustStatus(h.do(nil, "GET", "/api/v1/invitations", acme.Token, nil), 200).decode(t, &list)
	if len(list.Invitations) != 0 {
		t.Fatalf("a tenant sees operator invitations into its org: %+v", list)
	}
	h.mustStatus(h.do(nil, "GET", "/api/v1/operator/invitations", op, nil), 200).decode(t, &list)
	if len(list.Invitations) != 2 {
		t.Fatalf("operator's invitations %+v", list)
	}
	withdrawn := list.Invitations[0].ID // the one into acme, not root's
	if withdrawn == inv.ID {
		withdrawn = list.Invitations[1].ID
	}
	h.mustStatus(h.do(nil, "DELETE", "/api/v1/operator/invitations/"+withdrawn, op, nil), 200)
	h.mustStatus(h.do(nil, "DELETE", "/api/v1/operator/invitations/"+withdrawn, op, nil), 404)

	root, rootCSRF := h.signUpWith("root@example.com", inv.Code, 201)
	var session signedInView
	h.mustStatus(h.do(nil, "GET", "/api/v1/auth/session", "", nil, root...), 200).decode(t, &session)
	if !session.Account.Operator {
		t.Fatalf("root's session %+v, want an operator", session)
	}
	h.mustStatus(h.do(nil, "GET", "/api/v1/nodes", "", nil, root...), 200)
	h.mustStatus(h.do(nil, "GET", "/api/v1/agents", "", nil, root...), 200) // and a tenant of its own org
	h.mustStatus(h.do(nil, "PATCH", "/api/v1/operator/config", "", map[string]any{"signup": "invite"}, root...), 403)
	h.mustStatus(h.do(nil, "PATCH", "/api/v1/operator/config", "", map[string]any{"signup": "invite"}, append(root, csrfHeader, rootCSRF)...), 200)

	// An ordinary account, made an operator and ordinary again.
	h.mustStatus(h.do(nil, "PATCH", "/api/v1/operator/config", op, map[string]any{"signup": "open"}), 200)
	ada, _ := h.signUpWith("ada@example.com", "", 201)
	h.mustStatus(h.do(nil, "GET", "/api/v1/nodes", "", nil, ada...), 403)
	var accounts struct{ Accounts []accountAdminView }
	h.mustStatus(h.do(nil, "GET", "/api/v1/operator/accounts", "", nil, root...), 200).decode(t, &accounts)
	var adaID string
	for _, a := range accounts.Accounts {
		if a.Email == "ada@example.com" && !a.Operator && a.OrgName == "ada@example.com" {
			adaID = a.ID
		}
	}
	if len(accounts.Accounts) != 2 || adaID == "" {
		t.Fatalf("accounts %+v", accounts)
	}
	var changed accountAdminView
	h.mustStatus(h.do(nil, "PATCH", "/api/v1/operator/accounts/"+adaID, op, map[string]any{"operator": true}), 200).decode(t, &changed)
	if !changed.Operator {
		t.Fatalf("PATCH answered %+v", changed)
	}
	h.mustStatus(h.do(nil, "GET", "/api/v1/nodes", "", nil, ada...), 200)
	h.mustStatus(h.do(nil, "PATCH", "/api/v1/operator/accounts/"+adaID, op, map[string]any{"operator": false}), 200)
	h.mustStatus(h.do(nil, "GET", "/api/v1/nodes", "", nil, ada...), 403)
	h.mustStatus(h.do(nil, "PATCH", "/api/v1/operator/accounts/"+adaID, op, map[string]any{}), 400)
	h.mustStatus(h.do(nil, "PATCH", "/api/v1/operator/accounts/acc-nope", op, map[string]any{"operator": true}), 404)

	h.mustStatus(h.do(nil, "DELETE", "/api/v1/operator/accounts/"+adaID, op, nil), 200)
	h.mustStatus(h.do(nil, "GET", "/api/v1/agents", "", nil, ada...), 401)
	h.mustStatus(h.do(nil, "DELETE", "/api/v1/operator/accounts/"+adaID, op, nil), 404)
}
