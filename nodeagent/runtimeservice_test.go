package nodeagent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/agenthost/agenthost/internal/h2c"
	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/nodeagent"
	"github.com/agenthost/agenthost/nodeagent/driver/process"
	agentruntime "github.com/agenthost/agenthost/nodeagent/runtime"
	"github.com/agenthost/agenthost/nodeagent/runtime/offlinemodel"
	"github.com/agenthost/agenthost/nodeagent/runtime/opencode"
	"github.com/agenthost/agenthost/nodeagent/runtime/opencode/opencodetest"
	"github.com/agenthost/agenthost/nodeagent/runtime/remote"
	runtimev1 "github.com/agenthost/agenthost/proto/agenthost/runtime/v1"
	"github.com/agenthost/agenthost/proto/agenthost/runtime/v1/runtimev1connect"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// TestRuntimeServiceEndToEnd runs a real OpenCode through the whole chain:
// the control plane places an agent, the node agent writes its OpenCode
// configuration (offline model, hidden prompt, password) and starts it (with
// the process driver, so that this test needs no runtime image), and a
// control node's calls over AgentRuntimeService reach it.
func TestRuntimeServiceEndToEnd(t *testing.T) {
	bin := opencodetest.Binary(t)
	model := offlinemodel.NewRecording(nil)
	modelSrv := httptest.NewServer(model.Handler())
	defer modelSrv.Close()

	keys, err := keyring.LoadOrCreate(filepath.Join(t.TempDir(), "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	tc := clusterrpc.NewTestClusterWith(t, 1, func(c *clusterrpc.ServerConfig) { c.Keyring = keys })
	s := tc.Servers[0].Store
	home := t.TempDir()
	drv, err := process.New(process.Config{
		Command: []string{"env", "HOME=" + home, "XDG_DATA_HOME=" + filepath.Join(home, "data"), "XDG_CACHE_HOME=" + filepath.Join(home, "cache"),
			bin, "serve", "--hostname", "127.0.0.1", "--port", "{port}"},
		DataDir: t.TempDir(), LogMaxBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer drv.Close()
	cfg := nodeagent.DefaultConfig()
	cfg.ControlAddrs = []string{tc.Servers[0].Addr()}
	cfg.Name, cfg.AdvertiseAddr = "node-rt", "127.0.0.1"
	cfg.CPUMillis, cfg.MemoryMB, cfg.MaxAgents = 4000, 4096, 10
	cfg.GossipBind, cfg.RuntimeServiceBind = "127.0.0.1:0", "127.0.0.1:0"
	cfg.OfflineModelURL = modelSrv.URL + "/v1"
	cfg.DefaultModel = "anthropic/claude-sonnet-4-6" // the org's default must win over it
	cfg.Logger = slog.New(slog.DiscardHandler)
	agent, err := nodeagent.New(cfg, drv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); agent.Run(ctx) }()
	defer func() { cancel(); <-done }()

	apply(t, s, &store.OrgCreate{Org: store.Org{ID: "org", Name: "org", DefaultModel: opencode.OfflineModel, CreatedAt: time.Now().UTC()}})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if n, _ := s.State().Node("node-rt"); n != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node never registered")
		}
	}
	// Secrets: an org-level one reaches the unscoped agent as environment;
	// a scope's secret does not. Only sealed values go into Raft.
	seal := func(scope, key, value string) {
		sealed, id, err := keys.Seal([]byte(value), keyring.SecretAAD("org", scope, key))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		apply(t, s, &store.SecretPut{Secret: store.Secret{ID: "sec-" + scope + key, OrgID: "org", ScopeID: scope, Key: key,
			Ciphertext: sealed, KeyID: id, CreatedAt: now, UpdatedAt: now}})
	}
	apply(t, s, &store.ScopeCreate{Scope: store.Scope{ID: "scope-1", OrgID: "org", Name: "team", CreatedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC()}})
	seal("", "ANTHROPIC_API_KEY", "sk-org-level-4711")
	seal("scope-1", "SCOPED_TOKEN", "scoped-only-0815")
	a := store.Agent{ID: "rt-agent", OrgID: "org", Name: "rt", Runtime: "opencode",
		HiddenPrompt: "Hidden rule 42: be brief.", Resources: store.Resources{CPUMillis: 500, MemoryMB: 256},
		Desired: store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: time.Now().UTC()}
	if err := clusterrpc.SealRuntimePassword(keys, &a, store.NewRuntimePassword()); err != nil {
		t.Fatal(err)
	}
	apply(t, s, &store.AgentCreate{Agent: a})
	waitAgent(t, s, a.ID, "RUNNING", func(a *store.Agent) bool { return a.Status == store.StatusRunning })

	// The node registered where its AgentRuntimeService answers.
	n, _ := s.State().Node("node-rt")
	if n == nil || n.RuntimeServiceAddress == "" {
		t.Fatalf("node record %+v has no runtime service address", n)
	}
	rpc := runtimev1connect.NewAgentRuntimeServiceClient(h2c.NewClient(), "http://"+n.RuntimeServiceAddress)

	h, err := rpc.Health(ctx, connect.NewRequest(&runtimev1.HealthRequest{AgentId: a.ID}))
	if err != nil || !h.Msg.GetHealthy() || h.Msg.GetBusy() {
		t.Fatalf("health = %+v, %v", h, err)
	}
	// The runtime refuses anyone without the agent's password.
	placed, _ := s.State().Agent(a.ID)
	if code := httpStatus(t, fmt.Sprintf("http://127.0.0.1:%d/global/health", placed.Port)); code != http.StatusUnauthorized {
		t.Fatalf("the runtime answered %d without its password, want 401", code)
	}

	events, err := rpc.WatchEvents(ctx, connect.NewRequest(&runtimev1.WatchEventsRequest{AgentId: a.ID}))
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	if !events.Receive() || events.Msg().GetType() != "agenthost.busy" || events.Msg().GetBusy() {
		t.Fatalf("first event = %+v, %v", events.Msg(), events.Err())
	}

	cs, err := rpc.CreateSession(ctx, connect.NewRequest(&runtimev1.CreateSessionRequest{AgentId: a.ID, Title: "e2e"}))
	if err != nil {
		t.Fatal(err)
	}
	sid := cs.Msg.GetSession().GetId()
	if _, err := rpc.SendMessage(ctx, connect.NewRequest(&runtimev1.SendMessageRequest{AgentId: a.ID, SessionId: sid, Text: "ping"})); err != nil {
		t.Fatal(err)
	}
	if h, _ := rpc.Health(ctx, connect.NewRequest(&runtimev1.HealthRequest{AgentId: a.ID})); !h.Msg.GetBusy() {
		t.Fatal("not busy right after a send")
	}
	// The event stream shows the agent going busy and then idle.
	sawBusy := false
	for events.Receive() {
		if events.Msg().GetBusy() {
			sawBusy = true
		} else if sawBusy && events.Msg().GetType() == "session.status" {
			break
		}
	}
	if !sawBusy {
		t.Fatalf("the event stream never showed busy: %v", events.Err())
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		h, err := rpc.Health(ctx, connect.NewRequest(&runtimev1.HealthRequest{AgentId: a.ID}))
		if err != nil {
			t.Fatal(err)
		}
		if !h.Msg.GetBusy() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still busy after 60 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	msgs, err := rpc.ListMessages(ctx, connect.NewRequest(&runtimev1.ListMessagesRequest{AgentId: a.ID, SessionId: sid}))
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs.Msg.GetMessages()) != 2 {
		t.Fatalf("messages = %+v", msgs.Msg.GetMessages())
	}
	reply := msgs.Msg.GetMessages()[1]
	var parts []map[string]any
	json.Unmarshal(reply.GetPartsJson(), &parts)
	text := ""
	for _, p := range parts {
		if p["type"] == "text" {
			text += p["text"].(string)
		}
	}
	if reply.GetRole() != "assistant" || text != "Offline model reply to: ping" || reply.GetTokens().GetOutput() == 0 || reply.GetCost() <= 0 || !reply.GetHasAccounting() {
		t.Fatalf("reply = %+v (text %q)", reply, text)
	}
	if !model.SawSystemText("Hidden rule 42") {
		t.Fatal("the hidden prompt did not reach the model")
	}
	usage, err := rpc.GetUsage(ctx, connect.NewRequest(&runtimev1.GetUsageRequest{AgentId: a.ID}))
	if err != nil || usage.Msg.GetTotalCost() != reply.GetCost() || len(usage.Msg.GetSessions()) != 1 {
		t.Fatalf("usage = %+v, %v", usage, err)
	}

	// The same through runtime/remote, what control nodes hold: the runtime
	// package's types and errors on the far side of the hop.
	rr := remote.New(h2c.NewClient(), n.RuntimeServiceAddress, a.ID)
	if list, err := rr.Sessions(ctx); err != nil || len(list) != 1 || list[0].ID != sid || list[0].Title != "e2e" {
		t.Fatalf("remote sessions = %+v, %v", list, err)
	}
	rmsgs, err := rr.Messages(ctx, sid)
	if err != nil || len(rmsgs) != 2 || rmsgs[1].Info.Tokens == nil || rmsgs[1].Info.Tokens.Output != reply.GetTokens().GetOutput() ||
		*rmsgs[1].Info.Cost != reply.GetCost() || rmsgs[0].Info.Time != nil {
		t.Fatalf("remote messages = %+v, %v", rmsgs, err)
	}
	if u, err := rr.Usage(ctx); err != nil || u.TotalCost != reply.GetCost() || len(u.Sessions) != 1 {
		t.Fatalf("remote usage = %+v, %v", u, err)
	}
	if _, err := rr.Messages(ctx, "ses_nope"); !errors.Is(err, agentruntime.ErrNotFound) {
		t.Fatalf("remote: unknown session: %v", err)
	}
	if up, err := rr.Upload(ctx, "remote.txt", strings.NewReader("remote")); err != nil || up.Size != 6 || up.Path != "/workspace/uploads/remote.txt" {
		t.Fatalf("remote upload = %+v, %v", up, err)
	}
	if _, err := rr.Upload(ctx, "x.exe", strings.NewReader("MZ")); !errors.Is(err, agentruntime.ErrInvalid) {
		t.Fatalf("remote upload of an .exe: %v", err)
	}
	if _, err := remote.New(h2c.NewClient(), n.RuntimeServiceAddress, "someone-else").Sessions(ctx); !errors.Is(err, remote.ErrNotRunning) {
		t.Fatalf("remote: an agent not on the node: %v", err)
	}
	if rr.Busy() {
		t.Fatal("remote: busy while idle")
	}

	// The org's secret is in the runtime's environment, the scope's is not.
	if _, err := rpc.SendMessage(ctx, connect.NewRequest(&runtimev1.SendMessageRequest{AgentId: a.ID, SessionId: sid,
		Text: `[[tool:bash {"command":"echo key=$ANTHROPIC_API_KEY scoped=${SCOPED_TOKEN:-none}"}]]`})); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		perms, err := rpc.ListPermissions(ctx, connect.NewRequest(&runtimev1.ListPermissionsRequest{AgentId: a.ID}))
		if err != nil {
			t.Fatal(err)
		}
		if len(perms.Msg.GetPermissions()) > 0 {
			if _, err := rpc.ReplyPermission(ctx, connect.NewRequest(&runtimev1.ReplyPermissionRequest{AgentId: a.ID,
				PermissionId: perms.Msg.GetPermissions()[0].GetId(), Reply: "once"})); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no permission request for the env check")
		}
	}
	for deadline := time.Now().Add(60 * time.Second); !model.SawToolResult("key=sk-org-level-4711 scoped=none"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the org's secret did not reach the runtime's environment (or the scope's did)")
		}
	}

	// Uploads land in the workspace, within the limits.
	up := rpc.Upload(ctx)
	up.Send(&runtimev1.UploadRequest{Header: &runtimev1.UploadHeader{AgentId: a.ID, Name: "notes.md"}})
	up.Send(&runtimev1.UploadRequest{Chunk: []byte("# notes\n")})
	up.Send(&runtimev1.UploadRequest{Chunk: []byte("hello\n")})
	res, err := up.CloseAndReceive()
	if err != nil || res.Msg.GetPath() != "/workspace/uploads/notes.md" || res.Msg.GetSize() != 14 {
		t.Fatalf("upload = %+v, %v", res, err)
	}
	b, _ := os.ReadFile(filepath.Join(drv.Dirs(a.ID).Workspace, "uploads", "notes.md"))
	if string(b) != "# notes\nhello\n" {
		t.Fatalf("uploaded content %q", b)
	}
	bad := rpc.Upload(ctx)
	bad.Send(&runtimev1.UploadRequest{Header: &runtimev1.UploadHeader{AgentId: a.ID, Name: "tool.sh"}})
	bad.Send(&runtimev1.UploadRequest{Chunk: []byte("rm -rf /")})
	if _, err := bad.CloseAndReceive(); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("upload of a .sh file: %v, want InvalidArgument", err)
	}

	// Errors keep their meaning across the hop.
	if _, err := rpc.ListMessages(ctx, connect.NewRequest(&runtimev1.ListMessagesRequest{AgentId: a.ID, SessionId: "ses_nope"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("unknown session: %v", err)
	}
	if _, err := rpc.ReplyPermission(ctx, connect.NewRequest(&runtimev1.ReplyPermissionRequest{AgentId: a.ID, PermissionId: "per_x", Reply: "maybe"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("bad reply: %v", err)
	}
	if _, err := rpc.ListSessions(ctx, connect.NewRequest(&runtimev1.ListSessionsRequest{AgentId: "someone-else"})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("an agent not on this node: %v", err)
	}

	// The runtime's own output, from the log file the driver keeps: OpenCode
	// says where it listens. The same through runtime/remote; the line
	// bound holds; an agent the node does not know is NotFound.
	listening := fmt.Sprintf("opencode server listening on http://127.0.0.1:%d\n", placed.Port)
	logs, err := rpc.Logs(ctx, connect.NewRequest(&runtimev1.LogsRequest{AgentId: a.ID, Lines: 100}))
	if err != nil || !strings.Contains(string(logs.Msg.GetText()), listening) {
		t.Fatalf("logs = %q, %v; want %q in them", logs.Msg.GetText(), err, listening)
	}
	if rl, err := rr.Logs(ctx, 100); err != nil || string(rl.Text) != string(logs.Msg.GetText()) || rl.Truncated != logs.Msg.GetTruncated() {
		t.Fatalf("remote logs = %+v, %v", rl, err)
	}
	for _, lines := range []int32{0, -1, 5001} {
		if _, err := rpc.Logs(ctx, connect.NewRequest(&runtimev1.LogsRequest{AgentId: a.ID, Lines: lines})); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("logs, %d lines: %v", lines, err)
		}
	}
	if _, err := rpc.Logs(ctx, connect.NewRequest(&runtimev1.LogsRequest{AgentId: "someone-else", Lines: 10})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("logs of an agent not on this node: %v", err)
	}
	if _, err := remote.New(h2c.NewClient(), n.RuntimeServiceAddress, "someone-else").Logs(ctx, 10); !errors.Is(err, agentruntime.ErrNotFound) {
		t.Fatalf("remote: logs of an agent not on this node: %v", err)
	}

	// Stopped, the agent is not running here any more.
	apply(t, s, &store.AgentSetDesired{ID: a.ID, Desired: store.DesiredStopped})
	waitAgent(t, s, a.ID, "STOPPED", func(a *store.Agent) bool { return a.Status == store.StatusStopped })
	_, err = rpc.ListSessions(ctx, connect.NewRequest(&runtimev1.ListSessionsRequest{AgentId: a.ID}))
	var cerr *connect.Error
	if !errors.As(err, &cerr) || cerr.Code() != connect.CodeFailedPrecondition {
		t.Fatalf("sessions of a stopped agent: %v", err)
	}
	// Its output stays readable: a stopped agent's last words.
	if logs, err := rpc.Logs(ctx, connect.NewRequest(&runtimev1.LogsRequest{AgentId: a.ID, Lines: 100})); err != nil || !strings.Contains(string(logs.Msg.GetText()), listening) {
		t.Fatalf("logs of the stopped agent = %q, %v", logs.Msg.GetText(), err)
	}
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
