package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/errgroup"

	"github.com/agenthost/agenthost/internal/gossip"
	"github.com/agenthost/agenthost/internal/h2c"
	"github.com/agenthost/agenthost/internal/lag"
	"github.com/agenthost/agenthost/nodeagent/driver"
	"github.com/agenthost/agenthost/nodeagent/runtime/opencode"
	nodev1 "github.com/agenthost/agenthost/proto/agenthost/node/v1"
	"github.com/agenthost/agenthost/proto/agenthost/node/v1/nodev1connect"
	"github.com/agenthost/agenthost/proto/agenthost/runtime/v1/runtimev1connect"
)

// Agent is a running node agent. Its containers never depend on it: when it
// stops, or loses the control plane, they keep running, and a new node agent
// adopts them (the driver lists them by label) without restarting them.
type Agent struct {
	cfg    Config
	driver driver.Driver
	logger *slog.Logger
	http   *http.Client
	health *http.Client

	mu       sync.Mutex
	desired  []Assignment
	index    uint64          // of the last assignments received
	checking map[string]bool // agents whose health is being awaited
	server   int             // index in ControlAddrs of the server in use
	leader   string          // where heartbeats go, when known
	lag      lag.Tracker     // whether the assignment watch's server keeps up with the leader

	serviceAddr string // AgentRuntimeService, as advertised

	wake   chan struct{}
	gossip *gossip.Member

	runtimes *runtimes
	metrics  *metrics
}

// New returns a node agent over d.
func New(cfg Config, d driver.Driver) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("node agent config: %w", err)
	}
	rts := newRuntimes(cfg.Logger)
	return &Agent{
		cfg:    cfg,
		driver: d,
		logger: cfg.Logger.With("component", "nodeagent", "node", cfg.Name),
		http:   h2c.NewClient(),
		health: &http.Client{
			Timeout:   2 * time.Second,
			Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 2},
			// The runtime is the tenant's code: it may not send the node
			// agent (and the agent's password) anywhere else.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		checking: map[string]bool{},
		wake:     make(chan struct{}, 1),
		runtimes: rts,
		metrics:  newMetrics(cfg.Registerer, rts),
	}, nil
}

func (a *Agent) client(addr string) nodev1connect.NodeServiceClient {
	return nodev1connect.NewNodeServiceClient(a.http, "http://"+addr)
}

// control returns a client for the control node in use.
func (a *Agent) control() (nodev1connect.NodeServiceClient, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	addr := a.cfg.ControlAddrs[a.server%len(a.cfg.ControlAddrs)]
	return a.client(addr), addr
}

// failover moves to the next control node after an error.
func (a *Agent) failover() {
	a.mu.Lock()
	a.server++
	a.mu.Unlock()
}

// Run registers the node and keeps it in step with the control plane until
// ctx ends. It returns when ctx ends, or at once when the AgentRuntimeService
// port cannot be bound.
func (a *Agent) Run(ctx context.Context) error {
	stopService, err := a.serveRuntimeService()
	if err != nil {
		return err
	}
	defer stopService()
	a.register(ctx)
	defer func() {
		if a.gossip != nil {
			a.gossip.Leave(time.Second)
		}
	}()
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){a.heartbeatLoop, a.watchLoop, a.reconcileLoop} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx)
		}()
	}
	wg.Wait()
	a.runtimes.closeAll()
	return nil
}

// serveRuntimeService listens for AgentRuntimeService.
func (a *Agent) serveRuntimeService() (stop func(), err error) {
	l, err := net.Listen("tcp", a.cfg.RuntimeServiceBind)
	if err != nil {
		return nil, fmt.Errorf("runtime service: %w", err)
	}
	a.mu.Lock()
	a.serviceAddr = net.JoinHostPort(a.cfg.AdvertiseAddr, fmt.Sprint(l.Addr().(*net.TCPAddr).Port))
	a.mu.Unlock()
	mux := http.NewServeMux()
	mux.Handle(runtimev1connect.NewAgentRuntimeServiceHandler(&runtimeService{agent: a}))
	allowed := controlIPs(a.cfg.ControlAddrs)
	// Until internal traffic is mutual TLS, only the control nodes' own
	// addresses (and this host) may call: an agent elsewhere in the pool
	// reaches this port from its node's address, which is not among them.
	guard := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err != nil || !(ap.Addr().Unmap().IsLoopback() || allowed[ap.Addr().Unmap()]) {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(w, r)
	})
	srv := &http.Server{Handler: guard, Protocols: h2c.ServerProtocols(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	return func() { srv.Close() }, nil
}

// controlIPs resolves the control nodes' hosts to the addresses their calls
// come from.
func controlIPs(addrs []string) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, addr := range addrs {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		ips, err := net.LookupIP(host)
		if err != nil {
			continue
		}
		for _, ip := range ips {
			if a, ok := netip.AddrFromSlice(ip); ok {
				out[a.Unmap()] = true
			}
		}
	}
	return out
}

// RuntimeServiceAddr is where control nodes reach this node's
// AgentRuntimeService, once Run has started.
func (a *Agent) RuntimeServiceAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.serviceAddr
}

// register retries, with backoff across control nodes, until it succeeds.
func (a *Agent) register(ctx context.Context) {
	runtimes := make([]string, 0, len(a.cfg.Runtimes))
	for name := range a.cfg.Runtimes {
		runtimes = append(runtimes, name)
	}
	req := &nodev1.RegisterRequest{
		NodeId: a.cfg.Name, Name: a.cfg.Name, Address: a.cfg.AdvertiseAddr,
		Capacity: &nodev1.Capacity{CpuMillis: a.cfg.CPUMillis, MemoryMb: a.cfg.MemoryMB, MaxAgents: int32(a.cfg.MaxAgents)},
		Labels:   a.cfg.Labels, Runtimes: runtimes, RuntimeServiceAddress: a.RuntimeServiceAddr(),
	}
	backoff := newBackoff()
	for ctx.Err() == nil {
		c, addr := a.control()
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := c.Register(callCtx, connect.NewRequest(req))
		cancel()
		if err == nil {
			a.logger.Info("registered", "control", addr)
			a.joinGossip(resp.Msg.GetGossipAddresses())
			return
		}
		a.logger.Warn("register failed; retrying", "control", addr, "error", err)
		a.failover()
		backoff.wait(ctx)
	}
}

// joinGossip starts this node's memberlist member (once) and joins the
// control nodes' members, so that a crash of this host is noticed within
// about a second. Failure is logged, not fatal: heartbeats still work.
func (a *Agent) joinGossip(addrs []string) {
	if a.gossip == nil {
		cfg := gossip.DefaultConfig()
		cfg.Name = gossip.NodePrefix + a.cfg.Name
		cfg.BindAddr = a.cfg.GossipBind
		if host, port, err := net.SplitHostPort(a.cfg.GossipBind); err == nil && port != "0" {
			if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
				cfg.AdvertiseAddr = net.JoinHostPort(a.cfg.AdvertiseAddr, port)
			}
		}
		cfg.Logger = a.cfg.Logger
		m, err := gossip.Start(cfg)
		if err != nil {
			a.logger.Warn("gossip disabled: could not start", "error", err)
			return
		}
		a.gossip = m
	}
	if err := a.gossip.Join(addrs); err != nil {
		a.logger.Warn("gossip join failed; heartbeats still report liveness", "error", err)
	}
}

func (a *Agent) heartbeatLoop(ctx context.Context) {
	ticker := time.NewTicker(a.cfg.HeartbeatInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		a.mu.Lock()
		addr := a.leader
		a.mu.Unlock()
		if addr == "" {
			_, addr = a.control()
		}
		callCtx, cancel := context.WithTimeout(ctx, a.cfg.HeartbeatInterval*2)
		resp, err := a.client(addr).Heartbeat(callCtx, connect.NewRequest(&nodev1.HeartbeatRequest{NodeId: a.cfg.Name}))
		cancel()
		if err == nil {
			a.mu.Lock()
			a.leader = addr
			a.mu.Unlock()
			a.lag.LeaderAt(resp.Msg.GetAppliedIndex(), time.Now())
			continue
		}
		// Follow the leader's address when a follower names it; otherwise
		// try the next control node.
		leader := ""
		var cerr *connect.Error
		if errors.As(err, &cerr) {
			leader = cerr.Meta().Get("agenthost-leader-address")
			if cerr.Code() == connect.CodeNotFound {
				a.register(ctx) // the control plane forgot us (removed node)
			}
		}
		a.mu.Lock()
		a.leader = leader
		a.mu.Unlock()
		if leader == "" {
			a.failover()
		}
	}
}

// errWatchBehind ends a watch whose server has fallen behind the leader.
var errWatchBehind = errors.New("the watch's control node is behind the leader")

// watchLoop keeps a WatchAssignments stream open, resuming after the last
// index seen, and wakes the reconcile loop on every update. A watch that
// falls behind the leader for WatchLagBound is dropped and resumed on the
// next control node (package lag).
func (a *Agent) watchLoop(ctx context.Context) {
	backoff := newBackoff()
	for ctx.Err() == nil {
		c, addr := a.control()
		a.mu.Lock()
		after := a.index
		a.mu.Unlock()
		a.lag.Restart()
		streamCtx, cancel := context.WithCancelCause(ctx)
		stopWatchdog := a.watchdog(streamCtx, cancel, addr)
		stream, err := c.WatchAssignments(streamCtx, connect.NewRequest(&nodev1.WatchAssignmentsRequest{NodeId: a.cfg.Name, AfterIndex: after, Progress: true}))
		if err == nil {
			a.logger.Info("watching assignments", "control", addr, "after", after)
			for stream.Receive() {
				backoff.reset()
				msg := stream.Msg()
				a.lag.ServerAt(msg.GetIndex())
				if !msg.GetProgressOnly() {
					a.setDesired(msg)
				}
			}
			err = stream.Err()
			stream.Close()
		}
		stopWatchdog()
		if cause := context.Cause(streamCtx); errors.Is(cause, errWatchBehind) {
			err = cause
		}
		cancel(nil)
		if ctx.Err() != nil {
			return
		}
		a.logger.Warn("assignment watch ended; reconnecting", "control", addr, "error", err)
		a.failover()
		backoff.wait(ctx)
	}
}

// watchdog ends the watch at addr (through cancel) once it has trailed the
// leader for WatchLagBound. The returned func stops it.
func (a *Agent) watchdog(ctx context.Context, cancel context.CancelCauseFunc, addr string) (stop func()) {
	done := make(chan struct{})
	go func() {
		ticker := time.NewTicker(max(a.cfg.WatchLagBound/5, 10*time.Millisecond))
		defer ticker.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			if target, reached, late := a.lag.Behind(time.Now(), a.cfg.WatchLagBound); late {
				a.logger.Warn("the assignment watch is behind the leader; moving it to another control node",
					"control", addr, "leader_index", target, "watch_index", reached, "bound", a.cfg.WatchLagBound)
				cancel(errWatchBehind)
				return
			}
		}
	}()
	return func() { close(done) }
}

func (a *Agent) setDesired(m *nodev1.WatchAssignmentsResponse) {
	desired := make([]Assignment, 0, len(m.GetAssignments()))
	for _, as := range m.GetAssignments() {
		desired = append(desired, Assignment{
			AgentID: as.GetAgentId(), OrgID: as.GetOrgId(), Desired: as.GetDesired(), Port: int(as.GetPort()),
			Runtime: as.GetRuntime(), CPUMillis: as.GetCpuMillis(), MemoryMB: as.GetMemoryMb(),
			Model: as.GetModel(), ModelProvider: opencode.Provider{Kind: as.GetModelProvider().GetKind(), BaseURL: as.GetModelProvider().GetBaseUrl(),
				APIKeyEnv: as.GetModelProvider().GetApiKeyEnv(), Name: as.GetModelProvider().GetName()},
			HiddenPrompt: as.GetHiddenPrompt(), RuntimePassword: as.GetRuntimePassword(), Env: as.GetEnv(),
			Status: as.GetStatus(), ErrorMsg: as.GetErrorMsg(),
		})
	}
	a.mu.Lock()
	if m.GetIndex() < a.index {
		// From a server behind the one that sent the list in hand (a
		// watch that just moved): acting on it could delete agents
		// placed since. Its newer lists, or the next server's, follow.
		held := a.index
		a.mu.Unlock()
		a.logger.Info("ignoring assignments older than those in hand", "index", m.GetIndex(), "held", held)
		return
	}
	a.desired, a.index = desired, m.GetIndex()
	a.mu.Unlock()
	a.logger.Debug("assignments received", "index", m.GetIndex(), "agents", len(desired))
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

func (a *Agent) reconcileLoop(ctx context.Context) {
	ticker := time.NewTicker(a.cfg.ReconcileInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
		case <-ticker.C:
		}
		if err := a.Reconcile(ctx); err != nil {
			a.logger.Warn("reconcile failed; will retry", "error", err)
		}
	}
}

// Reconcile converges the driver's containers on the assignments last
// received. Before the first assignments arrive it does nothing: an empty
// list from a node that has not heard from the control plane must not delete
// running agents.
func (a *Agent) Reconcile(ctx context.Context) error {
	a.mu.Lock()
	desired, index := a.desired, a.index
	a.mu.Unlock()
	if index == 0 && desired == nil {
		return nil
	}
	actual, err := a.driver.List(ctx)
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	a.metrics.observeContainers(actual)
	byID := map[string]Assignment{}
	for _, as := range desired {
		byID[as.AgentID] = as
	}
	containers := map[string]driver.Container{}
	for _, c := range actual {
		containers[c.AgentID] = c
	}
	actions := diff(desired, actual)
	a.logger.Debug("reconcile", "index", index, "actions", fmt.Sprint(actions), "actual", fmt.Sprint(actual))
	// Removals first, all of them done before anything starts: a port that
	// a deleted or stopped agent frees may be the one an agent new here was
	// given. Within a phase, ParallelActions at a time; each action is
	// about one agent, and diff gives an agent one action.
	var removals, rest []Action
	for _, act := range actions {
		if act.Kind == ActDelete || act.Kind == ActStop {
			removals = append(removals, act)
		} else {
			rest = append(rest, act)
		}
	}
	var (
		mu   sync.Mutex
		errs []error
	)
	for _, phase := range [][]Action{removals, rest} {
		var g errgroup.Group
		g.SetLimit(a.cfg.ParallelActions)
		for _, act := range phase {
			g.Go(func() error {
				if err := a.execute(ctx, act, byID[act.AgentID], containers[act.AgentID]); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s %s: %w", act.Kind, act.AgentID, err))
					mu.Unlock()
				}
				return nil
			})
		}
		g.Wait()
	}
	a.pruneRuntimes(byID, containers)
	slices.SortFunc(errs, func(x, y error) int { return strings.Compare(x.Error(), y.Error()) })
	return errors.Join(errs...)
}

// execute runs one step; c is the agent's container as last listed.
func (a *Agent) execute(ctx context.Context, act Action, as Assignment, c driver.Container) error {
	log := a.logger.With("agent", act.AgentID)
	switch act.Kind {
	case ActCreate:
		rt, ok := a.cfg.Runtimes[as.Runtime]
		if !ok {
			return a.report(ctx, as, statusError, fmt.Sprintf("this node has no runtime %q", as.Runtime))
		}
		env, err := a.configure(as, rt)
		if err != nil {
			return a.report(ctx, as, statusError, err.Error())
		}
		log.Info("creating agent container")
		started := time.Now()
		c, err := a.driver.Create(ctx, driver.AgentSpec{
			AgentID: as.AgentID, Image: rt.Image, CPUMillis: as.CPUMillis, MemoryMB: as.MemoryMB,
			HostPort: as.Port, RuntimePort: rt.Port, Env: env,
			Labels: map[string]string{"agenthost.org": as.OrgID, "agenthost.runtime": as.Runtime},
		})
		if errors.Is(err, driver.ErrImageMissing) {
			return a.report(ctx, as, statusError, fmt.Sprintf("the runtime image %s is not on node %s", rt.Image, a.cfg.Name))
		}
		if err != nil {
			return a.report(ctx, as, statusError, fmt.Sprintf("could not start the agent's container: %v", err))
		}
		a.checkHealth(ctx, as, c.Address, "create", started)
	case ActStart:
		// The model, hidden prompt and secrets may have changed while it
		// was stopped; the files are read, and the environment set, at start.
		var env []string
		if rt, ok := a.cfg.Runtimes[as.Runtime]; ok {
			var err error
			if env, err = a.configure(as, rt); err != nil {
				return a.report(ctx, as, statusError, err.Error())
			}
		}
		log.Info("starting agent container")
		started := time.Now()
		c, err := a.driver.Start(ctx, as.AgentID, env)
		if err != nil {
			return a.report(ctx, as, statusError, fmt.Sprintf("could not start the agent's container: %v", err))
		}
		a.checkHealth(ctx, as, c.Address, "start", started)
	case ActCheck:
		a.checkHealth(ctx, as, c.Address, "", time.Time{})
	case ActStop:
		a.runtimes.drop(as.AgentID)
		log.Info("stopping agent container")
		if err := a.driver.Stop(ctx, as.AgentID, a.cfg.StopGrace); err != nil {
			return err
		}
		return a.report(ctx, as, statusStopped, "")
	case ActDelete:
		a.runtimes.drop(act.AgentID)
		log.Info("deleting container of an agent not assigned here")
		if err := a.driver.Stop(ctx, act.AgentID, a.cfg.StopGrace); err != nil {
			return err
		}
		return a.driver.Delete(ctx, act.AgentID)
	case ActReport:
		return a.report(ctx, as, act.Status, act.ErrorMsg)
	}
	return nil
}

// checkHealth waits, in the background, for the runtime's health endpoint at
// addr (where the node reaches the runtime), then reports RUNNING; past
// HealthTimeout it reports ERROR. A healthy runtime's time since the action
// started (zero: not measured) is recorded.
func (a *Agent) checkHealth(ctx context.Context, as Assignment, addr, action string, started time.Time) {
	a.mu.Lock()
	if a.checking[as.AgentID] {
		a.mu.Unlock()
		return
	}
	a.checking[as.AgentID] = true
	a.mu.Unlock()
	go func() {
		defer func() {
			a.mu.Lock()
			delete(a.checking, as.AgentID)
			a.mu.Unlock()
		}()
		rt := a.cfg.Runtimes[as.Runtime]
		deadline := time.Now().Add(a.cfg.HealthTimeout)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if a.healthy(ctx, addr, rt.HealthPath, as.RuntimePassword) {
				if cur, ok := a.assignment(as.AgentID); rt.Adapter != "" && ok && cur.Desired == "running" {
					a.runtimes.set(as.AgentID, rt.Adapter, addr, as.RuntimePassword)
				}
				a.metrics.observeStart(action, started)
				if err := a.report(ctx, as, statusRunning, ""); err != nil {
					a.logger.Warn("could not report a healthy agent", "agent", as.AgentID, "error", err)
				} else if action != "" {
					a.logger.Info("agent healthy", "agent", as.AgentID, "after", action, "elapsed", time.Since(started).Round(time.Millisecond))
				}
				return
			}
			time.Sleep(a.cfg.HealthInterval)
		}
		if ctx.Err() == nil {
			msg := fmt.Sprintf("the agent did not answer on its health endpoint within %s", a.cfg.HealthTimeout)
			if err := a.report(ctx, as, statusError, msg); err != nil {
				a.logger.Warn("could not report an unhealthy agent", "agent", as.AgentID, "error", err)
			}
		}
	}()
}

func (a *Agent) healthy(ctx context.Context, addr, path, password string) bool {
	if addr == "" {
		return false // a container without a network cannot be reached
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return false
	}
	if password != "" {
		req.SetBasicAuth(opencode.Username, password)
	}
	resp, err := a.health.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// report records a status with the control plane, unless it has it already.
func (a *Agent) report(ctx context.Context, as Assignment, status, msg string) error {
	if as.Status == status && as.ErrorMsg == msg {
		return nil
	}
	c, _ := a.control()
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := c.ReportAgentStatus(callCtx, connect.NewRequest(&nodev1.ReportAgentStatusRequest{
		NodeId: a.cfg.Name, AgentId: as.AgentID, Status: status, ErrorMsg: msg,
	}))
	if err != nil {
		a.failover()
		return fmt.Errorf("report %s: %w", status, err)
	}
	return nil
}

// backoff waits 100 ms doubling to 5 s between attempts.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }
func (b *backoff) reset()  { b.d = 100 * time.Millisecond }
func (b *backoff) wait(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(b.d):
	}
	b.d = min(2*b.d, 5*time.Second)
}
