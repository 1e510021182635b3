package api

// Tests of the OpenAPI document (openapi.json) against the real handlers:
// the document lists exactly the routes of routes.go, and what the
// handlers answer — every endpoint that needs no running agent, in success
// and in error — validates against it through internal/openapicheck.
// Helpers are prefixed oa… so that they never collide with other tests of
// the package.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/internal/openapicheck"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// oaHarness is the API of a one-server cluster, with every response it
// gives checked against the document.
type oaHarness struct {
	t     *testing.T
	st    *store.Store
	srv   *Server
	check *openapicheck.Checker

	mu   sync.Mutex
	seen map[string]map[int]bool // "METHOD /template" → statuses answered
}

func oaNew(t *testing.T) *oaHarness {
	t.Helper()
	tc := clusterrpc.NewTestCluster(t, 1)
	x := &oaHarness{t: t, st: tc.Servers[tc.WaitForLeader()].Store, seen: map[string]map[int]bool{}}
	line, err := keyring.NewKeyLine("oa1")
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keyring.Parse([]byte(line + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	x.srv = x.newServer(kr)
	if x.check, err = openapicheck.New(OpenAPIDocument()); err != nil {
		t.Fatal(err)
	}
	return x
}

// newServer is another API server on the harness's store; kr may be nil.
func (x *oaHarness) newServer(kr *keyring.Keyring) *Server {
	x.t.Helper()
	u, _ := url.Parse("http://localhost:7480")
	srv, err := New(Config{Store: x.st, Keyring: kr, PublicURL: u, CreateTimeout: 300 * time.Millisecond})
	if err != nil {
		x.t.Fatal(err)
	}
	return srv
}

// oaCall is one request.
type oaCall struct {
	srv         *Server // nil: the harness's
	method      string
	path        string
	token       string
	body        string
	contentType string // default application/json when there is a body
	header      []string
	remote      string // RemoteAddr; default httptest's (not loopback)
	ctx         context.Context
	// invalid marks a request that breaks the document on purpose (no
	// token, a bad body): the request itself is not checked.
	invalid bool
}

type oaResult struct {
	status int
	header http.Header
	body   []byte
}

func (r oaResult) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return m
}

func (r oaResult) str(t *testing.T, key string) string {
	t.Helper()
	s, ok := r.json(t)[key].(string)
	if !ok {
		t.Fatalf("no string %q in %s", key, r.body)
	}
	return s
}

// do makes the call, checks the request (unless invalid) and the response
// against the document, and fails the test unless the status is want.
func (x *oaHarness) do(t *testing.T, c oaCall, want int) oaResult {
	t.Helper()
	var body *bytes.Reader
	if c.body != "" {
		body = bytes.NewReader([]byte(c.body))
	} else {
		body = bytes.NewReader(nil)
	}
	r := httptest.NewRequest(c.method, c.path, body)
	if c.body != "" {
		ct := c.contentType
		if ct == "" {
			ct = "application/json"
		}
		r.Header.Set("Content-Type", ct)
	}
	if c.token != "" {
		r.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(c.header); i += 2 {
		r.Header.Set(c.header[i], c.header[i+1])
	}
	if c.remote != "" {
		r.RemoteAddr = c.remote
	}
	if c.ctx != nil {
		r = r.WithContext(c.ctx)
	}
	if !c.invalid {
		if err := x.check.CheckRequest(r); err != nil {
			t.Errorf("request breaks the document: %v", err)
		}
	}
	srv := c.srv
	if srv == nil {
		srv = x.srv
	}
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, r)
	res := oaResult{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	if res.status != want {
		t.Fatalf("%s %s: %d %s, want %d", c.method, c.path, res.status, res.body, want)
	}
	x.checkResponse(t, c.method, c.path, res)
	return res
}

// checkResponse checks a response against the document and records which
// operation answered which status.
func (x *oaHarness) checkResponse(t *testing.T, method, path string, res oaResult) {
	t.Helper()
	if err := x.check.CheckResponse(method, path, res.status, res.header, res.body); err != nil {
		t.Errorf("response breaks the document: %v\nbody: %s", err, res.body)
	}
	if tmpl, ok, _ := x.check.Route(method, path); ok {
		x.mu.Lock()
		key := method + " " + tmpl
		if x.seen[key] == nil {
			x.seen[key] = map[int]bool{}
		}
		x.seen[key][res.status] = true
		x.mu.Unlock()
	}
}

// oaMultipart is a multipart/form-data body with one file.
func oaMultipart(t *testing.T, field, name, content string) (body, contentType string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	fw, err := w.CreateFormFile(field, name)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write([]byte(content))
	w.Close()
	return b.String(), w.FormDataContentType()
}

// TestOpenAPIResponsesMatchDocument calls every endpoint that needs no
// running agent — in success and in the errors it can reach — and checks
// each request and response against the document.
func TestOpenAPIResponsesMatchDocument(t *testing.T) {
	x := oaNew(t)
	ctx := context.Background()
	const loopback = "127.0.0.1:40000"

	// Documents.
	doc := x.do(t, oaCall{method: "GET", path: "/api/v1/openapi.json"}, 200)
	if !bytes.Equal(doc.body, OpenAPIDocument()) {
		t.Error("GET /api/v1/openapi.json is not the embedded document")
	}
	x.do(t, oaCall{method: "GET", path: "/docs"}, 200)

	// Bootstrap: only from loopback, only once.
	x.do(t, oaCall{method: "POST", path: "/api/v1/operator/bootstrap", body: `{}`}, 403)
	x.do(t, oaCall{method: "POST", path: "/api/v1/operator/bootstrap", body: `{"label":`, remote: loopback, invalid: true}, 400)
	op := x.do(t, oaCall{method: "POST", path: "/api/v1/operator/bootstrap", body: `{"label":"oa"}`, remote: loopback}, 201).str(t, "token")
	x.do(t, oaCall{method: "POST", path: "/api/v1/operator/bootstrap", remote: loopback}, 409)

	// Orgs (operator).
	x.do(t, oaCall{method: "GET", path: "/api/v1/orgs", invalid: true}, 401)
	x.do(t, oaCall{method: "GET", path: "/api/v1/orgs", token: op}, 200)
	orgID := x.do(t, oaCall{method: "POST", path: "/api/v1/orgs", token: op, body: `{"name":"acme","plan":{"maxAgents":0,"maxRunning":0}}`}, 201).str(t, "id")
	x.do(t, oaCall{method: "POST", path: "/api/v1/orgs", token: op, body: `{"name":"acme"}`}, 409)
	x.do(t, oaCall{method: "POST", path: "/api/v1/orgs", token: op, body: `{"plan":{}}`, invalid: true}, 400)
	x.do(t, oaCall{method: "POST", path: "/api/v1/orgs", token: op, body: `{"name":"x","defaultModel":"nope/nope"}`}, 400)
	x.do(t, oaCall{method: "GET", path: "/api/v1/orgs/" + orgID, token: op}, 200)
	x.do(t, oaCall{method: "GET", path: "/api/v1/orgs/org-missing", token: op}, 404)
	x.do(t, oaCall{method: "PATCH", path: "/api/v1/orgs/" + orgID, token: op, body: `{"defaultModel":"agenthost/offline"}`}, 200)
	x.do(t, oaCall{method: "PATCH", path: "/api/v1/orgs/" + orgID, token: op, body: `{}`, invalid: true}, 400)
	x.do(t, oaCall{method: "PATCH", path: "/api/v1/orgs/org-missing", token: op, body: `{"name":"y"}`}, 404)
	otherID := x.do(t, oaCall{method: "POST", path: "/api/v1/orgs", token: op, body: `{"name":"small","plan":{"maxAgents":1}}`}, 201).str(t, "id")
	x.do(t, oaCall{method: "PATCH", path: "/api/v1/orgs/" + otherID, token: op, body: `{"name":"acme"}`}, 409)

	// Org tokens (operator).
	tenant := x.do(t, oaCall{method: "POST", path: "/api/v1/orgs/" + orgID + "/tokens", token: op, body: `{"label":"ci"}`}, 201).str(t, "token")
	small := x.do(t, oaCall{method: "POST", path: "/api/v1/orgs/" + otherID + "/tokens", token: op}, 201).str(t, "token")
	spareID := x.do(t, oaCall{method: "POST", path: "/api/v1/orgs/" + orgID + "/tokens", token: op, body: `{"role":"tenant"}`}, 201).str(t, "id")
	x.do(t, oaCall{method: "POST", path: "/api/v1/orgs/" + orgID + "/tokens", token: op, body: `{"role":"root"}`, invalid: true}, 400)
	x.do(t, oaCall{method: "POST", path: "/api/v1/orgs/org-missing/tokens", token: op}, 404)
	x.do(t, oaCall{method: "GET", path: "/api/v1/orgs/" + orgID + "/tokens", token: op}, 200)
	x.do(t, oaCall{method: "GET", path: "/api/v1/orgs/org-missing/tokens", token: op}, 404)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/orgs/" + orgID + "/tokens/" + spareID, token: op}, 200)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/orgs/" + orgID + "/tokens/" + spareID, token: op}, 404)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/orgs/org-missing/tokens/tk1", token: op}, 404)

	// Operator tokens.
	x.do(t, oaCall{method: "GET", path: "/api/v1/operator/tokens", token: op}, 200)
	opTok := x.do(t, oaCall{method: "POST", path: "/api/v1/operator/tokens", token: op, body: `{"label":"second"}`}, 201)
	x.do(t, oaCall{method: "POST", path: "/api/v1/operator/tokens", token: op, body: `{"role":"tenant"}`, invalid: true}, 400)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/operator/tokens/" + opTok.str(t, "id"), token: op}, 200)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/operator/tokens/tk-missing", token: op}, 404)
	x.do(t, oaCall{method: "GET", path: "/api/v1/orgs", token: opTok.str(t, "token"), invalid: true}, 401) // revoked

	// Roles: each token is refused by the other side's endpoints.
	x.do(t, oaCall{method: "GET", path: "/api/v1/orgs", token: tenant}, 403)
	x.do(t, oaCall{method: "GET", path: "/api/v1/scopes", token: op}, 403)
	x.do(t, oaCall{method: "GET", path: "/api/v1/scopes", invalid: true}, 401)
	x.do(t, oaCall{method: "GET", path: "/api/v1/scopes", token: "ah_live_nope", invalid: true}, 401)

	// Nodes (operator): one that takes agents, one that is down.
	now := time.Now().UTC()
	for _, n := range []store.Node{
		{ID: "oa-node", Name: "oa-node", Address: "127.0.0.1:7500", Capacity: store.NodeCapacity{CPUMillis: 1 << 30, MemoryMB: 1 << 30, MaxAgents: 100},
			Runtimes: []string{"opencode"}, Labels: map[string]string{"zone": "a"}, LastSeen: now},
		{ID: "oa-down", Name: "oa-down", Address: "127.0.0.1:7501", LastSeen: now},
	} {
		if _, err := x.st.Apply(ctx, &store.NodeRegister{Node: n}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := x.st.Apply(ctx, &store.NodeSetStatus{ID: "oa-down", Status: store.NodeDown}); err != nil {
		t.Fatal(err)
	}

	// Models.
	x.do(t, oaCall{method: "GET", path: "/api/v1/models", token: tenant}, 200)

	// Scopes.
	x.do(t, oaCall{method: "GET", path: "/api/v1/scopes", token: tenant}, 200)
	scopeID := x.do(t, oaCall{method: "POST", path: "/api/v1/scopes", token: tenant, body: `{"name":"prod","description":"Production"}`}, 201).str(t, "id")
	x.do(t, oaCall{method: "POST", path: "/api/v1/scopes", token: tenant, body: `{"name":"bare"}`}, 201)
	x.do(t, oaCall{method: "POST", path: "/api/v1/scopes", token: tenant, body: `{"name":"prod"}`}, 409)
	x.do(t, oaCall{method: "POST", path: "/api/v1/scopes", token: tenant, body: `{"description":"x"}`, invalid: true}, 400)
	x.do(t, oaCall{method: "POST", path: "/api/v1/scopes", token: tenant, body: `not json`, invalid: true}, 400)
	x.do(t, oaCall{method: "POST", path: "/api/v1/scopes", token: tenant, invalid: true}, 400)
	x.do(t, oaCall{method: "GET", path: "/api/v1/scopes", token: tenant}, 200)
	x.do(t, oaCall{method: "GET", path: "/api/v1/scopes/" + scopeID, token: tenant}, 200)
	x.do(t, oaCall{method: "GET", path: "/api/v1/scopes/sc-missing", token: tenant}, 404)
	x.do(t, oaCall{method: "GET", path: "/api/v1/scopes/NOT%20AN%20ID", token: tenant}, 404)
	x.do(t, oaCall{method: "PATCH", path: "/api/v1/scopes/" + scopeID, token: tenant, body: `{"description":""}`}, 200)
	x.do(t, oaCall{method: "PATCH", path: "/api/v1/scopes/" + scopeID, token: tenant, body: `{}`, invalid: true}, 400)
	x.do(t, oaCall{method: "PATCH", path: "/api/v1/scopes/" + scopeID, token: tenant, body: `{"name":"bare"}`}, 409)
	x.do(t, oaCall{method: "PATCH", path: "/api/v1/scopes/sc-missing", token: tenant, body: `{"name":"z"}`}, 404)

	// Idempotency: a replay, a reuse with another body, a bad key.
	idem := oaCall{method: "POST", path: "/api/v1/scopes", token: tenant, body: `{"name":"idem"}`, header: []string{"Idempotency-Key", "oa-key-1"}}
	first := x.do(t, idem, 201)
	again := x.do(t, idem, 201)
	if again.header.Get("Idempotent-Replayed") != "true" || !bytes.Equal(first.body, again.body) {
		t.Errorf("replay: %v %s, want the first response %s", again.header, again.body, first.body)
	}
	idem.body = `{"name":"other"}`
	x.do(t, idem, 422)
	idem.header = []string{"Idempotency-Key", "has space"}
	idem.invalid = true
	x.do(t, idem, 400)
	x.do(t, oaCall{method: "POST", path: "/api/v1/tokens", token: tenant, header: []string{"Idempotency-Key", "oa-key-2"}}, 201)
	x.do(t, oaCall{method: "POST", path: "/api/v1/tokens", token: tenant, header: []string{"Idempotency-Key", "oa-key-2"}}, 201)

	// Secrets, org-level and in a scope.
	for _, base := range []string{"/api/v1/secrets", "/api/v1/scopes/" + scopeID + "/secrets"} {
		x.do(t, oaCall{method: "PUT", path: base, token: tenant, body: `{"key":"MY_KEY","value":"v1"}`}, 201)
		x.do(t, oaCall{method: "PUT", path: base, token: tenant, body: `{"key":"MY_KEY","value":"v2"}`}, 200)
		x.do(t, oaCall{method: "PUT", path: base, token: tenant, body: `{"key":"my-key","value":"v"}`, invalid: true}, 400)
		x.do(t, oaCall{method: "PUT", path: base, token: tenant, body: `{"key":"K"}`, invalid: true}, 400)
		x.do(t, oaCall{method: "GET", path: base, token: tenant}, 200)
		x.do(t, oaCall{method: "PUT", path: base, token: tenant, body: `{"key":"GONE","value":"v"}`}, 201)
		x.do(t, oaCall{method: "DELETE", path: base + "/GONE", token: tenant}, 200)
		x.do(t, oaCall{method: "DELETE", path: base + "/GONE", token: tenant}, 404)
	}
	x.do(t, oaCall{method: "GET", path: "/api/v1/scopes/sc-missing/secrets", token: tenant}, 404)
	x.do(t, oaCall{method: "PUT", path: "/api/v1/scopes/sc-missing/secrets", token: tenant, body: `{"key":"K","value":"v"}`}, 404)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/scopes/sc-missing/secrets/K", token: tenant}, 404)
	// A server without a secrets key.
	nokey := x.newServer(nil)
	x.do(t, oaCall{srv: nokey, method: "PUT", path: "/api/v1/secrets", token: tenant, body: `{"key":"K","value":"v"}`}, 503)
	// The secrets keys (operator): which keys seal them, and a reseal.
	x.do(t, oaCall{method: "GET", path: "/api/v1/operator/secrets/keys", token: op}, 200)
	x.do(t, oaCall{method: "POST", path: "/api/v1/operator/secrets/reseal", token: op}, 200)
	x.do(t, oaCall{method: "POST", path: "/api/v1/operator/secrets/reseal", token: tenant}, 403)
	x.do(t, oaCall{srv: nokey, method: "GET", path: "/api/v1/operator/secrets/keys", token: op}, 503)
	x.do(t, oaCall{srv: nokey, method: "POST", path: "/api/v1/operator/secrets/reseal", token: op}, 503)
	x.do(t, oaCall{srv: nokey, method: "POST", path: "/api/v1/tokens", token: tenant, header: []string{"Idempotency-Key", "oa-key-3"}}, 400)

	// Own tokens.
	x.do(t, oaCall{method: "GET", path: "/api/v1/tokens", token: tenant}, 200)
	own := x.do(t, oaCall{method: "POST", path: "/api/v1/tokens", token: tenant, body: `{"label":"mine"}`}, 201)
	x.do(t, oaCall{method: "POST", path: "/api/v1/tokens", token: tenant, body: `{"role":"operator"}`, invalid: true}, 400)
	x.do(t, oaCall{method: "POST", path: "/api/v1/tokens", token: tenant, body: `{"label":"` + strings.Repeat("x", 101) + `"}`, invalid: true}, 400)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/tokens/" + own.str(t, "id"), token: tenant}, 200)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/tokens/" + own.str(t, "id"), token: tenant}, 404)

	// Agents. No node agent runs them: a create places the agent and times
	// out (504) with it PROVISIONING, which the store-only endpoints show.
	x.do(t, oaCall{method: "GET", path: "/api/v1/agents", token: tenant}, 200)
	x.do(t, oaCall{method: "POST", path: "/api/v1/agents", token: tenant, body: `{"initialPrompt":"hi"}`, invalid: true}, 400)
	x.do(t, oaCall{method: "POST", path: "/api/v1/agents", token: tenant, body: `{"name":"a","model":"nope/nope"}`}, 400)
	x.do(t, oaCall{method: "POST", path: "/api/v1/agents", token: tenant, body: `{"name":"a","scope":"nope"}`}, 400)
	x.do(t, oaCall{method: "POST", path: "/api/v1/agents", token: tenant,
		body: `{"name":"a1","scope":"prod","tags":["web","b"],"model":"agenthost/offline","autostart":true}`}, 504)
	list := x.do(t, oaCall{method: "GET", path: "/api/v1/agents?status=provisioning&tag=web&limit=5", token: tenant}, 200)
	agents, _ := list.json(t)["agents"].([]any)
	if len(agents) != 1 {
		t.Fatalf("agents: %s", list.body)
	}
	agentID, _ := agents[0].(map[string]any)["agentId"].(string)
	x.do(t, oaCall{method: "POST", path: "/api/v1/agents", token: tenant, body: `{"name":"a2"}`}, 504)
	page := x.do(t, oaCall{method: "GET", path: "/api/v1/agents?limit=1", token: tenant}, 200)
	if page.json(t)["nextCursor"] == nil {
		t.Errorf("no nextCursor: %s", page.body)
	}
	x.do(t, oaCall{method: "GET", path: "/api/v1/agents?limit=0", token: tenant, invalid: true}, 400)
	x.do(t, oaCall{method: "GET", path: "/api/v1/agents?status=BUSY", token: tenant}, 400)
	x.do(t, oaCall{method: "GET", path: "/api/v1/agents/" + agentID, token: tenant}, 200)
	x.do(t, oaCall{method: "GET", path: "/api/v1/agents/ag-missing", token: tenant}, 404)
	x.do(t, oaCall{method: "GET", path: "/api/v1/agents/" + agentID, token: small}, 404) // another org's
	x.do(t, oaCall{method: "GET", path: "/api/v1/scopes/" + scopeID, token: tenant}, 200)
	x.do(t, oaCall{method: "GET", path: "/api/v1/scopes", token: tenant}, 200)

	// The plan's agent limit.
	x.do(t, oaCall{method: "POST", path: "/api/v1/agents", token: small, body: `{"name":"s1"}`}, 504)
	x.do(t, oaCall{method: "POST", path: "/api/v1/agents", token: small, body: `{"name":"s2"}`}, 429)

	// What a PROVISIONING agent answers: 400 for lifecycle changes and for
	// everything that talks to its runtime; 404 for an unknown agent.
	ag := "/api/v1/agents/" + agentID
	mp, mpType := oaMultipart(t, "file", "data.csv", "a,b\n")
	for _, c := range []oaCall{
		{method: "POST", path: ag + "/start"},
		{method: "POST", path: ag + "/stop"},
		{method: "POST", path: ag + "/restart"},
		{method: "GET", path: ag + "/messages"},
		{method: "GET", path: ag + "/messages?sessionId=ses_1"},
		{method: "POST", path: ag + "/messages", body: `{"message":"hello"}`},
		{method: "GET", path: ag + "/usage"},
		{method: "POST", path: ag + "/abort"},
		{method: "POST", path: ag + "/abort", body: `{"sessionId":"ses_1"}`},
		{method: "POST", path: ag + "/files", body: mp, contentType: mpType},
		{method: "GET", path: ag + "/permissions"},
		{method: "POST", path: ag + "/permissions/perm_1/reply", body: `{"reply":"once"}`},
		{method: "GET", path: ag + "/questions"},
		{method: "POST", path: ag + "/questions/q_1/reply", body: `{"answers":[["Simple"]]}`},
		{method: "GET", path: ag + "/logs"},
		{method: "GET", path: ag + "/logs?lines=20"},
	} {
		c.token = tenant
		x.do(t, c, 400)
		c.path = strings.Replace(c.path, agentID, "ag-missing", 1)
		x.do(t, c, 404)
	}
	x.do(t, oaCall{method: "POST", path: ag + "/messages", token: tenant, body: `{"message":""}`, invalid: true}, 400)
	x.do(t, oaCall{method: "POST", path: ag + "/permissions/perm_1/reply", token: tenant, body: `{"reply":"sometimes"}`, invalid: true}, 400)
	x.do(t, oaCall{method: "POST", path: ag + "/questions/q_1/reply", token: tenant, body: `{"answers":"Simple"}`, invalid: true}, 400)
	x.do(t, oaCall{method: "GET", path: ag + "/logs?lines=0", token: tenant, invalid: true}, 400)

	// The event stream: the status first, then deleted when the agent goes.
	x.do(t, oaCall{method: "GET", path: "/api/v1/agents/ag-missing/events", token: tenant}, 404)
	ts := httptest.NewServer(x.srv.Handler())
	defer ts.Close()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	sreq, _ := http.NewRequestWithContext(sctx, "GET", ts.URL+ag+"/events", nil)
	sreq.Header.Set("Authorization", "Bearer "+tenant)
	sresp, err := http.DefaultClient.Do(sreq)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	// The first event (the status) is there before the agent is deleted.
	sr := bufio.NewReader(sresp.Body)
	var streamed bytes.Buffer
	for !bytes.HasSuffix(streamed.Bytes(), []byte("\n\n")) {
		line, err := sr.ReadBytes('\n')
		streamed.Write(line)
		if err != nil {
			t.Fatalf("event stream: %v after %q", err, streamed.Bytes())
		}
	}
	x.do(t, oaCall{method: "DELETE", path: ag, token: tenant}, 200)
	rest, err := io.ReadAll(sr)
	if err != nil || sctx.Err() != nil {
		t.Fatalf("the event stream did not end when the agent was deleted: %v", err)
	}
	streamed.Write(rest)
	ev := oaResult{status: sresp.StatusCode, header: sresp.Header, body: streamed.Bytes()}
	if ev.status != 200 || !strings.Contains(string(ev.body), "event: status") || !strings.Contains(string(ev.body), "event: deleted") {
		t.Fatalf("event stream: %d %q", ev.status, ev.body)
	}
	x.checkResponse(t, "GET", ag+"/events", ev)
	x.do(t, oaCall{method: "DELETE", path: ag, token: tenant}, 404)

	// Nodes.
	x.do(t, oaCall{method: "GET", path: "/api/v1/nodes", token: op}, 200)
	x.do(t, oaCall{method: "POST", path: "/api/v1/nodes/oa-node/drain", token: op}, 200)
	x.do(t, oaCall{method: "POST", path: "/api/v1/nodes/oa-node/undrain", token: op}, 200)
	x.do(t, oaCall{method: "POST", path: "/api/v1/nodes/oa-down/drain", token: op}, 409)
	x.do(t, oaCall{method: "POST", path: "/api/v1/nodes/node-missing/undrain", token: op}, 404)
	x.do(t, oaCall{method: "POST", path: "/api/v1/nodes/oa-node/drain", token: op, body: `{"agents":"move","deadlineSeconds":600}`}, 200)
	x.do(t, oaCall{method: "POST", path: "/api/v1/nodes/oa-node/drain", token: op, body: `{"deadlineSeconds":600}`}, 400)
	x.do(t, oaCall{method: "POST", path: "/api/v1/nodes/oa-node/drain", token: op, body: `{"agents":"evict"}`, invalid: true}, 400)
	x.do(t, oaCall{method: "POST", path: "/api/v1/nodes/oa-node/undrain", token: op}, 200)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/nodes/node-missing", token: op}, 404)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/nodes/oa-down", token: op}, 200)

	// Scope deletion last: its agents and secrets become org-level.
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/scopes/" + scopeID, token: tenant}, 200)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/scopes/" + scopeID, token: tenant}, 404)

	// The control plane: its one server, a non-voter added and removed
	// again, the leader refusing to remove itself.
	raft := x.do(t, oaCall{method: "GET", path: "/api/v1/operator/raft", token: op}, 200)
	x.do(t, oaCall{method: "POST", path: "/api/v1/operator/raft/servers", token: op, body: `{"id":"ghost"}`, invalid: true}, 400)
	x.do(t, oaCall{method: "POST", path: "/api/v1/operator/raft/servers", token: op, body: `{"id":"ghost","address":"127.0.0.1:1","voter":false}`}, 200)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/operator/raft/servers/ghost", token: op}, 200)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/operator/raft/servers/ghost", token: op}, 404)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/operator/raft/servers/" + raft.str(t, "serverId"), token: op}, 409)
	// A backup, restored over the same cluster (last: it rewinds the state
	// to the backup's), and a damaged one refused.
	backup := x.do(t, oaCall{method: "GET", path: "/api/v1/operator/snapshot", token: op}, 200).body
	x.do(t, oaCall{method: "POST", path: "/api/v1/operator/snapshot", token: op, body: string(backup[:len(backup)-1]), contentType: "application/octet-stream"}, 400)
	x.do(t, oaCall{method: "POST", path: "/api/v1/operator/snapshot", token: op, body: string(backup), contentType: "application/octet-stream"}, 200)

	// Accounts: open sign-up, the session, sign-out, sign-in.
	cfg, _ := x.st.State().ClusterConfig()
	cfg.Signup = store.SignupOpen
	if _, err := x.st.Apply(ctx, &store.ClusterConfigSet{Config: cfg}); err != nil {
		t.Fatal(err)
	}
	x.do(t, oaCall{method: "POST", path: "/api/v1/auth/signup", body: `{"email":"oa@example.com","password":"short"}`, invalid: true}, 400)
	signedUp := x.do(t, oaCall{method: "POST", path: "/api/v1/auth/signup", body: `{"email":"oa@example.com","password":"long enough password","orgName":"oa-self"}`}, 201)
	x.do(t, oaCall{method: "POST", path: "/api/v1/auth/signup", body: `{"email":"oa@example.com","password":"long enough password"}`}, 409)
	session := (&http.Response{Header: signedUp.header}).Cookies()[0]
	x.do(t, oaCall{method: "GET", path: "/api/v1/auth/session", header: []string{"Cookie", session.Name + "=" + session.Value}}, 200)
	x.do(t, oaCall{method: "GET", path: "/api/v1/auth/session", token: tenant}, 401)
	x.do(t, oaCall{method: "POST", path: "/api/v1/auth/signout", header: []string{"Cookie", session.Name + "=" + session.Value}}, 204)
	x.do(t, oaCall{method: "POST", path: "/api/v1/auth/signin", body: `{"email":"oa@example.com","password":"wrong password!"}`}, 401)
	x.do(t, oaCall{method: "POST", path: "/api/v1/auth/signin", body: `{"email":"oa@example.com","password":"long enough password"}`}, 200)

	// Invitations, accounts and the cluster's settings.
	x.do(t, oaCall{method: "GET", path: "/api/v1/operator/config", token: op}, 200)
	x.do(t, oaCall{method: "PATCH", path: "/api/v1/operator/config", token: op, body: `{"signup":"anyone"}`, invalid: true}, 400)
	x.do(t, oaCall{method: "PATCH", path: "/api/v1/operator/config", token: op, body: `{"signup":"invite"}`}, 200)
	idOf := func(r oaResult) string {
		var v struct{ ID string }
		if err := json.Unmarshal(r.body, &v); err != nil || v.ID == "" {
			t.Fatalf("no id in %s", r.body)
		}
		return v.ID
	}
	ownInv := idOf(x.do(t, oaCall{method: "POST", path: "/api/v1/invitations", token: tenant, body: `{"email":"new@example.com","expiresInHours":24}`}, 201))
	x.do(t, oaCall{method: "GET", path: "/api/v1/invitations", token: tenant}, 200)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/invitations/" + ownInv, token: tenant}, 200)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/invitations/" + ownInv, token: tenant}, 404)
	opInv := idOf(x.do(t, oaCall{method: "POST", path: "/api/v1/operator/invitations", token: op, body: `{"operator":true}`}, 201))
	x.do(t, oaCall{method: "GET", path: "/api/v1/operator/invitations", token: op}, 200)
	x.do(t, oaCall{method: "DELETE", path: "/api/v1/operator/invitations/" + opInv, token: op}, 200)
	var accounts struct{ Accounts []struct{ ID string } }
	if err := json.Unmarshal(x.do(t, oaCall{method: "GET", path: "/api/v1/operator/accounts", token: op}, 200).body, &accounts); err != nil || len(accounts.Accounts) == 0 {
		t.Fatalf("accounts: %v %+v", err, accounts)
	}
	acc := "/api/v1/operator/accounts/" + accounts.Accounts[0].ID
	x.do(t, oaCall{method: "PATCH", path: acc, token: op, body: `{"operator":true}`}, 200)
	x.do(t, oaCall{method: "PATCH", path: acc, token: op, body: `{}`, invalid: true}, 400)
	x.do(t, oaCall{method: "DELETE", path: acc, token: op}, 200)
	x.do(t, oaCall{method: "DELETE", path: acc, token: op}, 404)

	// Unknown paths under /api/ are a JSON 404.
	x.do(t, oaCall{method: "GET", path: "/api/v1/nope", token: tenant, invalid: true}, 404)
	x.do(t, oaCall{method: "POST", path: "/api/v2/agents", invalid: true}, 404)

	// Every operation that needs no running agent answered its success.
	needsRuntime := map[string]bool{
		"POST /api/v1/agents": true, "POST /api/v1/agents/{agentId}/start": true, "POST /api/v1/agents/{agentId}/stop": true,
		"POST /api/v1/agents/{agentId}/restart": true, "GET /api/v1/agents/{agentId}/messages": true,
		"POST /api/v1/agents/{agentId}/messages": true, "GET /api/v1/agents/{agentId}/usage": true,
		"POST /api/v1/agents/{agentId}/abort": true, "POST /api/v1/agents/{agentId}/files": true,
		"GET /api/v1/agents/{agentId}/permissions": true, "POST /api/v1/agents/{agentId}/permissions/{permissionId}/reply": true,
		"GET /api/v1/agents/{agentId}/questions": true, "POST /api/v1/agents/{agentId}/questions/{questionId}/reply": true,
		"GET /api/v1/agents/{agentId}/logs": true,
	}
	for _, o := range x.check.Operations() {
		var statuses []int
		success := false
		for s := range x.seen[o] {
			statuses = append(statuses, s)
			success = success || s < 300
		}
		sort.Ints(statuses)
		t.Logf("%-62s %v", o, statuses)
		if !success && !needsRuntime[o] {
			t.Errorf("%s: no success was checked", o)
		}
	}
}

// oaRoute is one registered method of a path in routes.go.
type oaRoute struct {
	method, path, access string
}

// oaParseRoutes reads the s.handle calls of routes.go.
func oaParseRoutes(t *testing.T) []oaRoute {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "routes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	methods := map[string]string{} // local name → method
	methodOf := func(e ast.Expr) string {
		switch e := e.(type) {
		case *ast.Ident:
			return methods[e.Name]
		case *ast.SelectorExpr:
			if x, ok := e.X.(*ast.Ident); ok && x.Name == "http" && strings.HasPrefix(e.Sel.Name, "Method") {
				return strings.ToUpper(strings.TrimPrefix(e.Sel.Name, "Method"))
			}
		}
		return ""
	}
	var routes []oaRoute
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.AssignStmt:
			for i, lhs := range n.Lhs {
				if id, ok := lhs.(*ast.Ident); ok && i < len(n.Rhs) {
					if m := methodOf(n.Rhs[i]); m != "" {
						methods[id.Name] = m
					}
				}
			}
		case *ast.CallExpr:
			sel, ok := n.Fun.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "handle" || len(n.Args) < 2 {
				return true
			}
			lit, ok := n.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Errorf("%s: s.handle with a path that is not a literal", fset.Position(n.Pos()))
				return true
			}
			path, _ := strconv.Unquote(lit.Value)
			for _, a := range n.Args[1:] {
				cl, ok := a.(*ast.CompositeLit)
				if !ok || len(cl.Elts) < 2 {
					t.Errorf("%s: a route that is not route{method, access, handler}", fset.Position(a.Pos()))
					continue
				}
				m := methodOf(cl.Elts[0])
				acc, _ := cl.Elts[1].(*ast.Ident)
				if m == "" || acc == nil {
					t.Errorf("%s: cannot read the route's method or access", fset.Position(a.Pos()))
					continue
				}
				routes = append(routes, oaRoute{method: m, path: path, access: acc.Name})
			}
		}
		return true
	})
	if len(routes) < 40 {
		t.Fatalf("read only %d routes from routes.go", len(routes))
	}
	return routes
}

// TestOpenAPIDocumentsEveryRoute: the document's operations are exactly the
// routes of routes.go, with the same access; and on the live handler each
// documented operation is served (not the catch-all 404 or a 405) and each
// path answers other methods with a 405 whose Allow lists exactly the
// documented ones.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	x := oaNew(t)
	routes := oaParseRoutes(t)

	var raw struct {
		Paths map[string]map[string]struct {
			Access   string                `json:"x-access"`
			Security []map[string][]string `json:"security"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPIDocument(), &raw); err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{} // "METHOD /path" → access
	for path, item := range raw.Paths {
		for method, op := range item {
			key := strings.ToUpper(method) + " " + path
			documented[key] = op.Access
			var schemes []string
			for _, req := range op.Security {
				for name := range req {
					schemes = append(schemes, name)
				}
			}
			// A tenant's token or a dashboard account's session cookie.
			wantSchemes := map[string][]string{"tenant": {"tenantToken", "sessionCookie"}, "operator": {"operatorToken", "sessionCookie"}, "public": nil}[op.Access]
			if !slices.Equal(schemes, wantSchemes) {
				t.Errorf("%s: x-access %q with security %v", key, op.Access, schemes)
			}
		}
	}
	registered := map[string]string{}
	for _, r := range routes {
		key := r.method + " " + r.path
		registered[key] = r.access
		acc, ok := documented[key]
		switch {
		case !ok:
			t.Errorf("%s is registered in routes.go but not in openapi.json", key)
		case acc != r.access:
			t.Errorf("%s: routes.go gives %s access, openapi.json %s", key, r.access, acc)
		}
	}
	for key := range documented {
		if _, ok := registered[key]; !ok {
			t.Errorf("%s is in openapi.json but not registered in routes.go", key)
		}
	}
	if got := len(x.check.Operations()); got != len(documented) {
		t.Errorf("the checker sees %d operations, the JSON has %d", got, len(documented))
	}

	// Live: each operation is served. Without a token that is a 401 (403
	// for bootstrap from a non-loopback peer, 200 for the documents).
	param := regexp.MustCompile(`\{[^}]+\}`)
	byPath := map[string][]string{}
	for key, access := range documented {
		method, path, _ := strings.Cut(key, " ")
		byPath[path] = append(byPath[path], method)
		concrete := param.ReplaceAllStringFunc(path, func(p string) string { return "oa-" + strings.ToLower(strings.Trim(p, "{}")) })
		want := map[string]int{"tenant": 401, "operator": 401}[access]
		switch key {
		case "POST /api/v1/operator/bootstrap":
			want = 403
		case "POST /api/v1/auth/signup", "POST /api/v1/auth/signin":
			want = 400 // no body
		case "POST /api/v1/auth/signout":
			want = 204 // no session: the cookie is cleared all the same
		case "GET /api/v1/openapi.json", "GET /docs":
			want = 200
		}
		x.do(t, oaCall{method: method, path: concrete, invalid: true}, want)
	}
	// And every path answers the methods it does not document with a 405
	// whose Allow is exactly the documented ones (the checker compares).
	for path, methods := range byPath {
		concrete := param.ReplaceAllString(path, "oa-x")
		for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
			if !slices.Contains(methods, m) {
				x.do(t, oaCall{method: m, path: concrete, invalid: true}, 405)
			}
		}
	}
}

// TestOpenAPIDocumentDescribesErrorsOnce: every error response of every
// operation is one of the shared components (so that one error shape is
// documented), and each component's body is the shared Error schema.
func TestOpenAPIDocumentDescribesErrorsOnce(t *testing.T) {
	var raw struct {
		Paths map[string]map[string]struct {
			Parameters []map[string]any           `json:"parameters"`
			Responses  map[string]json.RawMessage `json:"responses"`
		} `json:"paths"`
		Components struct {
			Responses map[string]struct {
				Headers map[string]any `json:"headers"`
				Content map[string]struct {
					Schema struct {
						AllOf []map[string]any `json:"allOf"`
					} `json:"schema"`
				} `json:"content"`
			} `json:"responses"`
		} `json:"components"`
	}
	if err := json.Unmarshal(OpenAPIDocument(), &raw); err != nil {
		t.Fatal(err)
	}
	for name, r := range raw.Components.Responses {
		if _, ok := r.Headers["X-Request-Id"]; !ok {
			t.Errorf("components/responses/%s has no X-Request-Id header", name)
		}
		s := r.Content["application/json"].Schema
		if len(s.AllOf) == 0 || s.AllOf[0]["$ref"] != "#/components/schemas/Error" {
			t.Errorf("components/responses/%s is not the shared Error schema", name)
		}
	}
	for path, item := range raw.Paths {
		for method, op := range item {
			where := strings.ToUpper(method) + " " + path
			for status, body := range op.Responses {
				n, _ := strconv.Atoi(status)
				var r map[string]any
				json.Unmarshal(body, &r)
				ref, _ := r["$ref"].(string)
				if n >= 400 && !strings.HasPrefix(ref, "#/components/responses/") {
					t.Errorf("%s %s: not a shared error response", where, status)
				}
				if n < 400 {
					h, _ := r["headers"].(map[string]any)
					if _, ok := h["X-Request-Id"]; !ok {
						t.Errorf("%s %s: no X-Request-Id header", where, status)
					}
				}
			}
			hasKey := false
			for _, p := range op.Parameters {
				if p["$ref"] == "#/components/parameters/IdempotencyKey" {
					hasKey = true
				}
			}
			_, has409 := op.Responses["409"]
			_, has422 := op.Responses["422"]
			// Bootstrap, restore and the account endpoints take no
			// Idempotency-Key (see their descriptions); every other POST does.
			if method == "post" && path != "/api/v1/operator/bootstrap" && path != "/api/v1/operator/snapshot" && !strings.HasPrefix(path, "/api/v1/auth/") && (!hasKey || !has409 || !has422) {
				t.Errorf("%s: Idempotency-Key %v, 409 %v, 422 %v", where, hasKey, has409, has422)
			}
		}
	}
}

// TestOpenAPIDocsPageIsSelfContained: /docs loads nothing from elsewhere
// and reads the document from the API.
func TestOpenAPIDocsPageIsSelfContained(t *testing.T) {
	page := string(docsPage)
	for _, banned := range []string{"http://", "https://", "//cdn", "<link ", "src=\"", "@import"} {
		if i := strings.Index(page, banned); i >= 0 {
			// xmlns-like identifiers would be fine, but the page has none.
			t.Errorf("docs.html contains %q near %q", banned, page[max(0, i-40):min(len(page), i+40)])
		}
	}
	for _, want := range []string{"/api/v1/openapi.json", "<html lang=", "<main", "<title>"} {
		if !strings.Contains(page, want) {
			t.Errorf("docs.html lacks %q", want)
		}
	}
}
