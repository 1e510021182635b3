package clusterrpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/agenthost/agenthost/internal/gossip"
	"github.com/agenthost/agenthost/internal/keyring"
	nodev1 "github.com/agenthost/agenthost/proto/agenthost/node/v1"
	"github.com/agenthost/agenthost/proto/agenthost/node/v1/nodev1connect"
	"github.com/agenthost/agenthost/store"
)

// leaderAddressKey is Connect error metadata naming the leader's cluster
// address, so that a node agent whose heartbeat reached a follower moves to it.
const leaderAddressKey = "agenthost-leader-address"

// NodeService serves node agents: registration, heartbeats, their desired
// agents and their status reports. Registration, reports and watches work on
// any control node; heartbeats go to the leader, which alone tracks liveness.
type NodeService struct {
	store   *store.Store
	health  *NodeHealth
	gossip  *gossip.Member
	keyring *keyring.Keyring
	logger  *slog.Logger
}

var _ nodev1connect.NodeServiceHandler = (*NodeService)(nil)

// agentModel is the agent's model, or its org's default.
func agentModel(st *store.State, a *store.Agent) string {
	if a.Model != "" {
		return a.Model
	}
	if org, err := st.Org(a.OrgID); err == nil && org != nil {
		return org.DefaultModel
	}
	return ""
}

func modelProvider(p *store.ModelProvider) *nodev1.ModelProvider {
	if p == nil {
		return nil
	}
	return &nodev1.ModelProvider{Kind: p.Kind, BaseUrl: p.BaseURL, ApiKeyEnv: p.APIKeyEnv, Name: p.Name}
}

// agentEnv opens the secrets an agent gets: its scope's only when it has a
// scope, the org-level ones otherwise. A secret that does not open is left
// out and logged (by key, never by value).
func (n *NodeService) agentEnv(st *store.State, a *store.Agent) map[string]string {
	if n.keyring == nil {
		return nil
	}
	secrets, err := st.Secrets(a.OrgID, a.ScopeID)
	if err != nil {
		n.logger.Error("read secrets", "agent", a.ID, "error", err)
		return nil
	}
	env := map[string]string{}
	for _, sec := range secrets {
		v, err := n.keyring.Open(sec.KeyID, sec.Ciphertext, keyring.SecretAAD(sec.OrgID, sec.ScopeID, sec.Key))
		if err != nil {
			n.logger.Error("a secret does not open; the agent starts without it", "org", sec.OrgID, "scope", sec.ScopeID, "key", sec.Key, "error", err)
			continue
		}
		env[sec.Key] = string(v)
	}
	return env
}

// NewNodeService returns the NodeService handler.
func NewNodeService(s *store.Store, health *NodeHealth, member *gossip.Member, kr *keyring.Keyring, logger *slog.Logger) *NodeService {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &NodeService{store: s, health: health, gossip: member, keyring: kr, logger: logger}
}

// Register adds the node to the pool, or refreshes what is known of it.
func (n *NodeService) Register(ctx context.Context, req *connect.Request[nodev1.RegisterRequest]) (*connect.Response[nodev1.RegisterResponse], error) {
	m := req.Msg
	node := store.Node{
		ID: m.GetNodeId(), Name: m.GetName(), Address: m.GetAddress(), RuntimeServiceAddress: m.GetRuntimeServiceAddress(),
		Capacity: store.NodeCapacity{
			CPUMillis: m.GetCapacity().GetCpuMillis(), MemoryMB: m.GetCapacity().GetMemoryMb(),
			MaxAgents: int(m.GetCapacity().GetMaxAgents()),
		},
		Labels: m.GetLabels(), Runtimes: m.GetRuntimes(), LastSeen: time.Now().UTC(),
	}
	index, err := n.store.Apply(ctx, &store.NodeRegister{Node: node})
	if err != nil {
		return nil, toConnectError(err)
	}
	n.health.Seen(node.ID)
	return connect.NewResponse(&nodev1.RegisterResponse{
		Index: index, HeartbeatTtl: durationpb.New(n.health.TTL()),
		GossipAddresses: n.gossip.Addresses(gossip.ServerPrefix),
	}), nil
}

// Heartbeat tells the leader the node is alive.
func (n *NodeService) Heartbeat(ctx context.Context, req *connect.Request[nodev1.HeartbeatRequest]) (*connect.Response[nodev1.HeartbeatResponse], error) {
	if err := n.health.Heartbeat(ctx, req.Msg.GetNodeId()); err != nil {
		cerr := toConnectError(err)
		if _, addr := n.store.Leader(); addr != "" {
			cerr.Meta().Set(leaderAddressKey, addr)
		}
		return nil, cerr
	}
	return connect.NewResponse(&nodev1.HeartbeatResponse{HeartbeatTtl: durationpb.New(n.health.TTL()), AppliedIndex: n.store.AppliedIndex()}), nil
}

// ReportAgentStatus records what the node observed.
func (n *NodeService) ReportAgentStatus(ctx context.Context, req *connect.Request[nodev1.ReportAgentStatusRequest]) (*connect.Response[nodev1.ReportAgentStatusResponse], error) {
	m := req.Msg
	if m.GetNodeId() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("report needs the node's id"))
	}
	index, err := n.store.Apply(ctx, &store.AgentSetStatus{
		ID: m.GetAgentId(), FromNode: m.GetNodeId(), Status: store.AgentStatus(m.GetStatus()), ErrorMsg: m.GetErrorMsg(),
	})
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&nodev1.ReportAgentStatusResponse{Index: index}), nil
}

// progressEvery bounds how often a watch sends progress messages: often
// enough for a node agent to notice within a few seconds that its server
// stopped advancing, rarely enough that a busy cluster does not send every
// node a message per command.
const progressEvery = time.Second

// WatchAssignments streams the node's desired agents: at once, then whenever
// they change. The first message is always the whole list, also for a
// watcher resuming after an index: the server cannot tell from an index
// alone whether an agent was deleted since. A watcher that asks for progress also hears this server's applied index
// when its list has not changed (see WatchAssignmentsRequest.progress).
func (n *NodeService) WatchAssignments(ctx context.Context, req *connect.Request[nodev1.WatchAssignmentsRequest], stream *connect.ServerStream[nodev1.WatchAssignmentsResponse]) error {
	nodeID := req.Msg.GetNodeId()
	if nodeID == "" {
		return connect.NewError(connect.CodeInvalidArgument, errors.New("watch needs the node's id"))
	}
	last, sent := "", false
	progress := req.Msg.GetProgress()
	var told uint64      // the highest index the watcher has been sent
	var toldAt time.Time // when it was sent
	passwords := newRuntimePasswords(n.keyring, n.logger)
	for {
		applied := n.store.AppliedIndex() // before the state: see Store.AppliedIndex
		st := n.store.State()
		agents, err := st.AgentsByNode(nodeID)
		if err != nil {
			return toConnectError(err)
		}
		// The list is as of applied: nothing changed it between the
		// state's own index and applied.
		resp := &nodev1.WatchAssignmentsResponse{Index: applied}
		var sig strings.Builder
		for _, a := range agents {
			resp.Assignments = append(resp.Assignments, &nodev1.Assignment{
				AgentId: a.ID, OrgId: a.OrgID, Desired: string(a.Desired), Port: uint32(a.Port),
				Runtime: a.Runtime, CpuMillis: a.Resources.CPUMillis, MemoryMb: a.Resources.MemoryMB,
				Model: agentModel(st, a), ModelProvider: modelProvider(a.ModelProvider), HiddenPrompt: a.HiddenPrompt, RuntimePassword: passwords.open(a), ModifyIndex: a.ModifyIndex, Status: string(a.Status), ErrorMsg: a.ErrorMsg,
				Env: n.agentEnv(st, a),
			})
			fmt.Fprintf(&sig, "%s@%d,", a.ID, a.ModifyIndex)
		}
		passwords.keepOnly(func(id string) bool {
			return slices.ContainsFunc(agents, func(a *store.Agent) bool { return a.ID == id })
		})
		// The first list is always sent, even an empty one: a node agent
		// does nothing before it has heard from the control plane, so a
		// node whose agents all moved away while it was down would keep
		// their stale containers forever. Later lists only when they change.
		if !sent || sig.String() != last {
			if err := stream.Send(resp); err != nil {
				return err
			}
			sent, told, toldAt = true, applied, time.Now()
		} else if progress && applied > told && time.Since(toldAt) >= progressEvery {
			if err := stream.Send(&nodev1.WatchAssignmentsResponse{Index: applied, ProgressOnly: true}); err != nil {
				return err
			}
			told, toldAt = applied, time.Now()
		}
		last = sig.String()
		// A watcher owed progress is woken when it is due even if nothing
		// else is applied meanwhile.
		waitCtx, cancel := ctx, context.CancelFunc(func() {})
		if progress && applied > told {
			waitCtx, cancel = context.WithTimeout(ctx, progressEvery-time.Since(toldAt))
		}
		err = n.store.WaitForIndex(waitCtx, applied+1)
		cancel()
		if ctx.Err() != nil {
			return nil // the node went away
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return toConnectError(err)
		}
	}
}

// NodeHealth is the leader's view of node liveness: a node whose heartbeats
// stop for TTL is marked down (its agents are then re-placed by placement), and
// marked ready again when it heartbeats. It is a store leadership hook.
type NodeHealth struct {
	store  *store.Store
	ttl    time.Duration
	logger *slog.Logger

	mu       sync.Mutex
	active   bool
	lastSeen map[string]time.Time
	// answers, when set, is asked before a node gossip declared dead is
	// marked down: whether the node answers this server itself.
	answers func(nodeID string) bool
}

// ConfirmWith sets the leader's own check of a node gossip declared dead
// (gossip.Member.Answers): a node that answers it is not marked down.
func (h *NodeHealth) ConfirmWith(answers func(nodeID string) bool) {
	h.mu.Lock()
	h.answers = answers
	h.mu.Unlock()
}

// NewNodeHealth returns the tracker; register it as a leadership hook.
func NewNodeHealth(s *store.Store, ttl time.Duration, logger *slog.Logger) *NodeHealth {
	return &NodeHealth{store: s, ttl: ttl, logger: logger.With("component", "node-health"), lastSeen: map[string]time.Time{}}
}

// TTL is how long a node may go without a heartbeat.
func (h *NodeHealth) TTL() time.Duration { return h.ttl }

// Seen records a sign of life without the leader check (registration).
func (h *NodeHealth) Seen(nodeID string) {
	h.mu.Lock()
	h.lastSeen[nodeID] = time.Now()
	h.mu.Unlock()
}

// GossipDead marks a node down at once when gossip declares it dead (leader
// only; followers ignore it) and the node does not answer the leader itself
// (ConfirmWith). Heartbeats stay the backstop for a node whose gossip is
// blocked while its heartbeats are not, and the way back to ready.
func (h *NodeHealth) GossipDead(nodeID string) {
	h.mu.Lock()
	active, answers := h.active, h.answers
	h.mu.Unlock()
	if !active {
		return
	}
	go func() {
		node, err := h.store.State().Node(nodeID)
		if err != nil || node == nil || node.Status == store.NodeDown {
			return
		}
		if answers != nil && answers(nodeID) {
			h.logger.Warn("gossip declared the node dead, but it answers this leader; not marking it down", "node", nodeID)
			return
		}
		h.logger.Warn("gossip declared the node dead; marking it down", "node", nodeID)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := h.store.Apply(ctx, &store.NodeSetStatus{ID: nodeID, Status: store.NodeDown}); err != nil {
			h.logger.Warn("could not mark node down", "node", nodeID, "error", err)
		}
	}()
}

// Heartbeat records a heartbeat; on a node marked down it marks it ready.
func (h *NodeHealth) Heartbeat(ctx context.Context, nodeID string) error {
	h.mu.Lock()
	if !h.active {
		h.mu.Unlock()
		return &store.NotLeaderError{}
	}
	h.lastSeen[nodeID] = time.Now()
	h.mu.Unlock()
	node, err := h.store.State().Node(nodeID)
	if err != nil {
		return err
	}
	if node == nil {
		return fmt.Errorf("%w: node %s is not registered", store.ErrNotFound, nodeID)
	}
	if node.Status == store.NodeDown {
		h.logger.Info("node is back", "node", nodeID)
		// A node that was draining when it went down goes on draining.
		status := store.NodeReady
		if node.Drain != nil {
			status = store.NodeDraining
		}
		_, err := h.store.Apply(ctx, &store.NodeSetStatus{ID: nodeID, Status: status, LastSeen: time.Now().UTC()})
		return err
	}
	return nil
}

// EstablishLeadership starts the expiry checks, giving every node a full
// TTL from now: the old leader's view of heartbeats is gone.
func (h *NodeHealth) EstablishLeadership(ctx context.Context) error {
	h.mu.Lock()
	h.active = true
	now := time.Now()
	for id := range h.lastSeen {
		h.lastSeen[id] = now
	}
	h.mu.Unlock()
	go h.run(ctx)
	return nil
}

// RevokeLeadership stops marking nodes down.
func (h *NodeHealth) RevokeLeadership() {
	h.mu.Lock()
	h.active = false
	h.mu.Unlock()
}

func (h *NodeHealth) run(ctx context.Context) {
	ticker := time.NewTicker(h.ttl / 4)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		nodes, err := h.store.State().Nodes()
		if err != nil {
			continue
		}
		for _, id := range h.expired(nodes, time.Now()) {
			h.logger.Warn("node missed its heartbeats; marking it down", "node", id, "ttl", h.ttl)
			if _, err := h.store.Apply(ctx, &store.NodeSetStatus{ID: id, Status: store.NodeDown}); err != nil {
				h.logger.Warn("could not mark node down", "node", id, "error", err)
			}
		}
	}
}

// expired lists, sorted, the nodes not marked down that this leader has
// not heard from for the TTL at now. A node it sees here for the first time
// — registered through a follower, or known before this leader began — gets
// a full TTL from now: judging it from the leader's start would mark a node
// that joins a long-running cluster down before its first heartbeat could
// arrive.
func (h *NodeHealth) expired(nodes []*store.Node, now time.Time) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	known := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		known[n.ID] = true
		seen, ok := h.lastSeen[n.ID]
		if !ok {
			h.lastSeen[n.ID] = now
			continue
		}
		if n.Status != store.NodeDown && now.Sub(seen) > h.ttl {
			out = append(out, n.ID)
		}
	}
	for id := range h.lastSeen {
		if !known[id] {
			delete(h.lastSeen, id) // a removed node
		}
	}
	slices.Sort(out)
	return out
}
