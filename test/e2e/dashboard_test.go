package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// chromium is Debian's package's browser, which the dashboard tests drive
// headless (make setup installs it).
const chromium = "/usr/bin/chromium"

// requireChromium skips without the browser, except in CI, where the
// dashboard's tests must run.
func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath(chromium); err == nil {
		return
	}
	msg := "the dashboard's browser tests need chromium; run `make setup`"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI must run these tests, not skip them)")
	}
	t.Skip(msg)
}

// browser starts a headless chromium for the test and returns its context.
func browser(t *testing.T) context.Context {
	t.Helper()
	requireChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.NoSandbox, // the tests run as root
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// Confirmation dialogs (revoke) are accepted.
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// screenshotDir is where the dashboard tests save their screenshots
// (build/screenshots, not committed).
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "build", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// screenshot saves the page as name.png, at the window's size and at a
// phone's, and fails t when a dashboard page is wider than either screen
// (usable at both means no sideways scrolling).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := screenshotDir(t)
	for _, size := range []struct {
		suffix        string
		width, height int64
		opts          []chromedp.EmulateViewportOption
	}{{"", 1280, 900, nil}, {"-phone", 390, 844, []chromedp.EmulateViewportOption{chromedp.EmulateMobile}}} {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(size.width, size.height, size.opts...)); err != nil {
			t.Fatalf("viewport for %s: %v", name, err)
		}
		// Not the agent's own UI (OpenCode's), only the dashboard's pages.
		overflow, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(() => {
  if (!location.pathname.startsWith("/app")) return "";
  const over = document.documentElement.scrollWidth - document.documentElement.clientWidth;
  if (over <= 1) return "";
  const wide = [...document.querySelectorAll("body *")].filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
    .map((e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : "")).slice(0, 5);
  return over + "px too wide: " + wide.join(", ");
})()`))
		if err != nil {
			t.Fatalf("measure %s: %v", name, err)
		}
		if overflow != "" {
			t.Errorf("%s at %d px: %s", name, size.width, overflow)
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+size.suffix+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := chromedp.Do(ctx, chromedp.EmulateReset()); err != nil {
		t.Fatal(err)
	}
}

// dashboardRun is one browser on one `agenthost dev`, shared by the
// dashboard's subtests (each would otherwise start dev and chromium anew).
type dashboardRun struct {
	d    *dev
	ctx  context.Context
	port string // the proxy's port: the dashboard is http://localhost:<port>/app/
	app  string
}

// run does the steps, failing t with the page's location and text when one
// fails or 30 s pass.
func (b *dashboardRun) run(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		body, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("%s: %v (at %s: %q)", what, err, loc, body)
	}
}

// clickNow finds the element sel and clicks it in one step of the page's
// own: the agents' list, an agent's page and the nodes' table are drawn
// anew every few seconds, and a node chromedp found a moment before may be
// gone when its click is sent ("Could not find node with given id").
func clickNow(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.PollFunction[chromedp.Void](`(sel) => {
  const e = document.querySelector(sel);
  if (!e) return false;
  e.click();
  return true;
}`, chromedp.WithPollingArgs(sel), chromedp.WithPollingInterval(50*time.Millisecond))
}

// text is the text of the element sel.
func (b *dashboardRun) text(t *testing.T, sel string) string {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return v
}

// waitText waits up to 15 s until the element's text has want: the page
// fills it in after its API calls, and may replace the document meanwhile.
func (b *dashboardRun) waitText(t *testing.T, sel, want string) {
	t.Helper()
	b.waitTextFor(t, sel, want, 15*time.Second)
}

// waitTextFor waits up to d until the element's text has want.
func (b *dashboardRun) waitTextFor(t *testing.T, sel, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`(document.querySelector(`+"`"+sel+"`"+`) || {}).textContent || ""`))
		if err == nil && strings.Contains(got, want) {
			return
		}
		if time.Now().After(deadline) {
			loc, _ := chromedp.Run(b.ctx, chromedp.Location())
			body, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("%s says %q (%v), want %q in it; at %s: %q", sel, got, err, want, loc, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// apiStatus is the status of a GET of path through the proxy with token,
// as a curl from the user's machine would send it.
func (b *dashboardRun) apiStatus(t *testing.T, path, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+b.d.proxyAddr+path, nil)
	req.Host = "localhost:" + b.port
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// TestDashboard drives the dashboard in headless chromium against
// `agenthost dev` through its proxy (http://localhost:<port>), one browser
// for all its subtests, in order: each goes on from where the one before
// left the account.
func TestDashboard(t *testing.T) {
	requireChromium(t)
	d := startDev(t, "10.213.45.0/24", "32500-32599")
	_, port, _ := strings.Cut(d.proxyAddr, ":")
	b := &dashboardRun{d: d, ctx: browser(t), port: port, app: "http://localhost:" + port + "/app/"}
	for _, sub := range []struct {
		name string
		test func(*testing.T, *dashboardRun)
	}{
		{"AccountsAndTokens", dashboardAccountsAndTokens},
		{"ScopesAndSecrets", dashboardScopesAndSecrets},
		{"Agents", dashboardAgents},
		{"AgentFilesAndLogs", dashboardAgentFilesAndLogs},
		{"Questions", dashboardQuestions},
		{"Operator", dashboardOperator},
		{"AgentLifecycle", dashboardAgentLifecycle},
	} {
		if !t.Run(sub.name, func(t *testing.T) { sub.test(t, b) }) {
			break // the next ones start where this one should have left off
		}
	}
	t.Logf("screenshots in %s", screenshotDir(t))
}

// dashboardAccountsAndTokens: sign up, create an API token on the page and
// use it on the REST API, revoke it on the page and see the API refuse it,
// sign out and in again.
func dashboardAccountsAndTokens(t *testing.T, b *dashboardRun) {
	ctx, app := b.ctx, b.app
	// Signed out, the dashboard sends the browser to sign in.
	b.run(t, "open the dashboard", chromedp.Navigate(app), chromedp.WaitVisible(chromedp.ID("signin")))
	screenshot(t, ctx, "signin")
	b.run(t, "sign up",
		chromedp.Navigate(app+"signup"), chromedp.WaitVisible(chromedp.ID("signup")),
		chromedp.SendKeys(chromedp.ID("email"), "ada@example.com"),
		chromedp.SendKeys(chromedp.ID("password"), "correct horse battery"),
		chromedp.SendKeys(chromedp.ID("orgName"), "Ada's lab"),
	)
	screenshot(t, ctx, "signup")
	b.run(t, "signed in after sign-up",
		chromedp.Click(chromedp.CSS(`#signup button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.ID("signout")),
		chromedp.Query(chromedp.CSS(`#who`)),
	)
	b.waitText(t, "#who", "ada@example.com")
	b.waitText(t, "#who", "Ada's lab")

	// A token made on the page works on the API.
	b.run(t, "create a token",
		chromedp.Click(chromedp.CSS(`a[href="/app/tokens"]`)),
		chromedp.WaitVisible(chromedp.ID("label")),
		chromedp.SendKeys(chromedp.ID("label"), "laptop"),
		chromedp.Click(chromedp.CSS(`form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.ID("new-token")),
		chromedp.WaitVisible(chromedp.CSS(`button[aria-label="Revoke laptop"]`)),
	)
	screenshot(t, ctx, "tokens")
	b.waitText(t, "#new-token", "ah_live_")
	token := strings.TrimSpace(b.text(t, "#new-token"))
	if !strings.HasPrefix(token, "ah_live_") {
		t.Fatalf("the page showed %q, want a token", token)
	}
	if got := b.apiStatus(t, "/api/v1/agents", token); got != 200 {
		t.Fatalf("GET /api/v1/agents with the page's token: %d", got)
	}

	// Revoked on the page, it is refused.
	b.run(t, "revoke the token",
		chromedp.Click(chromedp.CSS(`button[aria-label="Revoke laptop"]`)),
		chromedp.WaitNotPresent(chromedp.CSS(`button[aria-label="Revoke laptop"]`)),
	)
	deadline := time.Now().Add(10 * time.Second)
	for b.apiStatus(t, "/api/v1/agents", token) != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("the revoked token still works")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Sign out, then in again.
	b.run(t, "sign out", chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("signin")))
	b.run(t, "sign in",
		chromedp.SendKeys(chromedp.ID("email"), "ada@example.com"),
		chromedp.SendKeys(chromedp.ID("password"), "correct horse battery"),
		chromedp.Click(chromedp.CSS(`#signin button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.ID("signout")),
	)
	b.waitText(t, "#who", "ada@example.com")
	screenshot(t, ctx, "home")
}

// dashboardAgents: an agent created on the Agents page runs; it asks to
// run a command (the offline model's directive), so it is busy with a
// permission request waiting; allowed on its page, it runs the command and
// is idle again; its own UI, framed on the page, opens with no login.
func dashboardAgents(t *testing.T, b *dashboardRun) {
	ctx, app, port := b.ctx, b.app, b.port

	b.run(t, "create an agent",
		chromedp.Navigate(app), chromedp.WaitVisible(chromedp.ID("create-agent")),
		chromedp.SendKeys(chromedp.ID("agent-name"), "web-agent"),
		chromedp.SendKeys(chromedp.ID("agent-prompt"), `[[tool:bash {"command":"echo web-ok-$((6*7))"}]]`),
		chromedp.Click(chromedp.CSS(`#create-agent button[type="submit"]`)),
	)
	b.waitTextFor(t, "tbody", "RUNNING", 90*time.Second)
	screenshot(t, ctx, "agents")
	b.run(t, "open the agent's page", clickNow(`tbody a`), chromedp.WaitVisible(chromedp.CSS(`.actions`)))
	b.waitTextFor(t, "body", "Allow once", 60*time.Second)
	b.waitTextFor(t, "h1 + p", "busy", 10*time.Second)
	screenshot(t, ctx, "agent")
	src, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("agent-ui").src`))
	if err != nil || !strings.HasPrefix(src, "http://a") || !strings.Contains(src, ".localhost:"+port) {
		t.Fatalf("the agent's UI frame: %q %v", src, err)
	}
	b.run(t, "allow the command", clickNow(`button[data-reply="once"]`))
	b.waitTextFor(t, "body", "web-ok-42", 60*time.Second)
	b.waitTextFor(t, "h1 + p", "idle", 30*time.Second)

	// The framed UI is the agent's own, with no login: opened on its own
	// it answers the browser.
	b.run(t, "open the agent's UI", chromedp.Navigate(src))
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil || title == "" {
		t.Fatalf("the agent's UI: title %q %v", title, err)
	}
	screenshot(t, ctx, "agent-ui")
}
