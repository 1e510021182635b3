// Package runtime defines what the node agent asks of the agent runtime inside
// a container — sessions, messages, sending, aborting, permission requests,
// questions, usage and live busy state — in the shapes the tenant API returns
// (reference 000). runtime/opencode implements it for OpenCode's server; other
// runtimes can implement it later. Uploads are files in the agent's
// workspace, the same for every runtime (uploads.go).
package runtime

import (
	"context"
	"encoding/json"
	"errors"
)

// Errors a Runtime returns, wrapped with detail. The API maps them to its
// documented statuses.
var (
	// ErrNotFound: no such session, permission request or question (404).
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request cannot be right (400).
	ErrInvalid = errors.New("invalid request")
	// ErrUnavailable: the runtime did not answer, or answered with an error
	// (502: "agent is not responding").
	ErrUnavailable = errors.New("runtime not responding")
)

// Runtime is one agent's runtime, reached over its server API.
type Runtime interface {
	// Health succeeds when the runtime answers its health check.
	Health(ctx context.Context) error
	Sessions(ctx context.Context) ([]Session, error)
	CreateSession(ctx context.Context, title string) (Session, error)
	// Messages lists a session's messages, oldest first.
	Messages(ctx context.Context, sessionID string) ([]Message, error)
	// Send hands a user message to the session and returns once the runtime
	// accepted it; the reply happens in the background. From the moment Send
	// is called until the session is idle again, Busy reports true.
	Send(ctx context.Context, sessionID, text string) error
	// Abort cancels the session's generation.
	Abort(ctx context.Context, sessionID string) error
	// AbortAll cancels every busy session and reports which.
	AbortAll(ctx context.Context) ([]string, error)
	Permissions(ctx context.Context) ([]Permission, error)
	ReplyPermission(ctx context.Context, id string, reply PermissionReply, message string) error
	Questions(ctx context.Context) ([]Question, error)
	// ReplyQuestion answers a question request: one list of chosen labels
	// per question, in order.
	ReplyQuestion(ctx context.Context, id string, answers [][]string) error
	// Usage sums cost and tokens over every assistant message, per session
	// and for the agent.
	Usage(ctx context.Context) (AgentUsage, error)
	// Busy is the live busy state, answered from memory.
	Busy() bool
	// Close stops following the runtime's events.
	Close() error
}

// Session is one chat thread.
type Session struct {
	ID    string `json:"id"`
	Title string `json:"title"`
	// Created is in milliseconds since the epoch.
	Created int64 `json:"created"`
}

// Message is one message in the tenant's shape: the role, parts, times, cost
// and tokens sit under info.
type Message struct {
	ID   string      `json:"id"`
	Info MessageInfo `json:"info"`
}

// MessageInfo is a message's content and accounting.
type MessageInfo struct {
	Role string `json:"role"`
	// Parts are the runtime's parts as it reports them (text, tool calls,
	// steps, files), each with at least a "type".
	Parts []json.RawMessage `json:"parts"`
	// Time is set on assistant messages: created and completed, in seconds.
	Time   *MessageTime `json:"time,omitempty"`
	Cost   *float64     `json:"cost,omitempty"`
	Tokens *Tokens      `json:"tokens,omitempty"`
	// Error is set when the reply failed or was aborted.
	Error string `json:"error,omitempty"`
}

// MessageTime is when an assistant message started and finished (Unix seconds).
type MessageTime struct {
	Created   int64 `json:"created"`
	Completed int64 `json:"completed,omitempty"`
}

// Tokens counts a reply's tokens; Total is input + output + reasoning +
// cache read and write.
type Tokens struct {
	Total     int64       `json:"total"`
	Input     int64       `json:"input"`
	Output    int64       `json:"output"`
	Reasoning int64       `json:"reasoning"`
	Cache     CacheTokens `json:"cache"`
}

// CacheTokens counts prompt-cache reads and writes.
type CacheTokens struct {
	Read  int64 `json:"read"`
	Write int64 `json:"write"`
}

// Add sums o into t.
func (t *Tokens) Add(o Tokens) {
	t.Total += o.Total
	t.Input += o.Input
	t.Output += o.Output
	t.Reasoning += o.Reasoning
	t.Cache.Read += o.Cache.Read
	t.Cache.Write += o.Cache.Write
}

// Usage is cost and tokens summed over messages.
type Usage struct {
	Cost   float64 `json:"cost"`
	Tokens Tokens  `json:"tokens"`
}

// SessionUsage is one session's usage.
type SessionUsage struct {
	SessionID string  `json:"sessionId"`
	Title     string  `json:"title"`
	Cost      float64 `json:"cost"`
	Tokens    Tokens  `json:"tokens"`
}

// AgentUsage is the usage of every session and their sum.
type AgentUsage struct {
	TotalCost   float64        `json:"totalCost"`
	TotalTokens Tokens         `json:"totalTokens"`
	Sessions    []SessionUsage `json:"sessions"`
}

// SumUsage adds up the assistant messages' cost and tokens.
func SumUsage(messages []Message) Usage {
	var u Usage
	for _, m := range messages {
		if m.Info.Role != "assistant" {
			continue
		}
		if m.Info.Cost != nil {
			u.Cost += *m.Info.Cost
		}
		if m.Info.Tokens != nil {
			u.Tokens.Add(*m.Info.Tokens)
		}
	}
	return u
}

// Permission is a pending request to run a tool that needs approval.
type Permission struct {
	ID        string `json:"id"`
	SessionID string `json:"sessionID"`
	// Permission is the kind: bash, edit, webfetch, ...
	Permission string         `json:"permission"`
	Patterns   []string       `json:"patterns"`
	Metadata   map[string]any `json:"metadata"`
	// AlwaysPatterns are what an "always" reply would allow from now on.
	AlwaysPatterns []string        `json:"alwaysPatterns"`
	Tool           *PermissionTool `json:"tool,omitempty"`
}

// PermissionTool is the tool call waiting on a permission.
type PermissionTool struct {
	MessageID string `json:"messageID"`
	CallID    string `json:"callID"`
}

// PermissionReply answers a permission request.
type PermissionReply string

const (
	ReplyOnce   PermissionReply = "once"
	ReplyAlways PermissionReply = "always"
	ReplyReject PermissionReply = "reject"
)

// Valid reports whether r is one of the three replies.
func (r PermissionReply) Valid() bool {
	return r == ReplyOnce || r == ReplyAlways || r == ReplyReject
}

// Question is a pending set of multiple-choice questions.
type Question struct {
	ID        string         `json:"id"`
	SessionID string         `json:"sessionID"`
	Questions []QuestionItem `json:"questions"`
}

// QuestionItem is one question and its options.
type QuestionItem struct {
	Question    string           `json:"question"`
	Header      string           `json:"header"`
	Options     []QuestionOption `json:"options"`
	MultiSelect bool             `json:"multiSelect"`
}

// QuestionOption is one answer a question offers.
type QuestionOption struct {
	Label       string `json:"label"`
	Description string `json:"description"`
}

// BusyEvent is the type of the event an adapter publishes when its busy
// state flips; every other event is the runtime's own.
const BusyEvent = "agenthost.busy"

// Event is one event from a runtime's own stream, as the runtime sent it.
type Event struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}
