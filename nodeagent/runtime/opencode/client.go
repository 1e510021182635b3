// Package opencode is the runtime adapter for OpenCode's server (`opencode
// serve`, API in reference/opencode-1.18.33-openapi.json): it turns the
// server's sessions, messages, permission requests and questions into the
// tenant's shapes, and follows the server's event stream to know, from
// memory, whether the agent is busy.
package opencode

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agenthost/agenthost/nodeagent/runtime"
)

// Username is the user name OpenCode's server expects with its password
// (OPENCODE_SERVER_USERNAME's default).
const Username = "opencode"

// Config says where an agent's OpenCode server answers.
type Config struct {
	// BaseURL is the server's address from the node, e.g. http://10.213.0.5:4096.
	BaseURL string
	// Password is the agent's OPENCODE_SERVER_PASSWORD; empty for a server
	// without one.
	Password string
	// HTTPClient carries the calls; nil means a client with sensible
	// timeouts per call (the event stream has none).
	HTTPClient *http.Client
	// RequestTimeout bounds each call but the event stream (default 30 s).
	RequestTimeout time.Duration
	Logger         *slog.Logger
}

// maxAnswer bounds what the node agent reads of one answer: the runtime is
// the tenant's code and may answer anything.
const maxAnswer = 64 << 20

// Client is one agent's OpenCode server. It implements runtime.Runtime.
type Client struct {
	cfg  Config
	base *url.URL
	http *http.Client
	busy *busyTracker

	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

var _ runtime.Runtime = (*Client)(nil)

// New returns a client and starts following the server's events; Close
// stops it.
func New(cfg Config) (*Client, error) {
	base, err := url.Parse(strings.TrimSuffix(cfg.BaseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("opencode: bad base URL %q", cfg.BaseURL)
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{
			Transport: &http.Transport{
				Proxy:               nil, // the password never goes to a proxy
				MaxIdleConnsPerHost: 8,
				IdleConnTimeout:     90 * time.Second,
			},
			// The runtime is the tenant's code: it may not send the node
			// agent, which sits in the host's network, anywhere else.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{cfg: cfg, base: base, http: hc, busy: newBusyTracker(), cancel: cancel, done: make(chan struct{})}
	go c.followEvents(ctx)
	return c, nil
}

// Done is closed when the client is closed.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close stops following events.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.cancel()
		<-c.done
	})
	return nil
}

// Busy reports whether any session is working or a sent message has not been
// answered yet.
func (c *Client) Busy() bool { return c.busy.Busy() }

// call does one request and decodes a JSON answer into out (when not nil).
func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base.String()+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.cfg.Password != "" {
		req.SetBasicAuth(Username, c.cfg.Password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %v", runtime.ErrUnavailable, method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return fmt.Errorf("%w: %s %s: %v", runtime.ErrUnavailable, method, path, err)
	}
	if len(data) > maxAnswer {
		return fmt.Errorf("%w: %s %s: answer larger than %d MB", runtime.ErrUnavailable, method, path, maxAnswer>>20)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: %s", runtime.ErrNotFound, errorText(data))
	case resp.StatusCode == http.StatusBadRequest:
		return fmt.Errorf("%w: %s", runtime.ErrInvalid, errorText(data))
	case resp.StatusCode >= 300:
		return fmt.Errorf("%w: %s %s: status %d: %s", runtime.ErrUnavailable, method, path, resp.StatusCode, errorText(data))
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: %s %s: bad answer: %v", runtime.ErrUnavailable, method, path, err)
	}
	return nil
}

// errorText pulls a message out of an error body, or shows the body.
func errorText(data []byte) string {
	var e struct {
		Message string `json:"message"`
		Data    struct {
			Message string `json:"message"`
		} `json:"data"`
	}
	if json.Unmarshal(data, &e) == nil {
		if e.Data.Message != "" {
			return e.Data.Message
		}
		if e.Message != "" {
			return e.Message
		}
	}
	s := strings.TrimSpace(string(data))
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

// Health asks GET /global/health.
func (c *Client) Health(ctx context.Context) error {
	var h struct {
		Healthy bool `json:"healthy"`
	}
	if err := c.call(ctx, http.MethodGet, "/global/health", nil, &h); err != nil {
		return err
	}
	if !h.Healthy {
		return fmt.Errorf("%w: reports unhealthy", runtime.ErrUnavailable)
	}
	return nil
}

type ocSession struct {
	ID       string `json:"id"`
	Title    string `json:"title"`
	ParentID string `json:"parentID"`
	Time     struct {
		Created int64 `json:"created"`
	} `json:"time"`
}

func (s ocSession) session() runtime.Session {
	return runtime.Session{ID: s.ID, Title: s.title(), Created: s.Time.Created}
}

// placeholderTitle is what OpenCode calls a session until it has a real
// title ("New session - 2026-11-23T19:14:16.506Z"); the API reports such a
// session as untitled (title null), as the reference does for a new one.
var placeholderTitle = regexp.MustCompile(`^(New|Child) session - \d{4}-\d\d-\d\dT[\d:.]+Z$`)

func (s ocSession) title() string {
	if placeholderTitle.MatchString(s.Title) {
		return ""
	}
	return s.Title
}

// Sessions lists the top-level sessions (subagent sessions are internal to
// their parent), oldest first.
func (c *Client) Sessions(ctx context.Context) ([]runtime.Session, error) {
	var list []ocSession
	if err := c.call(ctx, http.MethodGet, "/session", nil, &list); err != nil {
		return nil, err
	}
	out := make([]runtime.Session, 0, len(list))
	for _, s := range list {
		if s.ParentID == "" {
			out = append(out, s.session())
		}
	}
	slices.SortFunc(out, func(a, b runtime.Session) int {
		return cmp.Or(cmp.Compare(a.Created, b.Created), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// CreateSession makes a session, titled when title is not empty.
func (c *Client) CreateSession(ctx context.Context, title string) (runtime.Session, error) {
	body := map[string]any{}
	if title != "" {
		body["title"] = title
	}
	var s ocSession
	if err := c.call(ctx, http.MethodPost, "/session", body, &s); err != nil {
		return runtime.Session{}, err
	}
	return s.session(), nil
}

// checkID refuses ids that could change the path they are put in.
func checkID(kind, id, prefix string) error {
	if !strings.HasPrefix(id, prefix) || strings.ContainsAny(id, "/?#%\\ ") || len(id) > 128 {
		return fmt.Errorf("%w: %s id %q", runtime.ErrNotFound, kind, id)
	}
	return nil
}

type ocMessage struct {
	Info struct {
		ID   string `json:"id"`
		Role string `json:"role"`
		Time struct {
			Created   int64 `json:"created"`
			Completed int64 `json:"completed"`
		} `json:"time"`
		Cost   *float64        `json:"cost"`
		Tokens *ocTokens       `json:"tokens"`
		Error  json.RawMessage `json:"error"`
	} `json:"info"`
	Parts []json.RawMessage `json:"parts"`
}

type ocTokens struct {
	Total     int64 `json:"total"`
	Input     int64 `json:"input"`
	Output    int64 `json:"output"`
	Reasoning int64 `json:"reasoning"`
	Cache     struct {
		Read  int64 `json:"read"`
		Write int64 `json:"write"`
	} `json:"cache"`
}

func (m ocMessage) message() runtime.Message {
	out := runtime.Message{ID: m.Info.ID, Info: runtime.MessageInfo{Role: m.Info.Role, Parts: m.Parts}}
	if out.Info.Parts == nil {
		out.Info.Parts = []json.RawMessage{}
	}
	if m.Info.Role == "assistant" {
		// OpenCode counts milliseconds; the tenant API, seconds.
		out.Info.Time = &runtime.MessageTime{Created: m.Info.Time.Created / 1000, Completed: m.Info.Time.Completed / 1000}
		cost := 0.0
		if m.Info.Cost != nil {
			cost = *m.Info.Cost
		}
		out.Info.Cost = &cost
		var t runtime.Tokens
		if m.Info.Tokens != nil {
			t = runtime.Tokens{
				Input: m.Info.Tokens.Input, Output: m.Info.Tokens.Output, Reasoning: m.Info.Tokens.Reasoning,
				Cache: runtime.CacheTokens{Read: m.Info.Tokens.Cache.Read, Write: m.Info.Tokens.Cache.Write},
			}
			t.Total = t.Input + t.Output + t.Reasoning + t.Cache.Read + t.Cache.Write
		}
		out.Info.Tokens = &t
	}
	if len(m.Info.Error) > 0 && string(m.Info.Error) != "null" {
		var e struct {
			Name string `json:"name"`
			Data struct {
				Message string `json:"message"`
			} `json:"data"`
		}
		json.Unmarshal(m.Info.Error, &e)
		out.Info.Error = strings.TrimSpace(e.Name + ": " + e.Data.Message)
	}
	return out
}

// Messages lists a session's messages.
func (c *Client) Messages(ctx context.Context, sessionID string) ([]runtime.Message, error) {
	if err := checkID("session", sessionID, "ses"); err != nil {
		return nil, err
	}
	var list []ocMessage
	if err := c.call(ctx, http.MethodGet, "/session/"+sessionID+"/message", nil, &list); err != nil {
		return nil, err
	}
	out := make([]runtime.Message, len(list))
	for i, m := range list {
		out[i] = m.message()
	}
	return out, nil
}

// Send posts the text with prompt_async. The session counts as busy before
// the request goes out, so a caller polling Busy right after Send returns
// never sees a false idle.
func (c *Client) Send(ctx context.Context, sessionID, text string) error {
	if err := checkID("session", sessionID, "ses"); err != nil {
		return err
	}
	if text == "" {
		return fmt.Errorf("%w: empty message", runtime.ErrInvalid)
	}
	c.busy.sending(sessionID)
	body := map[string]any{"parts": []map[string]any{{"type": "text", "text": text}}}
	if err := c.call(ctx, http.MethodPost, "/session/"+sessionID+"/prompt_async", body, nil); err != nil {
		// Only a refusal proves the message was not taken; after a timeout
		// or a lost connection it may have been, and the session stays
		// busy until the evidence says otherwise.
		if errors.Is(err, runtime.ErrInvalid) || errors.Is(err, runtime.ErrNotFound) {
			c.busy.sendRefused(sessionID)
		}
		return err
	}
	return nil
}

// Abort cancels the session's generation.
func (c *Client) Abort(ctx context.Context, sessionID string) error {
	if err := checkID("session", sessionID, "ses"); err != nil {
		return err
	}
	return c.call(ctx, http.MethodPost, "/session/"+sessionID+"/abort", nil, nil)
}

// AbortAll aborts every session the server reports busy, and every session
// with a message on its way.
func (c *Client) AbortAll(ctx context.Context) ([]string, error) {
	var status map[string]struct {
		Type string `json:"type"`
	}
	if err := c.call(ctx, http.MethodGet, "/session/status", nil, &status); err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for id, s := range status {
		if s.Type != "idle" {
			ids[id] = true
		}
	}
	for _, id := range c.busy.pendingSessions() {
		ids[id] = true
	}
	out := make([]string, 0, len(ids))
	for id := range ids {
		if err := c.Abort(ctx, id); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			return out, err
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return out, nil
}

type ocPermission struct {
	ID         string                  `json:"id"`
	SessionID  string                  `json:"sessionID"`
	Permission string                  `json:"permission"`
	Patterns   []string                `json:"patterns"`
	Metadata   map[string]any          `json:"metadata"`
	Always     []string                `json:"always"`
	Tool       *runtime.PermissionTool `json:"tool"`
}

// Permissions lists pending permission requests.
func (c *Client) Permissions(ctx context.Context) ([]runtime.Permission, error) {
	var list []ocPermission
	if err := c.call(ctx, http.MethodGet, "/permission", nil, &list); err != nil {
		return nil, err
	}
	out := make([]runtime.Permission, len(list))
	for i, p := range list {
		out[i] = runtime.Permission{
			ID: p.ID, SessionID: p.SessionID, Permission: p.Permission, Patterns: nonNil(p.Patterns),
			Metadata: p.Metadata, AlwaysPatterns: nonNil(p.Always), Tool: p.Tool,
		}
		if out[i].Metadata == nil {
			out[i].Metadata = map[string]any{}
		}
	}
	return out, nil
}

// ReplyPermission answers a permission request.
func (c *Client) ReplyPermission(ctx context.Context, id string, reply runtime.PermissionReply, message string) error {
	if !reply.Valid() {
		return fmt.Errorf("%w: reply must be once, always or reject, not %q", runtime.ErrInvalid, reply)
	}
	if err := checkID("permission", id, "per"); err != nil {
		return err
	}
	if err := c.pendingHas(ctx, "/permission", id); err != nil {
		return err
	}
	body := map[string]any{"reply": string(reply)}
	if message != "" {
		body["message"] = message
	}
	return c.call(ctx, http.MethodPost, "/permission/"+id+"/reply", body, nil)
}

// pendingHas checks that a permission request or question is pending: the
// server answers a reply to an unknown id with success, and the tenant must
// get a 404 instead.
func (c *Client) pendingHas(ctx context.Context, list, id string) error {
	var items []struct {
		ID string `json:"id"`
	}
	if err := c.call(ctx, http.MethodGet, list, nil, &items); err != nil {
		return err
	}
	for _, it := range items {
		if it.ID == id {
			return nil
		}
	}
	return fmt.Errorf("%w: no pending request %s", runtime.ErrNotFound, id)
}

type ocQuestion struct {
	ID        string `json:"id"`
	SessionID string `json:"sessionID"`
	Questions []struct {
		Question string                   `json:"question"`
		Header   string                   `json:"header"`
		Options  []runtime.QuestionOption `json:"options"`
		Multiple bool                     `json:"multiple"`
	} `json:"questions"`
}

// Questions lists pending questions.
func (c *Client) Questions(ctx context.Context) ([]runtime.Question, error) {
	var list []ocQuestion
	if err := c.call(ctx, http.MethodGet, "/question", nil, &list); err != nil {
		return nil, err
	}
	out := make([]runtime.Question, len(list))
	for i, q := range list {
		out[i] = runtime.Question{ID: q.ID, SessionID: q.SessionID, Questions: make([]runtime.QuestionItem, len(q.Questions))}
		for j, item := range q.Questions {
			out[i].Questions[j] = runtime.QuestionItem{Question: item.Question, Header: item.Header, Options: nonNil(item.Options), MultiSelect: item.Multiple}
		}
	}
	return out, nil
}

// ReplyQuestion answers a pending question.
func (c *Client) ReplyQuestion(ctx context.Context, id string, answers [][]string) error {
	if err := checkID("question", id, "que"); err != nil {
		return err
	}
	if answers == nil {
		return fmt.Errorf("%w: answers must be an array", runtime.ErrInvalid)
	}
	if err := c.pendingHas(ctx, "/question", id); err != nil {
		return err
	}
	for i := range answers {
		if answers[i] == nil {
			answers[i] = []string{}
		}
	}
	return c.call(ctx, http.MethodPost, "/question/"+id+"/reply", map[string]any{"answers": answers}, nil)
}

// Usage reads every session's messages and sums them.
func (c *Client) Usage(ctx context.Context) (runtime.AgentUsage, error) {
	sessions, err := c.Sessions(ctx)
	if err != nil {
		return runtime.AgentUsage{}, err
	}
	out := runtime.AgentUsage{Sessions: make([]runtime.SessionUsage, 0, len(sessions))}
	for _, s := range sessions {
		msgs, err := c.Messages(ctx, s.ID)
		if errors.Is(err, runtime.ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return runtime.AgentUsage{}, err
		}
		u := runtime.SumUsage(msgs)
		out.Sessions = append(out.Sessions, runtime.SessionUsage{SessionID: s.ID, Title: s.Title, Cost: u.Cost, Tokens: u.Tokens})
		out.TotalCost += u.Cost
		out.TotalTokens.Add(u.Tokens)
	}
	return out, nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
