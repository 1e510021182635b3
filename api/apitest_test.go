package api

// The test harness of the API's unit tests (errors_table_test.go,
// fuzz_test.go, idempotency_test.go): a real one-server Raft store with its
// placement service, the API on it behind httptest, and one registered node
// whose AgentRuntimeService is served by fakeRuntimeHT, an in-memory test
// double of the runtime, while fakeNodeAgentHT, a test double of the node
// agent's reconcile loop, reports the agents' statuses as a node agent does.
// Helpers are prefixed ht… (test doubles fake…HT) so that they never collide
// with other tests of the package.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/agenthost/agenthost/internal/h2c"
	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/nodeagent/driver"
	"github.com/agenthost/agenthost/nodeagent/runtime"
	runtimev1 "github.com/agenthost/agenthost/proto/agenthost/runtime/v1"
	"github.com/agenthost/agenthost/proto/agenthost/runtime/v1/runtimev1connect"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// htNodeID is the ID of the harness's node.
const htNodeID = "node-ht"

// htHarness is one control node's API over a one-server cluster with one
// node.
type htHarness struct {
	t       testing.TB
	tc      *clusterrpc.TestCluster
	st      *store.Store
	kr      *keyring.Keyring
	srv     *Server
	ts      *httptest.Server
	rt      *fakeRuntimeHT
	node    *fakeNodeAgentHT
	opToken string
	client  *http.Client
}

// htOptions adjust a harness.
type htOptions struct {
	// config adjusts the API's configuration (Store, Keyring and PublicURL
	// are set already).
	config func(*Config)
	// nameModes makes the fake node agent fail agents named fail… and never
	// report agents named hang… (for ERROR and timeout paths).
	nameModes bool
}

// htNew starts a harness: cluster, fake runtime, registered node, fake node
// agent, API server, and an operator token made by Bootstrap.
func htNew(t testing.TB, opts htOptions) *htHarness {
	t.Helper()
	h := &htHarness{t: t, client: &http.Client{Timeout: 60 * time.Second}}
	line, err := keyring.NewKeyLine("ht1")
	if err != nil {
		t.Fatal(err)
	}
	if h.kr, err = keyring.Parse([]byte(line)); err != nil {
		t.Fatal(err)
	}
	// The API seals with the keyring the cluster opens with, as on a
	// server.
	h.tc = clusterrpc.NewTestClusterWith(t, 1, func(c *clusterrpc.ServerConfig) { c.Keyring = h.kr })
	h.st = h.tc.Servers[h.tc.WaitForLeader()].Store

	h.rt = newFakeRuntimeHT(t)
	h.htApply(&store.NodeRegister{Node: store.Node{
		ID: htNodeID, Name: htNodeID, Address: "127.0.0.1:7500", RuntimeServiceAddress: h.rt.addr,
		Capacity: store.NodeCapacity{CPUMillis: 1 << 40, MemoryMB: 1 << 40, MaxAgents: 1 << 20},
		Runtimes: []string{"opencode"}, LastSeen: time.Now().UTC(),
	}})
	h.node = startFakeNodeAgentHT(t, h.st, htNodeID, h.rt, opts.nameModes)

	h.srv, h.ts = h.newServer(opts.config)
	if h.opToken, err = h.srv.Bootstrap(context.Background(), "ht-operator"); err != nil {
		t.Fatal(err)
	}
	return h
}

// on is the harness for a subtest: its failures end t, not the parent.
func (h *htHarness) on(t testing.TB) *htHarness {
	c := *h
	c.t = t
	return &c
}

// newServer starts another API server on the harness's store, for
// configurations some tests need beside the main one (short timeouts, no
// keyring). adjust may be nil.
func (h *htHarness) newServer(adjust func(*Config)) (*Server, *httptest.Server) {
	h.t.Helper()
	cfg := Config{
		Store:         h.st,
		Keyring:       h.kr,
		PublicURL:     &url.URL{Scheme: "http", Host: "agents.test:7480"},
		CreateTimeout: 20 * time.Second,
		StartTimeout:  20 * time.Second,
		StopTimeout:   20 * time.Second,
	}
	if adjust != nil {
		adjust(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	h.t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
	})
	return srv, ts
}

// htApply commits a command and waits until it is applied.
func (h *htHarness) htApply(cmd store.Command) uint64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	index, err := h.st.Apply(ctx, cmd)
	if err != nil {
		h.t.Fatalf("apply %s: %v", cmd.CommandType(), err)
	}
	if err := h.st.WaitForIndex(ctx, index); err != nil {
		h.t.Fatal(err)
	}
	return index
}

// htOrg is an org with a tenant token.
type htOrg struct {
	ID, Token string
}

func (h *htHarness) org(name string, plan store.Plan) htOrg {
	h.t.Helper()
	id, tok, err := h.srv.CreateOrg(context.Background(), name, plan, name+"-token")
	if err != nil {
		h.t.Fatal(err)
	}
	return htOrg{ID: id, Token: tok}
}

// token mints another token of an org ("" and RoleOperator for an operator
// token of no org) and returns the token and its ID.
func (h *htHarness) token(orgID string, role store.TokenRole, label string) (token, id string) {
	h.t.Helper()
	ct, err := h.srv.mintToken(context.Background(), orgID, label, role, false)
	if err != nil {
		h.t.Fatal(err)
	}
	return ct.Token, ct.ID
}

// htResp is a response, read in full.
type htResp struct {
	status int
	header http.Header
	body   []byte
}

func (r *htResp) String() string {
	return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body))
}

// decode reads the body as JSON into v.
func (r *htResp) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("response %s: %v", r, err)
	}
}

// do sends a request to ts (nil: the main server). body is nil for none, a
// string or []byte sent as is, an io.Reader streamed, or anything else as
// JSON. headers are name, value pairs.
func (h *htHarness) do(ts *httptest.Server, method, path, token string, body any, headers ...string) *htResp {
	h.t.Helper()
	resp, err := h.tryDo(context.Background(), ts, method, path, token, body, headers...)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

func (h *htHarness) tryDo(ctx context.Context, ts *httptest.Server, method, path, token string, body any, headers ...string) (*htResp, error) {
	if ts == nil {
		ts = h.ts
	}
	var rd io.Reader
	contentType := ""
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = b
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		rd, contentType = bytes.NewReader(raw), "application/json"
	}
	req, err := http.NewRequestWithContext(ctx, method, ts.URL+path, rd)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i]) // "": leave the header out
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	res, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	return &htResp{status: res.StatusCode, header: res.Header, body: b}, nil
}

// mustStatus fails the test unless r has status want.
func (h *htHarness) mustStatus(r *htResp, want int) *htResp {
	h.t.Helper()
	if r.status != want {
		h.t.Fatalf("want %d, got %s", want, r)
	}
	return r
}

// createAgent creates an agent through the API and returns its ID; it must
// succeed.
func (h *htHarness) createAgent(token string, req map[string]any) string {
	h.t.Helper()
	var out struct {
		AgentID string `json:"agentId"`
	}
	h.mustStatus(h.do(nil, "POST", "/api/v1/agents", token, req), 200).decode(h.t, &out)
	if out.AgentID == "" {
		h.t.Fatal("create returned no agentId")
	}
	return out.AgentID
}

// agent reads an agent from the store (nil when it does not exist).
func (h *htHarness) agent(id string) *store.Agent {
	h.t.Helper()
	a, err := h.st.State().Agent(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return a
}

// waitAgent waits until the agent's status is want.
func (h *htHarness) waitAgent(id string, want store.AgentStatus) {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if a := h.agent(id); a != nil && a.Status == want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.t.Fatalf("agent %s did not become %s (is %+v)", id, want, h.agent(id))
}

// stateHash is the digest of the whole store state.
func (h *htHarness) stateHash() [32]byte {
	h.t.Helper()
	sum, err := h.st.State().Hash()
	if err != nil {
		h.t.Fatal(err)
	}
	return sum
}

// htErrorShape checks that r is an error response of the API: JSON, exactly
// {"error": {"code", "message", "requestId"}} with non-empty strings, the
// code wantCode (any when ""), and the requestId also in X-Request-Id.
func htErrorShape(r *htResp, wantCode string) error {
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		return fmt.Errorf("Content-Type %q, want application/json", ct)
	}
	reqID := r.header.Get("X-Request-Id")
	if reqID == "" {
		return errors.New("no X-Request-Id header")
	}
	var top map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(r.body))
	if err := dec.Decode(&top); err != nil {
		return fmt.Errorf("body is not a JSON object: %v", err)
	}
	if dec.More() {
		return errors.New("body holds more than one JSON value")
	}
	if len(top) != 1 || top["error"] == nil {
		return fmt.Errorf("body has keys %v, want exactly \"error\"", slices.Sorted(mapKeysHT(top)))
	}
	var detail map[string]any
	if err := json.Unmarshal(top["error"], &detail); err != nil {
		return fmt.Errorf("error is not an object: %v", err)
	}
	if keys := slices.Sorted(mapKeysHT(detail)); !slices.Equal(keys, []string{"code", "message", "requestId"}) {
		return fmt.Errorf("error has keys %v, want code, message, requestId", keys)
	}
	for _, k := range []string{"code", "message", "requestId"} {
		if s, ok := detail[k].(string); !ok || s == "" {
			return fmt.Errorf("error.%s is %v, want a non-empty string", k, detail[k])
		}
	}
	if wantCode != "" && detail["code"] != wantCode {
		return fmt.Errorf("error.code %q, want %q (message %q)", detail["code"], wantCode, detail["message"])
	}
	if detail["requestId"] != reqID {
		return fmt.Errorf("error.requestId %q differs from X-Request-Id %q", detail["requestId"], reqID)
	}
	return nil
}

func mapKeysHT[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// fakeRuntimeHT is a test double of a node's AgentRuntimeService: each
// agent the fake node agent runs has sessions, messages, one pending
// permission request (perm_1) and one pending question (q_1), kept in
// memory; uploads are stored by the real runtime.Uploads in a temporary
// workspace per agent, and each agent's container log is a file beside it,
// read by the real driver.TailLog. Errors map to Connect codes as the node agent's
// runtimeService does (NotFound, InvalidArgument, FailedPrecondition when
// the agent does not run here, Unavailable when its runtime does not answer).
type fakeRuntimeHT struct {
	runtimev1connect.UnimplementedAgentRuntimeServiceHandler

	addr    string
	dir     string
	uploads runtime.Uploads

	mu     sync.Mutex
	agents map[string]*fakeRuntimeHTAgent
	broken map[string]bool          // answer Unavailable, as a runtime that does not respond
	block  map[string]chan struct{} // SendMessage waits for the channel to close
	seq    int
}

type fakeRuntimeHTAgent struct {
	workspace   string
	sessions    []runtime.Session
	messages    map[string][]*runtimev1.Message
	permissions []string
	questions   []string
	sends       int
	gone        chan struct{} // closed when the agent stops
}

// errFakeRuntimeHTNotRunning is the node agent's ErrAgentNotRunning.
var errFakeRuntimeHTNotRunning = errors.New("agent is not running on this node")

func newFakeRuntimeHT(t testing.TB) *fakeRuntimeHT {
	t.Helper()
	f := &fakeRuntimeHT{dir: t.TempDir(), agents: map[string]*fakeRuntimeHTAgent{}, broken: map[string]bool{}, block: map[string]chan struct{}{}}
	mux := http.NewServeMux()
	mux.Handle(runtimev1connect.NewAgentRuntimeServiceHandler(f))
	ts := httptest.NewUnstartedServer(mux)
	ts.Config.Protocols = h2c.ServerProtocols()
	ts.Start()
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
	})
	f.addr = ts.Listener.Addr().String()
	return f
}

// fakeRuntimeHTError maps errors to Connect codes as the node agent does.
func fakeRuntimeHTError(err error) error {
	code := connect.CodeInternal
	switch {
	case errors.Is(err, runtime.ErrNotFound):
		code = connect.CodeNotFound
	case errors.Is(err, runtime.ErrInvalid):
		code = connect.CodeInvalidArgument
	case errors.Is(err, errFakeRuntimeHTNotRunning):
		code = connect.CodeFailedPrecondition
	case errors.Is(err, runtime.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeUnavailable
	}
	return connect.NewError(code, err)
}

// setRunning starts or stops an agent's runtime here.
func (f *fakeRuntimeHT) setRunning(id string, running bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.agents[id]
	switch {
	case running && a == nil:
		ws := filepath.Join(f.dir, id)
		os.MkdirAll(ws, 0o755)
		f.agents[id] = &fakeRuntimeHTAgent{workspace: ws, messages: map[string][]*runtimev1.Message{},
			permissions: []string{"perm_1"}, questions: []string{"q_1"}, gone: make(chan struct{})}
		f.appendLogLocked(id, "fake runtime of "+id+" listening\n")
	case !running && a != nil:
		close(a.gone)
		delete(f.agents, id)
	}
}

// logPath is the agent's container log.
func (f *fakeRuntimeHT) logPath(id string) string { return filepath.Join(f.dir, id+".container.log") }

// appendLog adds text to the agent's container log, as its container would.
func (f *fakeRuntimeHT) appendLog(id, text string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.appendLogLocked(id, text)
}

func (f *fakeRuntimeHT) appendLogLocked(id, text string) {
	lf, err := os.OpenFile(f.logPath(id), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		panic(err)
	}
	defer lf.Close()
	if _, err := lf.WriteString(text); err != nil {
		panic(err)
	}
}

// running lists the agents whose runtimes run here.
func (f *fakeRuntimeHT) running() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for id := range f.agents {
		ids = append(ids, id)
	}
	return ids
}

// setBroken makes an agent's runtime answer Unavailable (or answer again).
func (f *fakeRuntimeHT) setBroken(id string, broken bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broken[id] = broken
}

// blockSends makes SendMessage to the agent wait until release is called.
func (f *fakeRuntimeHT) blockSends(id string) (release func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.block[id] = ch
	f.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			f.mu.Lock()
			delete(f.block, id)
			f.mu.Unlock()
			close(ch)
		})
	}
}

// sends counts the messages an agent accepted.
func (f *fakeRuntimeHT) sends(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a := f.agents[id]; a != nil {
		return a.sends
	}
	return 0
}

// workspace is the agent's workspace directory ("" when it does not run).
func (f *fakeRuntimeHT) workspace(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a := f.agents[id]; a != nil {
		return a.workspace
	}
	return ""
}

// with runs fn on the agent under the lock, or returns the error the node
// agent would.
func (f *fakeRuntimeHT) with(id string, fn func(a *fakeRuntimeHTAgent) error) error {
	if id == "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("agent_id is required"))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.broken[id] {
		return fakeRuntimeHTError(fmt.Errorf("%w: the fake runtime is broken", runtime.ErrUnavailable))
	}
	a := f.agents[id]
	if a == nil {
		return fakeRuntimeHTError(fmt.Errorf("%w: %s", errFakeRuntimeHTNotRunning, id))
	}
	if err := fn(a); err != nil {
		return fakeRuntimeHTError(err)
	}
	return nil
}

func (f *fakeRuntimeHT) Health(_ context.Context, req *connect.Request[runtimev1.HealthRequest]) (*connect.Response[runtimev1.HealthResponse], error) {
	if err := f.with(req.Msg.GetAgentId(), func(*fakeRuntimeHTAgent) error { return nil }); err != nil {
		return nil, err
	}
	return connect.NewResponse(&runtimev1.HealthResponse{Healthy: true}), nil
}

func (f *fakeRuntimeHT) ListSessions(_ context.Context, req *connect.Request[runtimev1.ListSessionsRequest]) (*connect.Response[runtimev1.ListSessionsResponse], error) {
	out := &runtimev1.ListSessionsResponse{}
	err := f.with(req.Msg.GetAgentId(), func(a *fakeRuntimeHTAgent) error {
		for _, s := range a.sessions {
			out.Sessions = append(out.Sessions, &runtimev1.Session{Id: s.ID, Title: s.Title, CreatedMs: s.Created})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out), nil
}

func (f *fakeRuntimeHT) CreateSession(_ context.Context, req *connect.Request[runtimev1.CreateSessionRequest]) (*connect.Response[runtimev1.CreateSessionResponse], error) {
	var s runtime.Session
	err := f.with(req.Msg.GetAgentId(), func(a *fakeRuntimeHTAgent) error {
		f.seq++
		s = runtime.Session{ID: fmt.Sprintf("ses_ht%d", f.seq), Title: req.Msg.GetTitle(), Created: time.Now().UnixMilli()}
		a.sessions = append(a.sessions, s)
		a.messages[s.ID] = nil
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&runtimev1.CreateSessionResponse{Session: &runtimev1.Session{Id: s.ID, Title: s.Title, CreatedMs: s.Created}}), nil
}

func (f *fakeRuntimeHT) ListMessages(_ context.Context, req *connect.Request[runtimev1.ListMessagesRequest]) (*connect.Response[runtimev1.ListMessagesResponse], error) {
	out := &runtimev1.ListMessagesResponse{}
	err := f.with(req.Msg.GetAgentId(), func(a *fakeRuntimeHTAgent) error {
		msgs, ok := a.messages[req.Msg.GetSessionId()]
		if !ok {
			return fmt.Errorf("%w: session %q", runtime.ErrNotFound, req.Msg.GetSessionId())
		}
		out.Messages = msgs
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out), nil
}

func (f *fakeRuntimeHT) SendMessage(ctx context.Context, req *connect.Request[runtimev1.SendMessageRequest]) (*connect.Response[runtimev1.SendMessageResponse], error) {
	id := req.Msg.GetAgentId()
	f.mu.Lock()
	wait := f.block[id]
	f.mu.Unlock()
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fakeRuntimeHTError(ctx.Err())
		}
	}
	err := f.with(id, func(a *fakeRuntimeHTAgent) error {
		sid := req.Msg.GetSessionId()
		if _, ok := a.messages[sid]; !ok {
			return fmt.Errorf("%w: session %q", runtime.ErrNotFound, sid)
		}
		f.seq++
		text, _ := json.Marshal([]map[string]string{{"type": "text", "text": req.Msg.GetText()}})
		reply, _ := json.Marshal([]map[string]string{{"type": "text", "text": "ok"}})
		now := time.Now().Unix()
		a.messages[sid] = append(a.messages[sid],
			&runtimev1.Message{Id: fmt.Sprintf("msg_ht%du", f.seq), Role: "user", PartsJson: text},
			&runtimev1.Message{Id: fmt.Sprintf("msg_ht%da", f.seq), Role: "assistant", PartsJson: reply, HasAccounting: true,
				Created: now, Completed: now, Cost: 0.01, Tokens: &runtimev1.Tokens{Total: 3, Input: 1, Output: 2}})
		a.sends++
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&runtimev1.SendMessageResponse{}), nil
}

func (f *fakeRuntimeHT) Abort(_ context.Context, req *connect.Request[runtimev1.AbortRequest]) (*connect.Response[runtimev1.AbortResponse], error) {
	out := &runtimev1.AbortResponse{}
	err := f.with(req.Msg.GetAgentId(), func(a *fakeRuntimeHTAgent) error {
		if sid := req.Msg.GetSessionId(); sid != "" {
			if _, ok := a.messages[sid]; !ok {
				return fmt.Errorf("%w: session %q", runtime.ErrNotFound, sid)
			}
			out.Aborted = []string{sid}
		}
		return nil // nothing is busy: abort-all aborts nothing
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out), nil
}

func (f *fakeRuntimeHT) ListPermissions(_ context.Context, req *connect.Request[runtimev1.ListPermissionsRequest]) (*connect.Response[runtimev1.ListPermissionsResponse], error) {
	out := &runtimev1.ListPermissionsResponse{}
	err := f.with(req.Msg.GetAgentId(), func(a *fakeRuntimeHTAgent) error {
		for _, id := range a.permissions {
			out.Permissions = append(out.Permissions, &runtimev1.Permission{Id: id, SessionId: "ses_perm", Permission: "bash",
				Patterns: []string{"rm -rf /tmp/build"}, MetadataJson: []byte(`{}`), ToolMessageId: "msg_t", ToolCallId: "call_t"})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out), nil
}

func (f *fakeRuntimeHT) ReplyPermission(_ context.Context, req *connect.Request[runtimev1.ReplyPermissionRequest]) (*connect.Response[runtimev1.ReplyPermissionResponse], error) {
	err := f.with(req.Msg.GetAgentId(), func(a *fakeRuntimeHTAgent) error {
		if !runtime.PermissionReply(req.Msg.GetReply()).Valid() {
			return fmt.Errorf("%w: reply %q", runtime.ErrInvalid, req.Msg.GetReply())
		}
		i := slices.Index(a.permissions, req.Msg.GetPermissionId())
		if i < 0 {
			return fmt.Errorf("%w: permission %q", runtime.ErrNotFound, req.Msg.GetPermissionId())
		}
		a.permissions = slices.Delete(a.permissions, i, i+1)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&runtimev1.ReplyPermissionResponse{}), nil
}

func (f *fakeRuntimeHT) ListQuestions(_ context.Context, req *connect.Request[runtimev1.ListQuestionsRequest]) (*connect.Response[runtimev1.ListQuestionsResponse], error) {
	out := &runtimev1.ListQuestionsResponse{}
	err := f.with(req.Msg.GetAgentId(), func(a *fakeRuntimeHTAgent) error {
		for _, id := range a.questions {
			out.Questions = append(out.Questions, &runtimev1.Question{Id: id, SessionId: "ses_q", Questions: []*runtimev1.QuestionItem{{
				Question: "How?", Header: "Approach",
				Options: []*runtimev1.QuestionOption{{Label: "Simple", Description: "quick"}, {Label: "Full", Description: "complete"}},
			}}})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out), nil
}

func (f *fakeRuntimeHT) ReplyQuestion(_ context.Context, req *connect.Request[runtimev1.ReplyQuestionRequest]) (*connect.Response[runtimev1.ReplyQuestionResponse], error) {
	err := f.with(req.Msg.GetAgentId(), func(a *fakeRuntimeHTAgent) error {
		i := slices.Index(a.questions, req.Msg.GetQuestionId())
		if i < 0 {
			return fmt.Errorf("%w: question %q", runtime.ErrNotFound, req.Msg.GetQuestionId())
		}
		a.questions = slices.Delete(a.questions, i, i+1)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&runtimev1.ReplyQuestionResponse{}), nil
}

func (f *fakeRuntimeHT) GetUsage(_ context.Context, req *connect.Request[runtimev1.GetUsageRequest]) (*connect.Response[runtimev1.GetUsageResponse], error) {
	out := &runtimev1.GetUsageResponse{TotalTokens: &runtimev1.Tokens{}}
	err := f.with(req.Msg.GetAgentId(), func(a *fakeRuntimeHTAgent) error {
		for _, s := range a.sessions {
			su := &runtimev1.SessionUsage{SessionId: s.ID, Title: s.Title, Tokens: &runtimev1.Tokens{}}
			for _, m := range a.messages[s.ID] {
				if m.GetRole() == "assistant" {
					su.Cost += m.GetCost()
					su.Tokens.Total += m.GetTokens().GetTotal()
				}
			}
			out.TotalCost += su.Cost
			out.TotalTokens.Total += su.Tokens.Total
			out.Sessions = append(out.Sessions, su)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out), nil
}

// Upload mirrors the node agent's: the header, a check that the agent runs
// here, then runtime.Uploads (the real limits and file types) streaming
// the chunks into the agent's workspace.
func (f *fakeRuntimeHT) Upload(_ context.Context, stream *connect.ClientStream[runtimev1.UploadRequest]) (*connect.Response[runtimev1.UploadResponse], error) {
	if !stream.Receive() {
		if err := stream.Err(); err != nil {
			return nil, err
		}
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("empty upload"))
	}
	hdr := stream.Msg().GetHeader()
	if hdr == nil || hdr.GetAgentId() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("an upload starts with a header naming the agent and the file"))
	}
	var ws string
	if err := f.with(hdr.GetAgentId(), func(a *fakeRuntimeHTAgent) error { ws = a.workspace; return nil }); err != nil {
		return nil, err
	}
	up, err := f.uploads.Save(ws, hdr.GetName(), &fakeRuntimeHTChunks{stream: stream, pending: stream.Msg().GetChunk()})
	if err != nil {
		return nil, fakeRuntimeHTError(err)
	}
	return connect.NewResponse(&runtimev1.UploadResponse{Path: up.Path, Name: up.Name, Size: up.Size}), nil
}

// Logs mirrors the node agent's: the line bound, then the tail of the
// agent's log file.
func (f *fakeRuntimeHT) Logs(_ context.Context, req *connect.Request[runtimev1.LogsRequest]) (*connect.Response[runtimev1.LogsResponse], error) {
	if n := req.Msg.GetLines(); n < 1 || n > driver.MaxLogLines {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("lines must be 1 to %d", driver.MaxLogLines))
	}
	var out *runtimev1.LogsResponse
	err := f.with(req.Msg.GetAgentId(), func(*fakeRuntimeHTAgent) error {
		log, err := driver.TailLog(f.logPath(req.Msg.GetAgentId()), int(req.Msg.GetLines()), driver.MaxLogBytes)
		out = &runtimev1.LogsResponse{Text: log.Text, Truncated: log.Truncated}
		return err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out), nil
}

type fakeRuntimeHTChunks struct {
	stream  *connect.ClientStream[runtimev1.UploadRequest]
	pending []byte
}

func (r *fakeRuntimeHTChunks) Read(p []byte) (int, error) {
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

// WatchEvents sends the busy state, then holds the stream open until the
// caller leaves or the agent stops here.
func (f *fakeRuntimeHT) WatchEvents(ctx context.Context, req *connect.Request[runtimev1.WatchEventsRequest], stream *connect.ServerStream[runtimev1.WatchEventsResponse]) error {
	var gone chan struct{}
	if err := f.with(req.Msg.GetAgentId(), func(a *fakeRuntimeHTAgent) error { gone = a.gone; return nil }); err != nil {
		return err
	}
	if err := stream.Send(&runtimev1.WatchEventsResponse{Type: runtime.BusyEvent}); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case <-gone:
		return connect.NewError(connect.CodeUnavailable, errors.New("the agent's runtime went away"))
	}
}

// fakeNodeModeHT is how the fake node agent treats an agent.
type fakeNodeModeHT int

const (
	// htNodeOK runs the agent when it should run (RUNNING) and stops it
	// when it should stop (STOPPED).
	htNodeOK fakeNodeModeHT = iota
	// htNodeFail reports ERROR when the agent should run; stops it normally.
	htNodeFail
	// htNodeHang never reports anything: the API's waits time out.
	htNodeHang
)

// fakeNodeAgentHT is a test double of a node agent's reconcile loop: it
// watches the store for the agents placed on its node and reports their
// statuses with AgentSetStatus from the node, starting and stopping their
// runtimes in fakeRuntimeHT. Per agent it may fail or hang (setMode, or by
// name when nameModes: fail…, hang…), and every report may be delayed.
type fakeNodeAgentHT struct {
	st        *store.Store
	nodeID    string
	rt        *fakeRuntimeHT
	nameModes bool

	mu      sync.Mutex
	modes   map[string]fakeNodeModeHT
	delay   time.Duration
	pending map[string]bool // agents with a delayed report under way
	reports int
}

func startFakeNodeAgentHT(t testing.TB, st *store.Store, nodeID string, rt *fakeRuntimeHT, nameModes bool) *fakeNodeAgentHT {
	n := &fakeNodeAgentHT{st: st, nodeID: nodeID, rt: rt, nameModes: nameModes, modes: map[string]fakeNodeModeHT{}, pending: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.run(ctx, &wg)
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return n
}

// setMode sets how the node treats one agent from now on.
func (n *fakeNodeAgentHT) setMode(agentID string, m fakeNodeModeHT) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.modes[agentID] = m
}

// setDelay delays every report from now on.
func (n *fakeNodeAgentHT) setDelay(d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.delay = d
}

// reportCount is how many status reports the node made.
func (n *fakeNodeAgentHT) reportCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.reports
}

func (n *fakeNodeAgentHT) mode(a *store.Agent) fakeNodeModeHT {
	n.mu.Lock()
	defer n.mu.Unlock()
	if m, ok := n.modes[a.ID]; ok {
		return m
	}
	if n.nameModes {
		switch {
		case strings.HasPrefix(a.Name, "fail"):
			return htNodeFail
		case strings.HasPrefix(a.Name, "hang"):
			return htNodeHang
		}
	}
	return htNodeOK
}

func (n *fakeNodeAgentHT) run(ctx context.Context, wg *sync.WaitGroup) {
	for ctx.Err() == nil {
		applied := n.st.AppliedIndex() // before the state, as watchers must
		n.reconcile(ctx, wg)
		// Wake on the next write, and now and then for mode changes.
		wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		n.st.WaitForIndex(wctx, applied+1)
		cancel()
	}
}

// decide is the report a node agent would make for a, if any.
func (n *fakeNodeAgentHT) decide(a *store.Agent) (status store.AgentStatus, errMsg string, ok bool) {
	mode := n.mode(a)
	switch {
	case a.Desired == store.DesiredRunning && a.Status == store.StatusProvisioning && mode == htNodeOK:
		return store.StatusRunning, "", true
	case a.Desired == store.DesiredRunning && a.Status == store.StatusProvisioning && mode == htNodeFail:
		return store.StatusError, "fake node: the container exited at once", true
	case a.Desired == store.DesiredStopped && a.Status != store.StatusStopped && a.Status != store.StatusError && mode != htNodeHang:
		return store.StatusStopped, "", true
	}
	return "", "", false
}

// reconcile does what a node agent's diff and actions do, in short.
func (n *fakeNodeAgentHT) reconcile(ctx context.Context, wg *sync.WaitGroup) {
	agents, err := n.st.State().AgentsByNode(n.nodeID)
	if err != nil {
		return
	}
	assigned := map[string]bool{}
	for _, a := range agents {
		assigned[a.ID] = true
		status, errMsg, ok := n.decide(a)
		if !ok {
			continue
		}
		n.mu.Lock()
		delay, busy := n.delay, n.pending[a.ID]
		if delay > 0 && !busy {
			n.pending[a.ID] = true
		}
		n.mu.Unlock()
		switch {
		case busy:
		case delay > 0:
			wg.Add(1)
			go func(id string) {
				defer wg.Done()
				defer func() {
					n.mu.Lock()
					delete(n.pending, id)
					n.mu.Unlock()
				}()
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return
				}
				// Decide afresh: the agent may have changed meanwhile.
				a, err := n.st.State().Agent(id)
				if err != nil || a == nil || a.NodeID != n.nodeID {
					return
				}
				if status, errMsg, ok := n.decide(a); ok {
					n.report(ctx, id, status, errMsg)
				}
			}(a.ID)
		default:
			n.report(ctx, a.ID, status, errMsg)
		}
	}
	// Agents deleted or moved away: their runtimes stop here.
	for _, id := range n.rt.running() {
		if !assigned[id] {
			n.rt.setRunning(id, false)
		}
	}
}

func (n *fakeNodeAgentHT) report(ctx context.Context, id string, status store.AgentStatus, errMsg string) {
	// The runtime runs before the node says RUNNING, and is gone before it
	// says STOPPED or ERROR, as with a real container.
	n.rt.setRunning(id, status == store.StatusRunning)
	if _, err := n.st.Apply(ctx, &store.AgentSetStatus{ID: id, FromNode: n.nodeID, Status: status, ErrorMsg: errMsg}); err == nil {
		n.mu.Lock()
		n.reports++
		n.mu.Unlock()
	}
}
