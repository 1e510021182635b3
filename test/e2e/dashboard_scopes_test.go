package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// dashboardScopesAndSecrets: on the Scopes & Secrets page, create a scope
// and rename it, set an org secret and, on the scope's page, a scope
// secret; the pages list the keys and never the values; the REST API (with
// a token made on the Tokens page) has them as set, and an agent in the
// scope gets the scope's value in its environment; deleted on the pages,
// the API has them no more, and the scope's agent is org-level. Every page
// it visits passes the accessibility checks of checkAccessible.
func dashboardScopesAndSecrets(t *testing.T, b *dashboardRun) {
	ctx, app := b.ctx, b.app
	// The values are unique to this run, so that finding one on a page
	// can only mean the page shows it.
	stamp := time.Now().UnixNano()
	orgValue := fmt.Sprintf("org-value-%d", stamp)
	scopeValue := fmt.Sprintf("scope-value-%d", stamp)

	// The API checks go with a token of ada's org, made on the Tokens page
	// as a user would, and revoked at the end.
	b.run(t, "create a token for the API checks",
		chromedp.Navigate(app+"tokens"), chromedp.WaitVisible(chromedp.ID("label")),
		chromedp.SendKeys(chromedp.ID("label"), "scopes-check"),
		chromedp.Click(chromedp.CSS(`form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.ID("new-token")),
	)
	b.waitText(t, "#new-token", "ah_live_")
	checkAccessible(t, b, "the Tokens page")
	ada := *b.d
	ada.t = t
	ada.token = strings.TrimSpace(b.text(t, "#new-token"))
	defer func() {
		var tokens struct {
			Tokens []struct {
				ID    string `json:"id"`
				Label string `json:"label"`
			} `json:"tokens"`
		}
		ada.must(200, "GET", "/tokens", nil, &tokens)
		for _, tok := range tokens.Tokens {
			if tok.Label == "scopes-check" {
				ada.call("DELETE", "/tokens/"+tok.ID, nil, nil)
			}
		}
	}()

	// Create a scope, then rename it in place.
	b.run(t, "open Scopes & Secrets",
		chromedp.Click(chromedp.CSS(`header nav a[href="/app/scopes"]`)),
		chromedp.WaitVisible(chromedp.ID("create-scope")),
	)
	if cur, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('header nav a[href="/app/scopes"]').getAttribute("aria-current") || ""`)); err != nil || cur != "page" {
		t.Errorf("the nav link of Scopes & Secrets: aria-current %q (%v), want page", cur, err)
	}
	b.run(t, "create a scope",
		chromedp.SendKeys(chromedp.ID("scope-name"), "staging-e2e"),
		chromedp.SendKeys(chromedp.ID("scope-description"), "Made by the browser test"),
		chromedp.Click(chromedp.CSS(`#create-scope button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button[aria-label="Edit scope staging-e2e"]`)),
	)
	b.waitText(t, "#scope-note", "Created the scope staging-e2e")
	b.waitText(t, "#scopes-table", "Made by the browser test")
	scopeID, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#scopes-table tr[data-scope]").dataset.scope`))
	if err != nil || scopeID == "" {
		t.Fatalf("the scope's row: %q %v", scopeID, err)
	}
	b.run(t, "rename the scope",
		chromedp.Click(chromedp.CSS(`button[aria-label="Edit scope staging-e2e"]`)),
		chromedp.WaitVisible(chromedp.CSS(`form.edit-scope input[name="name"]`)),
	)
	checkAccessible(t, b, "the scopes' page with a scope in edit")
	b.run(t, "save the new name",
		chromedp.SetValue(chromedp.CSS(`form.edit-scope input[name="name"]`), "production-e2e"),
		chromedp.Click(chromedp.CSS(`form.edit-scope button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button[aria-label="Edit scope production-e2e"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`form.edit-scope`)),
	)
	b.waitText(t, "#scope-note", "Renamed staging-e2e to production-e2e")

	// An org secret: its key is listed, its value cleared from the form.
	b.run(t, "set an org secret",
		chromedp.SendKeys(chromedp.ID("org-secret-key"), "E2E_ORG_TOKEN"),
		chromedp.SendKeys(chromedp.ID("org-secret-value"), orgValue),
		chromedp.Click(chromedp.CSS(`#org-secret-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button[aria-label="Delete secret E2E_ORG_TOKEN"]`)),
	)
	b.waitText(t, "#org-secrets-table", "E2E_ORG_TOKEN")
	b.waitText(t, "#org-secret-note", "will not be shown again")
	checkAccessible(t, b, "the scopes' page")
	// The skip link, off screen, comes into sight when it has the focus.
	b.run(t, "focus the skip link", chromedp.Focus(chromedp.CSS(`a.skip`)))
	if top, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.querySelector("a.skip").getBoundingClientRect().top`)); err != nil || top < 0 {
		t.Errorf("the focused skip link is at %v (%v), off screen", top, err)
	}
	b.run(t, "leave the skip link", chromedp.Blur(chromedp.CSS(`a.skip`)))
	screenshot(t, ctx, "scopes")
	b.valuesNotShown(t, orgValue)

	// A scope secret, on the scope's own page.
	b.run(t, "open the scope's page",
		chromedp.Click(chromedp.CSS(`#scopes-table tr[data-scope] a`)),
		chromedp.WaitVisible(chromedp.ID("scope-secret-form")),
	)
	b.waitText(t, "h1", "production-e2e")
	b.run(t, "set a scope secret",
		chromedp.SendKeys(chromedp.ID("scope-secret-key"), "E2E_SCOPE_TOKEN"),
		chromedp.SendKeys(chromedp.ID("scope-secret-value"), scopeValue),
		chromedp.Click(chromedp.CSS(`#scope-secret-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`button[aria-label="Delete secret E2E_SCOPE_TOKEN"]`)),
	)
	b.waitText(t, "#scope-secrets-table", "E2E_SCOPE_TOKEN")
	if cur, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('header nav a[href="/app/scopes"]').getAttribute("aria-current") || ""`)); err != nil || cur != "true" {
		t.Errorf("the nav link of Scopes & Secrets on a scope's page: aria-current %q (%v), want true", cur, err)
	}
	b.valuesNotShown(t, orgValue, scopeValue)

	// The API has them as set, and never says a value either.
	var scope struct {
		ID          string  `json:"id"`
		Name        string  `json:"name"`
		Description *string `json:"description"`
		Secrets     []struct {
			Key string `json:"key"`
		} `json:"secrets"`
	}
	raw := ada.getRaw("/scopes/"+scopeID, &scope)
	if scope.Name != "production-e2e" || scope.Description == nil || *scope.Description != "Made by the browser test" ||
		len(scope.Secrets) != 1 || scope.Secrets[0].Key != "E2E_SCOPE_TOKEN" {
		t.Fatalf("the scope through the API: %s", raw)
	}
	orgKeys, raw2 := ada.secretKeys("/secrets")
	if !orgKeys["E2E_ORG_TOKEN"] || orgKeys["E2E_SCOPE_TOKEN"] {
		t.Fatalf("the org's secrets through the API: %s", raw2)
	}
	for _, body := range []string{raw, raw2} {
		if strings.Contains(body, orgValue) || strings.Contains(body, scopeValue) {
			t.Fatalf("the API returned a secret's value: %s", body)
		}
	}

	// The values reach agents as the page set them: an agent made in the
	// scope echoes its environment (the scope's secret, not the org's).
	var agent createResponse
	ada.must(200, "POST", "/agents", map[string]string{"name": "scoped-e2e", "scopeId": scopeID,
		"initialPrompt": `[[tool:bash {"command":"echo \"s=$E2E_SCOPE_TOKEN o=${E2E_ORG_TOKEN:-none}\""}]]`}, &agent)
	ada.approveNext(agent.AgentID, "once")
	want := "s=" + scopeValue + " o=none"
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(ada.history(agent.AgentID, agent.Sessions[0].ID), want); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the scoped agent did not echo %q: %s", want, ada.history(agent.AgentID, agent.Sessions[0].ID))
		}
	}

	// The scope's page lists its agent; the Agents pages pass the checks
	// too, with an agent in a scope on them.
	b.run(t, "open the Agents page", chromedp.Navigate(app), chromedp.WaitVisible(chromedp.ID("create-agent")))
	b.waitText(t, "tbody", "production-e2e")
	checkAccessible(t, b, "the Agents page")
	b.run(t, "open the agent's page", clickNow(`tbody a`), chromedp.WaitVisible(chromedp.CSS(`.actions`)))
	b.waitText(t, "main", "Conversation")
	checkAccessible(t, b, "an agent's page")
	b.run(t, "open the scope's page again",
		chromedp.Navigate(app+"scopes/"+scopeID), chromedp.WaitVisible(chromedp.ID("scope-agents-table")))
	b.waitText(t, "#scope-agents-table", "scoped-e2e")
	checkAccessible(t, b, "the scope's page")
	screenshot(t, ctx, "scope")
	b.valuesNotShown(t, orgValue, scopeValue)

	// Deleted on the pages, they are gone from the API.
	b.run(t, "delete the scope secret",
		chromedp.Click(chromedp.CSS(`button[aria-label="Delete secret E2E_SCOPE_TOKEN"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`button[aria-label="Delete secret E2E_SCOPE_TOKEN"]`)),
	)
	if keys, raw := ada.secretKeys("/scopes/" + scopeID + "/secrets"); len(keys) != 0 {
		t.Fatalf("the scope's secrets after the delete: %s", raw)
	}
	b.run(t, "back to all scopes",
		chromedp.Click(chromedp.CSS(`main a[href="/app/scopes"]`)),
		chromedp.WaitVisible(chromedp.ID("create-scope")),
		chromedp.WaitVisible(chromedp.CSS(`button[aria-label="Delete secret E2E_ORG_TOKEN"]`)),
	)
	b.run(t, "delete the org secret",
		chromedp.Click(chromedp.CSS(`button[aria-label="Delete secret E2E_ORG_TOKEN"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`button[aria-label="Delete secret E2E_ORG_TOKEN"]`)),
	)
	b.waitText(t, "#org-secret-note", "Deleted E2E_ORG_TOKEN")
	b.focusIs(t, "org-secrets-h") // not lost with the button it had
	if keys, raw := ada.secretKeys("/secrets"); keys["E2E_ORG_TOKEN"] {
		t.Fatalf("the org's secrets after the delete: %s", raw)
	}
	b.waitText(t, `#scopes-table td[data-label="Agents"]`, "1")
	b.run(t, "delete the scope",
		chromedp.Click(chromedp.CSS(`button[aria-label="Delete scope production-e2e"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`button[aria-label="Delete scope production-e2e"]`)),
	)
	b.waitText(t, "#scope-note", "Deleted the scope production-e2e")
	b.focusIs(t, "scopes-h")
	ada.must(404, "GET", "/scopes/"+scopeID, nil, nil)
	var scopes struct {
		Scopes []struct {
			ID string `json:"id"`
		} `json:"scopes"`
	}
	ada.must(200, "GET", "/scopes", nil, &scopes)
	for _, s := range scopes.Scopes {
		if s.ID == scopeID {
			t.Fatal("the deleted scope is still listed")
		}
	}
	// Its agent is org-level now, as the page's confirmation said.
	var after struct {
		ScopeID *string `json:"scopeId"`
	}
	ada.must(200, "GET", "/agents/"+agent.AgentID, nil, &after)
	if after.ScopeID != nil {
		t.Fatalf("the agent of the deleted scope is in scope %q", *after.ScopeID)
	}
	ada.must(200, "DELETE", "/agents/"+agent.AgentID, nil, nil) // the plan runs 2 at most: Agents makes one
}

// getRaw GETs path, which must answer 200, decodes it into out and returns
// the body as it came.
func (d *dev) getRaw(path string, out any) string {
	d.t.Helper()
	var raw json.RawMessage
	d.must(200, "GET", path, nil, &raw)
	if err := json.Unmarshal(raw, out); err != nil {
		d.t.Fatalf("GET %s: %v", path, err)
	}
	return string(raw)
}

// secretKeys is the keys of a secrets list (/secrets or a scope's), and
// the body as it came.
func (d *dev) secretKeys(path string) (map[string]bool, string) {
	d.t.Helper()
	var list struct {
		Secrets []struct {
			Key string `json:"key"`
		} `json:"secrets"`
	}
	raw := d.getRaw(path, &list)
	keys := map[string]bool{}
	for _, s := range list.Secrets {
		keys[s.Key] = true
	}
	return keys, raw
}

// focusIs fails t unless the element with id has the focus.
func (b *dashboardRun) focusIs(t *testing.T, id string) {
	t.Helper()
	got, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.activeElement ? document.activeElement.id : ""`))
	if err != nil || got != id {
		t.Errorf("the focus is on %q (%v), want %s", got, err, id)
	}
}

// valuesNotShown fails t when a secret's value is anywhere on the page: in
// its text, its HTML or a form field.
func (b *dashboardRun) valuesNotShown(t *testing.T, values ...string) {
	t.Helper()
	page, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](`[document.body.innerText, document.documentElement.outerHTML,
		...[...document.querySelectorAll("input, textarea")].map((f) => f.value)]`))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range values {
		for _, s := range page {
			if strings.Contains(s, v) {
				t.Fatalf("the page shows the secret value %q", v)
			}
		}
	}
}

// checkAccessible fails t with what the page shown lacks: a label for
// every form field, a name for every button and table, headings in order
// from one h1, unique ids, the skip link and a current nav link, no inline
// style (the CSP refuses them).
func checkAccessible(t *testing.T, b *dashboardRun, what string) {
	t.Helper()
	problems, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](`(() => {
  const problems = [];
  const labelled = (e) => (e.getAttribute("aria-label") || "").trim() !== "" ||
    (e.getAttribute("aria-labelledby") || "").split(" ").some((id) => (document.getElementById(id)?.textContent || "").trim() !== "");
  const named = (e) => labelled(e) || e.textContent.trim() !== "";
  for (const f of document.querySelectorAll("input:not([type=hidden]), select, textarea"))
    if (f.labels.length === 0) problems.push("a field without a label: " + f.outerHTML);
  for (const e of document.querySelectorAll("button")) if (!named(e)) problems.push("a button without a name: " + e.outerHTML);
  for (const e of document.querySelectorAll("table"))
    if (!e.caption && !labelled(e)) problems.push("a table without a caption or label: " + (e.id || e.outerHTML.slice(0, 80)));
  let level = 0;
  for (const h of document.querySelectorAll("h1, h2, h3, h4, h5, h6")) {
    const n = Number(h.tagName[1]);
    if (n > level + 1) problems.push(h.tagName + " " + JSON.stringify(h.textContent) + " after h" + level);
    level = n;
  }
  if (document.querySelectorAll("h1").length !== 1) problems.push(document.querySelectorAll("h1").length + " h1s");
  const ids = new Set();
  for (const e of document.querySelectorAll("[id]")) {
    if (ids.has(e.id)) problems.push("the id " + e.id + " twice");
    ids.add(e.id);
  }
  if (!document.querySelector('body > a.skip[href="#view"]:first-child')) problems.push("no skip link first");
  if (!document.querySelector("header nav a[aria-current]")) problems.push("no nav link is current");
  for (const e of document.querySelectorAll("[style]")) problems.push("an inline style: " + e.outerHTML.slice(0, 80));
  return problems;
})()`))
	if err != nil {
		t.Fatalf("check %s: %v", what, err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", what, p)
	}
}
