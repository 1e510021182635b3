package api

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/nodeagent/runtime"
	"github.com/agenthost/agenthost/store"
)

// htRoute is one method of one endpoint, its path with placeholders
// ({agent}, {scope}, {key}, {perm}, {question}, {token}, {org}, {node}).
type htRoute struct {
	method, path string
	access       access
}

// htRoutes lists every route of routes.go but the public ones.
var htRoutes = []htRoute{
	{"POST", "/api/v1/agents", tenant},
	{"GET", "/api/v1/agents", tenant},
	{"GET", "/api/v1/agents/{agent}", tenant},
	{"DELETE", "/api/v1/agents/{agent}", tenant},
	{"POST", "/api/v1/agents/{agent}/start", tenant},
	{"POST", "/api/v1/agents/{agent}/stop", tenant},
	{"POST", "/api/v1/agents/{agent}/restart", tenant},
	{"GET", "/api/v1/agents/{agent}/messages", tenant},
	{"POST", "/api/v1/agents/{agent}/messages", tenant},
	{"GET", "/api/v1/agents/{agent}/usage", tenant},
	{"POST", "/api/v1/agents/{agent}/abort", tenant},
	{"POST", "/api/v1/agents/{agent}/files", tenant},
	{"GET", "/api/v1/agents/{agent}/permissions", tenant},
	{"POST", "/api/v1/agents/{agent}/permissions/{perm}/reply", tenant},
	{"GET", "/api/v1/agents/{agent}/questions", tenant},
	{"POST", "/api/v1/agents/{agent}/questions/{question}/reply", tenant},
	{"GET", "/api/v1/agents/{agent}/events", tenant},
	{"GET", "/api/v1/agents/{agent}/logs", tenant},
	{"GET", "/api/v1/scopes", tenant},
	{"POST", "/api/v1/scopes", tenant},
	{"GET", "/api/v1/scopes/{scope}", tenant},
	{"PATCH", "/api/v1/scopes/{scope}", tenant},
	{"DELETE", "/api/v1/scopes/{scope}", tenant},
	{"GET", "/api/v1/secrets", tenant},
	{"PUT", "/api/v1/secrets", tenant},
	{"DELETE", "/api/v1/secrets/{key}", tenant},
	{"GET", "/api/v1/scopes/{scope}/secrets", tenant},
	{"PUT", "/api/v1/scopes/{scope}/secrets", tenant},
	{"DELETE", "/api/v1/scopes/{scope}/secrets/{key}", tenant},
	{"GET", "/api/v1/models", tenant},
	{"GET", "/api/v1/tokens", tenant},
	{"POST", "/api/v1/tokens", tenant},
	{"DELETE", "/api/v1/tokens/{token}", tenant},
	{"GET", "/api/v1/orgs", operator},
	{"POST", "/api/v1/orgs", operator},
	{"GET", "/api/v1/orgs/{org}", operator},
	{"PATCH", "/api/v1/orgs/{org}", operator},
	{"GET", "/api/v1/orgs/{org}/tokens", operator},
	{"POST", "/api/v1/orgs/{org}/tokens", operator},
	{"DELETE", "/api/v1/orgs/{org}/tokens/{token}", operator},
	{"GET", "/api/v1/nodes", operator},
	{"POST", "/api/v1/nodes/{node}/drain", operator},
	{"POST", "/api/v1/nodes/{node}/undrain", operator},
	{"GET", "/api/v1/operator/tokens", operator},
	{"POST", "/api/v1/operator/tokens", operator},
	{"DELETE", "/api/v1/operator/tokens/{token}", operator},
	{"GET", "/api/v1/operator/secrets/keys", operator},
	{"POST", "/api/v1/operator/secrets/reseal", operator},
}

// htRow is one documented error: a request and the status and error code
// it must get. before prepares what the row needs; after checks what the
// request must not have changed.
type htRow struct {
	name    string
	ts      *httptest.Server // nil: the main server
	method  string
	path    string
	token   string
	body    any
	headers []string
	status  int
	code    string
	msg     string // a part of the message, where causes share a code
	before  func(t *testing.T)
	after   func(t *testing.T, r *htResp)
}

// htMultipart is a multipart body with one field holding content as a file
// named filename ("" for a plain field).
func htMultipart(field, filename string, content []byte) (body []byte, contentType string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	var w io.Writer
	if filename != "" {
		w, _ = mw.CreateFormFile(field, filename)
	} else {
		w, _ = mw.CreateFormField(field)
	}
	w.Write(content)
	mw.Close()
	return buf.Bytes(), mw.FormDataContentType()
}

// htBigUpload streams a multipart upload of size bytes named name.
func htBigUpload(name string, size int64) (body io.Reader, contentType string) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		w, err := mw.CreateFormFile("file", name)
		if err == nil {
			_, err = io.Copy(w, io.LimitReader(htZeros{}, size))
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr, mw.FormDataContentType()
}

type htZeros struct{}

func (htZeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestErrorTable(t *testing.T) {
	h := htNew(t, htOptions{nameModes: true})
	_, slow := h.newServer(func(c *Config) {
		c.CreateTimeout, c.StartTimeout, c.StopTimeout = 300*time.Millisecond, 300*time.Millisecond, 300*time.Millisecond
	})
	_, nokeys := h.newServer(func(c *Config) { c.Keyring = nil })

	a := h.org("alpha", store.Plan{})
	b := h.org("beta", store.Plan{})
	revoked, revokedID := h.token(a.ID, store.RoleTenant, "to-revoke")
	h.htApply(&store.TokenRevoke{ID: revokedID})
	_, bTokenID := h.token(b.ID, store.RoleTenant, "b-spare")
	_, aTokenID := h.token(a.ID, store.RoleTenant, "a-spare")

	// Org A's agents, one per state the rows need.
	var created createAgentResponse
	h.mustStatus(h.do(nil, "POST", "/api/v1/agents", a.Token, map[string]any{"name": "runner", "initialPrompt": "hello"}), 200).decode(t, &created)
	running := created.AgentID
	if len(created.Sessions) != 1 {
		t.Fatalf("create with a prompt made sessions %+v", created.Sessions)
	}
	session := created.Sessions[0].ID
	stopped := h.createAgent(a.Token, map[string]any{"name": "stopper"})
	h.mustStatus(h.do(nil, "POST", "/api/v1/agents/"+stopped+"/stop", a.Token, nil), 200)
	broken := h.createAgent(a.Token, map[string]any{"name": "broken"})
	h.rt.setBroken(broken, true)
	// The store says RUNNING; its node says it does not run it.
	ghost := h.createAgent(a.Token, map[string]any{"name": "ghost"})
	h.rt.setRunning(ghost, false)
	quota := h.createAgent(a.Token, map[string]any{"name": "quota"})
	uploadsDir := filepath.Join(h.rt.workspace(quota), runtime.UploadsDir)
	if err := os.MkdirAll(uploadsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(uploadsDir, "big.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(runtime.MaxUploadAgentBytes - 1<<20); err != nil { // sparse: 99 MB of the agent's 100
		t.Fatal(err)
	}
	f.Close()

	startFails := h.createAgent(a.Token, map[string]any{"name": "start-fails"})
	h.mustStatus(h.do(nil, "POST", "/api/v1/agents/"+startFails+"/stop", a.Token, nil), 200)
	h.node.setMode(startFails, htNodeFail)
	startHangs := h.createAgent(a.Token, map[string]any{"name": "start-hangs"})
	h.mustStatus(h.do(nil, "POST", "/api/v1/agents/"+startHangs+"/stop", a.Token, nil), 200)
	h.node.setMode(startHangs, htNodeHang)
	stopHangs := h.createAgent(a.Token, map[string]any{"name": "stop-hangs"})
	h.node.setMode(stopHangs, htNodeHang)
	restartFails := h.createAgent(a.Token, map[string]any{"name": "restart-fails"})
	h.node.setMode(restartFails, htNodeFail)
	restartStopHangs := h.createAgent(a.Token, map[string]any{"name": "restart-stop-hangs"})
	h.node.setMode(restartStopHangs, htNodeHang)

	// Agents that never ran: one in ERROR, one still PROVISIONING. Their
	// creates are rows too (see below); they are made here so that the
	// lifecycle rows can use them.
	h.mustStatus(h.do(nil, "POST", "/api/v1/agents", a.Token, map[string]any{"name": "fail-at-create"}), 502)
	h.mustStatus(h.do(slow, "POST", "/api/v1/agents", a.Token, map[string]any{"name": "hang-at-create"}), 504)
	byName := func(name string) string {
		t.Helper()
		agents, err := h.st.State().AgentsByOrgName(a.ID, name)
		if err != nil || len(agents) != 1 {
			t.Fatalf("agents named %s: %v, %v", name, agents, err)
		}
		return agents[0].ID
	}
	errored, provisioning := byName("fail-at-create"), byName("hang-at-create")
	if s := h.agent(errored).Status; s != store.StatusError {
		t.Fatalf("fail-at-create is %s", s)
	}
	if s := h.agent(provisioning).Status; s != store.StatusProvisioning {
		t.Fatalf("hang-at-create is %s", s)
	}

	bAgent := h.createAgent(b.Token, map[string]any{"name": "b-agent"})
	var sc struct {
		ID string `json:"id"`
	}
	h.mustStatus(h.do(nil, "POST", "/api/v1/scopes", a.Token, map[string]any{"name": "alpha-scope"}), 201).decode(t, &sc)
	aScope := sc.ID
	h.mustStatus(h.do(nil, "POST", "/api/v1/scopes", a.Token, map[string]any{"name": "alpha-two"}), 201).decode(t, &sc)
	aScope2 := sc.ID
	h.mustStatus(h.do(nil, "POST", "/api/v1/scopes", b.Token, map[string]any{"name": "beta-scope"}), 201).decode(t, &sc)
	bScope := sc.ID
	h.mustStatus(h.do(nil, "PUT", "/api/v1/secrets", a.Token, map[string]any{"key": "A_KEY", "value": "a"}), 201)
	h.mustStatus(h.do(nil, "PUT", "/api/v1/secrets", b.Token, map[string]any{"key": "B_ONLY", "value": "b"}), 201)
	h.mustStatus(h.do(nil, "PUT", "/api/v1/scopes/"+bScope+"/secrets", b.Token, map[string]any{"key": "B_SCOPED", "value": "b"}), 201)

	limited := h.org("limited", store.Plan{MaxAgents: 1})
	h.createAgent(limited.Token, map[string]any{"name": "only"})
	capped := h.org("capped", store.Plan{MaxRunning: 1})
	cappedStopped := h.createAgent(capped.Token, map[string]any{"name": "first"})
	h.mustStatus(h.do(nil, "POST", "/api/v1/agents/"+cappedStopped+"/stop", capped.Token, nil), 200)
	h.createAgent(capped.Token, map[string]any{"name": "second"})
	filler := h.org("filler", store.Plan{})

	h.htApply(&store.NodeRegister{Node: store.Node{ID: "node-down", Name: "node-down", Address: "127.0.0.1:7501",
		Runtimes: []string{"none"}, LastSeen: time.Now().UTC()}})
	h.htApply(&store.NodeSetStatus{ID: "node-down", Status: store.NodeDown})

	upload, uploadCT := htMultipart("file", "notes.txt", []byte("hello"))
	exe, exeCT := htMultipart("file", "tool.exe", []byte("MZ"))
	noFile, noFileCT := htMultipart("other", "", []byte("x"))
	ct := func(v string) []string { return []string{"Content-Type", v} }
	agentPath := func(id, rest string) string { return "/api/v1/agents/" + id + rest }
	long := strings.Repeat("x", store.MaxNameLength+1)

	bStillThere := func(t *testing.T, _ *htResp) {
		t.Helper()
		st := h.st.State()
		if ag, _ := st.Agent(bAgent); ag == nil || ag.Status != store.StatusRunning || ag.Desired != store.DesiredRunning {
			t.Errorf("org B's agent changed: %+v", ag)
		}
		if s, _ := st.Scope(b.ID, bScope); s == nil || s.Name != "beta-scope" {
			t.Errorf("org B's scope changed: %+v", s)
		}
		for _, k := range []struct{ scope, key string }{{"", "B_ONLY"}, {bScope, "B_SCOPED"}} {
			if s, _ := st.Secret(b.ID, k.scope, k.key); s == nil {
				t.Errorf("org B's secret %s is gone", k.key)
			}
		}
		if tok, _ := st.Token(bTokenID); tok == nil {
			t.Errorf("org B's token is gone")
		}
	}
	stillStatus := func(id string, status store.AgentStatus, desired store.DesiredState) func(*testing.T, *htResp) {
		return func(t *testing.T, _ *htResp) {
			t.Helper()
			if ag := h.agent(id); ag == nil || ag.Status != status || ag.Desired != desired {
				t.Errorf("agent %s: %+v, want %s/%s", id, ag, status, desired)
			}
		}
	}
	noNewAgent := func(orgID string, want int) func(*testing.T, *htResp) {
		return func(t *testing.T, _ *htResp) {
			t.Helper()
			if agents, _ := h.st.State().AgentsByOrg(orgID); len(agents) != want {
				t.Errorf("org has %d agents, want %d", len(agents), want)
			}
		}
	}

	rows := []htRow{
		// POST /api/v1/agents
		{name: "create/invalid JSON", method: "POST", path: "/api/v1/agents", token: a.Token, body: `{"name":`, status: 400, code: CodeInvalidRequest},
		{name: "create/not an object", method: "POST", path: "/api/v1/agents", token: a.Token, body: `["x"]`, status: 400, code: CodeInvalidRequest},
		{name: "create/empty body", method: "POST", path: "/api/v1/agents", token: a.Token, body: ``, status: 400, code: CodeInvalidRequest},
		{name: "create/missing name", method: "POST", path: "/api/v1/agents", token: a.Token, body: map[string]any{"initialPrompt": "x"}, status: 400, code: CodeInvalidRequest},
		{name: "create/empty name", method: "POST", path: "/api/v1/agents", token: a.Token, body: map[string]any{"name": ""}, status: 400, code: CodeInvalidRequest},
		{name: "create/name too long", method: "POST", path: "/api/v1/agents", token: a.Token, body: map[string]any{"name": long}, status: 400, code: CodeInvalidRequest},
		{name: "create/name not a string", method: "POST", path: "/api/v1/agents", token: a.Token, body: map[string]any{"name": 7}, status: 400, code: CodeInvalidRequest},
		{name: "create/bad model", method: "POST", path: "/api/v1/agents", token: a.Token, body: map[string]any{"name": "m", "model": "openai/gpt-0"}, status: 400, code: CodeInvalidRequest},
		{name: "create/unknown scopeId", method: "POST", path: "/api/v1/agents", token: a.Token, body: map[string]any{"name": "s", "scopeId": "scnope"}, status: 400, code: CodeInvalidRequest},
		{name: "create/unknown scope name", method: "POST", path: "/api/v1/agents", token: a.Token, body: map[string]any{"name": "s", "scope": "nope"}, status: 400, code: CodeInvalidRequest},
		{name: "create/another org's scopeId", method: "POST", path: "/api/v1/agents", token: a.Token, body: map[string]any{"name": "s", "scopeId": bScope}, status: 400, code: CodeInvalidRequest},
		{name: "create/another org's scope name", method: "POST", path: "/api/v1/agents", token: a.Token, body: map[string]any{"name": "s", "scope": "beta-scope"}, status: 400, code: CodeInvalidRequest},
		{name: "create/scopeId and scope disagree", method: "POST", path: "/api/v1/agents", token: a.Token, body: map[string]any{"name": "s", "scopeId": aScope, "scope": "alpha-two"}, status: 400, code: CodeInvalidRequest},
		{name: "create/bad tag", method: "POST", path: "/api/v1/agents", token: a.Token, body: map[string]any{"name": "s", "tags": []string{"no spaces"}}, status: 400, code: CodeInvalidRequest},
		{name: "create/agent limit", method: "POST", path: "/api/v1/agents", token: limited.Token, body: map[string]any{"name": "two"}, status: 429, code: CodeAgentLimit, after: noNewAgent(limited.ID, 1)},
		{name: "create/running cap", method: "POST", path: "/api/v1/agents", token: capped.Token, body: map[string]any{"name": "third"}, status: 429, code: CodeRunningCap, after: noNewAgent(capped.ID, 2)},
		{name: "create/no keyring", ts: nokeys, method: "POST", path: "/api/v1/agents", token: limited.Token, body: map[string]any{"name": "unsealable"}, status: 503, code: CodeSecretsUnavailable, after: noNewAgent(limited.ID, 1)},
		{name: "create/timeout", ts: slow, method: "POST", path: "/api/v1/agents", token: a.Token, body: map[string]any{"name": "hang-row"}, status: 504, code: CodeTimeout},
		// Beyond the reference: the node reports the new agent ERROR.
		{name: "create/provisioning failed", method: "POST", path: "/api/v1/agents", token: a.Token, body: map[string]any{"name": "fail-row"}, status: 502, code: CodeProvisioningFailed},
		{name: "create/no ports", method: "POST", path: "/api/v1/agents", token: filler.Token, body: map[string]any{"name": "portless"},
			status: 503, code: CodeNoPorts,
			before: func(t *testing.T) {
				// Shrink the port range to the ports held, then fill any hole.
				agents, err := h.st.State().Agents()
				if err != nil {
					t.Fatal(err)
				}
				lo, hi := 65535, 1
				for _, ag := range agents {
					lo, hi = min(lo, ag.Port), max(hi, ag.Port)
				}
				cfg, err := h.st.State().ClusterConfig()
				if err != nil {
					t.Fatal(err)
				}
				cfg.PortRangeStart, cfg.PortRangeEnd = lo, hi
				h.htApply(&store.ClusterConfigSet{Config: cfg})
				for i := 0; ; i++ {
					r, err := h.tryDo(context.Background(), nil, "POST", "/api/v1/agents", filler.Token, map[string]any{"name": fmt.Sprint("fill-", i)})
					if err != nil {
						t.Fatal(err)
					}
					if r.status == 503 {
						break
					}
					if r.status != 200 || i > hi-lo {
						t.Fatalf("filling the ports: %s", r)
					}
				}
			},
			after: func(t *testing.T, _ *htResp) {
				cfg, _ := h.st.State().ClusterConfig()
				cfg.PortRangeStart, cfg.PortRangeEnd = store.DefaultClusterConfig().PortRangeStart, store.DefaultClusterConfig().PortRangeEnd
				h.htApply(&store.ClusterConfigSet{Config: cfg})
				if ags, _ := h.st.State().AgentsByOrgName(filler.ID, "portless"); len(ags) != 0 {
					t.Errorf("the refused create left an agent: %+v", ags)
				}
			}},

		// GET /api/v1/agents (beyond the reference)
		{name: "list/bad limit", method: "GET", path: "/api/v1/agents?limit=0", token: a.Token, status: 400, code: CodeInvalidRequest},
		{name: "list/bad status", method: "GET", path: "/api/v1/agents?status=SLEEPING", token: a.Token, status: 400, code: CodeInvalidRequest},

		// GET /api/v1/agents/:agentId
		{name: "get/unknown agent", method: "GET", path: agentPath("agnope", ""), token: a.Token, status: 404, code: CodeNotFound},
		{name: "get/implausible ID", method: "GET", path: agentPath("AG%20NOPE", ""), token: a.Token, status: 404, code: CodeNotFound},
		{name: "get/another org's agent", method: "GET", path: agentPath(bAgent, ""), token: a.Token, status: 404, code: CodeNotFound},
		{name: "delete/another org's agent", method: "DELETE", path: agentPath(bAgent, ""), token: a.Token, status: 404, code: CodeNotFound, after: bStillThere},
		{name: "delete/unknown agent", method: "DELETE", path: agentPath("agnope", ""), token: a.Token, status: 404, code: CodeNotFound},

		// GET /api/v1/agents/:agentId/messages
		{name: "messages/not running", method: "GET", path: agentPath(stopped, "/messages"), token: a.Token, status: 400, code: CodeAgentNotRunning},
		{name: "messages/provisioning", method: "GET", path: agentPath(provisioning, "/messages"), token: a.Token, status: 400, code: CodeAgentNotRunning},
		{name: "messages/node says not running", method: "GET", path: agentPath(ghost, "/messages"), token: a.Token, status: 400, code: CodeAgentNotRunning},
		{name: "messages/unknown agent", method: "GET", path: agentPath("agnope", "/messages"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "messages/another org's agent", method: "GET", path: agentPath(bAgent, "/messages"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "messages/unknown session", method: "GET", path: agentPath(running, "/messages?sessionId=ses_nope"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "messages/session ID not UTF-8", method: "GET", path: agentPath(running, "/messages?sessionId=%EF"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "messages/not responding", method: "GET", path: agentPath(broken, "/messages"), token: a.Token, status: 502, code: CodeAgentNotResponding},
		{name: "messages/session, not responding", method: "GET", path: agentPath(broken, "/messages?sessionId="+session), token: a.Token, status: 502, code: CodeAgentNotResponding},

		// POST /api/v1/agents/:agentId/messages
		{name: "send/invalid JSON", method: "POST", path: agentPath(running, "/messages"), token: a.Token, body: `{"message"`, status: 400, code: CodeInvalidRequest},
		{name: "send/missing message", method: "POST", path: agentPath(running, "/messages"), token: a.Token, body: map[string]any{"sessionId": session}, status: 400, code: CodeInvalidRequest},
		{name: "send/empty message", method: "POST", path: agentPath(running, "/messages"), token: a.Token, body: map[string]any{"message": ""}, status: 400, code: CodeInvalidRequest},
		{name: "send/not running", method: "POST", path: agentPath(stopped, "/messages"), token: a.Token, body: map[string]any{"message": "hi"}, status: 400, code: CodeAgentNotRunning},
		{name: "send/unknown agent", method: "POST", path: agentPath("agnope", "/messages"), token: a.Token, body: map[string]any{"message": "hi"}, status: 404, code: CodeNotFound},
		{name: "send/another org's agent", method: "POST", path: agentPath(bAgent, "/messages"), token: a.Token, body: map[string]any{"message": "hi"}, status: 404, code: CodeNotFound,
			after: func(t *testing.T, _ *htResp) {
				if n := h.rt.sends(bAgent); n != 0 {
					t.Errorf("org B's agent got %d messages", n)
				}
			}},
		{name: "send/unknown session", method: "POST", path: agentPath(running, "/messages"), token: a.Token, body: map[string]any{"message": "hi", "sessionId": "ses_nope"}, status: 404, code: CodeNotFound},
		{name: "send/not responding", method: "POST", path: agentPath(broken, "/messages"), token: a.Token, body: map[string]any{"message": "hi"}, status: 502, code: CodeAgentNotResponding},
		{name: "send/not responding, to a session", method: "POST", path: agentPath(broken, "/messages"), token: a.Token, body: map[string]any{"message": "hi", "sessionId": session}, status: 502, code: CodeAgentNotResponding},

		// POST /api/v1/agents/:agentId/start
		{name: "start/provisioning", method: "POST", path: agentPath(provisioning, "/start"), token: a.Token, status: 400, code: CodeInvalidRequest},
		{name: "start/error", method: "POST", path: agentPath(errored, "/start"), token: a.Token, status: 400, code: CodeInvalidRequest, after: stillStatus(errored, store.StatusError, store.DesiredRunning)},
		{name: "start/unknown agent", method: "POST", path: agentPath("agnope", "/start"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "start/another org's agent", method: "POST", path: agentPath(bAgent, "/start"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "start/container failed", method: "POST", path: agentPath(startFails, "/start"), token: a.Token, status: 503, code: CodeAgentNotReady},
		{name: "start/timed out", ts: slow, method: "POST", path: agentPath(startHangs, "/start"), token: a.Token, status: 503, code: CodeAgentNotReady},
		{name: "start/running cap", method: "POST", path: agentPath(cappedStopped, "/start"), token: capped.Token, status: 503, code: CodeRunningCap,
			after: stillStatus(cappedStopped, store.StatusStopped, store.DesiredStopped)},

		// POST /api/v1/agents/:agentId/stop
		{name: "stop/provisioning", method: "POST", path: agentPath(provisioning, "/stop"), token: a.Token, status: 400, code: CodeInvalidRequest},
		{name: "stop/error", method: "POST", path: agentPath(errored, "/stop"), token: a.Token, status: 400, code: CodeInvalidRequest},
		{name: "stop/unknown agent", method: "POST", path: agentPath("agnope", "/stop"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "stop/another org's agent", method: "POST", path: agentPath(bAgent, "/stop"), token: a.Token, status: 404, code: CodeNotFound, after: bStillThere},
		{name: "stop/container failed to stop", ts: slow, method: "POST", path: agentPath(stopHangs, "/stop"), token: a.Token, status: 503, code: CodeAgentNotReady},

		// POST /api/v1/agents/:agentId/restart
		{name: "restart/provisioning", method: "POST", path: agentPath(provisioning, "/restart"), token: a.Token, status: 400, code: CodeInvalidRequest},
		{name: "restart/error", method: "POST", path: agentPath(errored, "/restart"), token: a.Token, status: 400, code: CodeInvalidRequest},
		{name: "restart/unknown agent", method: "POST", path: agentPath("agnope", "/restart"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "restart/another org's agent", method: "POST", path: agentPath(bAgent, "/restart"), token: a.Token, status: 404, code: CodeNotFound, after: bStillThere},
		{name: "restart/container failed to start", method: "POST", path: agentPath(restartFails, "/restart"), token: a.Token, status: 503, code: CodeAgentNotReady},
		{name: "restart/container failed to stop", ts: slow, method: "POST", path: agentPath(restartStopHangs, "/restart"), token: a.Token, status: 503, code: CodeAgentNotReady},
		{name: "restart/running cap", method: "POST", path: agentPath(cappedStopped, "/restart"), token: capped.Token, status: 503, code: CodeRunningCap,
			after: stillStatus(cappedStopped, store.StatusStopped, store.DesiredStopped)},

		// GET /api/v1/agents/:agentId/usage
		{name: "usage/not running", method: "GET", path: agentPath(stopped, "/usage"), token: a.Token, status: 400, code: CodeAgentNotRunning},
		{name: "usage/unknown agent", method: "GET", path: agentPath("agnope", "/usage"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "usage/another org's agent", method: "GET", path: agentPath(bAgent, "/usage"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "usage/not responding", method: "GET", path: agentPath(broken, "/usage"), token: a.Token, status: 502, code: CodeAgentNotResponding},

		// POST /api/v1/agents/:agentId/abort
		{name: "abort/invalid JSON", method: "POST", path: agentPath(running, "/abort"), token: a.Token, body: `{`, status: 400, code: CodeInvalidRequest},
		{name: "abort/not running", method: "POST", path: agentPath(stopped, "/abort"), token: a.Token, status: 400, code: CodeAgentNotRunning},
		{name: "abort/unknown agent", method: "POST", path: agentPath("agnope", "/abort"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "abort/another org's agent", method: "POST", path: agentPath(bAgent, "/abort"), token: a.Token, body: map[string]any{}, status: 404, code: CodeNotFound},
		{name: "abort/unknown session", method: "POST", path: agentPath(running, "/abort"), token: a.Token, body: map[string]any{"sessionId": "ses_nope"}, status: 404, code: CodeNotFound},
		{name: "abort/not responding", method: "POST", path: agentPath(broken, "/abort"), token: a.Token, status: 502, code: CodeAgentNotResponding},

		// POST /api/v1/agents/:agentId/files
		{name: "files/not multipart", method: "POST", path: agentPath(running, "/files"), token: a.Token, body: map[string]any{"file": "x"}, status: 400, code: CodeInvalidRequest},
		{name: "files/missing file", method: "POST", path: agentPath(running, "/files"), token: a.Token, body: noFile, headers: ct(noFileCT), status: 400, code: CodeInvalidRequest},
		{name: "files/disallowed type", method: "POST", path: agentPath(running, "/files"), token: a.Token, body: exe, headers: ct(exeCT), status: 400, code: CodeInvalidRequest,
			after: func(t *testing.T, _ *htResp) {
				if _, err := os.Stat(filepath.Join(h.rt.workspace(running), runtime.UploadsDir, "tool.exe")); !os.IsNotExist(err) {
					t.Errorf("the refused file was written: %v", err)
				}
			}},
		// The two big uploads' bodies are streamed when the rows run, below.
		{name: "files/over 50MB", method: "POST", path: agentPath(running, "/files"), token: a.Token, status: 400, code: CodeInvalidRequest},
		{name: "files/agent total over 100MB", method: "POST", path: agentPath(quota, "/files"), token: a.Token, status: 400, code: CodeInvalidRequest},
		{name: "files/body cut off", method: "POST", path: agentPath(running, "/files"), token: a.Token,
			body:    "--cut\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.txt\"\r\n\r\nhello",
			headers: ct("multipart/form-data; boundary=cut"), status: 400, code: CodeInvalidRequest,
			after: func(t *testing.T, _ *htResp) {
				if _, err := os.Stat(filepath.Join(h.rt.workspace(running), runtime.UploadsDir, "cut.txt")); !os.IsNotExist(err) {
					t.Errorf("the cut-off file was stored: %v", err)
				}
			}},
		{name: "files/name not UTF-8", method: "POST", path: agentPath(running, "/files"), token: a.Token,
			body:    "--n\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\xef.txt\"\r\n\r\nhello\r\n--n--\r\n",
			headers: ct("multipart/form-data; boundary=n"), status: 400, code: CodeInvalidRequest},
		{name: "files/not running", method: "POST", path: agentPath(stopped, "/files"), token: a.Token, body: upload, headers: ct(uploadCT), status: 400, code: CodeAgentNotRunning},
		{name: "files/unknown agent", method: "POST", path: agentPath("agnope", "/files"), token: a.Token, body: upload, headers: ct(uploadCT), status: 404, code: CodeNotFound},
		{name: "files/another org's agent", method: "POST", path: agentPath(bAgent, "/files"), token: a.Token, body: upload, headers: ct(uploadCT), status: 404, code: CodeNotFound},
		{name: "files/not responding", method: "POST", path: agentPath(broken, "/files"), token: a.Token, body: upload, headers: ct(uploadCT), status: 502, code: CodeAgentNotResponding},

		// GET /api/v1/agents/:agentId/permissions
		{name: "permissions/not running", method: "GET", path: agentPath(stopped, "/permissions"), token: a.Token, status: 400, code: CodeAgentNotRunning},
		{name: "permissions/unknown agent", method: "GET", path: agentPath("agnope", "/permissions"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "permissions/another org's agent", method: "GET", path: agentPath(bAgent, "/permissions"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "permissions/not responding", method: "GET", path: agentPath(broken, "/permissions"), token: a.Token, status: 502, code: CodeAgentNotResponding},

		// POST /api/v1/agents/:agentId/permissions/:permissionId/reply
		{name: "permission reply/invalid JSON", method: "POST", path: agentPath(running, "/permissions/perm_1/reply"), token: a.Token, body: `once`, status: 400, code: CodeInvalidRequest},
		{name: "permission reply/bad reply", method: "POST", path: agentPath(running, "/permissions/perm_1/reply"), token: a.Token, body: map[string]any{"reply": "sometimes"}, status: 400, code: CodeInvalidRequest},
		{name: "permission reply/missing reply", method: "POST", path: agentPath(running, "/permissions/perm_1/reply"), token: a.Token, body: map[string]any{"message": "x"}, status: 400, code: CodeInvalidRequest},
		{name: "permission reply/not running", method: "POST", path: agentPath(stopped, "/permissions/perm_1/reply"), token: a.Token, body: map[string]any{"reply": "once"}, status: 400, code: CodeAgentNotRunning},
		{name: "permission reply/unknown agent", method: "POST", path: agentPath("agnope", "/permissions/perm_1/reply"), token: a.Token, body: map[string]any{"reply": "once"}, status: 404, code: CodeNotFound},
		{name: "permission reply/another org's agent", method: "POST", path: agentPath(bAgent, "/permissions/perm_1/reply"), token: a.Token, body: map[string]any{"reply": "once"}, status: 404, code: CodeNotFound},
		{name: "permission reply/unknown permission", method: "POST", path: agentPath(running, "/permissions/perm_nope/reply"), token: a.Token, body: map[string]any{"reply": "once"}, status: 404, code: CodeNotFound},
		{name: "permission reply/permission ID not UTF-8", method: "POST", path: agentPath(running, "/permissions/%EF/reply"), token: a.Token, body: map[string]any{"reply": "once"}, status: 404, code: CodeNotFound},
		{name: "permission reply/not responding", method: "POST", path: agentPath(broken, "/permissions/perm_1/reply"), token: a.Token, body: map[string]any{"reply": "reject"}, status: 502, code: CodeAgentNotResponding},

		// GET /api/v1/agents/:agentId/questions
		{name: "questions/not running", method: "GET", path: agentPath(stopped, "/questions"), token: a.Token, status: 400, code: CodeAgentNotRunning},
		{name: "questions/unknown agent", method: "GET", path: agentPath("agnope", "/questions"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "questions/another org's agent", method: "GET", path: agentPath(bAgent, "/questions"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "questions/not responding", method: "GET", path: agentPath(broken, "/questions"), token: a.Token, status: 502, code: CodeAgentNotResponding},

		// POST /api/v1/agents/:agentId/questions/:questionId/reply
		{name: "question reply/answers missing", method: "POST", path: agentPath(running, "/questions/q_1/reply"), token: a.Token, body: map[string]any{}, status: 400, code: CodeInvalidRequest},
		{name: "question reply/answers null", method: "POST", path: agentPath(running, "/questions/q_1/reply"), token: a.Token, body: `{"answers":null}`, status: 400, code: CodeInvalidRequest},
		{name: "question reply/answers not an array", method: "POST", path: agentPath(running, "/questions/q_1/reply"), token: a.Token, body: map[string]any{"answers": "Simple"}, status: 400, code: CodeInvalidRequest},
		{name: "question reply/answers not arrays of labels", method: "POST", path: agentPath(running, "/questions/q_1/reply"), token: a.Token, body: map[string]any{"answers": []any{1}}, status: 400, code: CodeInvalidRequest},
		{name: "question reply/invalid JSON", method: "POST", path: agentPath(running, "/questions/q_1/reply"), token: a.Token, body: `[[`, status: 400, code: CodeInvalidRequest},
		{name: "question reply/not running", method: "POST", path: agentPath(stopped, "/questions/q_1/reply"), token: a.Token, body: map[string]any{"answers": [][]string{{"Simple"}}}, status: 400, code: CodeAgentNotRunning},
		{name: "question reply/unknown agent", method: "POST", path: agentPath("agnope", "/questions/q_1/reply"), token: a.Token, body: map[string]any{"answers": [][]string{{"Simple"}}}, status: 404, code: CodeNotFound},
		{name: "question reply/another org's agent", method: "POST", path: agentPath(bAgent, "/questions/q_1/reply"), token: a.Token, body: map[string]any{"answers": [][]string{{"Simple"}}}, status: 404, code: CodeNotFound},
		{name: "question reply/invalid question ID", method: "POST", path: agentPath(running, "/questions/q_nope/reply"), token: a.Token, body: map[string]any{"answers": [][]string{{"Simple"}}}, status: 502, code: CodeNotFound},
		{name: "question reply/question ID not UTF-8", method: "POST", path: agentPath(running, "/questions/%EF/reply"), token: a.Token, body: map[string]any{"answers": [][]string{{"Simple"}}}, status: 502, code: CodeNotFound},
		{name: "question reply/not responding", method: "POST", path: agentPath(broken, "/questions/q_1/reply"), token: a.Token, body: map[string]any{"answers": [][]string{{"Simple"}}}, status: 502, code: CodeAgentNotResponding},

		// GET /api/v1/agents/:agentId/events (beyond the reference)
		{name: "events/unknown agent", method: "GET", path: agentPath("agnope", "/events"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "events/another org's agent", method: "GET", path: agentPath(bAgent, "/events"), token: a.Token, status: 404, code: CodeNotFound},

		// GET /api/v1/agents/:agentId/logs (beyond the reference)
		{name: "logs/lines zero", method: "GET", path: agentPath(running, "/logs?lines=0"), token: a.Token, status: 400, code: CodeInvalidRequest},
		{name: "logs/lines over 5000", method: "GET", path: agentPath(running, "/logs?lines=5001"), token: a.Token, status: 400, code: CodeInvalidRequest},
		{name: "logs/lines not a number", method: "GET", path: agentPath(running, "/logs?lines=all"), token: a.Token, status: 400, code: CodeInvalidRequest},
		{name: "logs/lines empty", method: "GET", path: agentPath(running, "/logs?lines="), token: a.Token, status: 400, code: CodeInvalidRequest},
		{name: "logs/not running", method: "GET", path: agentPath(stopped, "/logs"), token: a.Token, status: 400, code: CodeAgentNotRunning},
		{name: "logs/node says not running", method: "GET", path: agentPath(ghost, "/logs"), token: a.Token, status: 400, code: CodeAgentNotRunning},
		{name: "logs/unknown agent", method: "GET", path: agentPath("agnope", "/logs"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "logs/another org's agent", method: "GET", path: agentPath(bAgent, "/logs"), token: a.Token, status: 404, code: CodeNotFound},
		{name: "logs/not responding", method: "GET", path: agentPath(broken, "/logs"), token: a.Token, status: 502, code: CodeAgentNotResponding},

		// Scopes
		{name: "scope create/invalid body", method: "POST", path: "/api/v1/scopes", token: a.Token, body: `{"name":1}`, status: 400, code: CodeInvalidRequest},
		{name: "scope create/missing name", method: "POST", path: "/api/v1/scopes", token: a.Token, body: map[string]any{"description": "d"}, status: 400, code: CodeInvalidRequest},
		{name: "scope create/name too long", method: "POST", path: "/api/v1/scopes", token: a.Token, body: map[string]any{"name": long}, status: 400, code: CodeInvalidRequest},
		{name: "scope create/description too long", method: "POST", path: "/api/v1/scopes", token: a.Token, body: map[string]any{"name": "d", "description": strings.Repeat("d", store.MaxDescriptionLength+1)}, status: 400, code: CodeInvalidRequest},
		{name: "scope create/duplicate name", method: "POST", path: "/api/v1/scopes", token: a.Token, body: map[string]any{"name": "alpha-scope"}, status: 409, code: CodeConflict},
		{name: "scope get/unknown", method: "GET", path: "/api/v1/scopes/scnope", token: a.Token, status: 404, code: CodeNotFound},
		{name: "scope get/another org's", method: "GET", path: "/api/v1/scopes/" + bScope, token: a.Token, status: 404, code: CodeNotFound},
		{name: "scope update/invalid body", method: "PATCH", path: "/api/v1/scopes/" + aScope, token: a.Token, body: `{`, status: 400, code: CodeInvalidRequest},
		{name: "scope update/no fields", method: "PATCH", path: "/api/v1/scopes/" + aScope, token: a.Token, body: map[string]any{}, status: 400, code: CodeInvalidRequest},
		{name: "scope update/name too long", method: "PATCH", path: "/api/v1/scopes/" + aScope, token: a.Token, body: map[string]any{"name": long}, status: 400, code: CodeInvalidRequest},
		{name: "scope update/unknown", method: "PATCH", path: "/api/v1/scopes/scnope", token: a.Token, body: map[string]any{"name": "x"}, status: 404, code: CodeNotFound},
		{name: "scope update/another org's", method: "PATCH", path: "/api/v1/scopes/" + bScope, token: a.Token, body: map[string]any{"name": "stolen"}, status: 404, code: CodeNotFound, after: bStillThere},
		{name: "scope update/duplicate name", method: "PATCH", path: "/api/v1/scopes/" + aScope2, token: a.Token, body: map[string]any{"name": "alpha-scope"}, status: 409, code: CodeConflict},
		{name: "scope delete/unknown", method: "DELETE", path: "/api/v1/scopes/scnope", token: a.Token, status: 404, code: CodeNotFound},
		{name: "scope delete/another org's", method: "DELETE", path: "/api/v1/scopes/" + bScope, token: a.Token, status: 404, code: CodeNotFound, after: bStillThere},

		// Secrets
		{name: "secret put/invalid body", method: "PUT", path: "/api/v1/secrets", token: a.Token, body: `{"key":`, status: 400, code: CodeInvalidRequest},
		{name: "secret put/missing key", method: "PUT", path: "/api/v1/secrets", token: a.Token, body: map[string]any{"value": "v"}, status: 400, code: CodeInvalidRequest},
		{name: "secret put/bad key", method: "PUT", path: "/api/v1/secrets", token: a.Token, body: map[string]any{"key": "lower-case", "value": "v"}, status: 400, code: CodeInvalidRequest},
		{name: "secret put/missing value", method: "PUT", path: "/api/v1/secrets", token: a.Token, body: map[string]any{"key": "K"}, status: 400, code: CodeInvalidRequest},
		{name: "secret keys/no keyring", ts: nokeys, method: "GET", path: "/api/v1/operator/secrets/keys", token: h.opToken, status: 503, code: CodeSecretsUnavailable},
		{name: "secret reseal/no keyring", ts: nokeys, method: "POST", path: "/api/v1/operator/secrets/reseal", token: h.opToken, status: 503, code: CodeSecretsUnavailable},
		{name: "secret put/no keyring", ts: nokeys, method: "PUT", path: "/api/v1/secrets", token: a.Token, body: map[string]any{"key": "K", "value": "v"}, status: 503, code: CodeSecretsUnavailable},
		{name: "secret delete/unknown", method: "DELETE", path: "/api/v1/secrets/NOPE", token: a.Token, status: 404, code: CodeNotFound},
		{name: "secret delete/another org's", method: "DELETE", path: "/api/v1/secrets/B_ONLY", token: a.Token, status: 404, code: CodeNotFound, after: bStillThere},
		{name: "scoped secrets list/unknown scope", method: "GET", path: "/api/v1/scopes/scnope/secrets", token: a.Token, status: 404, code: CodeNotFound},
		{name: "scoped secrets list/another org's scope", method: "GET", path: "/api/v1/scopes/" + bScope + "/secrets", token: a.Token, status: 404, code: CodeNotFound},
		{name: "scoped secret put/another org's scope", method: "PUT", path: "/api/v1/scopes/" + bScope + "/secrets", token: a.Token, body: map[string]any{"key": "B_SCOPED", "value": "mine"}, status: 404, code: CodeNotFound,
			after: func(t *testing.T, r *htResp) {
				bStillThere(t, r)
				if s, _ := h.st.State().Secret(b.ID, bScope, "B_SCOPED"); s != nil {
					if v, err := h.kr.Open(s.KeyID, s.Ciphertext, keyring.SecretAAD(b.ID, bScope, "B_SCOPED")); err != nil || string(v) != "b" {
						t.Errorf("org B's scoped secret was changed: %q, %v", v, err)
					}
				}
			}},
		{name: "scoped secret delete/another org's scope", method: "DELETE", path: "/api/v1/scopes/" + bScope + "/secrets/B_SCOPED", token: a.Token, status: 404, code: CodeNotFound, after: bStillThere},
		{name: "scoped secret delete/unknown key", method: "DELETE", path: "/api/v1/scopes/" + aScope + "/secrets/NOPE", token: a.Token, status: 404, code: CodeNotFound},

		// The org's own tokens
		{name: "token create/operator role", method: "POST", path: "/api/v1/tokens", token: a.Token, body: map[string]any{"role": "operator"}, status: 400, code: CodeInvalidRequest},
		{name: "token create/label too long", method: "POST", path: "/api/v1/tokens", token: a.Token, body: map[string]any{"label": strings.Repeat("l", 101)}, status: 400, code: CodeInvalidRequest},
		{name: "token create/invalid body", method: "POST", path: "/api/v1/tokens", token: a.Token, body: `{"label":`, status: 400, code: CodeInvalidRequest},
		{name: "token revoke/unknown", method: "DELETE", path: "/api/v1/tokens/tknope", token: a.Token, status: 404, code: CodeNotFound},
		{name: "token revoke/another org's", method: "DELETE", path: "/api/v1/tokens/" + bTokenID, token: a.Token, status: 404, code: CodeNotFound, after: bStillThere},
		{name: "token create/idempotency key without keyring", ts: nokeys, method: "POST", path: "/api/v1/tokens", token: a.Token, body: map[string]any{}, headers: []string{"Idempotency-Key", "k1"}, status: 400, code: CodeInvalidRequest},
		{name: "idempotency key too long", method: "POST", path: "/api/v1/scopes", token: a.Token, body: map[string]any{"name": "idem"}, headers: []string{"Idempotency-Key", strings.Repeat("k", 256)}, status: 400, code: CodeInvalidRequest},

		// Operator: orgs
		{name: "org create/invalid body", method: "POST", path: "/api/v1/orgs", token: h.opToken, body: `{`, status: 400, code: CodeInvalidRequest},
		{name: "org create/missing name", method: "POST", path: "/api/v1/orgs", token: h.opToken, body: map[string]any{}, status: 400, code: CodeInvalidRequest},
		{name: "org create/name too long", method: "POST", path: "/api/v1/orgs", token: h.opToken, body: map[string]any{"name": long}, status: 400, code: CodeInvalidRequest},
		{name: "org create/negative cap", method: "POST", path: "/api/v1/orgs", token: h.opToken, body: map[string]any{"name": "neg", "plan": map[string]any{"maxAgents": -1}}, status: 400, code: CodeInvalidRequest},
		{name: "org create/unknown default model", method: "POST", path: "/api/v1/orgs", token: h.opToken, body: map[string]any{"name": "m", "defaultModel": "x/y"}, status: 400, code: CodeInvalidRequest},
		{name: "org get/unknown", method: "GET", path: "/api/v1/orgs/orgnope", token: h.opToken, status: 404, code: CodeNotFound},
		{name: "org update/nothing", method: "PATCH", path: "/api/v1/orgs/" + a.ID, token: h.opToken, body: map[string]any{}, status: 400, code: CodeInvalidRequest},
		{name: "org update/invalid body", method: "PATCH", path: "/api/v1/orgs/" + a.ID, token: h.opToken, body: `{"plan":"big"}`, status: 400, code: CodeInvalidRequest},
		{name: "org update/unknown", method: "PATCH", path: "/api/v1/orgs/orgnope", token: h.opToken, body: map[string]any{"name": "x"}, status: 404, code: CodeNotFound},
		{name: "org tokens/unknown org", method: "GET", path: "/api/v1/orgs/orgnope/tokens", token: h.opToken, status: 404, code: CodeNotFound},
		{name: "org token create/unknown org", method: "POST", path: "/api/v1/orgs/orgnope/tokens", token: h.opToken, body: map[string]any{}, status: 404, code: CodeNotFound},
		{name: "org token create/bad role", method: "POST", path: "/api/v1/orgs/" + a.ID + "/tokens", token: h.opToken, body: map[string]any{"role": "admin"}, status: 400, code: CodeInvalidRequest},
		{name: "org token revoke/unknown", method: "DELETE", path: "/api/v1/orgs/" + a.ID + "/tokens/tknope", token: h.opToken, status: 404, code: CodeNotFound},
		{name: "org token revoke/another org's token", method: "DELETE", path: "/api/v1/orgs/" + a.ID + "/tokens/" + bTokenID, token: h.opToken, status: 404, code: CodeNotFound, after: bStillThere},
		{name: "org token revoke/unknown org", method: "DELETE", path: "/api/v1/orgs/orgnope/tokens/" + aTokenID, token: h.opToken, status: 404, code: CodeNotFound},

		// Operator: nodes
		{name: "drain/unknown node", method: "POST", path: "/api/v1/nodes/nodenope/drain", token: h.opToken, status: 404, code: CodeNotFound},
		{name: "drain/down node", method: "POST", path: "/api/v1/nodes/node-down/drain", token: h.opToken, status: 409, code: CodeConflict},
		{name: "undrain/unknown node", method: "POST", path: "/api/v1/nodes/nodenope/undrain", token: h.opToken, status: 404, code: CodeNotFound},
		{name: "undrain/down node", method: "POST", path: "/api/v1/nodes/node-down/undrain", token: h.opToken, status: 409, code: CodeConflict},

		// Operator: operator tokens and bootstrap
		{name: "operator token create/tenant role", method: "POST", path: "/api/v1/operator/tokens", token: h.opToken, body: map[string]any{"role": "tenant"}, status: 400, code: CodeInvalidRequest},
		{name: "operator token create/invalid body", method: "POST", path: "/api/v1/operator/tokens", token: h.opToken, body: `[]`, status: 400, code: CodeInvalidRequest},
		{name: "operator token revoke/unknown", method: "DELETE", path: "/api/v1/operator/tokens/tknope", token: h.opToken, status: 404, code: CodeNotFound},
		{name: "operator token revoke/a tenant token", method: "DELETE", path: "/api/v1/operator/tokens/" + bTokenID, token: h.opToken, status: 404, code: CodeNotFound, after: bStillThere},
		{name: "bootstrap/already bootstrapped", method: "POST", path: "/api/v1/operator/bootstrap", status: 409, code: CodeConflict},
		{name: "bootstrap/invalid body", method: "POST", path: "/api/v1/operator/bootstrap", body: `{`, status: 400, code: CodeInvalidRequest},
		{name: "bootstrap/through a proxy", method: "POST", path: "/api/v1/operator/bootstrap", headers: []string{"X-Forwarded-For", "203.0.113.9"}, status: 403, code: CodeForbidden},

		// Anywhere
		{name: "unknown endpoint", method: "GET", path: "/api/v1/nope", token: a.Token, status: 404, code: CodeNotFound},
		{name: "client request ID is echoed", method: "GET", path: agentPath("agnope", ""), token: a.Token, headers: []string{"X-Request-Id", "client-req-1"}, status: 404, code: CodeNotFound,
			after: func(t *testing.T, r *htResp) {
				if got := r.header.Get("X-Request-Id"); got != "client-req-1" {
					t.Errorf("X-Request-Id %q, want the client's", got)
				}
			}},
	}

	// 401 for every route: no token, a malformed one, another scheme, a bad
	// checksum, and a revoked token.
	good := a.Token
	// One character of the body changed: the right form, a wrong checksum.
	i := len(TokenPrefix)
	swap := byte('A')
	if good[i] == 'A' {
		swap = 'B'
	}
	badSum := good[:i] + string(swap) + good[i+1:]
	fill := strings.NewReplacer("{agent}", running, "{scope}", aScope, "{key}", "A_KEY", "{perm}", "perm_1", "{question}", "q_1",
		"{token}", aTokenID, "{org}", a.ID, "{node}", htNodeID)
	for _, rt := range htRoutes {
		path := fill.Replace(rt.path)
		for _, auth := range []struct{ name, header string }{
			{"missing token", ""},
			{"malformed token", "Bearer ah_live_nope"},
			{"not a bearer token", "Basic " + good},
			{"bad checksum", "Bearer " + badSum},
			{"revoked token", "Bearer " + revoked},
		} {
			rows = append(rows, htRow{name: "401/" + rt.method + " " + rt.path + "/" + auth.name, method: rt.method, path: path,
				headers: []string{"Authorization", auth.header}, status: 401, code: CodeUnauthenticated})
		}
		// 403: a tenant token on operator routes, an operator token on tenant routes.
		tok := h.opToken
		if rt.access == operator {
			tok = a.Token
		}
		rows = append(rows, htRow{name: "403/" + rt.method + " " + rt.path, method: rt.method, path: path, token: tok, status: 403, code: CodeForbidden})
	}
	// 405 for every path: a method it does not take, with Allow listing those it does.
	paths := map[string][]string{}
	var order []string
	for _, rt := range append(slices.Clone(htRoutes), htRoute{"POST", "/api/v1/operator/bootstrap", public}) {
		if paths[rt.path] == nil {
			order = append(order, rt.path)
		}
		paths[rt.path] = append(paths[rt.path], rt.method)
	}
	for _, p := range order {
		allowed := paths[p]
		wrong := ""
		for _, m := range []string{"PUT", "PATCH", "DELETE", "POST", "GET"} {
			if !slices.Contains(allowed, m) {
				wrong = m
				break
			}
		}
		want := strings.Join(allowed, ", ")
		rows = append(rows, htRow{name: "405/" + wrong + " " + p, method: wrong, path: fill.Replace(p), token: a.Token, status: 405, code: CodeMethodNotAllowed,
			after: func(t *testing.T, r *htResp) {
				if got := r.header.Get("Allow"); got != want {
					t.Errorf("Allow %q, want %q", got, want)
				}
			}})
	}

	// What the message must say, where several causes share a status and code.
	msgs := map[string]string{
		"create/invalid JSON": "invalid JSON", "create/not an object": "JSON object", "create/empty body": "body is required",
		"create/missing name": "name is required", "create/empty name": "name must be 1-100", "create/name too long": "name must be 1-100",
		"create/name not a string": "name must be a string", "create/bad model": "unknown model",
		"create/unknown scopeId": `scope \"scnope\" not found`, "create/unknown scope name": `scope \"nope\" not found`,
		"create/another org's scopeId": "not found", "create/another org's scope name": "not found",
		"create/scopeId and scope disagree": "different scopes", "create/bad tag": "tag",
		"list/bad limit": "limit", "list/bad status": "status",
		"logs/lines zero": "lines must be", "logs/lines over 5000": "lines must be", "logs/lines not a number": "lines must be", "logs/lines empty": "lines must be",
		"messages/unknown session": "ses_nope", "send/unknown session": "ses_nope", "abort/unknown session": "ses_nope",
		"send/invalid JSON": "invalid JSON", "send/missing message": "message is required", "send/empty message": "message is required",
		"start/provisioning": "PROVISIONING", "start/error": "ERROR", "stop/provisioning": "PROVISIONING", "stop/error": "ERROR",
		"restart/provisioning": "PROVISIONING", "restart/error": "ERROR",
		"start/container failed": "failed to start", "start/timed out": "failed to start", "stop/container failed to stop": "failed to stop",
		"restart/container failed to start": "failed to start", "restart/container failed to stop": "failed to stop",
		"abort/invalid JSON":  "invalid JSON",
		"files/not multipart": "multipart/form-data", "files/missing file": "missing file", "files/disallowed type": "is not allowed",
		"files/over 50MB": "exceeds 50MB", "files/body cut off": "invalid multipart body", "files/name not UTF-8": "UTF-8",
		"messages/session ID not UTF-8": "session", "permission reply/permission ID not UTF-8": "permission", "question reply/question ID not UTF-8": "question", "files/agent total over 100MB": "exceed 100MB",
		"permission reply/invalid JSON": "invalid JSON", "permission reply/bad reply": "reply must be", "permission reply/missing reply": "reply must be",
		"permission reply/unknown permission": "perm_nope",
		"question reply/answers missing":      "answers must be", "question reply/answers null": "answers must be",
		"question reply/answers not an array": "answers must be", "question reply/answers not arrays of labels": "answers must be",
		"question reply/invalid JSON": "invalid JSON", "question reply/invalid question ID": "q_nope",
		"scope create/invalid body": "invalid JSON", "scope create/missing name": "name is required", "scope create/name too long": "1-100",
		"scope create/description too long": "description", "scope update/invalid body": "invalid JSON", "scope update/no fields": "nothing to update",
		"scope update/name too long": "1-100",
		"secret put/invalid body":    "invalid JSON", "secret put/missing key": "key is required", "secret put/bad key": "uppercase",
		"secret put/missing value":   "value is required",
		"token create/operator role": "tenant tokens", "token create/label too long": "label", "token create/invalid body": "invalid JSON",
		"token create/idempotency key without keyring": "secrets key", "idempotency key too long": "Idempotency-Key",
		"org create/invalid body": "invalid JSON", "org create/missing name": "name is required", "org create/name too long": "1-100",
		"org create/negative cap": "negative", "org create/unknown default model": "unknown model", "org update/nothing": "nothing to update",
		"org update/invalid body": "plan must be", "org token create/bad role": "role must be",
		"operator token create/tenant role": "operator tokens", "operator token create/invalid body": "JSON object",
		"bootstrap/already bootstrapped": "bootstrapped already", "bootstrap/invalid body": "invalid JSON", "bootstrap/through a proxy": "loopback",
		"unknown endpoint": "no such endpoint",
	}
	for i := range rows {
		if m, ok := msgs[rows[i].name]; ok {
			rows[i].msg = m
			delete(msgs, rows[i].name)
		}
	}
	if len(msgs) > 0 {
		t.Fatalf("messages for rows that do not exist: %v", msgs)
	}

	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			if row.before != nil {
				row.before(t)
			}
			body, headers := row.body, row.headers
			switch row.name {
			case "files/over 50MB":
				var ctype string
				body, ctype = htBigUpload("big.csv", runtime.MaxUploadFileBytes+1)
				headers = ct(ctype)
			case "files/agent total over 100MB":
				var ctype string
				body, ctype = htBigUpload("more.csv", 2<<20)
				headers = ct(ctype)
			}
			token := row.token
			r, err := h.tryDo(context.Background(), row.ts, row.method, row.path, token, body, headers...)
			if err != nil {
				t.Fatal(err)
			}
			if r.status != row.status {
				t.Fatalf("%s %s: got %s, want %d %s", row.method, row.path, r, row.status, row.code)
			}
			if err := htErrorShape(r, row.code); err != nil {
				t.Fatalf("%s %s: %v\n%s", row.method, row.path, err, r)
			}
			if row.msg != "" && !strings.Contains(string(r.body), row.msg) {
				t.Fatalf("%s %s: got %s, want a message about %q", row.method, row.path, r, row.msg)
			}
			if row.after != nil {
				row.after(t, r)
			}
		})
	}
	t.Run("org isolation left org B intact", func(t *testing.T) { bStillThere(t, nil) })
}

// TestErrorShapeCheck shows that the table's check fails on what is not a
// documented error: so every row can fail on its body as well as its status.
func TestErrorShapeCheck(t *testing.T) {
	jsonHdr := func(reqID string) http.Header {
		h := http.Header{"Content-Type": {"application/json"}}
		if reqID != "" {
			h.Set("X-Request-Id", reqID)
		}
		return h
	}
	good := `{"error":{"code":"not_found","message":"agent not found","requestId":"req_1"}}`
	if err := htErrorShape(&htResp{status: 404, header: jsonHdr("req_1"), body: []byte(good + "\n")}, CodeNotFound); err != nil {
		t.Fatalf("a good error failed the check: %v", err)
	}
	for name, r := range map[string]*htResp{
		"wrong code":           {header: jsonHdr("req_1"), body: []byte(good)},
		"no X-Request-Id":      {header: jsonHdr(""), body: []byte(good)},
		"other request ID":     {header: jsonHdr("req_2"), body: []byte(good)},
		"text":                 {header: http.Header{"Content-Type": {"text/plain"}, "X-Request-Id": {"req_1"}}, body: []byte("404 page not found")},
		"no requestId":         {header: jsonHdr("req_1"), body: []byte(`{"error":{"code":"not_found","message":"m"}}`)},
		"extra field":          {header: jsonHdr("req_1"), body: []byte(`{"error":{"code":"not_found","message":"m","requestId":"req_1","x":1}}`)},
		"extra top-level":      {header: jsonHdr("req_1"), body: []byte(`{"error":{"code":"not_found","message":"m","requestId":"req_1"},"ok":false}`)},
		"empty message":        {header: jsonHdr("req_1"), body: []byte(`{"error":{"code":"not_found","message":"","requestId":"req_1"}}`)},
		"a success body":       {header: jsonHdr("req_1"), body: []byte(`{"agentId":"ag1"}`)},
		"error is a string":    {header: jsonHdr("req_1"), body: []byte(`{"error":"not_found"}`)},
		"two values":           {header: jsonHdr("req_1"), body: []byte(good + good)},
		"code is not a string": {header: jsonHdr("req_1"), body: []byte(`{"error":{"code":404,"message":"m","requestId":"req_1"}}`)},
	} {
		want := CodeNotFound
		if name == "wrong code" {
			want = CodeConflict
		}
		if err := htErrorShape(r, want); err == nil {
			t.Errorf("%s: the check passed", name)
		}
	}
}
