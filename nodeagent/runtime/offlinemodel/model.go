// Package offlinemodel is a model provider that needs no network and no key:
// an OpenAI-compatible chat-completions endpoint with deterministic replies.
//
// Agent runtimes call it over HTTP like any provider, so every flow of the
// platform (messages, token usage, busy state, aborts, permission requests,
// questions) works on a machine with no route to a model vendor. It is what
// `agenthost dev` gives new agents when no provider key is set, and what the
// tests use.
//
// The reply is a function of the conversation. Directives in the last user
// message steer it, so tests can drive OpenCode down every path:
//
//	[[tool:NAME {json args}]]  ask for a call to the tool NAME (bash, question, ...)
//	[[slow:DURATION]]          stream the reply slowly, one word per 100 ms, for DURATION
//	[[say:TEXT]]               reply with TEXT exactly
//
// Without a directive it answers "Offline model reply to: <the message>".
// After a tool result it reports the result and stops.
package offlinemodel

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ModelID is the model name the endpoint reports, whatever was asked for.
const ModelID = "agenthost-offline"

// Server answers /v1/chat/completions and /v1/models.
type Server struct {
	logger *slog.Logger
	// wordDelay is the pause between streamed words of a slow reply.
	wordDelay time.Duration
	calls     atomic.Uint64
	streaming atomic.Int64

	mu     sync.Mutex
	record bool       // keep what requests carried (tests only: it holds tenants' prompts)
	seen   []seenText // recent system prompts and tool results, when recording
}

type seenText struct {
	role string
	text string
}

// maxSeen bounds what the server remembers of past requests.
const maxSeen = 256

// New returns a Server; logger may be nil.
func New(logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{logger: logger, wordDelay: 100 * time.Millisecond}
}

// NewRecording returns a Server that remembers the system prompts and tool
// results of recent requests, for SawSystemText and SawToolResult. Tests
// only: what it keeps is tenants' prompts and tools' output.
func NewRecording(logger *slog.Logger) *Server {
	s := New(logger)
	s.record = true
	return s
}

// Streaming reports how many streamed replies are being written right now.
func (s *Server) Streaming() int64 { return s.streaming.Load() }

// Calls reports how many completions the server has answered.
func (s *Server) Calls() uint64 { return s.calls.Load() }

// Handler serves the OpenAI-compatible API under /v1/.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.completions)
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"object": "list",
			"data":   []map[string]any{{"id": ModelID, "object": "model", "created": 0, "owned_by": "agenthost"}},
		})
	})
	return mux
}

type chatRequest struct {
	Model         string        `json:"model"`
	Messages      []chatMessage `json:"messages"`
	Stream        bool          `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Tools []struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	} `json:"tools"`
}

type chatMessage struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

// text flattens a message's content, a string or a list of parts.
func (m chatMessage) text() string {
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(m.Content, &parts) != nil {
		return ""
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String()
}

// reply is what the model says: text, or one tool call.
type reply struct {
	text     string
	toolName string
	toolArgs string
	slowFor  time.Duration
}

var (
	toolDirective = regexp.MustCompile(`\[\[tool:([A-Za-z0-9_.-]+)\s*(\{.*?\})?\]\]`)
	slowDirective = regexp.MustCompile(`\[\[slow:([0-9a-z.]+)\]\]`)
	sayDirective  = regexp.MustCompile(`\[\[say:(.*?)\]\]`)
)

// decide computes the reply from the conversation alone, so that the same
// conversation always gets the same answer.
func decide(req chatRequest) reply {
	if len(req.Messages) == 0 {
		return reply{text: "Offline model: no messages."}
	}
	last := req.Messages[len(req.Messages)-1]
	if last.Role == "tool" {
		return reply{text: "Tool result: " + firstLine(last.text(), 200)}
	}
	var user string
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == "user" {
			user = req.Messages[i].text()
			break
		}
	}
	if m := toolDirective.FindStringSubmatch(user); m != nil && hasTool(req, m[1]) {
		args := m[2]
		if args == "" {
			args = "{}"
		}
		return reply{toolName: m[1], toolArgs: args}
	}
	r := reply{text: "Offline model reply to: " + firstLine(user, 200)}
	if m := sayDirective.FindStringSubmatch(user); m != nil {
		r.text = m[1]
	}
	if m := slowDirective.FindStringSubmatch(user); m != nil {
		if d, err := time.ParseDuration(m[1]); err == nil {
			r.slowFor = min(d, 10*time.Minute)
		}
	}
	return r
}

func hasTool(req chatRequest, name string) bool {
	for _, t := range req.Tools {
		if t.Function.Name == name {
			return true
		}
	}
	return false
}

func firstLine(s string, max int) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > max {
		s = s[:max]
	}
	return s
}

// usage counts tokens the same way every time: a token per four bytes of
// prompt, a token per word of reply.
func usage(req chatRequest, r reply) map[string]int {
	in := 0
	for _, m := range req.Messages {
		in += len(m.Content)/4 + 1
	}
	out := len(strings.Fields(r.text))
	if r.toolName != "" {
		out = len(r.toolArgs)/4 + 1
	}
	return map[string]int{"prompt_tokens": in, "completion_tokens": out, "total_tokens": in + out}
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 32<<20)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]any{"message": "invalid request body: " + err.Error(), "type": "invalid_request_error"}})
		return
	}
	s.calls.Add(1)
	s.remember(req, r.Header.Get("Authorization"))
	rep := decide(req)
	id := fmt.Sprintf("chatcmpl-offline-%d", s.calls.Load())
	created := time.Now().Unix()
	s.logger.Debug("offline model reply", "stream", req.Stream, "tool", rep.toolName, "messages", len(req.Messages))
	if !req.Stream {
		msg := map[string]any{"role": "assistant", "content": rep.text}
		finish := "stop"
		if rep.toolName != "" {
			msg["content"] = nil
			msg["tool_calls"] = []map[string]any{toolCall(id, rep)}
			finish = "tool_calls"
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"id": id, "object": "chat.completion", "created": created, "model": ModelID,
			"choices": []map[string]any{{"index": 0, "message": msg, "finish_reason": finish}},
			"usage":   usage(req, rep),
		})
		return
	}
	s.stream(w, r, req, rep, id, created)
}

func (s *Server) remember(req chatRequest, authorization string) {
	if !s.record {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, seenText{"model", req.Model}, seenText{"authorization", authorization})
	for _, m := range req.Messages {
		if m.Role == "system" || m.Role == "tool" {
			t := m.text()
			if len(t) > 64<<10 {
				t = t[:64<<10]
			}
			s.seen = append(s.seen, seenText{m.Role, t})
		}
	}
	if len(s.seen) > maxSeen {
		s.seen = append([]seenText(nil), s.seen[len(s.seen)-maxSeen:]...)
	}
}

// SawSystemText reports whether a recent request's system prompt held sub.
func (s *Server) SawSystemText(sub string) bool { return s.saw("system", sub) }

// SawToolResult reports whether a recent request carried a tool result
// holding sub.
func (s *Server) SawToolResult(sub string) bool { return s.saw("tool", sub) }

// SawRequest reports whether a recent request asked for model with this
// Authorization header: how a test sees that a client was configured to
// reach this server as some other provider.
func (s *Server) SawRequest(model, authorization string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i+1 < len(s.seen); i++ {
		if s.seen[i] == (seenText{"model", model}) && s.seen[i+1] == (seenText{"authorization", authorization}) {
			return true
		}
	}
	return false
}

func (s *Server) saw(role, sub string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.seen {
		if t.role == role && strings.Contains(t.text, sub) {
			return true
		}
	}
	return false
}

func toolCall(id string, r reply) map[string]any {
	return map[string]any{
		"id": "call_" + strings.TrimPrefix(id, "chatcmpl-"), "type": "function",
		"function": map[string]any{"name": r.toolName, "arguments": r.toolArgs},
	}
}

func (s *Server) stream(w http.ResponseWriter, r *http.Request, req chatRequest, rep reply, id string, created int64) {
	s.streaming.Add(1)
	defer s.streaming.Add(-1)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	send := func(choice map[string]any, extra map[string]any) bool {
		chunk := map[string]any{"id": id, "object": "chat.completion.chunk", "created": created, "model": ModelID}
		if choice != nil {
			chunk["choices"] = []map[string]any{choice}
		} else {
			chunk["choices"] = []map[string]any{}
		}
		for k, v := range extra {
			chunk[k] = v
		}
		b, _ := json.Marshal(chunk)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return r.Context().Err() == nil
	}
	if !send(map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": ""}, "finish_reason": nil}, nil) {
		return
	}
	finish := "stop"
	if rep.toolName != "" {
		call := toolCall(id, rep)
		call["index"] = 0
		if !send(map[string]any{"index": 0, "delta": map[string]any{"tool_calls": []map[string]any{call}}, "finish_reason": nil}, nil) {
			return
		}
		finish = "tool_calls"
	} else {
		words := strings.Fields(rep.text)
		deadline := time.Now().Add(rep.slowFor)
		for i := 0; i < len(words) || time.Now().Before(deadline); i++ {
			word := "."
			if i < len(words) {
				word = words[i]
			}
			if i > 0 {
				word = " " + word
			}
			if !send(map[string]any{"index": 0, "delta": map[string]any{"content": word}, "finish_reason": nil}, nil) {
				return
			}
			if rep.slowFor > 0 {
				select {
				case <-time.After(s.wordDelay):
				case <-r.Context().Done():
					return
				}
			}
		}
	}
	if !send(map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": finish}, nil) {
		return
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		if !send(nil, map[string]any{"usage": usage(req, rep)}) {
			return
		}
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	if flusher != nil {
		flusher.Flush()
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
