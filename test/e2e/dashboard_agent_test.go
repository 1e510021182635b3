package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// dashboardAgentFilesAndLogs goes on from dashboardAgents (the browser on
// web-agent's own UI, the agent running and idle): back on the agent's
// page, a file uploaded through its Files form lands in the agent's
// uploads, where the agent reads it (a command it runs once allowed on the
// page); and the Logs section shows what the agent's container really
// printed — OpenCode's own start-up line.
func dashboardAgentFilesAndLogs(t *testing.T, b *dashboardRun) {
	ctx := b.ctx
	b.run(t, "open web-agent's page",
		chromedp.Navigate(b.app), chromedp.WaitVisible(chromedp.CSS(`tbody a`)),
		clickNow(`tbody tr a`),
		chromedp.WaitVisible(chromedp.ID("upload-form")),
		chromedp.WaitVisible(chromedp.ID("agent-logs")),
	)
	b.waitText(t, "h1", "web-agent")
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil || !strings.Contains(loc, "/app/agents/ag") {
		t.Fatalf("the agent's page is at %q (%v)", loc, err)
	}
	agentID := loc[strings.LastIndex(loc, "/")+1:]

	// The Logs section loads the container's output with the page: the
	// runtime image's OpenCode says where it listens.
	b.waitTextFor(t, "#agent-logs", "opencode server listening on http://0.0.0.0:4096", 30*time.Second)
	b.waitText(t, "#logs-note", "as of")

	// Upload through the form: the page says where the file landed.
	const content = "uploaded-through-the-page-4711"
	file := filepath.Join(t.TempDir(), "page-notes.txt")
	if err := os.WriteFile(file, []byte(content+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.run(t, "upload a file",
		chromedp.SetUploadFiles(chromedp.ID("upload-file"), []string{file}),
		chromedp.Click(chromedp.CSS(`#upload-form button[type="submit"]`)),
	)
	b.waitText(t, "#upload-note", "Uploaded page-notes.txt (31 bytes) to /workspace/uploads/page-notes.txt.")
	if errs, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll(".error").length`)); err != nil || errs != 0 {
		t.Fatalf("errors on the page after the upload: %d %v", errs, err)
	}

	// The agent sees it: asked (through the REST API, with the page's
	// session) to cat it, it asks to run the command; allowed on the page,
	// its reply carries the file's content.
	sent, err := chromedp.Run(ctx, chromedp.Evaluate[string](`import("/app/assets/api.js").then((m) => m.api("POST", "/api/v1/agents/`+agentID+
		`/messages", { message: '[[tool:bash {"command":"cat /workspace/uploads/page-notes.txt"}]]' })).then((r) => r.sessionId)`, chromedp.EvalAwaitPromise))
	if err != nil || !strings.HasPrefix(sent, "ses") {
		t.Fatalf("send a message with the page's session: %q %v", sent, err)
	}
	b.waitTextFor(t, "[data-permission]", "cat /workspace/uploads/page-notes.txt", 60*time.Second)
	b.run(t, "allow the command", clickNow(`[data-permission] button[data-reply="once"]`))
	// Only the file holds the content: the message named the file alone.
	b.waitTextFor(t, `section[aria-labelledby="history-h"]`, content, 60*time.Second)
	b.waitTextFor(t, "h1 + p", "idle", 30*time.Second)

	// Refreshed, the logs still hold the container's real output.
	b.run(t, "refresh the logs", chromedp.Click(chromedp.ID("refresh-logs")))
	b.waitText(t, "#logs-note", "as of")
	b.waitText(t, "#agent-logs", "opencode server listening on http://0.0.0.0:4096")
	screenshot(t, ctx, "agent-files-logs")
}

// dashboardAgentLifecycle goes on from dashboardOperator (signed in as
// grace, of Ada's lab): on web-agent's page, Stop stops it, Start runs it
// again, Restart leaves it running without an error, and Delete removes it
// (the API no longer knows it) and goes back to the agents' list.
func dashboardAgentLifecycle(t *testing.T, b *dashboardRun) {
	b.run(t, "open web-agent's page",
		chromedp.Navigate(b.app), chromedp.WaitVisible(chromedp.CSS(`tbody a`)),
		clickNow(`tbody tr a`), chromedp.WaitVisible(chromedp.CSS(`button[data-action="stop"]`)))
	b.waitText(t, "h1", "web-agent")
	loc, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	id := loc[strings.LastIndex(loc, "/")+1:]
	apiStatus := func() int {
		t.Helper()
		status, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`fetch("/api/v1/agents/`+id+`", {credentials: "same-origin"}).then((r) => r.status)`, chromedp.EvalAsValue, chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatal(err)
		}
		return status
	}
	noError := func(after string) {
		t.Helper()
		if n, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.querySelectorAll(".error:not([hidden])").length`)); err != nil || n != 0 {
			body, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("after %s the page shows an error (%v): %q", after, err, body)
		}
	}
	b.run(t, "stop", clickNow(`button[data-action="stop"]`))
	b.waitTextFor(t, "h1 + p", "STOPPED", 60*time.Second)
	noError("Stop")
	screenshot(t, b.ctx, "agent-stopped")
	b.run(t, "start", clickNow(`button[data-action="start"]`))
	b.waitTextFor(t, "h1 + p", "RUNNING", 90*time.Second)
	noError("Start")
	b.run(t, "restart", clickNow(`button[data-action="restart"]`))
	b.waitTextFor(t, "h1 + p", "RUNNING", 90*time.Second)
	noError("Restart")
	if got := apiStatus(); got != 200 {
		t.Fatalf("GET the agent after a restart: %d", got)
	}
	b.run(t, "delete", clickNow(`button[data-action="delete"]`), chromedp.WaitVisible(chromedp.ID("create-agent")))
	if got := apiStatus(); got != 404 {
		t.Fatalf("GET the deleted agent: %d, want 404", got)
	}
	if n, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.querySelectorAll("tr[data-agent]").length`)); err != nil || n != 0 {
		t.Fatalf("the agents' list still has %d rows (%v)", n, err)
	}
}
