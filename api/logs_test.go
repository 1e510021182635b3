package api

import (
	"fmt"
	"strings"
	"testing"

	"github.com/agenthost/agenthost/store"
)

// TestAgentLogs: GET /api/v1/agents/{id}/logs answers the tail of the
// container's output from its node as plain text — 200 lines unless asked
// otherwise, Log-Truncated saying whether older output was left out; bad
// line counts are 400s, another org's agent is a 404 and a stopped one the
// runtime calls' 400.
func TestAgentLogs(t *testing.T) {
	h := htNew(t, htOptions{})
	a, b := h.org("logs-a", store.Plan{}), h.org("logs-b", store.Plan{})
	id := h.createAgent(a.Token, map[string]any{"name": "talker"})
	first := "fake runtime of " + id + " listening\n"
	logs := h.mustStatus(h.do(nil, "GET", "/api/v1/agents/"+id+"/logs", a.Token, nil), 200)
	if ct := logs.header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if string(logs.body) != first || logs.header.Get("Log-Truncated") != "false" {
		t.Fatalf("logs of a fresh agent: %q, Log-Truncated %q", logs.body, logs.header.Get("Log-Truncated"))
	}
	if logs.header.Get("X-Content-Type-Options") != "nosniff" || logs.header.Get("X-Request-Id") == "" {
		t.Errorf("headers %v", logs.header)
	}

	var all strings.Builder
	all.WriteString(first)
	for i := range 300 {
		line := fmt.Sprintf("output line %d\n", i)
		h.rt.appendLog(id, line)
		all.WriteString(line)
	}
	lines := strings.SplitAfter(all.String(), "\n")
	lines = lines[:len(lines)-1] // after the final newline
	for _, tc := range []struct {
		query     string
		want      []string
		truncated string
	}{
		{"", lines[len(lines)-200:], "true"},
		{"?lines=3", lines[len(lines)-3:], "true"},
		{"?lines=5000", lines, "false"},
		{"?lines=301", lines, "false"},
		{"?lines=300", lines[1:], "true"},
	} {
		r := h.mustStatus(h.do(nil, "GET", "/api/v1/agents/"+id+"/logs"+tc.query, a.Token, nil), 200)
		if want := strings.Join(tc.want, ""); string(r.body) != want || r.header.Get("Log-Truncated") != tc.truncated {
			t.Errorf("logs%s: %d bytes (%q…), Log-Truncated %q; want %d bytes, %s",
				tc.query, len(r.body), r.body[:min(40, len(r.body))], r.header.Get("Log-Truncated"), len(want), tc.truncated)
		}
	}

	// Bad line counts are the API's 400, in its error shape.
	for _, q := range []string{"?lines=0", "?lines=-1", "?lines=5001", "?lines=ten", "?lines="} {
		r := h.mustStatus(h.do(nil, "GET", "/api/v1/agents/"+id+"/logs"+q, a.Token, nil), 400)
		if err := htErrorShape(r, CodeInvalidRequest); err != nil {
			t.Errorf("logs%s: %v", q, err)
		}
	}

	// Another org's agent does not exist for the caller.
	r := h.mustStatus(h.do(nil, "GET", "/api/v1/agents/"+id+"/logs", b.Token, nil), 404)
	if err := htErrorShape(r, CodeNotFound); err != nil {
		t.Error(err)
	}

	// Stopped, the agent answers as every runtime call does.
	h.mustStatus(h.do(nil, "POST", "/api/v1/agents/"+id+"/stop", a.Token, nil), 200)
	r = h.mustStatus(h.do(nil, "GET", "/api/v1/agents/"+id+"/logs", a.Token, nil), 400)
	if err := htErrorShape(r, CodeAgentNotRunning); err != nil {
		t.Error(err)
	}
}
