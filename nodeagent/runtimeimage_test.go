package nodeagent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/agenthost/agenthost/internal/h2c"
	"github.com/agenthost/agenthost/nodeagent"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd/containerdtest"
	"github.com/agenthost/agenthost/nodeagent/network"
	"github.com/agenthost/agenthost/nodeagent/runtime/offlinemodel"
	"github.com/agenthost/agenthost/nodeagent/runtime/opencode"
	runtimev1 "github.com/agenthost/agenthost/proto/agenthost/runtime/v1"
	"github.com/agenthost/agenthost/proto/agenthost/runtime/v1/runtimev1connect"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// runtimeImageArchive builds (or finds cached) the default runtime image the
// way `make runtime-image` does.
func runtimeImageArchive(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "run", "./deploy/runtime/build")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the runtime image: %v\n%s", err, out)
	}
	return filepath.Join(root, "build", "runtime", "opencode-runtime.oci.tar")
}

// TestRuntimeImageAgentEndToEnd runs an agent from the real runtime image
// (Debian + OpenCode) on containerd, in its own network namespace, talking
// to the offline model through the node's firewall opening, and drives every
// runtime flow through AgentRuntimeService.
func TestRuntimeImageAgentEndToEnd(t *testing.T) {
	containerdtest.Require(t)
	archive := runtimeImageArchive(t)
	model := offlinemodel.NewRecording(nil)
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	modelSrv := &http.Server{Handler: model.Handler()}
	go modelSrv.Serve(l)
	defer modelSrv.Close()
	modelPort := l.Addr().(*net.TCPAddr).Port
	subnet := netip.MustParsePrefix("10.213.31.0/24")
	drv := newTestDriverWith(t, subnet, archive, []uint16{uint16(modelPort)})

	tc := clusterrpc.NewTestCluster(t, 1)
	s := tc.Servers[0].Store
	newTestNodeWith(t, tc.Servers[0].Addr(), drv, func(c *nodeagent.Config) {
		c.Runtimes = nodeagent.DefaultConfig().Runtimes // the real image, with the OpenCode adapter
		c.OfflineModelURL = fmt.Sprintf("http://%s:%d/v1", network.HostAddr(subnet), modelPort)
		c.DefaultModel = opencode.OfflineModel
		c.HealthTimeout = 60 * time.Second
	})
	apply(t, s, &store.OrgCreate{Org: store.Org{ID: "org", Name: "org", CreatedAt: time.Now().UTC()}})
	waitNode(t, s)
	a := clusterrpc.WithTestRuntimePassword(store.Agent{ID: "img-agent", OrgID: "org", Name: "img", Runtime: "opencode",
		HiddenPrompt: "Hidden rule 7: keep it short.", Resources: store.Resources{CPUMillis: 1000, MemoryMB: 1024},
		Desired: store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: time.Now().UTC()}, store.NewRuntimePassword())
	apply(t, s, &store.AgentCreate{Agent: a})
	waitAgentFor(t, s, a.ID, "RUNNING", 90*time.Second, func(a *store.Agent) bool { return a.Status == store.StatusRunning })
	n, _ := s.State().Node("node-e2e")
	rpc := runtimev1connect.NewAgentRuntimeServiceClient(h2c.NewClient(), "http://"+n.RuntimeServiceAddress)
	ctx := context.Background()
	r := &rpcAgent{t: t, rpc: rpc, id: a.ID}
	ws := drv.Dirs(a.ID).Workspace

	// The container's own output, which the shim writes to the log file the
	// driver keeps, reaches AgentRuntimeService: OpenCode's start-up line.
	const listening = "opencode server listening on http://0.0.0.0:4096\n"
	if got := r.logs(200); strings.Count(got, listening) != 1 {
		t.Fatalf("container logs:\n%s\nwant %q once", got, listening)
	}

	// Round trip with token usage; the hidden prompt reaches the model only.
	sid := r.session()
	r.send(sid, "hello from the image")
	r.waitIdle()
	reply := r.lastAssistant(sid)
	if text := partsText(reply); text != "Offline model reply to: hello from the image" || reply.GetTokens().GetTotal() == 0 || reply.GetCost() <= 0 {
		t.Fatalf("reply = %+v (%q)", reply, partsText(reply))
	}
	if !model.SawSystemText("Hidden rule 7") {
		t.Fatal("the hidden prompt never reached the model")
	}

	// Busy timeline: true from the send until the reply is complete.
	sid2 := r.session()
	r.send(sid2, "[[slow:500ms]] timeline")
	for r.busy() {
		time.Sleep(2 * time.Millisecond)
	}
	if reply := r.lastAssistant(sid2); reply.GetCompleted() == 0 {
		t.Fatalf("idle before the reply completed: %+v", reply)
	}

	// Abort a long reply.
	r.send(sid2, "[[slow:120s]] long")
	for deadline := time.Now().Add(60 * time.Second); model.Streaming() == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the long reply never started")
		}
	}
	if _, err := rpc.Abort(ctx, connect.NewRequest(&runtimev1.AbortRequest{AgentId: a.ID})); err != nil {
		t.Fatal(err)
	}
	r.waitIdle()
	if e := r.lastAssistant(sid2).GetError(); !strings.Contains(e, "Abort") {
		t.Fatalf("aborted reply error %q", e)
	}

	// Permissions: once runs the command in /workspace, reject does not.
	r.send(sid, `[[tool:bash {"command":"id -u > /workspace/once.txt"}]]`)
	p := r.permission()
	r.reply(p, "once", "")
	r.waitIdle()
	if b, err := os.ReadFile(filepath.Join(ws, "once.txt")); err != nil || strings.TrimSpace(string(b)) != "1000" {
		t.Fatalf("the allowed command did not run as uid 1000: %q %v", b, err)
	}
	r.send(sid, `[[tool:bash {"command":"touch /workspace/rejected.txt"}]]`)
	r.reply(r.permission(), "reject", "no")
	r.waitIdle()
	if _, err := os.Stat(filepath.Join(ws, "rejected.txt")); !os.IsNotExist(err) {
		t.Fatalf("a rejected command ran: %v", err)
	}

	// Inside, loopback works (OpenCode answers on 127.0.0.1, asking for its
	// password) and the host's reachable name servers are configured.
	r.send(sid, `[[tool:bash {"command":"curl -s -o /dev/null -w lo:%{http_code} http://127.0.0.1:4096/global/health; echo; echo ns:$(grep -c ^nameserver /etc/resolv.conf)"}]]`)
	r.reply(r.permission(), "once", "")
	r.waitIdle()
	if !model.SawToolResult("lo:401") {
		t.Fatal("loopback does not work inside the agent's container")
	}
	if model.SawToolResult("ns:0") {
		t.Fatal("no name server in the agent's resolv.conf")
	}

	// A question answered.
	r.send(sid, `[[tool:question {"questions":[{"question":"Which?","header":"Pick","options":[{"label":"Simple","description":"a"},{"label":"Full","description":"b"}]}]}]]`)
	var q *runtimev1.Question
	for deadline := time.Now().Add(60 * time.Second); q == nil; time.Sleep(20 * time.Millisecond) {
		list, err := rpc.ListQuestions(ctx, connect.NewRequest(&runtimev1.ListQuestionsRequest{AgentId: a.ID}))
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Msg.GetQuestions()) > 0 {
			q = list.Msg.GetQuestions()[0]
		} else if time.Now().After(deadline) {
			t.Fatal("no question after 60 s")
		}
	}
	if _, err := rpc.ReplyQuestion(ctx, connect.NewRequest(&runtimev1.ReplyQuestionRequest{AgentId: a.ID, QuestionId: q.GetId(),
		Answers: []*runtimev1.Answer{{Labels: []string{"Full"}}}})); err != nil {
		t.Fatal(err)
	}
	r.waitIdle()
	if !model.SawToolResult("Full") {
		t.Fatal("the answer never reached the model")
	}

	// Uploads: stored in /workspace/uploads, readable by the agent; limits hold.
	if res := r.upload("notes.md", []byte("uploaded-content-123\n")); res.GetSize() != 21 {
		t.Fatalf("upload = %+v", res)
	}
	r.send(sid, `[[tool:bash {"command":"cat /workspace/uploads/notes.md"}]]`)
	r.reply(r.permission(), "once", "")
	r.waitIdle()
	if !model.SawToolResult("uploaded-content-123") {
		t.Fatal("the agent could not read its upload")
	}
	if err := r.uploadErr("run.sh", []byte("x")); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("a .sh upload: %v", err)
	}
	if err := r.uploadErr("big.txt", make([]byte, 50<<20+1)); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("a 50 MB + 1 upload: %v", err)
	}

	// Sessions and history live in the workspace: they survive stop and start.
	apply(t, s, &store.AgentSetDesired{ID: a.ID, Desired: store.DesiredStopped})
	waitAgentFor(t, s, a.ID, "STOPPED", 30*time.Second, func(a *store.Agent) bool { return a.Status == store.StatusStopped })
	apply(t, s, &store.AgentSetDesired{ID: a.ID, Desired: store.DesiredRunning, Status: store.StatusProvisioning})
	waitAgentFor(t, s, a.ID, "RUNNING again", 90*time.Second, func(a *store.Agent) bool { return a.Status == store.StatusRunning })
	list, err := rpc.ListSessions(ctx, connect.NewRequest(&runtimev1.ListSessionsRequest{AgentId: a.ID}))
	if err != nil || len(list.Msg.GetSessions()) != 2 {
		t.Fatalf("sessions after a restart: %+v, %v", list, err)
	}
	if st, err := os.Stat(ws); err != nil || st.Sys().(*syscall.Stat_t).Uid != 1000 {
		t.Fatalf("workspace owner: %v %v", st, err)
	}
	// The log file outlives a container's task: both starts are in it.
	if got := r.logs(200); strings.Count(got, listening) != 2 {
		t.Fatalf("container logs after a restart:\n%s\nwant %q twice", got, listening)
	}
}

// logs is the tail of the agent's container output.
func (r *rpcAgent) logs(lines int32) string {
	r.t.Helper()
	res, err := r.rpc.Logs(context.Background(), connect.NewRequest(&runtimev1.LogsRequest{AgentId: r.id, Lines: lines}))
	if err != nil {
		r.t.Fatal(err)
	}
	return string(res.Msg.GetText())
}

// rpcAgent drives one agent over AgentRuntimeService.
type rpcAgent struct {
	t   *testing.T
	rpc runtimev1connect.AgentRuntimeServiceClient
	id  string
}

func (r *rpcAgent) session() string {
	r.t.Helper()
	res, err := r.rpc.CreateSession(context.Background(), connect.NewRequest(&runtimev1.CreateSessionRequest{AgentId: r.id}))
	if err != nil {
		r.t.Fatal(err)
	}
	return res.Msg.GetSession().GetId()
}

func (r *rpcAgent) send(sid, text string) {
	r.t.Helper()
	if _, err := r.rpc.SendMessage(context.Background(), connect.NewRequest(&runtimev1.SendMessageRequest{AgentId: r.id, SessionId: sid, Text: text})); err != nil {
		r.t.Fatal(err)
	}
	if !r.busy() {
		r.t.Fatal("idle right after a send")
	}
}

func (r *rpcAgent) busy() bool {
	r.t.Helper()
	h, err := r.rpc.Health(context.Background(), connect.NewRequest(&runtimev1.HealthRequest{AgentId: r.id}))
	if err != nil {
		r.t.Fatal(err)
	}
	return h.Msg.GetBusy()
}

func (r *rpcAgent) waitIdle() {
	r.t.Helper()
	for deadline := time.Now().Add(90 * time.Second); r.busy(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatal("still busy after 90 s")
		}
	}
}

func (r *rpcAgent) lastAssistant(sid string) *runtimev1.Message {
	r.t.Helper()
	res, err := r.rpc.ListMessages(context.Background(), connect.NewRequest(&runtimev1.ListMessagesRequest{AgentId: r.id, SessionId: sid}))
	if err != nil {
		r.t.Fatal(err)
	}
	msgs := res.Msg.GetMessages()
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].GetRole() == "assistant" {
			return msgs[i]
		}
	}
	r.t.Fatalf("no assistant message in %+v", msgs)
	return nil
}

func (r *rpcAgent) permission() *runtimev1.Permission {
	r.t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		res, err := r.rpc.ListPermissions(context.Background(), connect.NewRequest(&runtimev1.ListPermissionsRequest{AgentId: r.id}))
		if err != nil {
			r.t.Fatal(err)
		}
		if len(res.Msg.GetPermissions()) > 0 {
			return res.Msg.GetPermissions()[0]
		}
		if time.Now().After(deadline) {
			r.t.Fatal("no permission request after 60 s")
		}
	}
}

func (r *rpcAgent) reply(p *runtimev1.Permission, reply, message string) {
	r.t.Helper()
	if _, err := r.rpc.ReplyPermission(context.Background(), connect.NewRequest(&runtimev1.ReplyPermissionRequest{
		AgentId: r.id, PermissionId: p.GetId(), Reply: reply, Message: message})); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rpcAgent) uploadErr(name string, content []byte) error {
	_, err := r.doUpload(name, content)
	return err
}

func (r *rpcAgent) upload(name string, content []byte) *runtimev1.UploadResponse {
	r.t.Helper()
	res, err := r.doUpload(name, content)
	if err != nil {
		r.t.Fatal(err)
	}
	return res
}

func (r *rpcAgent) doUpload(name string, content []byte) (*runtimev1.UploadResponse, error) {
	up := r.rpc.Upload(context.Background())
	up.Send(&runtimev1.UploadRequest{Header: &runtimev1.UploadHeader{AgentId: r.id, Name: name}})
	for len(content) > 0 {
		n := min(len(content), 1<<20)
		if err := up.Send(&runtimev1.UploadRequest{Chunk: content[:n]}); err != nil {
			break // the server refused early; CloseAndReceive has why
		}
		content = content[n:]
	}
	res, err := up.CloseAndReceive()
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

func partsText(m *runtimev1.Message) string {
	var parts []map[string]any
	json.Unmarshal(m.GetPartsJson(), &parts)
	var b strings.Builder
	for _, p := range parts {
		if p["type"] == "text" {
			s, _ := p["text"].(string)
			b.WriteString(s)
		}
	}
	return b.String()
}
