// Package remote is runtime.Runtime over AgentRuntimeService: what a control
// node holds to reach an agent's runtime through the node agent that hosts
// it. Connect errors come back as the runtime package's errors, so that the
// API maps them to its statuses the same way wherever the runtime is.
package remote

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/agenthost/agenthost/nodeagent/runtime"
	runtimev1 "github.com/agenthost/agenthost/proto/agenthost/runtime/v1"
	"github.com/agenthost/agenthost/proto/agenthost/runtime/v1/runtimev1connect"
)

// ErrNotRunning is returned when the node does not run the agent now.
var ErrNotRunning = errors.New("agent is not running")

// Runtime is one agent's runtime, reached through its node.
type Runtime struct {
	client  runtimev1connect.AgentRuntimeServiceClient
	agentID string
}

var _ runtime.Runtime = (*Runtime)(nil)

// New returns the runtime of agentID on the node whose AgentRuntimeService
// answers at addr (host:port). hc should speak HTTP/2 (internal/h2c).
func New(hc *http.Client, addr, agentID string) *Runtime {
	return &Runtime{client: runtimev1connect.NewAgentRuntimeServiceClient(hc, "http://"+addr), agentID: agentID}
}

// fromConnect maps AgentRuntimeService's codes to the runtime's errors.
func fromConnect(err error) error {
	if err == nil {
		return nil
	}
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		return errors.Join(runtime.ErrNotFound, err)
	case connect.CodeInvalidArgument:
		return errors.Join(runtime.ErrInvalid, err)
	case connect.CodeFailedPrecondition:
		return errors.Join(ErrNotRunning, err)
	default:
		return errors.Join(runtime.ErrUnavailable, err)
	}
}

func (r *Runtime) Health(ctx context.Context) error {
	res, err := r.client.Health(ctx, connect.NewRequest(&runtimev1.HealthRequest{AgentId: r.agentID}))
	if err != nil {
		return fromConnect(err)
	}
	if !res.Msg.GetHealthy() {
		return runtime.ErrUnavailable
	}
	return nil
}

// Busy asks the node; an agent whose node does not answer within a second
// counts as not busy (its status tells the rest).
func (r *Runtime) Busy() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	busy, _ := r.BusyContext(ctx)
	return busy
}

// BusyContext asks the node for the agent's busy state.
func (r *Runtime) BusyContext(ctx context.Context) (bool, error) {
	res, err := r.client.Health(ctx, connect.NewRequest(&runtimev1.HealthRequest{AgentId: r.agentID}))
	if err != nil {
		return false, fromConnect(err)
	}
	return res.Msg.GetBusy(), nil
}

func session(s *runtimev1.Session) runtime.Session {
	return runtime.Session{ID: s.GetId(), Title: s.GetTitle(), Created: s.GetCreatedMs()}
}

func (r *Runtime) Sessions(ctx context.Context) ([]runtime.Session, error) {
	res, err := r.client.ListSessions(ctx, connect.NewRequest(&runtimev1.ListSessionsRequest{AgentId: r.agentID}))
	if err != nil {
		return nil, fromConnect(err)
	}
	out := make([]runtime.Session, len(res.Msg.GetSessions()))
	for i, s := range res.Msg.GetSessions() {
		out[i] = session(s)
	}
	return out, nil
}

func (r *Runtime) CreateSession(ctx context.Context, title string) (runtime.Session, error) {
	res, err := r.client.CreateSession(ctx, connect.NewRequest(&runtimev1.CreateSessionRequest{AgentId: r.agentID, Title: title}))
	if err != nil {
		return runtime.Session{}, fromConnect(err)
	}
	return session(res.Msg.GetSession()), nil
}

func tokens(t *runtimev1.Tokens) runtime.Tokens {
	return runtime.Tokens{Total: t.GetTotal(), Input: t.GetInput(), Output: t.GetOutput(), Reasoning: t.GetReasoning(),
		Cache: runtime.CacheTokens{Read: t.GetCacheRead(), Write: t.GetCacheWrite()}}
}

func (r *Runtime) Messages(ctx context.Context, sessionID string) ([]runtime.Message, error) {
	res, err := r.client.ListMessages(ctx, connect.NewRequest(&runtimev1.ListMessagesRequest{AgentId: r.agentID, SessionId: sessionID}))
	if err != nil {
		return nil, fromConnect(err)
	}
	out := make([]runtime.Message, len(res.Msg.GetMessages()))
	for i, m := range res.Msg.GetMessages() {
		info := runtime.MessageInfo{Role: m.GetRole(), Parts: []json.RawMessage{}, Error: m.GetError()}
		if err := json.Unmarshal(m.GetPartsJson(), &info.Parts); err != nil {
			return nil, errors.Join(runtime.ErrUnavailable, err)
		}
		if m.GetHasAccounting() {
			cost, tok := m.GetCost(), tokens(m.GetTokens())
			info.Time = &runtime.MessageTime{Created: m.GetCreated(), Completed: m.GetCompleted()}
			info.Cost, info.Tokens = &cost, &tok
		}
		out[i] = runtime.Message{ID: m.GetId(), Info: info}
	}
	return out, nil
}

func (r *Runtime) Send(ctx context.Context, sessionID, text string) error {
	_, err := r.client.SendMessage(ctx, connect.NewRequest(&runtimev1.SendMessageRequest{AgentId: r.agentID, SessionId: sessionID, Text: text}))
	return fromConnect(err)
}

func (r *Runtime) Abort(ctx context.Context, sessionID string) error {
	if sessionID == "" {
		return runtime.ErrInvalid
	}
	_, err := r.client.Abort(ctx, connect.NewRequest(&runtimev1.AbortRequest{AgentId: r.agentID, SessionId: sessionID}))
	return fromConnect(err)
}

func (r *Runtime) AbortAll(ctx context.Context) ([]string, error) {
	res, err := r.client.Abort(ctx, connect.NewRequest(&runtimev1.AbortRequest{AgentId: r.agentID}))
	if err != nil {
		return nil, fromConnect(err)
	}
	return append([]string{}, res.Msg.GetAborted()...), nil
}

func (r *Runtime) Permissions(ctx context.Context) ([]runtime.Permission, error) {
	res, err := r.client.ListPermissions(ctx, connect.NewRequest(&runtimev1.ListPermissionsRequest{AgentId: r.agentID}))
	if err != nil {
		return nil, fromConnect(err)
	}
	out := make([]runtime.Permission, len(res.Msg.GetPermissions()))
	for i, p := range res.Msg.GetPermissions() {
		meta := map[string]any{}
		if len(p.GetMetadataJson()) > 0 {
			if err := json.Unmarshal(p.GetMetadataJson(), &meta); err != nil {
				return nil, errors.Join(runtime.ErrUnavailable, err)
			}
		}
		out[i] = runtime.Permission{ID: p.GetId(), SessionID: p.GetSessionId(), Permission: p.GetPermission(),
			Patterns: append([]string{}, p.GetPatterns()...), Metadata: meta, AlwaysPatterns: append([]string{}, p.GetAlwaysPatterns()...)}
		if p.GetToolCallId() != "" {
			out[i].Tool = &runtime.PermissionTool{MessageID: p.GetToolMessageId(), CallID: p.GetToolCallId()}
		}
	}
	return out, nil
}

func (r *Runtime) ReplyPermission(ctx context.Context, id string, reply runtime.PermissionReply, message string) error {
	_, err := r.client.ReplyPermission(ctx, connect.NewRequest(&runtimev1.ReplyPermissionRequest{
		AgentId: r.agentID, PermissionId: id, Reply: string(reply), Message: message}))
	return fromConnect(err)
}

func (r *Runtime) Questions(ctx context.Context) ([]runtime.Question, error) {
	res, err := r.client.ListQuestions(ctx, connect.NewRequest(&runtimev1.ListQuestionsRequest{AgentId: r.agentID}))
	if err != nil {
		return nil, fromConnect(err)
	}
	out := make([]runtime.Question, len(res.Msg.GetQuestions()))
	for i, q := range res.Msg.GetQuestions() {
		out[i] = runtime.Question{ID: q.GetId(), SessionID: q.GetSessionId(), Questions: make([]runtime.QuestionItem, len(q.GetQuestions()))}
		for j, item := range q.GetQuestions() {
			qi := runtime.QuestionItem{Question: item.GetQuestion(), Header: item.GetHeader(), MultiSelect: item.GetMultiSelect(), Options: []runtime.QuestionOption{}}
			for _, o := range item.GetOptions() {
				qi.Options = append(qi.Options, runtime.QuestionOption{Label: o.GetLabel(), Description: o.GetDescription()})
			}
			out[i].Questions[j] = qi
		}
	}
	return out, nil
}

func (r *Runtime) ReplyQuestion(ctx context.Context, id string, answers [][]string) error {
	if answers == nil {
		return runtime.ErrInvalid
	}
	req := &runtimev1.ReplyQuestionRequest{AgentId: r.agentID, QuestionId: id}
	for _, a := range answers {
		req.Answers = append(req.Answers, &runtimev1.Answer{Labels: a})
	}
	_, err := r.client.ReplyQuestion(ctx, connect.NewRequest(req))
	return fromConnect(err)
}

func (r *Runtime) Usage(ctx context.Context) (runtime.AgentUsage, error) {
	res, err := r.client.GetUsage(ctx, connect.NewRequest(&runtimev1.GetUsageRequest{AgentId: r.agentID}))
	if err != nil {
		return runtime.AgentUsage{}, fromConnect(err)
	}
	out := runtime.AgentUsage{TotalCost: res.Msg.GetTotalCost(), TotalTokens: tokens(res.Msg.GetTotalTokens()), Sessions: []runtime.SessionUsage{}}
	for _, s := range res.Msg.GetSessions() {
		out.Sessions = append(out.Sessions, runtime.SessionUsage{SessionID: s.GetSessionId(), Title: s.GetTitle(), Cost: s.GetCost(), Tokens: tokens(s.GetTokens())})
	}
	return out, nil
}

// Upload streams r into the agent's uploads as name, in 1 MiB chunks.
func (r *Runtime) Upload(ctx context.Context, name string, content io.Reader) (runtime.Uploaded, error) {
	stream := r.client.Upload(ctx)
	if err := stream.Send(&runtimev1.UploadRequest{Header: &runtimev1.UploadHeader{AgentId: r.agentID, Name: name}}); err != nil && !errors.Is(err, io.EOF) {
		return runtime.Uploaded{}, fromConnect(err)
	}
	buf := make([]byte, 1<<20)
	for {
		n, rerr := content.Read(buf)
		if n > 0 {
			if err := stream.Send(&runtimev1.UploadRequest{Chunk: buf[:n]}); err != nil {
				break // refused early: CloseAndReceive says why
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return runtime.Uploaded{}, rerr
		}
	}
	res, err := stream.CloseAndReceive()
	if err != nil {
		return runtime.Uploaded{}, fromConnect(err)
	}
	return runtime.Uploaded{Path: res.Msg.GetPath(), Name: res.Msg.GetName(), Size: res.Msg.GetSize()}, nil
}

// Log is the tail of an agent's container output.
type Log struct {
	// Text is what the container wrote, oldest line first; not
	// necessarily UTF-8.
	Text []byte
	// Truncated is true when the node keeps older output than Text.
	Truncated bool
}

// Logs asks the node for the last lines (1 to 5000) of the agent's
// container output.
func (r *Runtime) Logs(ctx context.Context, lines int) (Log, error) {
	if lines < 1 || lines > math.MaxInt32 {
		return Log{}, runtime.ErrInvalid
	}
	res, err := r.client.Logs(ctx, connect.NewRequest(&runtimev1.LogsRequest{AgentId: r.agentID, Lines: int32(lines)}))
	if err != nil {
		return Log{}, fromConnect(err)
	}
	return Log{Text: res.Msg.GetText(), Truncated: res.Msg.GetTruncated()}, nil
}

// Close has nothing to release: calls share the HTTP client.
func (r *Runtime) Close() error { return nil }

// WatchEvents follows the agent's runtime events, calling fn for each with
// the busy state after it (the first call is a runtime.BusyEvent with the
// current state), until ctx ends or the stream breaks: the agent stopped or
// moved, or its node went away. It returns nil only when ctx ended.
func (r *Runtime) WatchEvents(ctx context.Context, fn func(ev runtime.Event, busy bool)) error {
	stream, err := r.client.WatchEvents(ctx, connect.NewRequest(&runtimev1.WatchEventsRequest{AgentId: r.agentID}))
	if err != nil {
		return fromConnect(err)
	}
	defer stream.Close()
	for stream.Receive() {
		m := stream.Msg()
		fn(runtime.Event{Type: m.GetType(), Data: json.RawMessage(m.GetDataJson())}, m.GetBusy())
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := stream.Err(); err != nil {
		return fromConnect(err)
	}
	return runtime.ErrUnavailable
}
