package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// operatorCall sends an operator API request straight to dev's API and
// decodes a JSON answer into out (when not nil).
func (b *dashboardRun) operatorCall(t *testing.T, method, path string, body, out any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, b.d.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+b.d.operatorToken)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode >= 300 {
		t.Fatalf("%s %s: %d", method, path, res.StatusCode)
	}
	if out != nil {
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
}

// dashboardQuestions: a message sent on the agent's page makes the agent
// ask a question (the offline model's directive); the page shows it with
// its options, and the answer clicked reaches the agent, whose reply says
// which it was.
func dashboardQuestions(t *testing.T, b *dashboardRun) {
	b.run(t, "open the agents' page", chromedp.Navigate(b.app), chromedp.WaitVisible(chromedp.CSS(`tbody a`)))
	b.run(t, "open the agent's page", clickNow(`tbody a`), chromedp.WaitVisible(chromedp.ID("compose")))
	b.run(t, "send a message",
		chromedp.SendKeys(chromedp.ID("compose-message"), `[[tool:question {"questions":[{"question":"Which colour?","header":"Colour","options":[{"label":"Teal","description":"a"},{"label":"Amber","description":"b"}]}]}]]`),
		chromedp.Click(chromedp.CSS(`#compose button[type="submit"]`)),
	)
	b.waitTextFor(t, "body", "Which colour?", 60*time.Second)
	screenshot(t, b.ctx, "agent-question")
	b.run(t, "answer the question", clickNow(`[data-question] button`)) // the first option: Teal
	// The question goes; the tool's result names the answer and the offline
	// model reports it in the agent's reply (the user's message, with the
	// directive, names both options, so only the agent's words count).
	deadline := time.Now().Add(60 * time.Second)
	for {
		state, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](
			`document.querySelectorAll("[data-question]").length + ":" + [...document.querySelectorAll(".message.assistant")].map(e => e.textContent).join(" ")`))
		if err == nil && strings.HasPrefix(state, "0:") && strings.Contains(state, "Teal") && !strings.Contains(state, "Amber") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after answering Teal: %q (%v), want no question shown and Teal alone in the agent's reply", state, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.waitTextFor(t, "h1 + p", "idle", 30*time.Second)
}

// dashboardOperator: an account made an operator sees the operator's page:
// the node with its capacity bars, drained and undrained from the page (the
// API agrees); the orgs with their caps and use, a cap changed; the
// sign-up mode set to invitation only and an invitation into the org made;
// on the Team page an invitation made and withdrawn; the operator's
// invitation link, opened signed out, has the code filled in and signs a
// new person up into that org.
func dashboardOperator(t *testing.T, b *dashboardRun) {
	var accounts struct {
		Accounts []struct {
			ID, Email string
			Operator  bool
		}
	}
	b.operatorCall(t, "GET", "/operator/accounts", nil, &accounts)
	var ada string
	for _, a := range accounts.Accounts {
		if a.Email == "ada@example.com" {
			ada = a.ID
		}
	}
	if ada == "" {
		t.Fatalf("no account for ada: %+v", accounts)
	}
	// Not an operator yet: no operator link, and the operator API refuses.
	b.run(t, "open the dashboard", chromedp.Navigate(b.app), chromedp.WaitVisible(chromedp.ID("who")))
	b.waitText(t, "#who", "ada@example.com")
	if hidden, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.getElementById("nav-operator").hidden`)); err != nil || !hidden {
		t.Fatalf("the operator link is shown to an ordinary account (%v)", err)
	}
	b.operatorCall(t, "PATCH", "/operator/accounts/"+ada, map[string]bool{"operator": true}, nil)
	b.run(t, "open the operator's page",
		chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("nav-operator")),
		chromedp.Click(chromedp.ID("nav-operator")), chromedp.WaitVisible(chromedp.CSS(`tr[data-node]`)))
	b.waitText(t, "tr[data-node]", "ready")
	b.waitText(t, "tr[data-node]", "cores")
	screenshot(t, b.ctx, "operator")
	checkAccessible(t, b, "the operator's page")

	nodeStatus := func() string {
		var list struct{ Nodes []struct{ Status string } }
		b.operatorCall(t, "GET", "/nodes", nil, &list)
		if len(list.Nodes) != 1 {
			t.Fatalf("nodes %+v", list)
		}
		return list.Nodes[0].Status
	}
	b.run(t, "drain the node", clickNow(`button[data-node-action="drain"]`), chromedp.WaitVisible(chromedp.CSS(`button[data-node-action="undrain"]`)))
	b.waitText(t, "tr[data-node]", "draining")
	if s := nodeStatus(); s != "draining" {
		t.Fatalf("after Drain the API says the node is %q", s)
	}
	b.run(t, "undrain the node", clickNow(`button[data-node-action="undrain"]`), chromedp.WaitVisible(chromedp.CSS(`button[data-node-action="drain"]`)))
	if s := nodeStatus(); s != "ready" {
		t.Fatalf("after Undrain the API says the node is %q", s)
	}

	// Ada's org: one agent of 10, running one of 2 (the self-serve plan).
	b.waitText(t, `section[aria-labelledby="orgs-h"] tbody`, "Ada's lab") // rows are by random id
	var orgID string
	rows, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("tr[data-org]")].filter(r => r.textContent.includes("Ada's lab")).map(r => r.dataset.org)`))
	if err != nil || len(rows) != 1 {
		t.Fatalf("Ada's org row: %v %v", rows, err)
	}
	orgID = rows[0]
	row := `tr[data-org="` + orgID + `"]`
	b.waitText(t, row, "1 of 10")
	b.waitText(t, row, "1 of 2")
	b.run(t, "raise the running cap",
		chromedp.SetValue(chromedp.ID("caps-running-"+orgID), "3"),
		chromedp.Click(chromedp.CSS(row+` button[type="submit"]`)))
	b.waitText(t, row, "1 of 3")
	var org struct {
		Plan struct{ MaxAgents, MaxRunning int }
	}
	b.operatorCall(t, "GET", "/orgs/"+orgID, nil, &org)
	if org.Plan.MaxRunning != 3 || org.Plan.MaxAgents != 10 {
		t.Fatalf("caps after saving: %+v", org.Plan)
	}

	// Sign-up by invitation only; an invitation into Ada's lab.
	b.run(t, "set sign-up to invitation only",
		chromedp.SetValue(chromedp.ID("signup-mode"), "invite"),
		chromedp.Click(chromedp.CSS(`#signup-form button[type="submit"]`)))
	b.waitText(t, "#signup-form", "now invite")
	var cfg struct{ Signup string }
	b.operatorCall(t, "GET", "/operator/config", nil, &cfg)
	if cfg.Signup != "invite" {
		t.Fatalf("sign-up after saving: %q", cfg.Signup)
	}
	b.run(t, "make an invitation",
		chromedp.SendKeys(chromedp.ID("invite-email"), "grace@example.com"),
		chromedp.SetValue(chromedp.ID("invite-org"), orgID),
		chromedp.Click(chromedp.CSS(`#invite-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.ID("new-invitation")))
	b.waitText(t, `section[aria-labelledby="signup-h"] table[aria-labelledby="invitations-h"] tbody`, "grace@example.com")
	screenshot(t, b.ctx, "operator-invitation")
	checkAccessible(t, b, "the operator's page with an invitation made")
	link, err := url.Parse(strings.TrimSpace(b.text(t, "#new-invitation")))
	if err != nil || link.Query().Get("invitation") == "" {
		t.Fatalf("the page's sign-up link %q: %v", link, err)
	}
	// The link points at dev's public URL; the browser reaches the same
	// proxy as localhost:<port>.
	signupURL := b.app + "signup?" + link.RawQuery

	// The Team page: an invitation into the org, made and withdrawn.
	b.run(t, "open the Team page", chromedp.Click(chromedp.CSS(`a[href="/app/team"]`)), chromedp.WaitVisible(chromedp.ID("team-invite")))
	b.run(t, "invite from the Team page",
		chromedp.SendKeys(chromedp.ID("team-email"), "heidi@example.com"),
		chromedp.Click(chromedp.CSS(`#team-invite button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.ID("new-invitation")))
	b.waitText(t, `table[aria-labelledby="team-invitations-h"] tbody`, "heidi@example.com")
	screenshot(t, b.ctx, "team")
	checkAccessible(t, b, "the Team page")
	var own struct{ Invitations []struct{ Email *string } }
	b.operatorCall(t, "GET", "/operator/invitations", nil, &own)
	if len(own.Invitations) != 2 {
		t.Fatalf("invitations after the Team page's: %+v", own)
	}
	b.run(t, "withdraw the Team page's invitation",
		chromedp.Click(chromedp.CSS(`button[aria-label="Withdraw the invitation for heidi@example.com"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`button[aria-label="Withdraw the invitation for heidi@example.com"]`)))

	b.run(t, "sign out", chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("signin")))
	b.run(t, "open the sign-up link", chromedp.Navigate(signupURL), chromedp.WaitVisible(chromedp.ID("signup")))
	code, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.getElementById("invitation").value`))
	if err != nil || code != link.Query().Get("invitation") {
		t.Fatalf("the invitation field holds %q (%v), want the link's code", code, err)
	}
	b.run(t, "sign up with the invitation",
		chromedp.SendKeys(chromedp.ID("email"), "grace@example.com"),
		chromedp.SendKeys(chromedp.ID("password"), "another long password"),
		chromedp.Click(chromedp.CSS(`#signup button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.ID("signout")))
	b.waitText(t, "#who", "grace@example.com · Ada's lab")
	// Grace sees the org's agent, and is no operator.
	b.waitTextFor(t, "tbody", "web-agent", 15*time.Second)
	if hidden, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.getElementById("nav-operator").hidden`)); err != nil || !hidden {
		t.Fatalf("the operator link is shown to grace (%v)", err)
	}
}
