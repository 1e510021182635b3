package openapicheck_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/agenthost/agenthost/api"
	"github.com/agenthost/agenthost/internal/openapicheck"
)

var (
	oaOnce    sync.Once
	oaChecker *openapicheck.Checker
	oaErr     error
)

// oaAPIChecker is a checker over the API's own document, made once.
func oaAPIChecker(t *testing.T) *openapicheck.Checker {
	t.Helper()
	oaOnce.Do(func() { oaChecker, oaErr = openapicheck.New(api.OpenAPIDocument()) })
	if oaErr != nil {
		t.Fatal(oaErr)
	}
	return oaChecker
}

func oaJSONHeader(extra ...string) http.Header {
	h := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"req_0123456789abcdef01234567"}}
	for i := 0; i+1 < len(extra); i += 2 {
		h.Set(extra[i], extra[i+1])
	}
	return h
}

func TestAPIDocumentIsValidOpenAPI31(t *testing.T) {
	c := oaAPIChecker(t)
	if got := c.Model().Version; got != "3.1.0" {
		t.Fatalf("version %q", got)
	}
	if n := len(c.Operations()); n < 40 {
		t.Fatalf("only %d operations", n)
	}
	for _, o := range c.Operations() {
		method, path, _ := strings.Cut(o, " ")
		op, _ := c.Model().Paths.PathItems.GetOrZero(path).GetOperations().Get(strings.ToLower(method))
		if op.Summary == "" || op.OperationId == "" {
			t.Errorf("%s: no summary or operationId", o)
		}
		if op.Responses == nil || op.Responses.Codes.Len() == 0 {
			t.Errorf("%s: no responses", o)
		}
	}
}

func TestNewRejectsInvalidDocuments(t *testing.T) {
	for name, doc := range map[string]string{
		"not JSON":     `{"openapi": `,
		"3.0":          `{"openapi":"3.0.3","info":{"title":"x","version":"1"},"paths":{}}`,
		"no info":      `{"openapi":"3.1.0","paths":{}}`,
		"bad response": `{"openapi":"3.1.0","info":{"title":"x","version":"1"},"paths":{"/a":{"get":{"responses":{"200":{"content":{"application/json":{"schema":{"type":"object"}}}}}}}}}`,
		"bad param":    `{"openapi":"3.1.0","info":{"title":"x","version":"1"},"paths":{"/a/{id}":{"get":{"parameters":[{"name":"id","in":"body"}],"responses":{"200":{"description":"ok"}}}}}}`,
		"bad event ref": `{"openapi":"3.1.0","info":{"title":"x","version":"1"},"paths":{"/e":{"get":{"responses":{"200":{"description":"ok",
			"content":{"text/event-stream":{"schema":{"type":"string"},"x-events":{"a":{"$ref":"#/components/schemas/Missing"}}}}}}}}}}`,
	} {
		if _, err := openapicheck.New([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestRoute(t *testing.T) {
	c := oaAPIChecker(t)
	for _, tc := range []struct {
		method, path, want string
		has                bool
	}{
		{"GET", "/api/v1/agents/ag123/messages", "/api/v1/agents/{agentId}/messages", true},
		{"POST", "/api/v1/agents/ag123/messages?x=1", "/api/v1/agents/{agentId}/messages", true},
		{"PUT", "/api/v1/agents/ag123/messages", "/api/v1/agents/{agentId}/messages", false},
		{"POST", "/api/v1/agents/ag1/permissions/p1/reply", "/api/v1/agents/{agentId}/permissions/{permissionId}/reply", true},
		{"GET", "/api/v1/operator/tokens", "/api/v1/operator/tokens", true},
		{"DELETE", "/api/v1/scopes/sc1/secrets/MY_KEY", "/api/v1/scopes/{scopeId}/secrets/{key}", true},
		{"GET", "/api/v1/nope", "", false},
	} {
		got, has, err := c.Route(tc.method, tc.path)
		if err != nil || got != tc.want || has != tc.has {
			t.Errorf("%s %s: %q %v %v, want %q %v", tc.method, tc.path, got, has, err, tc.want, tc.has)
		}
	}
}

const oaGoodAgent = `{"agentId":"agabc","name":"my-agent","status":"RUNNING","busy":true,"url":"http://a10042.localhost:7480",
"sessions":[{"id":"ses_1","title":null,"url":"http://a10042.localhost:7480/L3dvcmtzcGFjZQ/session/ses_1"}],
"errorMsg":null,"createdAt":"2025-01-15T10:30:00.000Z","scopeId":null,"model":"anthropic/claude-opus-4-6","tags":["x"],"autostart":false}`

// TestCheckResponseCatchesMistakes shows the checker fails: each case is a
// response that a handler with a bug could write.
func TestCheckResponseCatchesMistakes(t *testing.T) {
	c := oaAPIChecker(t)
	const agent = "/api/v1/agents/agabc"
	errBody := func(code string) string {
		return `{"error":{"code":"` + code + `","message":"m","requestId":"req_0123456789abcdef01234567"}}`
	}
	type tc struct {
		name         string
		method, path string
		status       int
		header       http.Header
		body         string
	}
	good := []tc{
		{"agent", "GET", agent, 200, oaJSONHeader(), oaGoodAgent},
		{"agent with errorMsg", "GET", agent, 200, oaJSONHeader(), strings.Replace(oaGoodAgent, `"errorMsg":null`, `"errorMsg":"boom"`, 1)},
		{"404", "GET", agent, 404, oaJSONHeader(), errBody("not_found")},
		{"401", "GET", agent, 401, oaJSONHeader(), errBody("unauthenticated")},
		{"503 with Retry-After", "DELETE", agent, 503, oaJSONHeader("Retry-After", "1"), errBody("unavailable")},
		{"replayed", "POST", "/api/v1/scopes", 201, oaJSONHeader("Idempotent-Replayed", "true"),
			`{"id":"sc1","name":"n","description":null,"createdAt":"2025-01-01T00:00:00.000Z"}`},
		{"message parts are the runtime's own", "GET", agent + "/messages?sessionId=s", 200, oaJSONHeader(),
			`{"sessionId":"s","messages":[{"id":"m","info":{"role":"user","parts":[{"type":"text","text":"hi","extra":{"any":1}}]}}],
			"usage":{"cost":0,"tokens":{"total":0,"input":0,"output":0,"reasoning":0,"cache":{"read":0,"write":0}}}}`},
		{"abort all", "POST", agent + "/abort", 200, oaJSONHeader(), `{"agentId":"agabc","aborted":["s1","s2"]}`},
		{"abort one", "POST", agent + "/abort", 200, oaJSONHeader(), `{"agentId":"agabc","sessionId":"s1","aborted":true}`},
		{"405", "PUT", agent, 405, oaJSONHeader("Allow", "GET, DELETE"), errBody("method_not_allowed")},
		{"unknown path", "GET", "/api/v1/nope", 404, oaJSONHeader(), errBody("not_found")},
		{"events", "GET", agent + "/events", 200, http.Header{"Content-Type": {"text/event-stream"}, "X-Request-Id": {"r1"}},
			"event: status\ndata: {\"agentId\":\"agabc\",\"status\":\"RUNNING\",\"errorMsg\":null}\n\n: keep-alive\n\n" +
				"event: busy\ndata: {\"busy\":true}\n\nevent: message\ndata: {\"type\":\"message.updated\",\"data\":{\"anything\":[1]}}\n\n" +
				"event: deleted\ndata: {\"agentId\":\"agabc\"}\n\n"},
		{"docs", "GET", "/docs", 200, http.Header{"Content-Type": {"text/html; charset=utf-8"}, "X-Request-Id": {"r1"}}, "<!doctype html>"},
	}
	for _, g := range good {
		if err := c.CheckResponse(g.method, g.path, g.status, g.header, []byte(g.body)); err != nil {
			t.Errorf("%s: %v", g.name, err)
		}
	}
	bad := []tc{
		{"renamed field", "GET", agent, 200, oaJSONHeader(), strings.Replace(oaGoodAgent, `"agentId"`, `"agentID"`, 1)},
		{"wrong type", "GET", agent, 200, oaJSONHeader(), strings.Replace(oaGoodAgent, `"busy":true`, `"busy":"yes"`, 1)},
		{"missing field", "GET", agent, 200, oaJSONHeader(), strings.Replace(oaGoodAgent, `"autostart":false`, `"x":1`, 1)},
		{"null where not nullable", "GET", agent, 200, oaJSONHeader(), strings.Replace(oaGoodAgent, `"name":"my-agent"`, `"name":null`, 1)},
		{"nullable of the wrong type", "GET", agent, 200, oaJSONHeader(), strings.Replace(oaGoodAgent, `"errorMsg":null`, `"errorMsg":5`, 1)},
		{"bad enum", "GET", agent, 200, oaJSONHeader(), strings.Replace(oaGoodAgent, `"RUNNING"`, `"running"`, 1)},
		{"bad timestamp", "GET", agent, 200, oaJSONHeader(), strings.Replace(oaGoodAgent, `2025-01-15T10:30:00.000Z`, `yesterday`, 1)},
		{"nested session field", "GET", agent, 200, oaJSONHeader(), strings.Replace(oaGoodAgent, `"title":null`, `"name":null`, 1)},
		{"undocumented status", "GET", agent, 418, oaJSONHeader(), errBody("internal")},
		{"wrong content type", "GET", agent, 200, http.Header{"Content-Type": {"text/plain"}, "X-Request-Id": {"r"}}, oaGoodAgent},
		{"no X-Request-Id", "GET", agent, 200, http.Header{"Content-Type": {"application/json"}}, oaGoodAgent},
		{"error code of another status", "GET", agent, 404, oaJSONHeader(), errBody("unauthenticated")},
		{"unknown error code", "GET", agent, 404, oaJSONHeader(), errBody("nope")},
		{"error without requestId", "GET", agent, 404, oaJSONHeader(), `{"error":{"code":"not_found","message":"m"}}`},
		{"flat error", "GET", agent, 404, oaJSONHeader(), `{"code":"not_found","message":"m","requestId":"r"}`},
		{"503 without Retry-After", "DELETE", agent, 503, oaJSONHeader(), errBody("unavailable")},
		{"not JSON", "GET", agent, 200, oaJSONHeader(), `{"agentId":`},
		{"part without type", "GET", agent + "/messages?sessionId=s", 200, oaJSONHeader(),
			`{"sessionId":"s","messages":[{"id":"m","info":{"role":"user","parts":[{"text":"hi"}]}}],
			"usage":{"cost":0,"tokens":{"total":0,"input":0,"output":0,"reasoning":0,"cache":{"read":0,"write":0}}}}`},
		{"abort mixed", "POST", agent + "/abort", 200, oaJSONHeader(), `{"agentId":"agabc","aborted":true}`},
		{"undocumented method", "PUT", agent, 200, oaJSONHeader(), oaGoodAgent},
		{"405 with a wrong Allow", "PUT", agent, 405, oaJSONHeader("Allow", "GET"), errBody("method_not_allowed")},
		{"405 without Allow", "PUT", agent, 405, oaJSONHeader(), errBody("method_not_allowed")},
		{"unknown path, not 404", "GET", "/api/v1/nope", 200, oaJSONHeader(), `{}`},
		{"unknown path outside /api/", "GET", "/nope", 404, oaJSONHeader(), errBody("not_found")},
		{"event data", "GET", agent + "/events", 200, http.Header{"Content-Type": {"text/event-stream"}, "X-Request-Id": {"r1"}},
			"event: status\ndata: {\"agentId\":\"agabc\",\"status\":\"BUSY\",\"errorMsg\":null}\n\n"},
		{"undocumented event", "GET", agent + "/events", 200, http.Header{"Content-Type": {"text/event-stream"}, "X-Request-Id": {"r1"}},
			"event: ping\ndata: {}\n\n"},
	}
	for _, b := range bad {
		err := c.CheckResponse(b.method, b.path, b.status, b.header, []byte(b.body))
		if err == nil {
			t.Errorf("%s: not caught", b.name)
			continue
		}
		t.Logf("%s: %v", b.name, err)
	}
}

func TestCheckRequest(t *testing.T) {
	c := oaAPIChecker(t)
	tok := "Bearer ah_live_" + strings.Repeat("a", 49)
	req := func(method, path, body string, header ...string) *http.Request {
		r, err := http.NewRequest(method, "http://localhost:7480"+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body != "" {
			r.Header.Set("Content-Type", "application/json")
		}
		r.Header.Set("Authorization", tok)
		for i := 0; i+1 < len(header); i += 2 {
			r.Header.Set(header[i], header[i+1])
		}
		return r
	}
	for name, r := range map[string]*http.Request{
		"create agent":   req("POST", "/api/v1/agents", `{"name":"a","initialPrompt":"hi","tags":["x"]}`, "Idempotency-Key", "k1"),
		"list agents":    req("GET", "/api/v1/agents?limit=10&status=RUNNING", ""),
		"reply":          req("POST", "/api/v1/agents/ag1/permissions/p1/reply", `{"reply":"once"}`),
		"answers":        req("POST", "/api/v1/agents/ag1/questions/q1/reply", `{"answers":[["Simple"]]}`),
		"put secret":     req("PUT", "/api/v1/secrets", `{"key":"MY_KEY","value":"v"}`),
		"patch scope":    req("PATCH", "/api/v1/scopes/sc1", `{"description":"d"}`),
		"abort, no body": req("POST", "/api/v1/agents/ag1/abort", ""),
	} {
		want := ""
		if r.Body != nil {
			b, _ := io.ReadAll(r.Body)
			want = string(b)
			r.Body = io.NopCloser(strings.NewReader(want))
		}
		if err := c.CheckRequest(r); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if r.Body != nil {
			// The body is still there for the handler.
			if b, _ := io.ReadAll(r.Body); string(b) != want {
				t.Errorf("%s: body after the check %q, want %q", name, b, want)
			}
		}
	}
	for name, r := range map[string]*http.Request{
		"missing name":     req("POST", "/api/v1/agents", `{"initialPrompt":"hi"}`),
		"name of a number": req("POST", "/api/v1/agents", `{"name":5}`),
		"bad limit":        req("GET", "/api/v1/agents?limit=0", ""),
		"bad reply":        req("POST", "/api/v1/agents/ag1/permissions/p1/reply", `{"reply":"sometimes"}`),
		"flat answers":     req("POST", "/api/v1/agents/ag1/questions/q1/reply", `{"answers":["Simple"]}`),
		"lowercase key":    req("PUT", "/api/v1/secrets", `{"key":"my_key","value":"v"}`),
		"empty patch":      req("PATCH", "/api/v1/scopes/sc1", `{}`),
		"bad key header":   req("POST", "/api/v1/scopes", `{"name":"n"}`, "Idempotency-Key", "has space"),
	} {
		if err := c.CheckRequest(r); err == nil {
			t.Errorf("%s: not caught", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	noAuth := req("GET", "/api/v1/scopes", "")
	noAuth.Header.Del("Authorization")
	if err := c.CheckRequest(noAuth); err == nil {
		t.Error("a request without a token passed")
	}
	public := req("GET", "/api/v1/openapi.json", "")
	public.Header.Del("Authorization")
	if err := c.CheckRequest(public); err != nil {
		t.Errorf("public document: %v", err)
	}
}

func TestParseEvents(t *testing.T) {
	evs, err := openapicheck.ParseEvents([]byte(": hello\n\nevent: a\ndata: {\"x\":1}\n\ndata: one\ndata: two\n\nevent: cut\ndata: {}"))
	if err != nil {
		t.Fatal(err)
	}
	want := []openapicheck.Event{{"a", `{"x":1}`}, {"message", "one\ntwo"}, {"cut", "{}"}}
	if len(evs) != len(want) {
		t.Fatalf("%+v", evs)
	}
	for i := range want {
		if evs[i] != want[i] {
			t.Errorf("event %d: %+v, want %+v", i, evs[i], want[i])
		}
	}
	if _, err := openapicheck.ParseEvents([]byte("bogus: x\n\n")); err == nil {
		t.Error("unknown field accepted")
	}
}
