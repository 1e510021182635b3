package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
)

// FuzzAPIRequest sends one request — method, path (under /api/), body, and
// in flags who sends it and the body's Content-Type — to the real handler
// over the harness's store, node and fake runtime, and checks:
//
//   - no panic, and no 5xx but the documented ones the world allows (see
//     htFuzzServerError): the fake node agent reports every agent promptly
//     and the fake runtime always answers, so 502, 504 and the 503s of
//     failed containers cannot happen;
//   - every response of 400 or more is the JSON error, with X-Request-Id;
//     every JSON success body is valid JSON;
//   - a response of 400 or more changed nothing: the store's state hash is
//     the same before and after. The server's Run is not started, so reads
//     write nothing (last-used times of tokens wait for Run's flush), and no
//     request carries an Idempotency-Key (whose records keep 4xx answers on
//     purpose: idempotency_test.go covers them).
//
// Placeholders in the path and body ({agent}, {stopped}, {session}, {scope},
// {other}, …; see htFuzzWorld.fill) stand for the IDs of the world the
// harness made, so that seeds and their mutations reach real objects.
func FuzzAPIRequest(f *testing.F) {
	w := htFuzzSetup(f)

	const (
		asTenant   = 0
		asOperator = 1
		asOther    = 2
		asNobody   = 3
		asGarbage  = 4
		asRevoked  = 5
		multipart  = 8
	)
	upload := func(name, content string) []byte {
		return []byte("--htfuzz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + name +
			"\"\r\nContent-Type: application/octet-stream\r\n\r\n" + content + "\r\n--htfuzz--\r\n")
	}
	seeds := []struct {
		method, path, body string
		flags              uint8
	}{
		// Agents.
		{"GET", "/api/v1/agents", "", asTenant},
		{"GET", "/api/v1/agents?limit=1&status=running&tag=t1", "", asTenant},
		{"GET", "/api/v1/agents?limit=0", "", asTenant},
		{"GET", "/api/v1/agents?cursor={agent}", "", asTenant},
		{"POST", "/api/v1/agents", `{"name":"fz","initialPrompt":"hi","hiddenPrompt":"be brief","model":"opencode/big-pickle","tags":["t1"],"scopeId":"{scope}"}`, asTenant},
		{"POST", "/api/v1/agents", `{"name":"fz2","scope":"fuzz-scope","autostart":true}`, asTenant},
		{"POST", "/api/v1/agents", `{"name":""}`, asTenant},
		{"POST", "/api/v1/agents", `{"name":"x","model":"nope/nope"}`, asTenant},
		{"POST", "/api/v1/agents", `{"name":"x","scopeId":"{otherScope}"}`, asTenant},
		{"POST", "/api/v1/agents", `{"name":"x","tags":["bad tag"]}`, asTenant},
		{"POST", "/api/v1/agents", `{"name":`, asTenant},
		{"POST", "/api/v1/agents", ``, asTenant},
		{"GET", "/api/v1/agents/{agent}", "", asTenant},
		{"GET", "/api/v1/agents/{stopped}", "", asTenant},
		{"GET", "/api/v1/agents/{other}", "", asTenant},
		{"GET", "/api/v1/agents/agnope", "", asTenant},
		{"GET", "/api/v1/agents/{agent}", "", asOther},
		{"DELETE", "/api/v1/agents/{other}", "", asTenant},
		{"GET", "/api/v1/agents/{agent}/messages", "", asTenant},
		{"GET", "/api/v1/agents/{agent}/messages?sessionId={session}", "", asTenant},
		{"GET", "/api/v1/agents/{agent}/messages?sessionId=ses_nope", "", asTenant},
		{"GET", "/api/v1/agents/{stopped}/messages", "", asTenant},
		{"POST", "/api/v1/agents/{agent}/messages", `{"message":"hello","sessionId":"{session}"}`, asTenant},
		{"POST", "/api/v1/agents/{agent}/messages", `{"message":"new session"}`, asTenant},
		{"POST", "/api/v1/agents/{agent}/messages", `{"message":"x","sessionId":"ses_nope"}`, asTenant},
		{"POST", "/api/v1/agents/{agent}/messages", `{}`, asTenant},
		{"POST", "/api/v1/agents/{stopped}/messages", `{"message":"x"}`, asTenant},
		{"POST", "/api/v1/agents/{other}/messages", `{"message":"x"}`, asTenant},
		{"GET", "/api/v1/agents/{agent}/usage", "", asTenant},
		{"GET", "/api/v1/agents/{stopped}/usage", "", asTenant},
		{"GET", "/api/v1/agents/{agent}/logs", "", asTenant},
		{"GET", "/api/v1/agents/{agent}/logs?lines=3", "", asTenant},
		{"GET", "/api/v1/agents/{agent}/logs?lines=%EF", "", asTenant},
		{"GET", "/api/v1/agents/{stopped}/logs?lines=99999999999999999999", "", asTenant},
		{"POST", "/api/v1/agents/{agent}/abort", ``, asTenant},
		{"POST", "/api/v1/agents/{agent}/abort", `{"sessionId":"{session}"}`, asTenant},
		{"POST", "/api/v1/agents/{agent}/abort", `{"sessionId":7}`, asTenant},
		{"POST", "/api/v1/agents/{agent}/files", string(upload("notes.txt", "hello")), asTenant | multipart},
		{"POST", "/api/v1/agents/{agent}/files", string(upload("tool.exe", "MZ")), asTenant | multipart},
		{"POST", "/api/v1/agents/{agent}/files", "--htfuzz--\r\n", asTenant | multipart},
		// Found by the fuzzer: IDs and names that are not UTF-8 cannot be
		// sent to the node (they were 502s), and a body that ends inside the
		// file was a 500.
		{"GET", "/api/v1/agents/{agent}/messages?sessionId=%EF", "", asTenant},
		{"POST", "/api/v1/agents/{agent}/permissions/%EF/reply", `{"reply":"once"}`, asTenant},
		{"POST", "/api/v1/agents/{agent}/questions/%EF/reply", `{"answers":[["Simple"]]}`, asTenant},
		{"POST", "/api/v1/agents/{agent}/files", string(upload("\xef.txt", "x")), asTenant | multipart},
		{"POST", "/api/v1/agents/{agent}/files", "--htfuzz\nContent-Disposition:form-dAtA;nAme=\"file\";filenAme=\"0\"\n\n", asTenant | multipart},
		{"POST", "/api/v1/agents/{agent}/files", `{"file":"x"}`, asTenant},
		{"GET", "/api/v1/agents/{agent}/permissions", "", asTenant},
		{"POST", "/api/v1/agents/{agent}/permissions/{perm}/reply", `{"reply":"once","message":"ok"}`, asTenant},
		{"POST", "/api/v1/agents/{agent}/permissions/{perm}/reply", `{"reply":"maybe"}`, asTenant},
		{"GET", "/api/v1/agents/{agent}/questions", "", asTenant},
		{"POST", "/api/v1/agents/{agent}/questions/{question}/reply", `{"answers":[["Simple"]]}`, asTenant},
		{"POST", "/api/v1/agents/{agent}/questions/q_nope/reply", `{"answers":[["Simple"]]}`, asTenant},
		{"POST", "/api/v1/agents/{agent}/questions/{question}/reply", `{"answers":"Simple"}`, asTenant},
		{"GET", "/api/v1/agents/{agent}/events", "", asTenant},
		{"GET", "/api/v1/agents/{stopped}/events", "", asTenant},
		{"GET", "/api/v1/agents/{other}/events", "", asTenant},
		{"POST", "/api/v1/agents/{agent}/restart", "", asTenant},
		{"POST", "/api/v1/agents/{stopped}/start", "", asTenant},
		{"POST", "/api/v1/agents/{stopped}/stop", "", asTenant},
		{"POST", "/api/v1/agents/{stopped}/stop", "", asTenant},
		{"POST", "/api/v1/agents/{other}/stop", "", asTenant},
		{"PUT", "/api/v1/agents", "", asTenant},
		{"DELETE", "/api/v1/agents/{agent}/start", "", asTenant},

		// Scopes and secrets.
		{"GET", "/api/v1/scopes", "", asTenant},
		{"POST", "/api/v1/scopes", `{"name":"fz-scope","description":"d"}`, asTenant},
		{"POST", "/api/v1/scopes", `{"name":"fuzz-scope"}`, asTenant},
		{"POST", "/api/v1/scopes", `{"description":"no name"}`, asTenant},
		{"GET", "/api/v1/scopes/{scope}", "", asTenant},
		{"GET", "/api/v1/scopes/{otherScope}", "", asTenant},
		{"PATCH", "/api/v1/scopes/{scope}", `{"description":"changed"}`, asTenant},
		{"PATCH", "/api/v1/scopes/{scope}", `{}`, asTenant},
		{"PATCH", "/api/v1/scopes/{otherScope}", `{"name":"mine"}`, asTenant},
		{"GET", "/api/v1/secrets", "", asTenant},
		{"PUT", "/api/v1/secrets", `{"key":"FZ_KEY","value":"v"}`, asTenant},
		{"PUT", "/api/v1/secrets", `{"key":"bad key","value":"v"}`, asTenant},
		{"PUT", "/api/v1/secrets", `{"key":"NO_VALUE"}`, asTenant},
		{"DELETE", "/api/v1/secrets/B_ONLY", "", asTenant},
		{"GET", "/api/v1/scopes/{scope}/secrets", "", asTenant},
		{"PUT", "/api/v1/scopes/{scope}/secrets", `{"key":"SCOPED","value":"v"}`, asTenant},
		{"PUT", "/api/v1/scopes/{otherScope}/secrets", `{"key":"SCOPED","value":"v"}`, asTenant},
		{"DELETE", "/api/v1/scopes/{otherScope}/secrets/B_SCOPED", "", asTenant},
		{"DELETE", "/api/v1/scopes/{scope}/secrets/NOPE", "", asTenant},

		// Models and tokens.
		{"GET", "/api/v1/models", "", asTenant},
		{"GET", "/api/v1/tokens", "", asTenant},
		{"POST", "/api/v1/tokens", `{"label":"fz"}`, asTenant},
		{"POST", "/api/v1/tokens", `{"role":"operator"}`, asTenant},
		{"DELETE", "/api/v1/tokens/{otherToken}", "", asTenant},
		{"GET", "/api/v1/openapi.json", "", asNobody},
		{"GET", "/api/v1/nope", "", asTenant},
		{"GET", "/api/v1/agents", "", asNobody},
		{"GET", "/api/v1/agents", "", asGarbage},
		{"GET", "/api/v1/agents", "", asRevoked},
		{"GET", "/api/v1/agents", "", asOperator},
		{"GET", "/api/v1/orgs", "", asTenant},

		// Operator.
		{"GET", "/api/v1/orgs", "", asOperator},
		{"POST", "/api/v1/orgs", `{"name":"fz-org","plan":{"maxAgents":2,"maxRunning":1},"defaultModel":"opencode/big-pickle"}`, asOperator},
		{"POST", "/api/v1/orgs", `{"plan":{"maxAgents":-1}}`, asOperator},
		{"GET", "/api/v1/orgs/{org}", "", asOperator},
		{"PATCH", "/api/v1/orgs/{org}", `{"name":"renamed","plan":{"maxAgents":3}}`, asOperator},
		{"PATCH", "/api/v1/orgs/{org}", `{}`, asOperator},
		{"GET", "/api/v1/orgs/{org}/tokens", "", asOperator},
		{"POST", "/api/v1/orgs/{org}/tokens", `{"label":"fz","role":"tenant"}`, asOperator},
		{"POST", "/api/v1/orgs/{org}/tokens", `{"role":"root"}`, asOperator},
		{"DELETE", "/api/v1/orgs/{org}/tokens/tknope", "", asOperator},
		{"GET", "/api/v1/nodes", "", asOperator},
		{"POST", "/api/v1/nodes/{node}/drain", "", asOperator},
		{"POST", "/api/v1/nodes/{node}/undrain", "", asOperator},
		{"POST", "/api/v1/nodes/nodenope/drain", "", asOperator},
		{"GET", "/api/v1/operator/tokens", "", asOperator},
		{"POST", "/api/v1/operator/tokens", `{"label":"fz"}`, asOperator},
		{"POST", "/api/v1/operator/tokens", `{"role":"tenant"}`, asOperator},
		{"DELETE", "/api/v1/operator/tokens/tknope", "", asOperator},
		{"POST", "/api/v1/operator/bootstrap", ``, asNobody},

		// Last, what removes the world's objects.
		{"DELETE", "/api/v1/scopes/{otherScope}", "", asTenant},
		{"DELETE", "/api/v1/tokens/{token}", "", asTenant},
		{"DELETE", "/api/v1/secrets/A_KEY", "", asTenant},
		{"DELETE", "/api/v1/scopes/{scope}", "", asTenant},
		{"DELETE", "/api/v1/agents/{stopped}", "", asTenant},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, []byte(s.body), s.flags)
	}
	f.Fuzz(func(t *testing.T, method, path string, body []byte, flags uint8) {
		w.run(t, method, path, body, flags)
	})
}

// htFuzzWorld is what the fuzz target runs against.
type htFuzzWorld struct {
	h         *htHarness
	tenant    htOrg
	other     htOrg
	revoked   string
	fill      *strings.Replacer
	spareNode string
}

func htFuzzSetup(f *testing.F) *htFuzzWorld {
	// No name modes: whatever the fuzzer names an agent, the node runs it.
	h := htNew(f, htOptions{})
	w := &htFuzzWorld{h: h, spareNode: "node-spare"}
	// The tenant's plan is fixed (no placeholder names its org): at most 40
	// agents, no running cap.
	w.tenant = h.org("fuzz-tenant", store.Plan{MaxAgents: 40})
	w.other = h.org("fuzz-other", store.Plan{})
	third := h.org("fuzz-third", store.Plan{})
	var revokedID string
	w.revoked, revokedID = h.token(w.tenant.ID, store.RoleTenant, "revoked")
	h.htApply(&store.TokenRevoke{ID: revokedID})
	_, spareToken := h.token(w.tenant.ID, store.RoleTenant, "spare")
	_, otherToken := h.token(w.other.ID, store.RoleTenant, "spare")

	var created createAgentResponse
	h.mustStatus(h.do(nil, "POST", "/api/v1/agents", w.tenant.Token, map[string]any{"name": "runner", "initialPrompt": "hi"}), 200).decode(f, &created)
	stopped := h.createAgent(w.tenant.Token, map[string]any{"name": "stopper"})
	h.mustStatus(h.do(nil, "POST", "/api/v1/agents/"+stopped+"/stop", w.tenant.Token, nil), 200)
	otherAgent := h.createAgent(w.other.Token, map[string]any{"name": "other"})
	var sc struct {
		ID string `json:"id"`
	}
	h.mustStatus(h.do(nil, "POST", "/api/v1/scopes", w.tenant.Token, map[string]any{"name": "fuzz-scope"}), 201).decode(f, &sc)
	scope := sc.ID
	h.mustStatus(h.do(nil, "POST", "/api/v1/scopes", w.other.Token, map[string]any{"name": "other-scope"}), 201).decode(f, &sc)
	otherScope := sc.ID
	h.mustStatus(h.do(nil, "PUT", "/api/v1/secrets", w.tenant.Token, map[string]any{"key": "A_KEY", "value": "a"}), 201)
	h.mustStatus(h.do(nil, "PUT", "/api/v1/scopes/"+scope+"/secrets", w.tenant.Token, map[string]any{"key": "S_KEY", "value": "s"}), 201)
	h.mustStatus(h.do(nil, "PUT", "/api/v1/secrets", w.other.Token, map[string]any{"key": "B_ONLY", "value": "b"}), 201)
	h.mustStatus(h.do(nil, "PUT", "/api/v1/scopes/"+otherScope+"/secrets", w.other.Token, map[string]any{"key": "B_SCOPED", "value": "b"}), 201)
	// A node for drain and undrain that never takes agents: draining it
	// changes no placement. (The harness's node is named by no placeholder.)
	h.htApply(&store.NodeRegister{Node: store.Node{ID: w.spareNode, Name: w.spareNode, Address: "127.0.0.1:7502",
		Capacity: store.NodeCapacity{CPUMillis: 1000, MemoryMB: 1000, MaxAgents: 1}, Runtimes: []string{"none"}, LastSeen: time.Now().UTC()}})

	w.fill = strings.NewReplacer(
		"{agent}", created.AgentID, "{stopped}", stopped, "{other}", otherAgent, "{session}", created.Sessions[0].ID,
		"{scope}", scope, "{otherScope}", otherScope, "{token}", spareToken, "{otherToken}", otherToken,
		"{org}", third.ID, "{otherOrg}", w.other.ID, "{node}", w.spareNode, "{perm}", "perm_1", "{question}", "q_1",
	)
	return w
}

// htFuzzRecorder ends an event stream's request once its headers are out:
// the stream would otherwise run until the client leaves.
type htFuzzRecorder struct {
	*httptest.ResponseRecorder
	cancel context.CancelFunc
}

func (r *htFuzzRecorder) WriteHeader(code int) {
	if strings.HasPrefix(r.Header().Get("Content-Type"), "text/event-stream") {
		r.cancel()
	}
	r.ResponseRecorder.WriteHeader(code)
}

func (w *htFuzzWorld) run(t *testing.T, method, path string, body []byte, flags uint8) {
	h := w.h.on(t)
	path = w.fill.Replace(path)
	body = []byte(w.fill.Replace(string(body)))
	if !strings.HasPrefix(path, "/api/") {
		// The API answers under /api/ (and /docs); other paths belong to
		// whatever else the server mounts.
		path = "/api/v1/" + strings.TrimPrefix(path, "/")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://api.test"+path, bytes.NewReader(body))
	if err != nil || !strings.HasPrefix(req.URL.Path, "/api/") {
		return // no server would hand this request to the API
	}
	req.RemoteAddr = "127.0.0.1:40000"
	switch flags & 7 {
	case 1:
		req.Header.Set("Authorization", "Bearer "+h.opToken)
	case 2:
		req.Header.Set("Authorization", "Bearer "+w.other.Token)
	case 3:
	case 4:
		req.Header.Set("Authorization", "Bearer ah_live_garbage")
	case 5:
		req.Header.Set("Authorization", "Bearer "+w.revoked)
	default:
		req.Header.Set("Authorization", "Bearer "+w.tenant.Token)
	}
	if flags&8 != 0 {
		req.Header.Set("Content-Type", "multipart/form-data; boundary=htfuzz")
	} else if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}

	pre := h.st.State()
	before, err := pre.Hash()
	if err != nil {
		t.Fatal(err)
	}
	_, pattern := h.srv.mux.Handler(req)
	rec := &htFuzzRecorder{ResponseRecorder: httptest.NewRecorder(), cancel: cancel}
	start := time.Now()
	h.srv.Handler().ServeHTTP(rec, req)
	// Every wait of the API is 20 s here and the fake node answers at
	// once: a request that takes this long is stuck.
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("%s %s (%s) flags %d took %s: %d %s", method, path, pattern, flags, took, rec.Code, rec.Body.Bytes())
	}
	resp := &htResp{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}

	stateMayChange := resp.status < 400
	if resp.status >= 400 {
		if err := htErrorShape(resp, ""); err != nil {
			t.Fatalf("%s %s (%s): %v\n%s", method, path, pattern, err, resp)
		}
	}
	if resp.status >= 500 {
		var e errorBody
		json.Unmarshal(resp.body, &e)
		ok, mayChange := w.allowedServerError(pre, req, pattern, flags&7, resp.status, e.Error.Code)
		if !ok {
			t.Fatalf("%s %s (%s) flags %d: server error %s", method, path, pattern, flags, resp)
		}
		stateMayChange = mayChange
	}
	if resp.status < 300 && strings.HasPrefix(resp.header.Get("Content-Type"), "application/json") &&
		pattern != "GET /api/v1/openapi.json" && !json.Valid(resp.body) {
		t.Fatalf("%s %s: a success that is not JSON: %s", method, path, resp)
	}
	if !stateMayChange {
		after := h.stateHash()
		if after != before {
			t.Fatalf("%s %s (%s) flags %d: refused with %s, yet the state changed", method, path, pattern, flags, resp)
		}
	}
}

// allowedServerError says whether a 5xx is one the reference documents and
// this world makes possible, judged on the state before the request, and
// whether the state may have changed with it:
//
//   - 502 not_found from a question reply naming no pending question (the
//     reference's "question ID is invalid");
//   - 503 no_capacity from a create while the harness's node is not ready
//     (only if something drained it: no placeholder names it);
//   - 503 running_cap from start or restart when the caller's org is at its
//     plan's running cap (the tenant's plan has none; an operator may give
//     the other org one). Restarting a running agent stops it first, so
//     that one may have changed the state.
func (w *htFuzzWorld) allowedServerError(pre *store.State, req *http.Request, pattern string, who uint8, status int, code string) (ok, stateMayChange bool) {
	segs := strings.Split(req.URL.Path, "/") // "", api, v1, agents, {id}, …
	orgID := ""
	switch who {
	case 0, 6, 7:
		orgID = w.tenant.ID
	case 2:
		orgID = w.other.ID
	}
	switch {
	case status == 502 && code == CodeNotFound && pattern == "POST /api/v1/agents/{agentId}/questions/{questionId}/reply":
		return true, false
	case status == 503 && code == CodeNoCapacity && pattern == "POST /api/v1/agents":
		n, _ := pre.Node(htNodeID)
		return n == nil || n.Status != store.NodeReady, false
	case status == 503 && code == CodeRunningCap &&
		(pattern == "POST /api/v1/agents/{agentId}/start" || pattern == "POST /api/v1/agents/{agentId}/restart") && len(segs) > 4:
		o, _ := pre.Org(orgID)
		a, _ := pre.OrgAgent(orgID, segs[4])
		agents, _ := pre.AgentsByOrg(orgID)
		if o == nil || a == nil || o.Plan.MaxRunning == 0 {
			return false, false
		}
		running := 0
		for _, x := range agents {
			if x.HoldsResources() {
				running++
			}
		}
		if a.HoldsResources() {
			running-- // a restart stops it first
		}
		return running >= o.Plan.MaxRunning, a.HoldsResources()
	}
	return false, false
}
