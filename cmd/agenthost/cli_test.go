package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI is a test double of the REST API: each route answers with a
// function the test gives, and every request is recorded.
type fakeAPI struct {
	t      *testing.T
	srv    *httptest.Server
	mu     sync.Mutex
	routes map[string]http.HandlerFunc // "METHOD /api/v1/path" (query left out)
	seen   []fakeRequest
}

type fakeRequest struct {
	method, path, query, auth, body string
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{t: t, routes: map[string]http.HandlerFunc{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.seen = append(f.seen, fakeRequest{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), string(b)})
		h := f.routes[r.Method+" "+r.URL.Path]
		f.mu.Unlock()
		if h == nil {
			writeFakeError(w, http.StatusNotFound, "not_found", "no route "+r.Method+" "+r.URL.Path)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		h(w, r)
	}))
	t.Cleanup(f.srv.Close)
	t.Setenv("AGENTHOST_ADDR", f.srv.URL)
	t.Setenv("AGENTHOST_TOKEN", "tenant-token")
	t.Setenv("AGENTHOST_OPERATOR_TOKEN", "")
	return f
}

// on sets a route's answer.
func (f *fakeAPI) on(route string, h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[route] = h
}

// json answers every request of a route with status and body.
func (f *fakeAPI) json(route string, status int, body string) {
	f.on(route, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	})
}

// sequence answers a route's requests with bodies in turn, the last one
// from then on.
func (f *fakeAPI) sequence(route string, bodies ...string) {
	var mu sync.Mutex
	i := 0
	f.on(route, func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		b := bodies[min(i, len(bodies)-1)]
		i++
		mu.Unlock()
		io.WriteString(w, b)
	})
}

func (f *fakeAPI) requests() []fakeRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRequest(nil), f.seen...)
}

// last is the last request to path.
func (f *fakeAPI) last(method, path string) fakeRequest {
	f.t.Helper()
	reqs := f.requests()
	for i := len(reqs) - 1; i >= 0; i-- {
		if reqs[i].method == method && reqs[i].path == path {
			return reqs[i]
		}
	}
	f.t.Fatalf("no %s %s request", method, path)
	return fakeRequest{}
}

func writeFakeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":%q,"requestId":"req1"}}`, code, msg)
}

// cliResult is what one run of the CLI printed and its exit code.
type cliResult struct {
	stdout, stderr string
	code           int
	err            error
}

// runCLI runs the agenthost command with args as main would, with short
// polls, and returns its output and exit code.
func runCLI(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	cmd := newRootCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(append(args, "--poll-interval", "5ms"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	res := cliResult{stdout: out.String(), stderr: errOut.String(), err: err}
	var exit *exitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		res.code = exit.code
	default:
		res.code = 1
	}
	return res
}

const fakeAgent = `{"agentId":"agaaaaaaaaaaaaaaaaaaaa","name":"build","status":"%s","busy":%t,"url":"http://a32001.localhost:7481",
"sessions":[],"errorMsg":%s,"createdAt":"2026-01-01T00:00:00.000Z","scopeId":null,"model":"agenthost/offline","tags":["ci"],"autostart":false}`

func agentJSON(status string, busy bool, errorMsg string) string {
	msg := "null"
	if errorMsg != "" {
		msg = fmt.Sprintf("%q", errorMsg)
	}
	return fmt.Sprintf(fakeAgent, status, busy, msg)
}

const agentID = "agaaaaaaaaaaaaaaaaaaaa"

func TestCLIExitCodesFollowTheAPIsAnswer(t *testing.T) {
	cases := []struct {
		status int
		code   string
		exit   int
	}{
		{400, "invalid_request", exitGeneric},
		{401, "unauthenticated", exitAuth},
		{403, "forbidden", exitAuth},
		{404, "not_found", exitNotFound},
		{409, "conflict", exitConflict},
		{429, "agent_limit", exitConflict},
		{500, "internal", exitGeneric},
		{502, "provisioning_failed", exitFailed},
		{502, "agent_not_responding", exitGeneric},
		{503, "no_capacity", exitUnavailable},
		{504, "timeout", exitTimeout},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%d %s", tc.status, tc.code), func(t *testing.T) {
			api := newFakeAPI(t)
			api.on("GET /api/v1/agents/"+agentID, func(w http.ResponseWriter, _ *http.Request) {
				writeFakeError(w, tc.status, tc.code, "the API's own words")
			})
			res := runCLI(t, "", "agents", "get", agentID)
			if res.code != tc.exit {
				t.Fatalf("exit code %d, want %d (%v)", res.code, tc.exit, res.err)
			}
			if want := fmt.Sprintf("the API's own words (%d %s)", tc.status, tc.code); res.err.Error() != want {
				t.Fatalf("error %q, want %q", res.err, want)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		newFakeAPI(t)
		if res := runCLI(t, "", "agents", "list", "--addr", "http://127.0.0.1:1"); res.code != exitUnavailable {
			t.Fatalf("exit code %d, want %d (%v)", res.code, exitUnavailable, res.err)
		}
	})
	t.Run("no token", func(t *testing.T) {
		newFakeAPI(t)
		t.Setenv("AGENTHOST_TOKEN", "")
		if res := runCLI(t, "", "agents", "list"); res.code != exitAuth || !strings.Contains(res.err.Error(), "AGENTHOST_TOKEN") {
			t.Fatalf("exit code %d, want %d (%v)", res.code, exitAuth, res.err)
		}
	})
	t.Run("not the API's error body", func(t *testing.T) {
		api := newFakeAPI(t)
		api.on("GET /api/v1/agents", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "upstream gone", http.StatusServiceUnavailable)
		})
		res := runCLI(t, "", "agents", "list")
		if res.code != exitUnavailable || !strings.Contains(res.err.Error(), "upstream gone") {
			t.Fatalf("exit code %d, want %d (%v)", res.code, exitUnavailable, res.err)
		}
	})
}

func TestCLIUsageErrorsExitWithTwo(t *testing.T) {
	for _, args := range [][]string{
		{"agents", "frobnicate"},
		{"agents", "get"},
		{"agents", "get", "a", "b"},
		{"agents", "list", "--no-such-flag"},
		{"agents", "send", agentID},
		{"agents", "wait", agentID, "--for", "lunch"},
		{"agents", "permissions", "reply", agentID, "per1"},
		{"agents", "permissions", "reply", agentID, "per1", "--allow", "--deny"},
		{"agents", "questions", "reply", agentID, "q1"},
		{"agents", "questions", "reply", agentID, "q1", "--answers-json", "nope"},
		{"nodes", "drain"},
		{"nodes", "drain", "nd1", "--agents", "evict"},
		{"nodes", "drain", "nd1", "--deadline", "1m"},
		{"orgs", "update", "acme"},
		{"tokens", "list", "--org", "acme", "--operator"},
		{"tokens", "create", "--role", "operator"},
		{"agents", "list", "--addr", "ftp://x"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			newFakeAPI(t)
			if res := runCLI(t, "", args...); res.code != exitUsage {
				t.Fatalf("exit code %d, want %d (%v)", res.code, exitUsage, res.err)
			}
		})
	}
	t.Run("a noun alone shows its verbs", func(t *testing.T) {
		newFakeAPI(t)
		res := runCLI(t, "", "agents")
		if res.code != 0 || !strings.Contains(res.stdout, "permissions") {
			t.Fatalf("exit %d, output %q", res.code, res.stdout)
		}
	})
}

func TestCLIAddressAndTokenFromEnvironmentAndFlags(t *testing.T) {
	api := newFakeAPI(t)
	api.json("GET /api/v1/agents", 200, `{"agents":[],"nextCursor":null}`)
	api.json("GET /api/v1/nodes", 200, `{"nodes":[]}`)

	runCLI(t, "", "agents", "list")
	if got := api.last("GET", "/api/v1/agents").auth; got != "Bearer tenant-token" {
		t.Fatalf("Authorization %q from AGENTHOST_TOKEN", got)
	}
	runCLI(t, "", "agents", "list", "--token", "flag-token")
	if got := api.last("GET", "/api/v1/agents").auth; got != "Bearer flag-token" {
		t.Fatalf("Authorization %q, want --token's", got)
	}
	// Operator nouns prefer the operator token.
	runCLI(t, "", "nodes", "list")
	if got := api.last("GET", "/api/v1/nodes").auth; got != "Bearer tenant-token" {
		t.Fatalf("Authorization %q: with no operator token, AGENTHOST_TOKEN", got)
	}
	t.Setenv("AGENTHOST_OPERATOR_TOKEN", "operator-token")
	runCLI(t, "", "nodes", "list")
	if got := api.last("GET", "/api/v1/nodes").auth; got != "Bearer operator-token" {
		t.Fatalf("Authorization %q, want AGENTHOST_OPERATOR_TOKEN's", got)
	}
	// The address may name /api/v1 or leave out the scheme.
	for _, addr := range []string{api.srv.URL + "/api/v1/", strings.TrimPrefix(api.srv.URL, "http://")} {
		t.Setenv("AGENTHOST_ADDR", addr)
		if res := runCLI(t, "", "agents", "list"); res.code != 0 {
			t.Fatalf("AGENTHOST_ADDR=%s: %v", addr, res.err)
		}
	}
	t.Setenv("AGENTHOST_ADDR", "http://127.0.0.1:1")
	if res := runCLI(t, "", "agents", "list", "--addr", api.srv.URL); res.code != 0 {
		t.Fatalf("--addr did not override AGENTHOST_ADDR: %v", res.err)
	}
}

func TestCLIListPagesAndPrints(t *testing.T) {
	api := newFakeAPI(t)
	api.on("GET /api/v1/agents", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("cursor") == "" {
			fmt.Fprintf(w, `{"agents":[%s],"nextCursor":%q}`, agentJSON("RUNNING", false, ""), agentID)
			return
		}
		fmt.Fprint(w, `{"agents":[{"agentId":"agbbbbbbbbbbbbbbbbbbbb","name":"a much longer name","status":"STOPPED","tags":[],"createdAt":"2026-01-01T00:00:00.000Z"}],"nextCursor":null}`)
	})
	res := runCLI(t, "", "agents", "list", "--status", "running", "--tag", "ci")
	if res.code != 0 {
		t.Fatal(res.err)
	}
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[1], agentID) || !strings.Contains(lines[2], "agbbbbbbbbbbbbbbbbbbbb") {
		t.Fatalf("table:\n%s", res.stdout)
	}
	// Aligned: the STATUS column starts at the same place on every line.
	col := strings.Index(lines[0], "STATUS")
	if strings.Index(lines[1], "RUNNING") != col || strings.Index(lines[2], "STOPPED") != col {
		t.Fatalf("columns are not aligned:\n%s", res.stdout)
	}
	if q := api.requests()[0].query; !strings.Contains(q, "status=RUNNING") || !strings.Contains(q, "tag=ci") {
		t.Fatalf("query %q lacks the filters", q)
	}

	res = runCLI(t, "", "agents", "list", "--json")
	var out struct {
		Agents []struct {
			AgentID string `json:"agentId"`
		} `json:"agents"`
		NextCursor *string `json:"nextCursor"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil || len(out.Agents) != 2 || out.NextCursor != nil {
		t.Fatalf("--json: %v\n%s", err, res.stdout)
	}
	res = runCLI(t, "", "agents", "list", "--json", "--limit", "1")
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil || len(out.Agents) != 1 || out.NextCursor == nil || *out.NextCursor != agentID {
		t.Fatalf("--limit 1: %v\n%s", err, res.stdout)
	}
}

func TestCLICreateWaitShowsTransitions(t *testing.T) {
	api := newFakeAPI(t)
	api.json("POST /api/v1/agents", 200, `{"agentId":"`+agentID+`","scopeId":null,"url":"http://a32001.localhost:7481","sessions":[{"id":"ses_1","title":null,"url":"u"}]}`)
	api.sequence("GET /api/v1/agents/"+agentID, agentJSON("RUNNING", true, ""), agentJSON("RUNNING", true, ""), agentJSON("RUNNING", false, ""))
	res := runCLI(t, "", "agents", "create", "build", "--prompt", "hello", "--tag", "ci", "--wait")
	if res.code != 0 {
		t.Fatal(res.err)
	}
	var body map[string]any
	json.Unmarshal([]byte(api.last("POST", "/api/v1/agents").body), &body)
	if body["name"] != "build" || body["initialPrompt"] != "hello" || fmt.Sprint(body["tags"]) != "[ci]" {
		t.Fatalf("create body %v", body)
	}
	// stderr is no terminal: the changes only, each once, in order.
	want := []string{"build: PROVISIONING", agentID + ": RUNNING", agentID + ": RUNNING, busy", agentID + ": RUNNING, idle"}
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	if len(lines) != len(want) {
		t.Fatalf("progress:\n%s", res.stderr)
	}
	for i, l := range lines {
		if !regexp.MustCompile(`^` + regexp.QuoteMeta(want[i]) + ` \(\d+\.\ds\)$`).MatchString(l) {
			t.Fatalf("progress line %d = %q, want %q (elapsed)", i, l, want[i])
		}
	}
	if !strings.Contains(res.stdout, agentID) || !strings.Contains(res.stdout, "ses_1") || strings.ContainsAny(res.stdout, "\r") {
		t.Fatalf("stdout:\n%s", res.stdout)
	}

	// --json: the API's answer, nothing on stderr; -q: the ID alone.
	res = runCLI(t, "", "agents", "create", "build", "--wait", "--json")
	if res.stderr != "" || !json.Valid([]byte(res.stdout)) || !strings.Contains(res.stdout, `"agentId": "`+agentID) {
		t.Fatalf("--json: stdout %q stderr %q", res.stdout, res.stderr)
	}
	if res = runCLI(t, "", "agents", "create", "build", "-q"); res.stdout != agentID+"\n" || res.stderr != "" {
		t.Fatalf("-q: stdout %q stderr %q", res.stdout, res.stderr)
	}
}

func TestCLICreateWaitGoesOnPastTheAPIsTimeout(t *testing.T) {
	api := newFakeAPI(t)
	api.on("POST /api/v1/agents", func(w http.ResponseWriter, _ *http.Request) {
		writeFakeError(w, 504, "timeout", "agent "+agentID+" was not ready within 1m0s; it is still provisioning")
	})
	api.sequence("GET /api/v1/agents/"+agentID, agentJSON("PROVISIONING", false, ""), agentJSON("RUNNING", false, ""))
	if res := runCLI(t, "", "agents", "create", "build"); res.code != exitTimeout {
		t.Fatalf("without --wait: exit %d, want %d", res.code, exitTimeout)
	}
	res := runCLI(t, "", "agents", "create", "build", "--wait", "--json")
	if res.code != 0 || !strings.Contains(res.stdout, `"url": "http://a32001.localhost:7481"`) {
		t.Fatalf("exit %d (%v)\n%s", res.code, res.err, res.stdout)
	}
}

func TestCLIWaitEnds(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		api := newFakeAPI(t)
		api.json("GET /api/v1/agents/"+agentID, 200, agentJSON("PROVISIONING", false, ""))
		res := runCLI(t, "", "agents", "wait", agentID, "--timeout", "100ms")
		if res.code != exitTimeout || !strings.Contains(res.err.Error(), "last seen: PROVISIONING") {
			t.Fatalf("exit %d (%v)", res.code, res.err)
		}
	})
	t.Run("error status", func(t *testing.T) {
		api := newFakeAPI(t)
		api.sequence("GET /api/v1/agents/"+agentID, agentJSON("PROVISIONING", false, ""), agentJSON("ERROR", false, "image missing"))
		res := runCLI(t, "", "agents", "wait", agentID)
		if res.code != exitFailed || !strings.Contains(res.err.Error(), "image missing") {
			t.Fatalf("exit %d (%v)", res.code, res.err)
		}
		if !strings.Contains(res.stderr, agentID+": PROVISIONING") || !strings.Contains(res.stderr, agentID+": ERROR") {
			t.Fatalf("progress:\n%s", res.stderr)
		}
	})
	t.Run("deleted", func(t *testing.T) {
		newFakeAPI(t)
		if res := runCLI(t, "", "agents", "wait", agentID); res.code != exitNotFound {
			t.Fatalf("exit %d (%v)", res.code, res.err)
		}
	})
	t.Run("unavailable is waited out", func(t *testing.T) {
		api := newFakeAPI(t)
		n := 0
		api.on("GET /api/v1/agents/"+agentID, func(w http.ResponseWriter, _ *http.Request) {
			if n++; n < 3 {
				writeFakeError(w, 503, "unavailable", "no leader")
				return
			}
			io.WriteString(w, agentJSON("STOPPED", false, ""))
		})
		res := runCLI(t, "", "agents", "wait", agentID, "--for", "stopped")
		if res.code != 0 || res.stdout != agentID+" STOPPED\n" {
			t.Fatalf("exit %d (%v) %q", res.code, res.err, res.stdout)
		}
	})
}

const fakeHistory = `{"sessionId":"ses_1","messages":[
{"id":"m1","info":{"role":"user","parts":[{"type":"text","text":"hi"}]}},
{"id":"m2","info":{"role":"assistant","parts":[{"type":"step-start"},{"type":"text","text":"Offline model reply to: hi"}],"time":{"created":1,"completed":2},"tokens":{"total":5}}}
],"usage":{"cost":0,"tokens":{"total":5}}}`

func TestCLISendWaitsForTheReply(t *testing.T) {
	api := newFakeAPI(t)
	api.json("POST /api/v1/agents/"+agentID+"/messages", 200, `{"sessionId":"ses_1","sent":true}`)
	api.sequence("GET /api/v1/agents/"+agentID, agentJSON("RUNNING", true, ""), agentJSON("RUNNING", true, ""), agentJSON("RUNNING", false, ""))
	api.json("GET /api/v1/agents/"+agentID+"/messages", 200, fakeHistory)
	api.json("GET /api/v1/agents/"+agentID+"/permissions", 200, `{"permissions":[{"id":"per_1","sessionID":"ses_1","permission":"bash","patterns":["ls"]}]}`)
	api.json("GET /api/v1/agents/"+agentID+"/questions", 200, `{"questions":[]}`)

	res := runCLI(t, "", "agents", "send", agentID, "hi", "--wait")
	if res.code != 0 {
		t.Fatal(res.err)
	}
	if res.stdout != "assistant: Offline model reply to: hi\n" {
		t.Fatalf("reply %q", res.stdout)
	}
	if body := api.last("POST", "/api/v1/agents/"+agentID+"/messages").body; body != `{"message":"hi"}` {
		t.Fatalf("send body %s", body)
	}
	if strings.Count(res.stderr, "asks permission per_1") != 1 || !strings.Contains(res.stderr, "permissions reply "+agentID+" per_1") {
		t.Fatalf("the pending permission is not shown once:\n%s", res.stderr)
	}

	// Without --wait: the session's ID; from stdin with "-"; to a session.
	res = runCLI(t, "a message\nfrom stdin", "agents", "send", agentID, "-", "--session", "ses_1")
	if res.stdout != "ses_1\n" {
		t.Fatalf("stdout %q", res.stdout)
	}
	if body := api.last("POST", "/api/v1/agents/"+agentID+"/messages").body; body != `{"message":"a message\nfrom stdin","sessionId":"ses_1"}` {
		t.Fatalf("send body %s", body)
	}

	res = runCLI(t, "", "agents", "messages", agentID, "--session", "ses_1")
	if !strings.Contains(res.stdout, "session ses_1: 2 messages, 5 tokens") || !strings.Contains(res.stdout, "user:      hi") {
		t.Fatalf("messages:\n%s", res.stdout)
	}
	if q := api.last("GET", "/api/v1/agents/"+agentID+"/messages").query; q != "sessionId=ses_1" {
		t.Fatalf("query %q", q)
	}
}

func TestCLIRepliesToPermissionsAndQuestions(t *testing.T) {
	api := newFakeAPI(t)
	api.json("POST /api/v1/agents/"+agentID+"/permissions/per_1/reply", 200, `{"replied":true,"reply":"reject"}`)
	api.json("POST /api/v1/agents/"+agentID+"/questions/que_1/reply", 200, `{"replied":true}`)
	api.json("GET /api/v1/agents/"+agentID+"/permissions", 200, `{"permissions":[{"id":"per_1","sessionID":"ses_1","permission":"bash","patterns":["rm -rf /tmp/x"]}]}`)

	for flag, want := range map[string]string{"--allow": `{"reply":"once"}`, "--always": `{"reply":"always"}`} {
		runCLI(t, "", "agents", "permissions", "reply", agentID, "per_1", flag)
		if got := api.last("POST", "/api/v1/agents/"+agentID+"/permissions/per_1/reply").body; got != want {
			t.Fatalf("%s: body %s, want %s", flag, got, want)
		}
	}
	runCLI(t, "", "agents", "permissions", "reply", agentID, "per_1", "--deny", "--message", "not here")
	if got := api.last("POST", "/api/v1/agents/"+agentID+"/permissions/per_1/reply").body; got != `{"message":"not here","reply":"reject"}` {
		t.Fatalf("--deny: body %s", got)
	}
	runCLI(t, "", "agents", "questions", "reply", agentID, "que_1", "--answer", "Simple", "--answer", "Go, Rust")
	if got := api.last("POST", "/api/v1/agents/"+agentID+"/questions/que_1/reply").body; got != `{"answers":[["Simple"],["Go","Rust"]]}` {
		t.Fatalf("answers body %s", got)
	}
	res := runCLI(t, "", "agents", "permissions", agentID)
	if !strings.Contains(res.stdout, "per_1") || !strings.Contains(res.stdout, "rm -rf /tmp/x") {
		t.Fatalf("permissions:\n%s", res.stdout)
	}
}

func TestCLILogsFollowsTheEventStream(t *testing.T) {
	api := newFakeAPI(t)
	text := `{"type":"message.part.updated","data":{"type":"message.part.updated","properties":{"sessionID":"ses_1","part":{"id":"prt_1","type":"text","text":"Offline model reply to: hi","time":{"start":1,"end":2}}}}}`
	api.on("GET /api/v1/agents/"+agentID+"/events", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: status\ndata: {\"agentId\":\""+agentID+"\",\"status\":\"RUNNING\",\"errorMsg\":null}\n\n")
		fmt.Fprint(w, ": keep-alive\n\n")
		fmt.Fprint(w, "event: busy\ndata: {\"busy\":true}\n\n")
		fmt.Fprint(w, "event: message\ndata: {\"type\":\"message.part.delta\",\"data\":{}}\n\n")
		fmt.Fprint(w, "event: message\ndata: "+text+"\n\n")
		fmt.Fprint(w, "event: message\ndata: "+text+"\n\n") // the same part again
		fmt.Fprint(w, "event: permission\ndata: {\"type\":\"permission.asked\",\"data\":{\"properties\":{\"id\":\"per_1\",\"sessionID\":\"ses_1\",\"permission\":\"bash\",\"patterns\":[\"ls\"]}}}\n\n")
		fmt.Fprint(w, "event: deleted\ndata: {\"agentId\":\""+agentID+"\"}\n\n")
	})
	res := runCLI(t, "", "agents", "logs", agentID)
	if res.code != 0 {
		t.Fatal(res.err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		if !regexp.MustCompile(`^\d\d:\d\d:\d\d `).MatchString(l) {
			t.Fatalf("no time on %q", l)
		}
		got = append(got, l[9:])
	}
	want := []string{"status RUNNING", "busy", "ses_1 text: Offline model reply to: hi",
		"ses_1 permission per_1 asked: bash ls (agenthost agents permissions reply " + agentID + " per_1 --allow|--deny)", "deleted"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("logs:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	res = runCLI(t, "", "agents", "logs", agentID, "--json")
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if len(lines) != 7 {
		t.Fatalf("--json: every event, one a line:\n%s", res.stdout)
	}
	for _, l := range lines {
		var ev struct {
			Event string          `json:"event"`
			Data  json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Event == "" || len(ev.Data) == 0 {
			t.Fatalf("--json line %q: %v", l, err)
		}
	}
}

func TestCLIOperatorVerbs(t *testing.T) {
	api := newFakeAPI(t)
	t.Setenv("AGENTHOST_OPERATOR_TOKEN", "operator-token")
	nodes := `{"nodes":[{"id":"nd1","name":"dev-node","address":"127.0.0.1","status":"ready","capacity":{"cpuMillis":4000,"memoryMB":8192,"maxAgents":0},
"allocated":{"cpuMillis":1500,"memoryMB":1024,"agents":3},"agentCount":3,"labels":{},"runtimes":[],"lastSeen":null}]}`
	api.json("GET /api/v1/nodes", 200, nodes)
	api.json("POST /api/v1/nodes/nd1/drain", 200, `{"id":"nd1","name":"dev-node","status":"draining"}`)
	res := runCLI(t, "", "nodes", "list")
	if !strings.Contains(res.stdout, "1.5/4") || !strings.Contains(res.stdout, "1024/8192 MB") {
		t.Fatalf("nodes list:\n%s", res.stdout)
	}
	// By name: the ID is looked up.
	if res = runCLI(t, "", "nodes", "drain", "dev-node"); res.code != 0 || res.stdout != "nd1 (dev-node) draining\n" {
		t.Fatalf("drain by name: %v %q", res.err, res.stdout)
	}
	if res = runCLI(t, "", "nodes", "drain", "nope"); res.code != exitNotFound {
		t.Fatalf("drain of a missing node: exit %d", res.code)
	}
	if got := api.last("POST", "/api/v1/nodes/nd1/drain").body; got != "" {
		t.Fatalf("a plain drain sent %s", got)
	}
	api.json("POST /api/v1/nodes/nd1/drain", 200, `{"id":"nd1","name":"dev-node","status":"draining","drain":{"agents":"move","deadline":"2030-01-01T00:00:00.000Z"}}`)
	if res = runCLI(t, "", "nodes", "drain", "nd1", "--agents", "move", "--deadline", "10m"); res.code != 0 || !strings.Contains(res.stdout, "draining (move agents at 20") {
		t.Fatalf("drain --agents move: %v %q", res.err, res.stdout)
	}
	if got := api.last("POST", "/api/v1/nodes/nd1/drain").body; got != `{"agents":"move","deadlineSeconds":600}` {
		t.Fatalf("drain body %s", got)
	}
	api.on("DELETE /api/v1/nodes/nd1", func(w http.ResponseWriter, _ *http.Request) {
		writeFakeError(w, 409, "conflict", "node nd1 has 3 agents placed on it")
	})
	if res = runCLI(t, "", "nodes", "rm", "dev-node"); res.code != exitConflict || !strings.Contains(res.err.Error(), "has 3 agents") {
		t.Fatalf("rm of a node with agents: exit %d (%v)", res.code, res.err)
	}
	api.json("DELETE /api/v1/nodes/nd1", 200, `{"id":"nd1","deleted":true}`)
	if res = runCLI(t, "", "nodes", "rm", "dev-node"); res.code != 0 || res.stdout != "nd1 removed\n" {
		t.Fatalf("rm: %v %q", res.err, res.stdout)
	}

	org := `{"id":"orgx","name":"acme","plan":{"maxAgents":5,"maxRunning":2},"defaultModel":null,"usage":{"agents":1,"running":1},"createdAt":"2026-01-01T00:00:00.000Z"}`
	api.json("GET /api/v1/orgs", 200, `{"orgs":[`+org+`]}`)
	api.json("GET /api/v1/orgs/orgx", 200, org)
	api.json("PATCH /api/v1/orgs/orgx", 200, org)
	api.json("POST /api/v1/orgs", 201, org)
	api.json("POST /api/v1/orgs/orgx/tokens", 201, `{"id":"tk1","orgId":"orgx","label":"ci","role":"tenant","last4":"abcd","createdAt":"2026-01-01T00:00:00.000Z","lastUsedAt":null,"token":"ah_live_x"}`)
	api.json("POST /api/v1/tokens", 201, `{"id":"tk2","orgId":"orgx","label":"","role":"tenant","last4":"abcd","createdAt":"2026-01-01T00:00:00.000Z","lastUsedAt":null,"token":"ah_live_y"}`)

	runCLI(t, "", "orgs", "create", "acme", "--max-agents", "5", "--max-running", "2")
	if got := api.last("POST", "/api/v1/orgs").body; got != `{"name":"acme","plan":{"maxAgents":5,"maxRunning":2}}` {
		t.Fatalf("create body %s", got)
	}
	// Update by name changes only the cap given, keeping the other.
	if res = runCLI(t, "", "orgs", "update", "acme", "--max-running", "9"); res.code != 0 {
		t.Fatal(res.err)
	}
	if got := api.last("PATCH", "/api/v1/orgs/orgx").body; got != `{"plan":{"maxAgents":5,"maxRunning":9}}` {
		t.Fatalf("update body %s", got)
	}
	if res = runCLI(t, "", "orgs", "get", "acme"); !strings.Contains(res.stdout, "5 agents, 2 running") {
		t.Fatalf("orgs get:\n%s", res.stdout)
	}
	// An org's tokens with the operator token; the tenant's own with its own.
	if res = runCLI(t, "", "tokens", "create", "--org", "acme", "--label", "ci", "-q"); res.stdout != "ah_live_x\n" {
		t.Fatalf("tokens create -q: %q (%v)", res.stdout, res.err)
	}
	if got := api.last("POST", "/api/v1/orgs/orgx/tokens").auth; got != "Bearer operator-token" {
		t.Fatalf("org token made with %q", got)
	}
	runCLI(t, "", "tokens", "create")
	if got := api.last("POST", "/api/v1/tokens").auth; got != "Bearer tenant-token" {
		t.Fatalf("own token made with %q", got)
	}
}

// lockedBuffer is a bytes.Buffer safe for the live line's goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestProgressOnATerminalRedrawsALiveLine(t *testing.T) {
	var out lockedBuffer
	clock := time.Unix(0, 0)
	var mu sync.Mutex
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		clock = clock.Add(100 * time.Millisecond)
		return clock
	}
	p := startProgress(&out, true, false, "ag1", now, time.Millisecond)
	p.set("PROVISIONING")
	for !strings.Contains(out.String(), "\r\033[K") {
		time.Sleep(time.Millisecond)
	}
	p.set("RUNNING")
	p.finish()
	s := out.String()
	// The live line is cleared before each change is written; after
	// finish nothing more is drawn.
	time.Sleep(10 * time.Millisecond)
	if out.String() != s {
		t.Fatalf("the live line was drawn after finish: %q", out.String())
	}
	if !regexp.MustCompile(`\r\033\[K[|/\\-] ag1: PROVISIONING \d+\.\ds`).MatchString(s) {
		t.Fatalf("no live line: %q", s)
	}
	lines := regexp.MustCompile(`ag1: \w+ \(\d+\.\ds\)\n`).FindAllString(s, -1)
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ag1: PROVISIONING") || !strings.HasPrefix(lines[1], "ag1: RUNNING") {
		t.Fatalf("changes %q in %q", lines, s)
	}
	if i := strings.Index(s, "ag1: RUNNING ("); s[i-len("\r\033[K"):i] != "\r\033[K" {
		t.Fatalf("a change was written over the live line: %q", s)
	}

	// Not a terminal: the changes only; quiet: nothing.
	var plain bytes.Buffer
	p = newProgress(&plain, false, "ag1", now)
	p.set("PROVISIONING")
	p.set("PROVISIONING")
	p.set("RUNNING")
	p.finish()
	if strings.Count(plain.String(), "\n") != 2 || strings.Contains(plain.String(), "\r") {
		t.Fatalf("not a terminal: %q", plain.String())
	}
	var quiet bytes.Buffer
	p = newProgress(&quiet, true, "ag1", now)
	p.set("RUNNING")
	p.note("hint")
	p.finish()
	if quiet.Len() != 0 {
		t.Fatalf("quiet progress wrote %q", quiet.String())
	}
}

// TestCLILogsContainer: --container prints the container's output as the
// logs endpoint answers it, asking for --lines; --json wraps it with
// whether it was cut; the flags that do not go together are usage errors.
func TestCLILogsContainer(t *testing.T) {
	api := newFakeAPI(t)
	api.on("GET /api/v1/agents/"+agentID+"/logs", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Log-Truncated", "true")
		fmt.Fprint(w, "opencode server listening on http://0.0.0.0:4096\nlines="+r.URL.Query().Get("lines")+"\n")
	})
	res := runCLI(t, "", "agents", "logs", agentID, "--container")
	if res.code != 0 || res.stdout != "opencode server listening on http://0.0.0.0:4096\nlines=200\n" {
		t.Fatalf("--container: exit %d, %q, %v", res.code, res.stdout, res.err)
	}
	res = runCLI(t, "", "agents", "logs", agentID, "--container", "--lines", "7", "--json")
	var out struct {
		AgentID   string `json:"agentId"`
		Text      string `json:"text"`
		Truncated bool   `json:"truncated"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil || out.AgentID != agentID || !strings.HasSuffix(out.Text, "lines=7\n") || !out.Truncated {
		t.Fatalf("--json: %q %v", res.stdout, err)
	}
	for _, args := range [][]string{
		{"--lines", "5"},
		{"--container", "--lines", "0"},
		{"--container", "--lines", "5001"},
		{"--container", "--duration", "1m"},
	} {
		if res := runCLI(t, "", append([]string{"agents", "logs", agentID}, args...)...); res.code != exitUsage {
			t.Errorf("logs %v: exit %d, want the usage code %d", args, res.code, exitUsage)
		}
	}

	// The API's errors are the CLI's: a stopped agent is not running.
	api.json("GET /api/v1/agents/"+agentID+"/logs", 400, `{"error":{"code":"agent_not_running","message":"agent is not running","requestId":"r1"}}`)
	if res := runCLI(t, "", "agents", "logs", agentID, "--container"); res.code == 0 || res.err == nil || !strings.Contains(res.err.Error(), "not running") {
		t.Fatalf("a stopped agent: exit %d, %v", res.code, res.err)
	}
}
