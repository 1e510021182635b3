package opencode_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agenthost/agenthost/nodeagent/runtime"
	"github.com/agenthost/agenthost/nodeagent/runtime/opencode"
	"github.com/agenthost/agenthost/nodeagent/runtime/opencode/opencodetest"
)

func start(t *testing.T, cfg opencode.AgentConfig) (*opencodetest.Server, *opencode.Client) {
	t.Helper()
	srv := opencodetest.Start(t, cfg)
	c, err := opencode.New(opencode.Config{BaseURL: srv.URL, Password: srv.Password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Health(context.Background()); err != nil {
		t.Fatal(err)
	}
	return srv, c
}

// waitIdle waits for the agent to be idle, failing after a generous bound.
func waitIdle(t testing.TB, c *opencode.Client) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for c.Busy() {
		if time.Now().After(deadline) {
			t.Fatal("agent still busy after 90 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitFor[T any](t *testing.T, what string, f func() ([]T, error)) []T {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, err := f()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 60 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lastAssistant(t *testing.T, c *opencode.Client, sessionID string) runtime.Message {
	t.Helper()
	msgs, err := c.Messages(context.Background(), sessionID)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Info.Role == "assistant" {
			return msgs[i]
		}
	}
	t.Fatalf("no assistant message in %+v", msgs)
	return runtime.Message{}
}

func text(m runtime.Message) string {
	var b strings.Builder
	for _, raw := range m.Info.Parts {
		var p struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		json.Unmarshal(raw, &p)
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

func TestMessageRoundTripWithUsageAndHiddenPrompt(t *testing.T) {
	ctx := context.Background()
	srv, c := start(t, opencode.AgentConfig{HiddenPrompt: "Secret house rule: always answer kindly."})
	s, err := c.CreateSession(ctx, "round trip")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.ID, "ses") || s.Title != "round trip" {
		t.Fatalf("session = %+v", s)
	}
	if c.Busy() {
		t.Fatal("busy before anything was sent")
	}
	if err := c.Send(ctx, s.ID, "hello agent"); err != nil {
		t.Fatal(err)
	}
	if !c.Busy() {
		t.Fatal("idle right after a send")
	}
	waitIdle(t, c)

	msgs, err := c.Messages(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0].Info.Role != "user" || msgs[1].Info.Role != "assistant" {
		t.Fatalf("messages = %+v", msgs)
	}
	user, reply := msgs[0], msgs[1]
	if text(user) != "hello agent" || user.Info.Tokens != nil || user.Info.Time != nil {
		t.Fatalf("user message = %+v", user)
	}
	if got := text(reply); got != "Offline model reply to: hello agent" {
		t.Fatalf("reply text = %q", got)
	}
	tok := reply.Info.Tokens
	if tok == nil || tok.Input == 0 || tok.Output != 6 || tok.Total != tok.Input+tok.Output+tok.Reasoning+tok.Cache.Read+tok.Cache.Write {
		t.Fatalf("reply tokens = %+v", tok)
	}
	wantCost := (float64(tok.Input)*1 + float64(tok.Output)*2) / 1e6
	if reply.Info.Cost == nil || abs(*reply.Info.Cost-wantCost) > 1e-12 {
		t.Fatalf("reply cost = %v, want %v", reply.Info.Cost, wantCost)
	}
	if reply.Info.Time == nil || reply.Info.Time.Created == 0 || reply.Info.Time.Completed < reply.Info.Time.Created ||
		reply.Info.Time.Created > time.Now().Unix()+1 {
		t.Fatalf("reply time = %+v (want Unix seconds)", reply.Info.Time)
	}

	// The hidden prompt reached the model, and no chat message shows it.
	if srv.Model.Calls() == 0 {
		t.Fatal("the offline model was never called")
	}
	for _, m := range msgs {
		if strings.Contains(text(m), "house rule") {
			t.Fatalf("hidden prompt visible in the chat: %+v", m)
		}
	}
	if !srv.Model.SawSystemText("Secret house rule") {
		t.Fatal("the hidden prompt never reached the model's system prompt")
	}

	// Usage: per session and for the agent, the sum of assistant messages.
	s2, err := c.CreateSession(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(ctx, s2.ID, "second"); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, c)
	u, err := c.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Sessions) != 2 || u.Sessions[0].SessionID != s.ID || u.Sessions[1].SessionID != s2.ID {
		t.Fatalf("usage sessions = %+v", u.Sessions)
	}
	if u.Sessions[0].Tokens != *tok || abs(u.Sessions[0].Cost-wantCost) > 1e-12 {
		t.Fatalf("session usage = %+v, want tokens %+v cost %v", u.Sessions[0], *tok, wantCost)
	}
	var sum runtime.Tokens
	sum.Add(u.Sessions[0].Tokens)
	sum.Add(u.Sessions[1].Tokens)
	if u.TotalTokens != sum || abs(u.TotalCost-(u.Sessions[0].Cost+u.Sessions[1].Cost)) > 1e-12 {
		t.Fatalf("agent usage %+v is not the sum of its sessions", u)
	}
	list, err := c.Sessions(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("sessions = %+v, %v", list, err)
	}

	if _, err := c.Messages(ctx, "ses_doesnotexist"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("messages of an unknown session: %v, want ErrNotFound", err)
	}
	if err := c.Send(ctx, "../global", "x"); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("send to a path-like session id: %v, want ErrNotFound", err)
	}
}

// TestBusyTimeline polls Busy as fast as it can from the send on: it must be
// true until the reply is complete, never a false idle in between.
func TestBusyTimeline(t *testing.T) {
	ctx := context.Background()
	_, c := start(t, opencode.AgentConfig{})
	for round := 0; round < 3; round++ {
		s, err := c.CreateSession(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if c.Busy() {
			t.Fatal("busy before the send")
		}
		if err := c.Send(ctx, s.ID, "[[slow:300ms]] timeline"); err != nil {
			t.Fatal(err)
		}
		sawBusy := 0
		for c.Busy() {
			sawBusy++
			time.Sleep(time.Millisecond)
		}
		if sawBusy == 0 {
			t.Fatal("never busy after a send")
		}
		// The first idle seen must come after the reply completed.
		reply := lastAssistant(t, c, s.ID)
		if reply.Info.Time == nil || reply.Info.Time.Completed == 0 {
			t.Fatalf("round %d: idle while the reply was not complete: %+v", round, reply)
		}
	}
}

func TestAbortLongReply(t *testing.T) {
	ctx := context.Background()
	srv, c := start(t, opencode.AgentConfig{})
	s1, _ := c.CreateSession(ctx, "")
	s2, _ := c.CreateSession(ctx, "")
	for _, s := range []runtime.Session{s1, s2} {
		if err := c.Send(ctx, s.ID, "[[slow:120s]] write a long essay"); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until both replies are streaming, then abort session 1 alone.
	waitFor(t, "two streamed replies", func() ([]int64, error) {
		if n := srv.Model.Streaming(); n == 2 {
			return []int64{n}, nil
		}
		return nil, nil
	})
	if err := c.Abort(ctx, s1.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := lastAssistantOrNil(c, s1.ID)
		if m != nil && m.Info.Time.Completed > 0 {
			if !strings.Contains(m.Info.Error, "Abort") {
				t.Fatalf("aborted reply error = %q", m.Info.Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("session 1 not aborted after 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !c.Busy() {
		t.Fatal("idle while session 2 still writes")
	}
	aborted, err := c.AbortAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(aborted) != 1 || aborted[0] != s2.ID {
		t.Fatalf("AbortAll aborted %v, want [%s]", aborted, s2.ID)
	}
	waitIdle(t, c)
	// The agent takes new messages at once.
	if err := c.Send(ctx, s1.ID, "are you there"); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, c)
	if got := text(lastAssistant(t, c, s1.ID)); got != "Offline model reply to: are you there" {
		t.Fatalf("reply after abort = %q", got)
	}
}

func lastAssistantOrNil(c *opencode.Client, sessionID string) *runtime.Message {
	msgs, err := c.Messages(context.Background(), sessionID)
	if err != nil {
		return nil
	}
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Info.Role == "assistant" {
			return &msgs[i]
		}
	}
	return nil
}

func TestPermissionRepliedOnceAndRejected(t *testing.T) {
	ctx := context.Background()
	srv, c := start(t, opencode.AgentConfig{})
	s, _ := c.CreateSession(ctx, "")

	if err := c.Send(ctx, s.ID, `please [[tool:bash {"command":"echo allowed > once.txt"}]]`); err != nil {
		t.Fatal(err)
	}
	perms := waitFor(t, "permission request", func() ([]runtime.Permission, error) { return c.Permissions(ctx) })
	p := perms[0]
	if p.SessionID != s.ID || p.Permission != "bash" || len(p.Patterns) != 1 || p.Patterns[0] != "echo allowed > once.txt" ||
		p.Tool == nil || p.Tool.CallID == "" {
		t.Fatalf("permission = %+v", p)
	}
	if !c.Busy() {
		t.Fatal("idle while waiting on a permission")
	}
	if err := c.ReplyPermission(ctx, p.ID, "sometimes", ""); !errors.Is(err, runtime.ErrInvalid) {
		t.Fatalf("bad reply: %v, want ErrInvalid", err)
	}
	if err := c.ReplyPermission(ctx, "per_unknown", runtime.ReplyOnce, ""); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("unknown permission: %v, want ErrNotFound", err)
	}
	if err := c.ReplyPermission(ctx, p.ID, runtime.ReplyOnce, ""); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, c)
	if b, err := os.ReadFile(filepath.Join(srv.Workspace, "once.txt")); err != nil || string(b) != "allowed\n" {
		t.Fatalf("the allowed command did not run: %q, %v", b, err)
	}

	if err := c.Send(ctx, s.ID, `now [[tool:bash {"command":"echo denied > reject.txt"}]]`); err != nil {
		t.Fatal(err)
	}
	perms = waitFor(t, "second permission request", func() ([]runtime.Permission, error) { return c.Permissions(ctx) })
	if err := c.ReplyPermission(ctx, perms[0].ID, runtime.ReplyReject, "not in this repository"); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, c)
	if _, err := os.Stat(filepath.Join(srv.Workspace, "reject.txt")); !os.IsNotExist(err) {
		t.Fatalf("the rejected command ran (stat: %v)", err)
	}
	if left, _ := c.Permissions(ctx); len(left) != 0 {
		t.Fatalf("permissions left pending: %+v", left)
	}
	// The model was told: the rejection reason came back as the tool's result.
	if !srv.Model.SawToolResult("not in this repository") {
		t.Fatal("the rejection message never reached the model")
	}
}

func TestQuestionAnswered(t *testing.T) {
	ctx := context.Background()
	srv, c := start(t, opencode.AgentConfig{})
	s, _ := c.CreateSession(ctx, "")
	ask := `[[tool:question {"questions":[{"question":"How would you like me to implement this?","header":"Approach","options":[{"label":"Simple","description":"Quick, minimal implementation"},{"label":"Full","description":"Complete with tests"}],"multiple":false}]}]]`
	if err := c.Send(ctx, s.ID, ask); err != nil {
		t.Fatal(err)
	}
	qs := waitFor(t, "question", func() ([]runtime.Question, error) { return c.Questions(ctx) })
	q := qs[0]
	if q.SessionID != s.ID || len(q.Questions) != 1 || q.Questions[0].Header != "Approach" ||
		len(q.Questions[0].Options) != 2 || q.Questions[0].Options[0].Label != "Simple" || q.Questions[0].MultiSelect {
		t.Fatalf("question = %+v", q)
	}
	if err := c.ReplyQuestion(ctx, "que_unknown", [][]string{{"Simple"}}); !errors.Is(err, runtime.ErrNotFound) {
		t.Fatalf("unknown question: %v, want ErrNotFound", err)
	}
	if err := c.ReplyQuestion(ctx, q.ID, nil); !errors.Is(err, runtime.ErrInvalid) {
		t.Fatalf("missing answers: %v, want ErrInvalid", err)
	}
	if err := c.ReplyQuestion(ctx, q.ID, [][]string{{"Simple"}}); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, c)
	if !srv.Model.SawToolResult("Simple") {
		t.Fatal("the answer never reached the model")
	}
	if left, _ := c.Questions(ctx); len(left) != 0 {
		t.Fatalf("questions left pending: %+v", left)
	}
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
