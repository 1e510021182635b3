package api

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
)

// htIdem sends a POST with an Idempotency-Key.
func (h *htHarness) htIdem(path, token, key string, body any) *htResp {
	h.t.Helper()
	return h.do(nil, "POST", path, token, body, "Idempotency-Key", key)
}

func htReplayed(r *htResp) bool { return r.header.Get(replayedHeader) == "true" }

// record is the stored idempotency record of an org's key (nil if none).
func (h *htHarness) record(scope, key string) *store.IdempotencyRecord {
	h.t.Helper()
	rec, err := h.st.State().Idempotency(scope, key)
	if err != nil {
		h.t.Fatal(err)
	}
	return rec
}

func (h *htHarness) agentCount(orgID string) int {
	h.t.Helper()
	agents, err := h.st.State().AgentsByOrg(orgID)
	if err != nil {
		h.t.Fatal(err)
	}
	return len(agents)
}

func (h *htHarness) tokenCount() int {
	h.t.Helper()
	n := 0
	for _, role := range []store.TokenRole{store.RoleTenant, store.RoleOperator} {
		tokens, err := h.st.State().TokensByRole(role)
		if err != nil {
			h.t.Fatal(err)
		}
		n += len(tokens)
	}
	return n
}

func TestIdempotency(t *testing.T) {
	root := htNew(t, htOptions{nameModes: true})

	t.Run("same key and body replay the response and create once", func(t *testing.T) {
		h := root.on(t)
		o := h.org("idem-replay", store.Plan{})
		body := map[string]any{"name": "once", "initialPrompt": "hello"}
		first := h.mustStatus(h.htIdem("/api/v1/agents", o.Token, "create-1", body), 200)
		if htReplayed(first) {
			t.Fatal("the first response is marked replayed")
		}
		var created createAgentResponse
		first.decode(t, &created)
		for range 2 {
			again := h.mustStatus(h.htIdem("/api/v1/agents", o.Token, "create-1", body), 200)
			if !htReplayed(again) {
				t.Fatalf("retry not marked %s: true: %v", replayedHeader, again.header)
			}
			if !bytes.Equal(again.body, first.body) {
				t.Fatalf("replay differs:\n%s\n%s", first.body, again.body)
			}
			if ct := again.header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("replay Content-Type %q", ct)
			}
		}
		if n := h.agentCount(o.ID); n != 1 {
			t.Fatalf("%d agents, want 1", n)
		}
		// The initial prompt was sent once: the replay did not run again.
		if n := h.rt.sends(created.AgentID); n != 1 {
			t.Fatalf("the initial prompt was sent %d times", n)
		}

		// A scope (201) too, and a refused request (400) is replayed as well.
		s1 := h.mustStatus(h.htIdem("/api/v1/scopes", o.Token, "scope-1", map[string]any{"name": "prod"}), 201)
		s2 := h.mustStatus(h.htIdem("/api/v1/scopes", o.Token, "scope-1", map[string]any{"name": "prod"}), 201)
		if !htReplayed(s2) || !bytes.Equal(s1.body, s2.body) {
			t.Fatalf("scope replay: %s / %s", s1, s2)
		}
		if scopes, _ := h.st.State().ScopesByOrg(o.ID); len(scopes) != 1 {
			t.Fatalf("%d scopes, want 1", len(scopes))
		}
		bad1 := h.mustStatus(h.htIdem("/api/v1/scopes", o.Token, "scope-bad", map[string]any{}), 400)
		bad2 := h.mustStatus(h.htIdem("/api/v1/scopes", o.Token, "scope-bad", map[string]any{}), 400)
		if !htReplayed(bad2) || !bytes.Equal(bad1.body, bad2.body) {
			t.Fatalf("a 400 is not replayed: %s / %s", bad1, bad2)
		}
	})

	t.Run("same key with another body or path is 422", func(t *testing.T) {
		h := root.on(t)
		o := h.org("idem-reuse", store.Plan{})
		h.mustStatus(h.htIdem("/api/v1/scopes", o.Token, "k", map[string]any{"name": "one"}), 201)
		before := h.stateHash()
		for _, c := range []struct {
			path string
			body any
		}{
			{"/api/v1/scopes", map[string]any{"name": "two"}},
			{"/api/v1/scopes", map[string]any{"name": "one", "description": "d"}},
			{"/api/v1/agents", map[string]any{"name": "one"}},
		} {
			r := h.mustStatus(h.htIdem(c.path, o.Token, "k", c.body), 422)
			if err := htErrorShape(r, CodeIdempotencyReused); err != nil {
				t.Fatalf("%s: %v", r, err)
			}
		}
		if h.stateHash() != before {
			t.Fatal("a 422 changed the state")
		}
		// Keys belong to an org: another org may use the same key for
		// another request.
		other := h.org("idem-reuse-2", store.Plan{})
		if r := h.mustStatus(h.htIdem("/api/v1/scopes", other.Token, "k", map[string]any{"name": "two"}), 201); htReplayed(r) {
			t.Fatal("another org's key replayed this org's response")
		}
	})

	t.Run("a request in flight holds its key: 409", func(t *testing.T) {
		h := root.on(t)
		o := h.org("idem-inflight", store.Plan{})
		body := map[string]any{"name": "hang-inflight"} // the fake node never reports it
		type result struct {
			r   *htResp
			err error
		}
		done := make(chan result, 1)
		go func() {
			r, err := h.tryDo(context.Background(), nil, "POST", "/api/v1/agents", o.Token, body, "Idempotency-Key", "slow")
			done <- result{r, err}
		}()
		// Wait until the first request has claimed the key and created its agent.
		agentID := derivedID(prefixAgent, o.ID, "slow")
		deadline := time.Now().Add(15 * time.Second)
		for h.record(o.ID, "slow") == nil || h.agent(agentID) == nil {
			if time.Now().After(deadline) {
				t.Fatal("the first request never claimed the key")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if rec := h.record(o.ID, "slow"); rec.StatusCode != 0 {
			t.Fatalf("the claim has a status already: %+v", rec)
		}
		r := h.mustStatus(h.htIdem("/api/v1/agents", o.Token, "slow", body), 409)
		if err := htErrorShape(r, CodeIdempotencyInUse); err != nil {
			t.Fatal(err)
		}
		// Another control node's API sees the claim too.
		_, other := h.newServer(nil)
		r = h.mustStatus(h.do(other, "POST", "/api/v1/agents", o.Token, body, "Idempotency-Key", "slow"), 409)
		if err := htErrorShape(r, CodeIdempotencyInUse); err != nil {
			t.Fatal(err)
		}
		r = h.mustStatus(h.htIdem("/api/v1/agents", o.Token, "slow", map[string]any{"name": "other"}), 422)
		if err := htErrorShape(r, CodeIdempotencyReused); err != nil {
			t.Fatal(err)
		}
		select {
		case res := <-done:
			t.Fatalf("the first request ended while the node had not reported: %v %v", res.r, res.err)
		default:
		}
		// The node comes through: the first request succeeds and its
		// response is what a retry now gets.
		h.node.setMode(agentID, htNodeOK)
		res := <-done
		if res.err != nil {
			t.Fatal(res.err)
		}
		h.mustStatus(res.r, 200)
		var first createAgentResponse
		res.r.decode(t, &first)
		if first.AgentID != agentID {
			t.Fatalf("agentId %s, want the one derived from the key, %s", first.AgentID, agentID)
		}
		again := h.mustStatus(h.htIdem("/api/v1/agents", o.Token, "slow", body), 200)
		if !htReplayed(again) || !bytes.Equal(again.body, res.r.body) {
			t.Fatalf("after the first finished: %s", again)
		}
		if n := h.agentCount(o.ID); n != 1 {
			t.Fatalf("%d agents, want 1", n)
		}
	})

	t.Run("concurrent retries create once", func(t *testing.T) {
		h := root.on(t)
		o := h.org("idem-concurrent", store.Plan{})
		body := map[string]any{"name": "racy"}
		const n = 8
		results := make(chan *htResp, n)
		errs := make(chan error, n)
		for range n {
			go func() {
				r, err := h.tryDo(context.Background(), nil, "POST", "/api/v1/agents", o.Token, body, "Idempotency-Key", "race")
				if err != nil {
					errs <- err
					return
				}
				results <- r
			}()
		}
		ran := 0
		var agentIDs []string
		for range n {
			select {
			case err := <-errs:
				t.Fatal(err)
			case r := <-results:
				switch {
				case r.status == 200:
					var out createAgentResponse
					r.decode(t, &out)
					agentIDs = append(agentIDs, out.AgentID)
					if !htReplayed(r) {
						ran++
					}
				case r.status == 409:
					if err := htErrorShape(r, CodeIdempotencyInUse); err != nil {
						t.Fatal(err)
					}
				default:
					t.Fatalf("concurrent retry: %s", r)
				}
			}
		}
		if ran != 1 {
			t.Fatalf("%d requests ran, want 1", ran)
		}
		for _, id := range agentIDs {
			if id != agentIDs[0] {
				t.Fatalf("agent IDs differ: %v", agentIDs)
			}
		}
		if c := h.agentCount(o.ID); c != 1 {
			t.Fatalf("%d agents, want 1", c)
		}
	})

	t.Run("a 5xx releases the claim so that a retry runs", func(t *testing.T) {
		h := root.on(t)
		o := h.org("idem-5xx", store.Plan{})
		id := h.createAgent(o.Token, map[string]any{"name": "flaky"})
		h.rt.setBroken(id, true)
		body := map[string]any{"message": "hi"}
		path := "/api/v1/agents/" + id + "/messages"
		r := h.mustStatus(h.htIdem(path, o.Token, "m1", body), 502)
		if err := htErrorShape(r, CodeAgentNotResponding); err != nil {
			t.Fatal(err)
		}
		if rec := h.record(o.ID, "m1"); rec != nil {
			t.Fatalf("the 502 left a record: %+v", rec)
		}
		h.rt.setBroken(id, false)
		ok := h.mustStatus(h.htIdem(path, o.Token, "m1", body), 200)
		if htReplayed(ok) {
			t.Fatal("the retry after a 502 was a replay, not a run")
		}
		again := h.mustStatus(h.htIdem(path, o.Token, "m1", body), 200)
		if !htReplayed(again) || !bytes.Equal(again.body, ok.body) {
			t.Fatalf("third try: %s", again)
		}
		if n := h.rt.sends(id); n != 1 {
			t.Fatalf("the message was sent %d times, want 1", n)
		}
	})

	t.Run("a create that timed out, retried with its key, finds its agent", func(t *testing.T) {
		h := root.on(t)
		_, slow := h.newServer(func(c *Config) { c.CreateTimeout = 200 * time.Millisecond })
		o := h.org("idem-504", store.Plan{})
		h.node.setDelay(time.Second) // the node reports RUNNING after the create gave up
		defer h.node.setDelay(0)
		body := map[string]any{"name": "late"}
		r := h.mustStatus(h.do(slow, "POST", "/api/v1/agents", o.Token, body, "Idempotency-Key", "c504"), 504)
		if err := htErrorShape(r, CodeTimeout); err != nil {
			t.Fatal(err)
		}
		if rec := h.record(o.ID, "c504"); rec != nil {
			t.Fatalf("the 504 left a record: %+v", rec)
		}
		agentID := derivedID(prefixAgent, o.ID, "c504")
		h.waitAgent(agentID, store.StatusRunning)
		var out createAgentResponse
		retry := h.mustStatus(h.do(slow, "POST", "/api/v1/agents", o.Token, body, "Idempotency-Key", "c504"), 200)
		retry.decode(t, &out)
		if htReplayed(retry) || out.AgentID != agentID {
			t.Fatalf("retry: %s (replayed %v), want agent %s", retry, htReplayed(retry), agentID)
		}
		if n := h.agentCount(o.ID); n != 1 {
			t.Fatalf("%d agents, want 1", n)
		}
	})

	t.Run("a create retried after it succeeded returns the same agent", func(t *testing.T) {
		h := root.on(t)
		o := h.org("idem-again", store.Plan{})
		body := map[string]any{"name": "twice"}
		var first, second createAgentResponse
		h.mustStatus(h.htIdem("/api/v1/agents", o.Token, "c1", body), 200).decode(t, &first)
		r := h.mustStatus(h.htIdem("/api/v1/agents", o.Token, "c1", body), 200)
		r.decode(t, &second)
		if !htReplayed(r) || second.AgentID != first.AgentID {
			t.Fatalf("replay: %s", r)
		}
		// The record is gone (expired, or lost with a leader change before
		// it was written): the retry runs again, and the ID derived from
		// the key finds the agent the first request made.
		h.htApply(&store.IdempotencyDelete{Before: time.Now().Add(48 * time.Hour)})
		if h.record(o.ID, "c1") != nil {
			t.Fatal("the record survived its deletion")
		}
		r = h.mustStatus(h.htIdem("/api/v1/agents", o.Token, "c1", body), 200)
		var third createAgentResponse
		r.decode(t, &third)
		if htReplayed(r) || third.AgentID != first.AgentID {
			t.Fatalf("retry without a record: %s, want agent %s", r, first.AgentID)
		}
		if n := h.agentCount(o.ID); n != 1 {
			t.Fatalf("%d agents, want 1", n)
		}
		// Another key is another agent.
		h.mustStatus(h.htIdem("/api/v1/agents", o.Token, "c2", body), 200).decode(t, &third)
		if third.AgentID == first.AgentID || h.agentCount(o.ID) != 2 {
			t.Fatalf("a new key gave agent %s (first %s), %d agents", third.AgentID, first.AgentID, h.agentCount(o.ID))
		}
	})

	t.Run("a token made with a key is replayed from a sealed record", func(t *testing.T) {
		h := root.on(t)
		o := h.org("idem-token", store.Plan{})
		for _, c := range []struct {
			path, token, scope string
			body               any
		}{
			{"/api/v1/tokens", o.Token, o.ID, map[string]any{"label": "ci"}},
			{"/api/v1/orgs/" + o.ID + "/tokens", h.opToken, "operator:", map[string]any{"label": "ops-made"}},
			{"/api/v1/operator/tokens", h.opToken, "operator:", map[string]any{"label": "second operator"}},
		} {
			key := "tok-" + c.path
			before := h.tokenCount()
			var first, second createdToken
			r1 := h.mustStatus(h.htIdem(c.path, c.token, key, c.body), 201)
			r1.decode(t, &first)
			r2 := h.mustStatus(h.htIdem(c.path, c.token, key, c.body), 201)
			r2.decode(t, &second)
			if !htReplayed(r2) || second.Token == "" || second.Token != first.Token || second.ID != first.ID {
				t.Fatalf("%s: replay %s, first %s", c.path, r2, r1)
			}
			if after := h.tokenCount(); after != before+1 {
				t.Fatalf("%s: %d tokens made, want 1", c.path, after-before)
			}
			rec := h.record(c.scope, key)
			if rec == nil || rec.StatusCode != 201 {
				t.Fatalf("%s: record %+v", c.path, rec)
			}
			secretPart := first.Token[len(TokenPrefix):]
			if bytes.Contains(rec.Body, []byte(first.Token)) || bytes.Contains(rec.Body, []byte(secretPart)) ||
				strings.Contains(string(rec.Body), "token") {
				t.Fatalf("%s: the stored response is not sealed: %q", c.path, rec.Body)
			}
			if rec.BodyKeyID != h.kr.CurrentID() {
				t.Fatalf("%s: sealed under %q, want %q", c.path, rec.BodyKeyID, h.kr.CurrentID())
			}
			// The token still works: the replay gave a real one.
			if c.path == "/api/v1/tokens" {
				h.mustStatus(h.do(nil, "GET", "/api/v1/models", second.Token, nil), 200)
			}
		}
		// Records of other responses are kept in the clear.
		h.mustStatus(h.htIdem("/api/v1/scopes", o.Token, "plain", map[string]any{"name": "visible"}), 201)
		if rec := h.record(o.ID, "plain"); rec == nil || rec.BodyKeyID != "" || !bytes.Contains(rec.Body, []byte("visible")) {
			t.Fatalf("plain record: %+v", rec)
		}
	})
}
