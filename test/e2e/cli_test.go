package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// cli runs the agenthost binary's CLI verbs against a dev cluster, with
// the address and tokens in the environment as `source tokens.env` sets
// them.
type cli struct {
	t   *testing.T
	bin string
	env []string
}

// run runs the CLI and returns what it printed and its exit code.
func (c *cli) run(args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = append(os.Environ(), c.env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		c.t.Fatalf("agenthost %s: %v", strings.Join(args, " "), err)
	}
	c.t.Logf("agenthost %s → exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return out.String(), errOut.String(), code
}

// ok runs the CLI and fails the test unless it exits 0.
func (c *cli) ok(args ...string) (stdout, stderr string) {
	c.t.Helper()
	stdout, stderr, code := c.run(args...)
	if code != 0 {
		c.t.Fatalf("agenthost %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return stdout, stderr
}

// TestCLI drives a dev cluster with the CLI as a user would: create an
// agent and wait for it, list and read it, talk to it, stop, start and
// delete it, drain and undrain the node, and check the exit codes of a
// missing agent, a bad token and a wrong verb.
func TestCLI(t *testing.T) {
	d := startDev(t, "10.213.43.0/24", "32300-32399")
	bin := filepath.Join(t.TempDir(), "agenthost")
	build := exec.Command("go", "build", "-o", bin, "./cmd/agenthost")
	build.Dir = repoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build agenthost: %v\n%s", err, out)
	}
	c := &cli{t: t, bin: bin, env: []string{
		"AGENTHOST_ADDR=" + strings.TrimSuffix(d.base, "/api/v1"),
		"AGENTHOST_TOKEN=" + d.token,
		"AGENTHOST_OPERATOR_TOKEN=" + d.operatorToken,
	}}

	// Create and wait: progress on stderr (no terminal: the changes only).
	stdout, stderr := c.ok("agents", "create", "cli-agent", "--wait", "--tag", "e2e")
	id := regexp.MustCompile(`(?m)^AGENT\s+(ag[a-z2-7]{20})$`).FindStringSubmatch(stdout)
	if id == nil {
		t.Fatalf("no agent ID in the create output:\n%s", stdout)
	}
	agentID := id[1]
	if !regexp.MustCompile(`(?m)^cli-agent: PROVISIONING \(\d+\.\ds\)\n`+agentID+`: RUNNING \(\d+\.\ds\)$`).MatchString(stderr) ||
		strings.Contains(stderr, "\r") {
		t.Fatalf("create --wait progress:\n%q", stderr)
	}

	// List, as a script would.
	stdout, _ = c.ok("agents", "list", "--json", "--tag", "e2e")
	var list struct {
		Agents []agentStatus `json:"agents"`
	}
	if err := json.Unmarshal([]byte(stdout), &list); err != nil || len(list.Agents) != 1 || list.Agents[0].AgentID != agentID || list.Agents[0].Status != "RUNNING" {
		t.Fatalf("agents list --json: %v\n%s", err, stdout)
	}
	if stdout, _ = c.ok("agents", "list"); !regexp.MustCompile(`(?m)^` + agentID + `\s+cli-agent\s+RUNNING\s+`).MatchString(stdout) {
		t.Fatalf("agents list:\n%s", stdout)
	}
	if stdout, _ = c.ok("agents", "get", agentID); !regexp.MustCompile(`(?m)^STATUS\s+RUNNING \(idle\)$`).MatchString(stdout) {
		t.Fatalf("agents get:\n%s", stdout)
	}

	// Talk to it: the offline model answers "Offline model reply to: …".
	stdout, _ = c.ok("agents", "send", agentID, "hello", "from", "the", "cli", "--wait")
	if strings.TrimSpace(stdout) != "assistant: Offline model reply to: hello from the cli" {
		t.Fatalf("send --wait printed %q", stdout)
	}
	stdout, _ = c.ok("agents", "messages", agentID)
	if !strings.Contains(stdout, "user:      hello from the cli") || !strings.Contains(stdout, "assistant: Offline model reply to: hello from the cli") {
		t.Fatalf("agents messages:\n%s", stdout)
	}
	// The event stream, briefly: it starts with the current status.
	if stdout, _ = c.ok("agents", "logs", agentID, "--duration", "1s"); !strings.Contains(stdout, " status RUNNING\n") {
		t.Fatalf("agents logs:\n%s", stdout)
	}

	// Stop and start.
	if stdout, _ = c.ok("agents", "stop", agentID); stdout != agentID+" STOPPED\n" {
		t.Fatalf("agents stop: %q", stdout)
	}
	if _, _, code := c.run("agents", "send", agentID, "are you there?"); code != 1 {
		t.Fatalf("send to a stopped agent: exit %d, want 1 (the API's 400)", code)
	}
	if stdout, _ = c.ok("agents", "start", agentID); stdout != agentID+" RUNNING\n" {
		t.Fatalf("agents start: %q", stdout)
	}
	if stdout, _ = c.ok("agents", "wait", agentID, "--for", "idle", "--timeout", "1m"); stdout != agentID+" RUNNING, idle\n" {
		t.Fatalf("agents wait: %q", stdout)
	}

	// The operator's view.
	if stdout, _ = c.ok("nodes", "list"); !regexp.MustCompile(`(?m)^\S+\s+dev-node\s+\S+\s+ready\s+`).MatchString(stdout) {
		t.Fatalf("nodes list:\n%s", stdout)
	}
	if stdout, _ = c.ok("nodes", "drain", "dev-node"); !strings.HasSuffix(stdout, " (dev-node) draining\n") {
		t.Fatalf("nodes drain: %q", stdout)
	}
	if stdout, _ = c.ok("nodes", "undrain", "dev-node"); !strings.HasSuffix(stdout, " (dev-node) ready\n") {
		t.Fatalf("nodes undrain: %q", stdout)
	}
	if stdout, _ = c.ok("orgs", "get", "default"); !regexp.MustCompile(`(?m)^USAGE\s+1 agents, 1 running$`).MatchString(stdout) {
		t.Fatalf("orgs get default:\n%s", stdout)
	}

	// Delete; then the exit codes scripts switch on.
	if stdout, _ = c.ok("agents", "rm", agentID); stdout != agentID+" deleted\n" {
		t.Fatalf("agents rm: %q", stdout)
	}
	if _, stderr, code := c.run("agents", "get", agentID); code != 4 || !strings.Contains(stderr, "not found (404 not_found)") {
		t.Fatalf("get of a deleted agent: exit %d, want 4; stderr %q", code, stderr)
	}
	if _, _, code := c.run("agents", "list", "--token", "ah_live_not-a-token"); code != 3 {
		t.Fatalf("a bad token: exit %d, want 3", code)
	}
	if _, _, code := c.run("nodes", "list", "--token", d.token); code != 3 {
		t.Fatalf("a tenant token on an operator verb: exit %d, want 3", code)
	}
	if _, _, code := c.run("agents", "stat", agentID); code != 2 {
		t.Fatalf("an unknown verb: exit %d, want 2", code)
	}
}
