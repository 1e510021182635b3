package nodeagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"connectrpc.com/connect"

	"github.com/agenthost/agenthost/nodeagent/driver"
	"github.com/agenthost/agenthost/nodeagent/runtime"
	runtimev1 "github.com/agenthost/agenthost/proto/agenthost/runtime/v1"
	"github.com/agenthost/agenthost/proto/agenthost/runtime/v1/runtimev1connect"
)

// runtimeService serves AgentRuntimeService: control nodes reach the agents'
// runtimes through it, never directly.
type runtimeService struct {
	agent   *Agent
	uploads runtime.Uploads
}

var _ runtimev1connect.AgentRuntimeServiceHandler = (*runtimeService)(nil)

// runtimeError maps the runtime's and the node's errors to Connect codes.
func runtimeError(err error) error {
	code := connect.CodeInternal
	switch {
	case errors.Is(err, runtime.ErrNotFound), errors.Is(err, ErrUnknownAgent), errors.Is(err, driver.ErrNotFound):
		code = connect.CodeNotFound
	case errors.Is(err, runtime.ErrInvalid):
		code = connect.CodeInvalidArgument
	case errors.Is(err, ErrAgentNotRunning):
		code = connect.CodeFailedPrecondition
	case errors.Is(err, runtime.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeUnavailable
	}
	return connect.NewError(code, err)
}

func (s *runtimeService) runtime(ctx context.Context, agentID string) (runtime.Runtime, error) {
	if agentID == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("agent_id is required"))
	}
	rt, err := s.agent.Runtime(ctx, agentID)
	if err != nil {
		return nil, runtimeError(err)
	}
	return rt, nil
}

func (s *runtimeService) Health(ctx context.Context, req *connect.Request[runtimev1.HealthRequest]) (*connect.Response[runtimev1.HealthResponse], error) {
	rt, err := s.runtime(ctx, req.Msg.GetAgentId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&runtimev1.HealthResponse{Healthy: rt.Health(ctx) == nil, Busy: rt.Busy()}), nil
}

func toSession(s runtime.Session) *runtimev1.Session {
	return &runtimev1.Session{Id: s.ID, Title: s.Title, CreatedMs: s.Created}
}

func (s *runtimeService) ListSessions(ctx context.Context, req *connect.Request[runtimev1.ListSessionsRequest]) (*connect.Response[runtimev1.ListSessionsResponse], error) {
	rt, err := s.runtime(ctx, req.Msg.GetAgentId())
	if err != nil {
		return nil, err
	}
	list, err := rt.Sessions(ctx)
	if err != nil {
		return nil, runtimeError(err)
	}
	out := &runtimev1.ListSessionsResponse{Sessions: make([]*runtimev1.Session, len(list))}
	for i, ss := range list {
		out.Sessions[i] = toSession(ss)
	}
	return connect.NewResponse(out), nil
}

func (s *runtimeService) CreateSession(ctx context.Context, req *connect.Request[runtimev1.CreateSessionRequest]) (*connect.Response[runtimev1.CreateSessionResponse], error) {
	rt, err := s.runtime(ctx, req.Msg.GetAgentId())
	if err != nil {
		return nil, err
	}
	ss, err := rt.CreateSession(ctx, req.Msg.GetTitle())
	if err != nil {
		return nil, runtimeError(err)
	}
	return connect.NewResponse(&runtimev1.CreateSessionResponse{Session: toSession(ss)}), nil
}

func toTokens(t runtime.Tokens) *runtimev1.Tokens {
	return &runtimev1.Tokens{Total: t.Total, Input: t.Input, Output: t.Output, Reasoning: t.Reasoning, CacheRead: t.Cache.Read, CacheWrite: t.Cache.Write}
}

func (s *runtimeService) ListMessages(ctx context.Context, req *connect.Request[runtimev1.ListMessagesRequest]) (*connect.Response[runtimev1.ListMessagesResponse], error) {
	rt, err := s.runtime(ctx, req.Msg.GetAgentId())
	if err != nil {
		return nil, err
	}
	list, err := rt.Messages(ctx, req.Msg.GetSessionId())
	if err != nil {
		return nil, runtimeError(err)
	}
	out := &runtimev1.ListMessagesResponse{Messages: make([]*runtimev1.Message, len(list))}
	for i, m := range list {
		parts, err := json.Marshal(m.Info.Parts)
		if err != nil {
			return nil, runtimeError(err)
		}
		pm := &runtimev1.Message{Id: m.ID, Role: m.Info.Role, PartsJson: parts, Error: m.Info.Error}
		if m.Info.Time != nil {
			pm.HasAccounting = true
			pm.Created, pm.Completed = m.Info.Time.Created, m.Info.Time.Completed
		}
		if m.Info.Cost != nil {
			pm.Cost = *m.Info.Cost
		}
		if m.Info.Tokens != nil {
			pm.Tokens = toTokens(*m.Info.Tokens)
		}
		out.Messages[i] = pm
	}
	return connect.NewResponse(out), nil
}

func (s *runtimeService) SendMessage(ctx context.Context, req *connect.Request[runtimev1.SendMessageRequest]) (*connect.Response[runtimev1.SendMessageResponse], error) {
	rt, err := s.runtime(ctx, req.Msg.GetAgentId())
	if err != nil {
		return nil, err
	}
	if err := rt.Send(ctx, req.Msg.GetSessionId(), req.Msg.GetText()); err != nil {
		return nil, runtimeError(err)
	}
	return connect.NewResponse(&runtimev1.SendMessageResponse{}), nil
}

func (s *runtimeService) Abort(ctx context.Context, req *connect.Request[runtimev1.AbortRequest]) (*connect.Response[runtimev1.AbortResponse], error) {
	rt, err := s.runtime(ctx, req.Msg.GetAgentId())
	if err != nil {
		return nil, err
	}
	if id := req.Msg.GetSessionId(); id != "" {
		if err := rt.Abort(ctx, id); err != nil {
			return nil, runtimeError(err)
		}
		return connect.NewResponse(&runtimev1.AbortResponse{Aborted: []string{id}}), nil
	}
	ids, err := rt.AbortAll(ctx)
	if err != nil {
		return nil, runtimeError(err)
	}
	return connect.NewResponse(&runtimev1.AbortResponse{Aborted: ids}), nil
}

func (s *runtimeService) ListPermissions(ctx context.Context, req *connect.Request[runtimev1.ListPermissionsRequest]) (*connect.Response[runtimev1.ListPermissionsResponse], error) {
	rt, err := s.runtime(ctx, req.Msg.GetAgentId())
	if err != nil {
		return nil, err
	}
	list, err := rt.Permissions(ctx)
	if err != nil {
		return nil, runtimeError(err)
	}
	out := &runtimev1.ListPermissionsResponse{Permissions: make([]*runtimev1.Permission, len(list))}
	for i, p := range list {
		meta, _ := json.Marshal(p.Metadata)
		pp := &runtimev1.Permission{Id: p.ID, SessionId: p.SessionID, Permission: p.Permission, Patterns: p.Patterns,
			MetadataJson: meta, AlwaysPatterns: p.AlwaysPatterns}
		if p.Tool != nil {
			pp.ToolMessageId, pp.ToolCallId = p.Tool.MessageID, p.Tool.CallID
		}
		out.Permissions[i] = pp
	}
	return connect.NewResponse(out), nil
}

func (s *runtimeService) ReplyPermission(ctx context.Context, req *connect.Request[runtimev1.ReplyPermissionRequest]) (*connect.Response[runtimev1.ReplyPermissionResponse], error) {
	rt, err := s.runtime(ctx, req.Msg.GetAgentId())
	if err != nil {
		return nil, err
	}
	if err := rt.ReplyPermission(ctx, req.Msg.GetPermissionId(), runtime.PermissionReply(req.Msg.GetReply()), req.Msg.GetMessage()); err != nil {
		return nil, runtimeError(err)
	}
	return connect.NewResponse(&runtimev1.ReplyPermissionResponse{}), nil
}

func (s *runtimeService) ListQuestions(ctx context.Context, req *connect.Request[runtimev1.ListQuestionsRequest]) (*connect.Response[runtimev1.ListQuestionsResponse], error) {
	rt, err := s.runtime(ctx, req.Msg.GetAgentId())
	if err != nil {
		return nil, err
	}
	list, err := rt.Questions(ctx)
	if err != nil {
		return nil, runtimeError(err)
	}
	out := &runtimev1.ListQuestionsResponse{Questions: make([]*runtimev1.Question, len(list))}
	for i, q := range list {
		pq := &runtimev1.Question{Id: q.ID, SessionId: q.SessionID}
		for _, item := range q.Questions {
			pi := &runtimev1.QuestionItem{Question: item.Question, Header: item.Header, MultiSelect: item.MultiSelect}
			for _, o := range item.Options {
				pi.Options = append(pi.Options, &runtimev1.QuestionOption{Label: o.Label, Description: o.Description})
			}
			pq.Questions = append(pq.Questions, pi)
		}
		out.Questions[i] = pq
	}
	return connect.NewResponse(out), nil
}

func (s *runtimeService) ReplyQuestion(ctx context.Context, req *connect.Request[runtimev1.ReplyQuestionRequest]) (*connect.Response[runtimev1.ReplyQuestionResponse], error) {
	rt, err := s.runtime(ctx, req.Msg.GetAgentId())
	if err != nil {
		return nil, err
	}
	answers := make([][]string, len(req.Msg.GetAnswers()))
	for i, a := range req.Msg.GetAnswers() {
		answers[i] = append([]string{}, a.GetLabels()...)
	}
	if err := rt.ReplyQuestion(ctx, req.Msg.GetQuestionId(), answers); err != nil {
		return nil, runtimeError(err)
	}
	return connect.NewResponse(&runtimev1.ReplyQuestionResponse{}), nil
}

func (s *runtimeService) GetUsage(ctx context.Context, req *connect.Request[runtimev1.GetUsageRequest]) (*connect.Response[runtimev1.GetUsageResponse], error) {
	rt, err := s.runtime(ctx, req.Msg.GetAgentId())
	if err != nil {
		return nil, err
	}
	u, err := rt.Usage(ctx)
	if err != nil {
		return nil, runtimeError(err)
	}
	out := &runtimev1.GetUsageResponse{TotalCost: u.TotalCost, TotalTokens: toTokens(u.TotalTokens)}
	for _, su := range u.Sessions {
		out.Sessions = append(out.Sessions, &runtimev1.SessionUsage{SessionId: su.SessionID, Title: su.Title, Cost: su.Cost, Tokens: toTokens(su.Tokens)})
	}
	return connect.NewResponse(out), nil
}

// Upload writes the streamed file into the agent's workspace as it arrives;
// runtime.Uploads enforces the limits and writes nothing on a refusal.
func (s *runtimeService) Upload(ctx context.Context, stream *connect.ClientStream[runtimev1.UploadRequest]) (*connect.Response[runtimev1.UploadResponse], error) {
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, err
		}
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("empty upload"))
	}
	h := stream.Msg().GetHeader()
	if h == nil || h.GetAgentId() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("an upload starts with a header naming the agent and the file"))
	}
	// Only a running agent takes uploads (the API's "agent is not running").
	if _, err := s.agent.Runtime(ctx, h.GetAgentId()); err != nil {
		return nil, runtimeError(err)
	}
	ws, err := s.agent.Workspace(h.GetAgentId())
	if err != nil {
		return nil, runtimeError(err)
	}
	up, err := s.uploads.Save(ws, h.GetName(), &chunkReader{stream: stream, pending: stream.Msg().GetChunk()})
	if err != nil {
		return nil, runtimeError(err)
	}
	return connect.NewResponse(&runtimev1.UploadResponse{Path: up.Path, Name: up.Name, Size: up.Size}), nil
}

// Logs reads the container's output from its log files on this node; the
// runtime need not answer, nor the container run.
func (s *runtimeService) Logs(ctx context.Context, req *connect.Request[runtimev1.LogsRequest]) (*connect.Response[runtimev1.LogsResponse], error) {
	id := req.Msg.GetAgentId()
	if id == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("agent_id is required"))
	}
	lines := req.Msg.GetLines()
	if lines < 1 || lines > driver.MaxLogLines {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("lines must be 1 to %d, not %d", driver.MaxLogLines, lines))
	}
	log, err := s.agent.Logs(ctx, id, int(lines))
	if err != nil {
		return nil, runtimeError(err)
	}
	return connect.NewResponse(&runtimev1.LogsResponse{Text: log.Text, Truncated: log.Truncated}), nil
}

// chunkReader reads an upload's chunks as one stream.
type chunkReader struct {
	stream  *connect.ClientStream[runtimev1.UploadRequest]
	pending []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.pending) == 0 {
		if !r.stream.Receive() {
			if err := r.stream.Err(); err != nil {
				return 0, err
			}
			return 0, io.EOF
		}
		if r.stream.Msg().GetHeader() != nil {
			return 0, fmt.Errorf("%w: a second header in one upload", runtime.ErrInvalid)
		}
		r.pending = r.stream.Msg().GetChunk()
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// eventSource is what WatchEvents needs of an adapter.
type eventSource interface {
	Subscribe(ch chan<- runtime.Event) (unsubscribe func())
	Done() <-chan struct{}
}

func (s *runtimeService) WatchEvents(ctx context.Context, req *connect.Request[runtimev1.WatchEventsRequest], stream *connect.ServerStream[runtimev1.WatchEventsResponse]) error {
	rt, err := s.runtime(ctx, req.Msg.GetAgentId())
	if err != nil {
		return err
	}
	src, ok := rt.(eventSource)
	if !ok {
		return connect.NewError(connect.CodeUnimplemented, errors.New("this runtime has no event stream"))
	}
	events := make(chan runtime.Event, 64)
	unsubscribe := src.Subscribe(events)
	defer unsubscribe()
	busy := rt.Busy()
	if err := stream.Send(&runtimev1.WatchEventsResponse{Type: runtime.BusyEvent, Busy: busy}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-src.Done():
			// The agent stopped here, or its runtime moved: the watcher
			// must look again rather than wait on a dead adapter.
			return connect.NewError(connect.CodeUnavailable, errors.New("the agent's runtime went away"))
		case ev := <-events:
			busy = rt.Busy()
			if err := stream.Send(&runtimev1.WatchEventsResponse{Type: ev.Type, DataJson: ev.Data, Busy: busy}); err != nil {
				return err
			}
		}
	}
}
