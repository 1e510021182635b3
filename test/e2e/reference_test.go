package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
)

type createResponse struct {
	AgentID  string  `json:"agentId"`
	ScopeID  *string `json:"scopeId"`
	URL      string  `json:"url"`
	Sessions []struct {
		ID    string  `json:"id"`
		Title *string `json:"title"`
		URL   string  `json:"url"`
	} `json:"sessions"`
}

// history is a session's messages as one string, to look for tool output.
func (d *dev) history(agentID, sessionID string) string {
	d.t.Helper()
	var m messagesResponse
	d.must(200, "GET", "/agents/"+agentID+"/messages?sessionId="+sessionID, nil, &m)
	b, _ := json.Marshal(m.Messages)
	return string(b)
}

// approveNext waits for the agent's next permission request and answers it.
func (d *dev) approveNext(agentID, reply string) {
	d.t.Helper()
	perms := waitFor(d, "/agents/"+agentID+"/permissions", "permission request", func(v struct {
		Permissions []struct {
			ID         string   `json:"id"`
			SessionID  string   `json:"sessionID"`
			Permission string   `json:"permission"`
			Patterns   []string `json:"patterns"`
			Always     bool     `json:"always"`
		} `json:"permissions"`
	}) bool {
		return len(v.Permissions) > 0
	}).Permissions
	p := perms[0]
	if p.Permission != "bash" || len(p.Patterns) == 0 || p.SessionID == "" || p.Always {
		d.t.Fatalf("permission request = %+v", p)
	}
	var out struct {
		Replied bool   `json:"replied"`
		Reply   string `json:"reply"`
	}
	d.must(200, "POST", "/agents/"+agentID+"/permissions/"+p.ID+"/reply", map[string]string{"reply": reply}, &out)
	if !out.Replied || out.Reply != reply {
		d.t.Fatalf("reply = %+v", out)
	}
}

func (d *dev) send(agentID, sessionID, message string) string {
	d.t.Helper()
	var out struct {
		SessionID string `json:"sessionId"`
		Sent      bool   `json:"sent"`
	}
	body := map[string]string{"message": message}
	if sessionID != "" {
		body["sessionId"] = sessionID
	}
	d.must(200, "POST", "/agents/"+agentID+"/messages", body, &out)
	if !out.Sent || out.SessionID == "" || (sessionID != "" && out.SessionID != sessionID) {
		d.t.Fatalf("send = %+v", out)
	}
	return out.SessionID
}

var createdAtPattern = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

// TestReferenceSequences runs the reference's Full Integration Example and
// its Quick Start cURL sequence, step by step, against `agenthost dev`.
func TestReferenceSequences(t *testing.T) {
	d := startDev(t, "10.213.41.0/24", "32100-32199")
	d.check = openAPIChecker(t)

	t.Run("full integration example", func(t *testing.T) {
		d := *d
		d.t = t
		// 1. Create an agent.
		var created createResponse
		d.must(200, "POST", "/agents", map[string]string{"name": "build-agent", "initialPrompt": "Set up a Node.js Express project with TypeScript"}, &created)
		if created.AgentID == "" || created.ScopeID != nil || len(created.Sessions) != 1 || created.Sessions[0].Title != nil {
			t.Fatalf("create = %+v", created)
		}
		if !regexp.MustCompile(`^http://a321\d\d\.localhost:\d+$`).MatchString(created.URL) {
			t.Fatalf("agent url %q, want http://a<port>.localhost:<port>", created.URL)
		}
		sessionID := created.Sessions[0].ID
		if want := created.URL + "/L3dvcmtzcGFjZQ/session/" + sessionID; created.Sessions[0].URL != want {
			t.Fatalf("session url %q, want %q", created.Sessions[0].URL, want)
		}
		// The agent's URL is the edge proxy's: OpenCode itself answers
		// there with no login (the proxy presents the runtime credential),
		// and its web UI is served.
		d.throughProxy(created.URL, "/global/health", `"healthy":true`)
		d.throughProxy(created.URL, "/", "<html")
		// 2. Wait for the initial prompt to finish.
		d.waitUntilIdle(created.AgentID)
		// 3. A follow-up in the same session.
		d.send(created.AgentID, sessionID, "Now add user authentication with JWT")
		d.waitUntilIdle(created.AgentID)
		// 4. The whole conversation.
		var m messagesResponse
		d.must(200, "GET", "/agents/"+created.AgentID+"/messages?sessionId="+sessionID, nil, &m)
		if len(m.Messages) != 4 || m.SessionID != sessionID {
			t.Fatalf("got %d messages in %s, want 4 (two prompts, two replies)", len(m.Messages), m.SessionID)
		}
		h := d.history(created.AgentID, sessionID)
		if !strings.Contains(h, "Set up a Node.js Express project") || !strings.Contains(h, "JWT") {
			t.Fatalf("history lacks the prompts: %s", h)
		}
		if m.Usage.Tokens.Total == 0 {
			t.Fatal("no token usage in the history")
		}
	})

	t.Run("quick start", func(t *testing.T) {
		d := *d
		d.t = t
		// Create an Agent.
		var created createResponse
		d.must(200, "POST", "/agents", map[string]string{"name": "my-agent", "initialPrompt": "Build a REST API for user management"}, &created)
		id := created.AgentID
		// Check Agent Status.
		// Sessions are fetched live from the agent; an OpenCode busy with
		// its first reply can be slow to list them, and GET agent then
		// shows none rather than failing the poll.
		st := waitFor(&d, "/agents/"+id, "session in GET agent", func(a agentStatus) bool { return len(a.Sessions) == 1 })
		if st.Status != "RUNNING" || st.Name != "my-agent" || st.URL != created.URL || len(st.Sessions) != 1 || st.ErrorMsg != nil || !createdAtPattern.MatchString(st.CreatedAt) {
			t.Fatalf("status = %+v", st)
		}
		sid := created.Sessions[0].ID
		d.waitUntilIdle(id)
		// Send a Message.
		d.send(id, sid, "Add authentication middleware")
		d.waitUntilIdle(id)
		// Without a session: a new one.
		other := d.send(id, "", "Fix the auth bug")
		if other == sid {
			t.Fatal("a message without sessionId went to an existing session")
		}
		d.waitUntilIdle(id)
		// Get Message History, one session and all.
		if h := d.history(id, sid); !strings.Contains(h, "Add authentication middleware") {
			t.Fatalf("history: %s", h)
		}
		var all struct {
			Sessions []struct {
				SessionID string            `json:"sessionId"`
				Messages  []json.RawMessage `json:"messages"`
			} `json:"sessions"`
		}
		d.must(200, "GET", "/agents/"+id+"/messages", nil, &all)
		if len(all.Sessions) != 2 {
			t.Fatalf("all sessions: %d, want 2", len(all.Sessions))
		}
		// Usage across sessions.
		var usage struct {
			AgentID     string  `json:"agentId"`
			TotalCost   float64 `json:"totalCost"`
			TotalTokens struct {
				Total int64 `json:"total"`
			} `json:"totalTokens"`
			Sessions []struct {
				SessionID string `json:"sessionId"`
				Tokens    struct {
					Total int64 `json:"total"`
				} `json:"tokens"`
			} `json:"sessions"`
		}
		d.must(200, "GET", "/agents/"+id+"/usage", nil, &usage)
		if usage.AgentID != id || len(usage.Sessions) != 2 || usage.TotalTokens.Total != usage.Sessions[0].Tokens.Total+usage.Sessions[1].Tokens.Total || usage.TotalTokens.Total == 0 {
			t.Fatalf("usage = %+v", usage)
		}
		// The container's own output (beyond the reference): OpenCode's
		// start-up line, from the log file the node keeps.
		if logs, truncated := d.containerLogs(id, 50); !strings.Contains(logs, "opencode server listening on http://0.0.0.0:4096") || truncated == "" {
			t.Fatalf("container logs (Log-Truncated %q):\n%s", truncated, logs)
		}

		// Handle a Permission Request: approve it once; the command runs.
		d.send(id, sid, `[[tool:bash {"command":"echo perm-ok-$((6*7))"}]]`)
		d.approveNext(id, "once")
		d.waitUntilIdle(id)
		if h := d.history(id, sid); !strings.Contains(h, "perm-ok-42") {
			t.Fatalf("the approved command's output is not in the history: %s", h)
		}
		// Answer a Question.
		d.send(id, sid, `[[tool:question {"questions":[{"question":"How would you like me to implement this?","header":"Approach","options":[{"label":"Simple","description":"Quick, minimal implementation"},{"label":"Full","description":"Complete with tests"}]}]}]]`)
		q := waitFor(&d, "/agents/"+id+"/questions", "question", func(v struct {
			Questions []struct {
				ID        string `json:"id"`
				Questions []struct {
					Question string `json:"question"`
					Options  []struct {
						Label string `json:"label"`
					} `json:"options"`
				} `json:"questions"`
			} `json:"questions"`
		}) bool {
			return len(v.Questions) > 0
		}).Questions[0]
		if len(q.Questions) != 1 || q.Questions[0].Question != "How would you like me to implement this?" || len(q.Questions[0].Options) != 2 {
			t.Fatalf("question = %+v", q)
		}
		var replied struct {
			Replied bool `json:"replied"`
		}
		d.must(400, "POST", "/agents/"+id+"/questions/"+q.ID+"/reply", map[string]any{"answers": "Simple"}, nil)
		d.must(200, "POST", "/agents/"+id+"/questions/"+q.ID+"/reply", map[string]any{"answers": [][]string{{"Simple"}}}, &replied)
		if !replied.Replied {
			t.Fatal("question not replied")
		}
		d.waitUntilIdle(id)
		if h := d.history(id, sid); !strings.Contains(h, "Simple") {
			t.Fatalf("the answer is not in the history: %s", h)
		}

		// Abort: a slow reply, cancelled.
		d.send(id, other, "[[slow:120s]] a long task")
		var busy agentStatus
		if d.must(200, "GET", "/agents/"+id, nil, &busy); !busy.Busy {
			t.Fatal("not busy right after a send")
		}
		var aborted struct {
			AgentID string   `json:"agentId"`
			Aborted []string `json:"aborted"`
		}
		d.must(200, "POST", "/agents/"+id+"/abort", nil, &aborted)
		if aborted.AgentID != id || !slices.Contains(aborted.Aborted, other) {
			t.Fatalf("abort = %+v, want session %s", aborted, other)
		}
		d.waitUntilIdle(id)

		// Files.
		if status, body := d.upload(id, "notes.md", []byte("uploaded-content-123\n")); status != 200 || !strings.Contains(string(body), `"path":"/workspace/uploads/notes.md"`) || !strings.Contains(string(body), `"size":21`) {
			t.Fatalf("upload: %d %s", status, body)
		}
		if status, _ := d.upload(id, "run.sh", []byte("x")); status != 400 {
			t.Fatalf("a .sh upload: %d, want 400", status)
		}

		// Stop, start, restart, with the documented started/stopped flags.
		var lc struct {
			AgentID   string `json:"agentId"`
			Status    string `json:"status"`
			Started   *bool  `json:"started"`
			Stopped   *bool  `json:"stopped"`
			Restarted *bool  `json:"restarted"`
		}
		d.must(200, "POST", "/agents/"+id+"/stop", nil, &lc)
		if lc.Status != "STOPPED" || lc.Stopped == nil || !*lc.Stopped {
			t.Fatalf("stop = %+v", lc)
		}
		lc.Stopped = nil
		d.must(200, "POST", "/agents/"+id+"/stop", nil, &lc)
		if lc.Stopped == nil || *lc.Stopped {
			t.Fatalf("second stop = %+v, want stopped false", lc)
		}
		d.must(400, "GET", "/agents/"+id+"/messages", nil, nil)
		d.must(400, "POST", "/agents/"+id+"/messages", map[string]string{"message": "hi"}, nil)
		d.must(200, "POST", "/agents/"+id+"/start", nil, &lc)
		if lc.Status != "RUNNING" || lc.Started == nil || !*lc.Started {
			t.Fatalf("start = %+v", lc)
		}
		lc.Started = nil
		d.must(200, "POST", "/agents/"+id+"/start", nil, &lc)
		if lc.Started == nil || *lc.Started {
			t.Fatalf("second start = %+v, want started false", lc)
		}
		// History survives the stop.
		if h := d.history(id, sid); !strings.Contains(h, "perm-ok-42") {
			t.Fatal("history lost across stop and start")
		}

		// Scopes and secrets: a scoped agent gets only its scope's
		// secrets; an unscoped one only the org's, from its next (re)start.
		var scope struct {
			ID string `json:"id"`
		}
		d.must(201, "POST", "/scopes", map[string]string{"name": "production", "description": "Production environment"}, &scope)
		var put struct {
			Created bool `json:"created"`
		}
		d.must(201, "PUT", "/scopes/"+scope.ID+"/secrets", map[string]string{"key": "ANTHROPIC_API_KEY", "value": "sk-scope-123"}, &put)
		d.must(201, "PUT", "/secrets", map[string]string{"key": "ORG_ONLY", "value": "org-456"}, &put)
		d.must(200, "PUT", "/secrets", map[string]string{"key": "ORG_ONLY", "value": "org-789"}, &put)
		if put.Created {
			t.Fatal("replacing a secret reported created")
		}
		var prod createResponse
		d.must(200, "POST", "/agents", map[string]string{"name": "prod-agent", "scope": "production", "initialPrompt": "Build a REST API"}, &prod)
		if prod.ScopeID == nil || *prod.ScopeID != scope.ID {
			t.Fatalf("prod-agent scope = %v, want %s", prod.ScopeID, scope.ID)
		}
		d.waitUntilIdle(prod.AgentID)
		psid := d.send(prod.AgentID, prod.Sessions[0].ID, `[[tool:bash {"command":"echo \"k=$ANTHROPIC_API_KEY o=${ORG_ONLY:-none}\""}]]`)
		d.approveNext(prod.AgentID, "once")
		d.waitUntilIdle(prod.AgentID)
		if h := d.history(prod.AgentID, psid); !strings.Contains(h, "k=sk-scope-123 o=none") {
			t.Fatalf("the scoped agent's environment is wrong: %s", h)
		}
		d.must(200, "POST", "/agents/"+id+"/restart", nil, &lc)
		if lc.Status != "RUNNING" || lc.Restarted == nil || !*lc.Restarted {
			t.Fatalf("restart = %+v", lc)
		}
		d.send(id, sid, `[[tool:bash {"command":"echo \"o=$ORG_ONLY k=${ANTHROPIC_API_KEY:-none}\""}]]`)
		d.approveNext(id, "once")
		d.waitUntilIdle(id)
		if h := d.history(id, sid); !strings.Contains(h, "o=org-789 k=none") {
			t.Fatalf("the unscoped agent's environment after restart is wrong: %s", h)
		}
		// Secret values never come back.
		var scopeDetail json.RawMessage
		d.must(200, "GET", "/scopes/"+scope.ID, nil, &scopeDetail)
		var secrets json.RawMessage
		d.must(200, "GET", "/secrets", nil, &secrets)
		for _, body := range []string{string(scopeDetail), string(secrets)} {
			if strings.Contains(body, "sk-scope-123") || strings.Contains(body, "org-789") {
				t.Fatalf("a secret value came back: %s", body)
			}
		}

		// List, filter and delete.
		var list struct {
			Agents []agentStatus `json:"agents"`
		}
		d.must(200, "GET", "/agents?status=RUNNING", nil, &list)
		if len(list.Agents) != 3 {
			t.Fatalf("running agents listed: %d, want 3", len(list.Agents))
		}
		d.must(200, "DELETE", "/agents/"+prod.AgentID, nil, nil)
		d.must(404, "GET", "/agents/"+prod.AgentID, nil, nil)
	})
}

// containerLogs GETs the agent's container logs (text/plain, checked
// against the API document) and returns them with their Log-Truncated.
func (d *dev) containerLogs(agentID string, lines int) (text, truncated string) {
	d.t.Helper()
	req := d.jsonRequest("GET", fmt.Sprintf("%s/agents/%s/logs?lines=%d", d.base, agentID, lines), nil)
	req.Header.Set("Authorization", "Bearer "+d.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		d.t.Fatal(err)
	}
	if d.check != nil {
		d.check(req.Method, req.URL.Path, res, b)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		d.t.Fatalf("GET %s: %d %q %s", req.URL.Path, res.StatusCode, res.Header.Get("Content-Type"), b)
	}
	return string(b), res.Header.Get("Log-Truncated")
}
