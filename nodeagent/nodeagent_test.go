package nodeagent_test

import (
	"context"
	"fmt"
	"log/slog"
	stdnet "net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agenthost/agenthost/nodeagent"
	"github.com/agenthost/agenthost/nodeagent/driver"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd/containerdtest"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd/drivertest"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

var daemon *containerdtest.Daemon

func TestMain(m *testing.M) {
	code := m.Run()
	if daemon != nil {
		daemon.Stop()
	}
	os.Exit(code)
}

// testNode is a node agent with a real containerd driver and network.
type testNode struct {
	t      *testing.T
	cfg    nodeagent.Config
	driver *containerd.Driver
	cancel context.CancelFunc
	done   chan struct{}
}

// newTestDriver returns a containerd driver with networking on the
// package's private containerd, with the test image imported.
func newTestDriver(t *testing.T) *containerd.Driver {
	t.Helper()
	archive := filepath.Join(t.TempDir(), "image.tar")
	if err := containerdtest.BuildImage(context.Background(), archive); err != nil {
		t.Fatal(err)
	}
	return newTestDriverWith(t, netip.MustParsePrefix("10.213.9.0/24"), archive, nil)
}

// newTestDriverWith returns a driver whose agents get addresses from subnet
// and may reach hostPorts on the node, with the image archive imported.
func newTestDriverWith(t *testing.T, subnet netip.Prefix, archive string, hostPorts []uint16) *containerd.Driver {
	t.Helper()
	containerdtest.Require(t)
	if daemon == nil {
		d, err := containerdtest.Start()
		if err != nil {
			t.Fatal(err)
		}
		daemon = d
	}
	drv, err := drivertest.New(drivertest.Options{Address: daemon.Address, Subnet: subnet, Dir: t.TempDir(),
		HostPorts: hostPorts, Archives: []string{archive}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drivertest.Close(drv) })
	return drv
}

func newTestNode(t *testing.T, control string, adjust ...func(*nodeagent.Config)) *testNode {
	t.Helper()
	return newTestNodeWith(t, control, newTestDriver(t), adjust...)
}

func newTestNodeWith(t *testing.T, control string, drv *containerd.Driver, adjust ...func(*nodeagent.Config)) *testNode {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	cfg := nodeagent.DefaultConfig()
	cfg.ControlAddrs = []string{control}
	cfg.Name = "node-e2e"
	cfg.AdvertiseAddr = "127.0.0.1"
	cfg.CPUMillis, cfg.MemoryMB, cfg.MaxAgents = 4000, 4096, 10
	cfg.Runtimes = map[string]nodeagent.Runtime{"opencode": {Image: containerdtest.ImageName, Port: 4096, HealthPath: "/global/health"}}
	cfg.GossipBind = "127.0.0.1:0"
	cfg.RuntimeServiceBind = "127.0.0.1:0"
	cfg.HeartbeatInterval = 200 * time.Millisecond
	cfg.ReconcileInterval = time.Second
	cfg.StopGrace = time.Second
	cfg.HealthTimeout = 60 * time.Second
	cfg.Logger = quiet
	if os.Getenv("AGENTHOST_TEST_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, f := range adjust {
		f(&cfg)
	}
	n := &testNode{t: t, cfg: cfg, driver: drv}
	t.Cleanup(n.stop) // runs before the driver's cleanup
	n.start()
	return n
}

// start runs a node agent process-equivalent; stop ends it as a crash
// would, leaving its containers running.
func (n *testNode) start() {
	n.t.Helper()
	agent, err := nodeagent.New(n.cfg, n.driver)
	if err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan struct{})
	go func() {
		defer close(n.done)
		agent.Run(ctx)
	}()
}

func (n *testNode) stop() {
	if n.cancel != nil {
		n.cancel()
		<-n.done
		n.cancel = nil
	}
}

func waitAgent(t *testing.T, s *store.Store, id string, what string, ok func(*store.Agent) bool) *store.Agent {
	t.Helper()
	return waitAgentFor(t, s, id, what, 30*time.Second, ok)
}

func waitAgentFor(t *testing.T, s *store.Store, id string, what string, limit time.Duration, ok func(*store.Agent) bool) *store.Agent {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		a, _ := s.State().Agent(id)
		if a != nil && ok(a) {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s: timed out waiting for %s; last %+v", id, what, a)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func containers(t *testing.T, n *testNode) []driver.Container {
	t.Helper()
	list, err := n.driver.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func apply(t *testing.T, s *store.Store, cmd store.Command) {
	t.Helper()
	if _, err := s.Apply(context.Background(), cmd); err != nil {
		t.Fatalf("%s: %v", cmd.CommandType(), err)
	}
}

func TestNodeAgentRunsAgentsAsTheControlPlaneSays(t *testing.T) {
	tc := clusterrpc.NewTestCluster(t, 1)
	s := tc.Servers[0].Store
	node := newTestNode(t, tc.Servers[0].Addr())
	apply(t, s, &store.OrgCreate{Org: store.Org{ID: "org", Name: "org", CreatedAt: time.Now().UTC()}})

	waitNode(t, s) // the node registers itself: no manual step

	agent := clusterrpc.WithTestRuntimePassword(store.Agent{ID: "e2e-agent", OrgID: "org", Name: "e2e", Runtime: "opencode",
		Resources: store.Resources{CPUMillis: 500, MemoryMB: 256},
		Desired:   store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: time.Now().UTC()}, store.NewRuntimePassword())
	apply(t, s, &store.AgentCreate{Agent: agent})
	a := waitAgent(t, s, agent.ID, "RUNNING", func(a *store.Agent) bool { return a.Status == store.StatusRunning })
	if a.NodeID != "node-e2e" {
		t.Fatalf("placed on %q", a.NodeID)
	}
	boots := filepath.Join(node.driver.WorkspaceDir(agent.ID), "boots")
	if b, _ := os.ReadFile(boots); strings.Count(string(b), "boot") != 1 {
		t.Fatalf("boots after create: %q", b)
	}

	// A node agent killed and started again adopts the running container:
	// no second copy, no restart.
	node.stop()
	node.start()
	time.Sleep(3 * node.cfg.ReconcileInterval)
	if list := containers(t, node); len(list) != 1 || list[0].State != driver.StateRunning {
		t.Fatalf("after a node agent restart: %+v", list)
	}
	if b, _ := os.ReadFile(boots); strings.Count(string(b), "boot") != 1 {
		t.Fatalf("the container was restarted by the new node agent: %q", b)
	}

	// Stop: graceful, workspace kept.
	apply(t, s, &store.AgentSetDesired{ID: agent.ID, Desired: store.DesiredStopped})
	waitAgent(t, s, agent.ID, "STOPPED", func(a *store.Agent) bool { return a.Status == store.StatusStopped })
	if list := containers(t, node); len(list) != 1 || list[0].State == driver.StateRunning {
		t.Fatalf("after stop: %+v", list)
	}

	// Start: same node, same port, same workspace, booted a second time.
	apply(t, s, &store.AgentSetDesired{ID: agent.ID, Desired: store.DesiredRunning})
	b := waitAgent(t, s, agent.ID, "RUNNING again", func(a *store.Agent) bool { return a.Status == store.StatusRunning })
	if b.Port != a.Port || b.NodeID != a.NodeID {
		t.Fatalf("restarted agent moved: %s:%d, was %s:%d", b.NodeID, b.Port, a.NodeID, a.Port)
	}
	if got, _ := os.ReadFile(boots); strings.Count(string(got), "boot") != 2 {
		t.Fatalf("boots after stop and start: %q", got)
	}

	// Delete: container, workspace and all are gone.
	apply(t, s, &store.AgentDelete{ID: agent.ID})
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := os.Stat(node.driver.AgentDir(agent.ID))
		if len(containers(t, node)) == 0 && os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after delete: containers %+v, agent directory: %v", containers(t, node), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMissingImageIsReportedAsError(t *testing.T) {
	tc := clusterrpc.NewTestCluster(t, 1)
	s := tc.Servers[0].Store
	node := newTestNode(t, tc.Servers[0].Addr(), func(cfg *nodeagent.Config) {
		cfg.Runtimes["opencode"] = nodeagent.Runtime{Image: "agenthost.local/absent:1", Port: 4096, HealthPath: "/global/health"}
	})
	apply(t, s, &store.OrgCreate{Org: store.Org{ID: "org", Name: "org", CreatedAt: time.Now().UTC()}})
	waitNode(t, s)
	apply(t, s, &store.AgentCreate{Agent: clusterrpc.WithTestRuntimePassword(store.Agent{ID: "e2e-noimage", OrgID: "org", Name: "x", Runtime: "opencode",
		Desired: store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: time.Now().UTC()}, store.NewRuntimePassword())})
	a := waitAgent(t, s, "e2e-noimage", "ERROR", func(a *store.Agent) bool { return a.Status == store.StatusError })
	if !strings.Contains(a.ErrorMsg, "agenthost.local/absent:1") || !strings.Contains(a.ErrorMsg, "not on node") {
		t.Fatalf("errorMsg %q does not say the image is missing", a.ErrorMsg)
	}
	if list := containers(t, node); len(list) != 0 {
		t.Fatalf("containers left behind: %+v", list)
	}
}

func waitNode(t *testing.T, s *store.Store) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for n, _ := s.State().Node("node-e2e"); n == nil; n, _ = s.State().Node("node-e2e") {
		if time.Now().After(deadline) {
			t.Fatal("node never registered")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNodeAgentKilledMidCreateConverges runs the node agent as a real
// `agenthost node` process, kills it with SIGKILL while agents are being
// created, starts it again, and checks that every agent ends up RUNNING in
// exactly one container.
func TestNodeAgentKilledMidCreateConverges(t *testing.T) {
	tc := clusterrpc.NewTestCluster(t, 1)
	s := tc.Servers[0].Store
	// A driver on the same containerd lets the test see the containers;
	// the node agent itself is the real process.
	helper := &testNode{t: t, driver: newTestDriver(t)}
	archive := filepath.Join(t.TempDir(), "image.tar")
	if err := containerdtest.BuildImage(context.Background(), archive); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "agenthost")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/agenthost").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	dataDir := t.TempDir()
	// A fixed gossip port, as in production: a restarted node agent then
	// rejoins as the same member rather than conflicting with its old self.
	gossipAddr := fmt.Sprintf("127.0.0.1:%d", freeUDPAndTCPPort(t))
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "node", "--control", tc.Servers[0].Addr(), "--advertise", "127.0.0.1",
			"--name", "node-e2e", "--containerd-address", daemon.Address, "--data-dir", dataDir,
			"--subnet", "10.213.10.0/24", "--runtime-image", containerdtest.ImageName, "--import-image", archive,
			"--gossip-bind", gossipAddr, "--runtime-service-bind", "127.0.0.1:0", "--log-level", "warn")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	proc := start()
	t.Cleanup(func() { proc.Process.Kill(); proc.Wait() })
	apply(t, s, &store.OrgCreate{Org: store.Org{ID: "org", Name: "org", CreatedAt: time.Now().UTC()}})
	waitNode(t, s)

	const n = 6
	for i := range n {
		apply(t, s, &store.AgentCreate{Agent: clusterrpc.WithTestRuntimePassword(store.Agent{ID: fmt.Sprintf("kill-%d", i), OrgID: "org", Name: "k", Runtime: "opencode",
			Desired: store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: time.Now().UTC()}, store.NewRuntimePassword())})
		if i == n/2 {
			proc.Process.Signal(syscall.SIGKILL) // mid-create
			proc.Wait()
			proc = start()
		}
	}
	for i := range n {
		waitAgent(t, s, fmt.Sprintf("kill-%d", i), "RUNNING", func(a *store.Agent) bool { return a.Status == store.StatusRunning })
	}
	list := containers(t, helper)
	if len(list) != n {
		t.Fatalf("%d containers for %d agents: %+v", len(list), n, list)
	}
	for _, c := range list {
		boots, _ := os.ReadFile(filepath.Join(dataDir, "agents", c.AgentID, "workspace", "boots"))
		if strings.Count(string(boots), "boot") != 1 {
			t.Errorf("agent %s booted %d times", c.AgentID, strings.Count(string(boots), "boot"))
		}
	}

	// A crash of the node agent is noticed by gossip (heartbeat expiry is
	// an hour in test clusters), and the node is ready again once it is back.
	killed := time.Now()
	proc.Process.Signal(syscall.SIGKILL)
	proc.Wait()
	waitNodeStatus(t, s, store.NodeDown)
	t.Logf("node marked down %s after kill -9 (gossip)", time.Since(killed).Round(10*time.Millisecond))
	proc = start()
	waitNodeStatus(t, s, store.NodeReady)
}

func waitNodeStatus(t *testing.T, s *store.Store, want store.NodeStatus) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if n, _ := s.State().Node("node-e2e"); n != nil && n.Status == want {
			return
		}
		if time.Now().After(deadline) {
			n, _ := s.State().Node("node-e2e")
			t.Fatalf("node never became %s: %+v", want, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeUDPAndTCPPort returns a port free for both TCP and UDP (memberlist
// listens on both).
func freeUDPAndTCPPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		ln, err := stdnet.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*stdnet.TCPAddr).Port
		pc, err := stdnet.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return 0
}
