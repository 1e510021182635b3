package nodeagent_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/agenthost/agenthost/internal/h2c"
	"github.com/agenthost/agenthost/nodeagent"
	"github.com/agenthost/agenthost/nodeagent/driver/process"
	nodev1 "github.com/agenthost/agenthost/proto/agenthost/node/v1"
	"github.com/agenthost/agenthost/proto/agenthost/node/v1/nodev1connect"
)

// fakeControl is a control node's NodeService reduced to what a node agent's
// watch failover needs: a fixed applied index, a fixed assignment list, and
// heartbeats answered as the leader or refused as a follower naming it.
type fakeControl struct {
	nodev1connect.UnimplementedNodeServiceHandler
	addr        string
	applied     uint64
	assignments []*nodev1.Assignment
	leaderAddr  string // for a follower: the leader its heartbeat refusals name

	watchesEnded atomic.Int32
	reports      chan *nodev1.ReportAgentStatusRequest
}

func (f *fakeControl) Register(context.Context, *connect.Request[nodev1.RegisterRequest]) (*connect.Response[nodev1.RegisterResponse], error) {
	return connect.NewResponse(&nodev1.RegisterResponse{Index: f.applied}), nil
}

func (f *fakeControl) Heartbeat(context.Context, *connect.Request[nodev1.HeartbeatRequest]) (*connect.Response[nodev1.HeartbeatResponse], error) {
	if f.leaderAddr != "" {
		err := connect.NewError(connect.CodeFailedPrecondition, errors.New("not the leader"))
		err.Meta().Set("agenthost-leader-address", f.leaderAddr)
		return nil, err
	}
	return connect.NewResponse(&nodev1.HeartbeatResponse{AppliedIndex: f.applied}), nil
}

// WatchAssignments sends the list as of the fake's applied index, then
// nothing more: a server whose log stopped at applied.
func (f *fakeControl) WatchAssignments(ctx context.Context, req *connect.Request[nodev1.WatchAssignmentsRequest], stream *connect.ServerStream[nodev1.WatchAssignmentsResponse]) error {
	defer f.watchesEnded.Add(1)
	msg := &nodev1.WatchAssignmentsResponse{Index: f.applied, Assignments: f.assignments}
	if len(f.assignments) == 0 {
		msg = &nodev1.WatchAssignmentsResponse{Index: f.applied, ProgressOnly: req.Msg.GetProgress()}
	}
	if err := stream.Send(msg); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

func (f *fakeControl) ReportAgentStatus(_ context.Context, req *connect.Request[nodev1.ReportAgentStatusRequest]) (*connect.Response[nodev1.ReportAgentStatusResponse], error) {
	select {
	case f.reports <- req.Msg:
	default:
	}
	return connect.NewResponse(&nodev1.ReportAgentStatusResponse{}), nil
}

func (f *fakeControl) serve(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = l.Addr().String()
	f.reports = make(chan *nodev1.ReportAgentStatusRequest, 16)
	mux := http.NewServeMux()
	mux.Handle(nodev1connect.NewNodeServiceHandler(f))
	srv := &http.Server{Handler: mux, Protocols: h2c.ServerProtocols()}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// TestWatchMovesOffAServerBehindTheLeader: the node agent's first control
// node stopped at index 10 while the leader is at 20 with an agent placed
// on the node. The agent must move its watch and act on the placement (here
// an agent of a runtime the node lacks, which it reports as ERROR) instead
// of waiting on the stalled server forever.
func TestWatchMovesOffAServerBehindTheLeader(t *testing.T) {
	leader := &fakeControl{applied: 20, assignments: []*nodev1.Assignment{{
		AgentId: "ag_placed", OrgId: "org_1", Desired: "running", Port: 31000,
		Runtime: "not-on-this-node", ModifyIndex: 20, Status: "PROVISIONING",
	}}}
	leader.serve(t)
	stalled := &fakeControl{applied: 10, leaderAddr: leader.addr}
	stalled.serve(t)

	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("AGENTHOST_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	drv, err := process.New(process.Config{Command: []string{"/bin/false", "{port}"}, DataDir: t.TempDir(), LogMaxBytes: 1 << 20, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	cfg := nodeagent.DefaultConfig()
	cfg.ControlAddrs = []string{stalled.addr, leader.addr}
	cfg.Name = "node-lag"
	cfg.AdvertiseAddr = "127.0.0.1"
	cfg.GossipBind = "127.0.0.1:0"
	cfg.RuntimeServiceBind = "127.0.0.1:0"
	cfg.Runtimes = map[string]nodeagent.Runtime{"stand-in": {Image: "none", Port: 1, HealthPath: "/"}}
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.WatchLagBound = time.Second
	cfg.Logger = logger
	node, err := nodeagent.New(cfg, drv)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		node.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	select {
	case r := <-leader.reports:
		if r.GetAgentId() != "ag_placed" || r.GetStatus() != "ERROR" || !strings.Contains(r.GetErrorMsg(), "not-on-this-node") {
			t.Fatalf("report = %v, want ag_placed ERROR about its runtime", r)
		}
	case r := <-stalled.reports:
		t.Fatalf("the stalled server, which never listed the agent, got a report: %v", r)
	case <-time.After(30 * time.Second):
		t.Fatalf("the node agent never acted on the leader's placement (the stalled server's watch ended %d times)", stalled.watchesEnded.Load())
	}
	if stalled.watchesEnded.Load() == 0 {
		t.Fatal("the node agent acted on the placement without leaving the stalled server's watch")
	}
}
