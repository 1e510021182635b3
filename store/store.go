package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Forwarder carries requests that only the leader can serve to the leader's
// cluster address. Package store/clusterrpc implements it over Connect.
//
// Errors it returns must keep the store's sentinels (ErrorFromCode): in
// particular ErrNotLeader or ErrNoLeader when nothing was applied and the
// request may safely be retried elsewhere, and ErrOutcomeUnknown when the
// request may have been applied.
type Forwarder interface {
	ForwardApply(ctx context.Context, leaderAddr string, cmd []byte) (index uint64, err error)
	ForwardReadIndex(ctx context.Context, leaderAddr string) (index uint64, err error)
}

// LeadershipHook is leader-only work (the scheduler, reapers, node-health
// checks). EstablishLeadership runs once this server leads and its state
// reflects every earlier write; ctx is cancelled when leadership is lost,
// just before RevokeLeadership runs.
type LeadershipHook interface {
	EstablishLeadership(ctx context.Context) error
	RevokeLeadership()
}

// Placer places agents; it runs on the leader (package store/placement).
// ApplyLocal hands it every AgentCreate without a node and every
// AgentSetDesired to running, so that placement, port allocation and plan caps
// are decided in one place, in batches, whichever server the request reached.
type Placer interface {
	Place(ctx context.Context, cmd Command) (index uint64, err error)
}

// ErrShutdown is returned by calls made after Shutdown.
var ErrShutdown = errors.New("store is shut down")

// Store is one control node's replica of the cluster state.
type Store struct {
	cfg       *Config
	logger    *slog.Logger
	fsm       *FSM
	raft      *raft.Raft
	transport *raft.NetworkTransport
	logStore  *raftboltdb.BoltStore
	forwarder Forwarder
	metrics   *Metrics
	hadState  bool
	placer    atomic.Pointer[placerBox]
	// behindUntil is an index this server failed to reach in CatchUp; until
	// it has applied that far it refuses writes (ErrBehind) instead of
	// committing what it could not show.
	behindUntil atomic.Uint64

	leaderNotify chan bool
	// leaderReady is true from the post-election barrier until leadership
	// is lost; IsLeader and ReadIndex read it without locks.
	leaderReady atomic.Bool
	// leaderTerm is the term whose post-election barrier set leaderReady.
	// ReadIndex compares it with the current term: between winning a new
	// term and the leadership loop's revoke of the old one, leaderReady is
	// still true but the new term's barrier has not committed yet.
	leaderTerm atomic.Uint64
	// hookMu serialises hook calls and guards hooks and leaderCancel. Only
	// the leadership loop and RegisterLeadershipHook take it, never a read
	// or write path, so a hook may call into the store freely.
	hookMu       sync.Mutex
	hooks        []LeadershipHook
	leaderCancel context.CancelFunc

	shutdownOnce sync.Once
	shutdownCh   chan struct{}
	wg           sync.WaitGroup

	// readMu guards the read-index batches of ConsistentState: callers
	// that arrive while one is in flight share the next.
	readMu      sync.Mutex
	readRunning bool
	readNext    *readBatch
}

// readBatch is one read index shared by the ConsistentState calls that
// arrived before it began.
type readBatch struct {
	done  chan struct{}
	index uint64
	err   error
}

// Open starts a store on layer (see ClusterListener.RaftLayer). A server with
// state in DataDir rejoins its cluster; a new one waits for Bootstrap or for
// the leader to add it. fwd may be nil on a single server that never forwards.
func Open(cfg *Config, layer raft.StreamLayer, fwd Forwarder) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("store config: %w", err)
	}
	logger := cfg.Logger.With("component", "store", "server", cfg.ServerID)
	raftDir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return nil, fmt.Errorf("create raft dir: %w", err)
	}
	logStore, err := raftboltdb.NewBoltStore(filepath.Join(raftDir, "raft.db"))
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, cfg.SnapshotRetain, newRaftLogger(logger))
	if err != nil {
		logStore.Close()
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	hadState, err := raft.HasExistingState(logStore, logStore, snaps)
	if err != nil {
		logStore.Close()
		return nil, fmt.Errorf("read raft state: %w", err)
	}

	var metrics *Metrics
	if cfg.Registerer != nil {
		metrics = NewMetrics(cfg.Registerer)
	}
	shutdownCh := make(chan struct{})
	s := &Store{
		cfg:          cfg,
		logger:       logger,
		fsm:          NewFSM(logger, metrics),
		logStore:     logStore,
		forwarder:    fwd,
		metrics:      metrics,
		hadState:     hadState,
		leaderNotify: make(chan bool, 8),
		shutdownCh:   shutdownCh,
	}
	s.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 5,
		Timeout: 10 * time.Second,
		Logger:  newRaftLogger(logger),
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ServerID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.MaxAppendEntries = cfg.MaxAppendEntries
	rc.BatchApplyCh = true
	rc.NotifyCh = s.leaderNotify
	rc.Logger = newRaftLogger(logger)
	rc.NoLegacyTelemetry = true

	stable := &patientStable{StableStore: logStore, logger: logger, retry: time.Second, shutdown: shutdownCh}
	s.raft, err = raft.NewRaft(rc, s.fsm, logStore, stable, snaps, s.transport)
	if err != nil {
		s.transport.Close()
		logStore.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	if cfg.Registerer != nil {
		registerRaftGauges(cfg.Registerer, s.raft, s.fsm)
		cfg.Registerer.MustRegister(newClusterCollector(s))
	}
	s.wg.Add(1)
	go s.leadershipLoop()
	return s, nil
}

type placerBox struct{ p Placer }

// SetPlacer installs the placer that ApplyLocal hands placement requests to
// (nil removes it; without one they go to the FSM as they are).
func (s *Store) SetPlacer(p Placer) {
	if p == nil {
		s.placer.Store(nil)
		return
	}
	s.placer.Store(&placerBox{p: p})
}

// SetChangeHandler installs the handler that follows every state change.
func (s *Store) SetChangeHandler(h ChangeHandler) { s.fsm.SetChangeHandler(h) }

// ServerID returns this server's Raft id.
func (s *Store) ServerID() string { return s.cfg.ServerID }

// HasState reports whether this server is part of a cluster already (it has
// Raft state on disk, or has been bootstrapped or added since it started).
func (s *Store) HasState() bool { return s.hadState || s.raft.LastIndex() > 0 }

// Server is one member of the Raft configuration.
type Server struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
}

// Bootstrap forms a new cluster of the given voters (which must include this
// server). Every server started with the same expected set may call it with
// the same list; Raft treats identical bootstraps as one.
func (s *Store) Bootstrap(servers []Server) error {
	var conf raft.Configuration
	for _, srv := range servers {
		suffrage := raft.Voter
		if !srv.Voter {
			suffrage = raft.Nonvoter
		}
		conf.Servers = append(conf.Servers, raft.Server{
			Suffrage: suffrage, ID: raft.ServerID(srv.ID), Address: raft.ServerAddress(srv.Address),
		})
	}
	if err := s.wait(s.raft.BootstrapCluster(conf)); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("bootstrap: %w", err)
	}
	return nil
}

// BootstrapSelf forms a single-server cluster (dev, or the first server of a
// cluster grown one server at a time).
func (s *Store) BootstrapSelf() error {
	return s.Bootstrap([]Server{{ID: s.cfg.ServerID, Address: s.cfg.AdvertiseAddr, Voter: true}})
}

// AddServer adds a server to the configuration, or updates its address. Leader only.
func (s *Store) AddServer(srv Server) (uint64, error) {
	var f raft.IndexFuture
	if srv.Voter {
		f = s.raft.AddVoter(raft.ServerID(srv.ID), raft.ServerAddress(srv.Address), 0, s.cfg.ApplyTimeout)
	} else {
		f = s.raft.AddNonvoter(raft.ServerID(srv.ID), raft.ServerAddress(srv.Address), 0, s.cfg.ApplyTimeout)
	}
	if err := s.wait(f); err != nil {
		return 0, s.raftError(err)
	}
	return f.Index(), nil
}

// RemoveServer removes a server from the configuration. Leader only.
func (s *Store) RemoveServer(id string) (uint64, error) {
	f := s.raft.RemoveServer(raft.ServerID(id), 0, s.cfg.ApplyTimeout)
	if err := s.wait(f); err != nil {
		return 0, s.raftError(err)
	}
	return f.Index(), nil
}

// Status is this server's view of the Raft cluster.
type Status struct {
	ServerID      string   `json:"serverId"`
	Address       string   `json:"address"`
	State         string   `json:"state"`
	LeaderID      string   `json:"leaderId"`
	LeaderAddress string   `json:"leaderAddress"`
	Term          uint64   `json:"term"`
	LastIndex     uint64   `json:"lastIndex"`
	CommitIndex   uint64   `json:"commitIndex"`
	AppliedIndex  uint64   `json:"appliedIndex"`
	HasState      bool     `json:"hasState"`
	Servers       []Server `json:"servers"`
}

// Status reports this server's view of the cluster.
func (s *Store) Status() Status {
	addr, id := s.raft.LeaderWithID()
	st := Status{
		ServerID:      s.cfg.ServerID,
		Address:       s.cfg.AdvertiseAddr,
		State:         s.raft.State().String(),
		LeaderID:      string(id),
		LeaderAddress: string(addr),
		Term:          s.raft.CurrentTerm(),
		LastIndex:     s.raft.LastIndex(),
		CommitIndex:   s.raft.CommitIndex(),
		AppliedIndex:  s.fsm.AppliedIndex(),
		HasState:      s.HasState(),
	}
	if f := s.raft.GetConfiguration(); s.wait(f) == nil {
		for _, srv := range f.Configuration().Servers {
			st.Servers = append(st.Servers, Server{ID: string(srv.ID), Address: string(srv.Address), Voter: srv.Suffrage == raft.Voter})
		}
	}
	return st
}

// IsLeader reports whether this server leads and has caught up with every
// write of earlier terms.
func (s *Store) IsLeader() bool {
	return s.leaderReady.Load() && s.raft.State() == raft.Leader
}

// Leader returns the id and cluster address of the leader, if known.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// State returns an immutable snapshot of this server's state. It may lag the
// leader by the replication delay; use ConsistentState to read your writes
// from a follower.
func (s *Store) State() *State { return s.fsm.State() }

// Restored is FSM.Restored: the state this server last installed from a
// snapshot, as installed.
func (s *Store) Restored() *StateDigest { return s.fsm.Restored() }

// AppliedIndex is the Raft index of the last command this server applied
// (refused and no-op commands included). A State taken after reading it
// reflects at least everything up to it, so watchers read AppliedIndex, then
// State, then WaitForIndex(AppliedIndex+1), and never miss a change.
func (s *Store) AppliedIndex() uint64 { return s.fsm.AppliedIndex() }

// WaitForIndex blocks until this server has applied the command at index, or
// ctx ends.
func (s *Store) WaitForIndex(ctx context.Context, index uint64) error {
	if !s.fsm.WaitForIndex(index, ctx.Done()) {
		return ctx.Err()
	}
	return nil
}

// CatchUp waits until this server has applied index (a write it made, a
// read index), for at most ApplyTimeout. A server whose log has stopped
// advancing (a full disk, say) would otherwise hold its caller until the
// space came back; it returns an error wrapping ErrBehind instead, and
// refuses further writes up front until it has applied index.
func (s *Store) CatchUp(ctx context.Context, index uint64) error {
	waitCtx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	if err := s.WaitForIndex(waitCtx, index); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for {
			old := s.behindUntil.Load()
			if old >= index || s.behindUntil.CompareAndSwap(old, index) {
				break
			}
		}
		applied := s.AppliedIndex()
		s.logger.Warn("this server is behind the cluster: it has not applied a committed index in time",
			"index", index, "applied", applied, "waited", s.cfg.ApplyTimeout)
		return fmt.Errorf("%w: index %d is committed but this server has applied only up to %d after %s (is its disk full?)",
			ErrBehind, index, applied, s.cfg.ApplyTimeout)
	}
	return nil
}

// refuseWhileBehind is the up-front refusal of CatchUp.
func (s *Store) refuseWhileBehind() error {
	if until, applied := s.behindUntil.Load(), s.AppliedIndex(); applied < until {
		return fmt.Errorf("%w: it has applied up to %d of at least %d; nothing was written", ErrBehind, applied, until)
	}
	return nil
}

// Apply commits a command through Raft and returns the index it was applied
// at. On a follower it is forwarded to the leader; while no leader is known it
// waits for one, up to ApplyTimeout. A command the FSM refused returns the
// refusing error (test with errors.Is) and changed nothing.
func (s *Store) Apply(ctx context.Context, cmd Command) (uint64, error) {
	buf, err := Encode(cmd)
	if err != nil {
		return 0, err
	}
	return s.ApplyEncoded(ctx, buf)
}

// ApplyEncoded is Apply for a command already in log form.
func (s *Store) ApplyEncoded(ctx context.Context, buf []byte) (uint64, error) {
	if err := s.refuseWhileBehind(); err != nil {
		return 0, err
	}
	start := time.Now()
	path := "leader"
	var index uint64
	err := s.retryOnLeader(ctx, func(ctx context.Context, leaderAddr string) error {
		var err error
		if leaderAddr == "" {
			path = "leader"
			index, err = s.ApplyLocal(ctx, buf)
		} else {
			path = "forwarded"
			index, err = s.forwarder.ForwardApply(ctx, leaderAddr, buf)
		}
		return err
	})
	s.metrics.observeWrite(path, err, time.Since(start))
	return index, err
}

// ApplyLocal commits a command on this server, which must be the leader; it
// never forwards. ClusterService calls it for forwarded writes. Placement
// requests go to the placer when one is installed.
func (s *Store) ApplyLocal(ctx context.Context, buf []byte) (uint64, error) {
	if len(buf) == 0 {
		return 0, fmt.Errorf("%w: empty command", ErrMalformedCommand)
	}
	if box := s.placer.Load(); box != nil && needsPlacement(buf) {
		cmd, err := Decode(buf)
		if err != nil {
			return 0, err
		}
		if placementRequest(cmd) {
			if s.raft.State() != raft.Leader {
				return 0, s.notLeader()
			}
			return box.p.Place(ctx, cmd)
		}
	}
	f := s.raft.Apply(buf, s.cfg.ApplyTimeout)
	if err := s.wait(f); err != nil {
		return 0, s.raftError(err)
	}
	switch resp := f.Response().(type) {
	case error:
		return f.Index(), resp
	case *PlanResult:
		return f.Index(), fmt.Errorf("%w: plans are committed with ApplyPlan", ErrInvalid)
	}
	return f.Index(), nil
}

// needsPlacement is a cheap first look at the type byte.
func needsPlacement(buf []byte) bool {
	t := CommandType(buf[0])
	return t == CmdAgentCreate || t == CmdAgentSetDesired
}

// placementRequest reports whether cmd asks the scheduler for a placement: a
// new agent without a node, or a start.
func placementRequest(cmd Command) bool {
	switch c := cmd.(type) {
	case *AgentCreate:
		return c.Agent.NodeID == ""
	case *AgentSetDesired:
		return c.Desired == DesiredRunning
	}
	return false
}

// ApplyPlan commits a plan and returns one outcome per item. Leader only;
// the placer calls it.
func (s *Store) ApplyPlan(plan *PlanApply) (uint64, *PlanResult, error) {
	buf, err := Encode(plan)
	if err != nil {
		return 0, nil, err
	}
	f := s.raft.Apply(buf, s.cfg.ApplyTimeout)
	if err := s.wait(f); err != nil {
		return 0, nil, s.raftError(err)
	}
	switch resp := f.Response().(type) {
	case error:
		return f.Index(), nil, resp
	case *PlanResult:
		return f.Index(), resp, nil
	}
	return f.Index(), nil, fmt.Errorf("plan at index %d returned no result", f.Index())
}

// ConsistentState returns a state that reflects every write acknowledged
// before the call, on any server (a linearizable read). The leader proves it
// still leads (ReadIndex) and reports its applied index; this server waits
// until it has applied that far.
//
// Concurrent callers share read indexes: one is asked for at a time, by all
// who arrived before it began, so a flood of such reads (tenants polling
// their agents on a follower, say) costs the leader one heartbeat round per
// round trip, not one per read.
func (s *Store) ConsistentState(ctx context.Context) (*State, error) {
	s.readMu.Lock()
	if s.readNext == nil {
		s.readNext = &readBatch{done: make(chan struct{})}
	}
	b := s.readNext
	if !s.readRunning {
		s.startReadBatch()
	}
	s.readMu.Unlock()
	select {
	case <-b.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if b.err != nil {
		return nil, b.err
	}
	if err := s.CatchUp(ctx, b.index); err != nil {
		return nil, fmt.Errorf("read index %d: %w", b.index, err)
	}
	return s.State(), nil
}

// startReadBatch asks for the pending batch's read index; the next batch
// starts when it is answered. readMu is held.
func (s *Store) startReadBatch() {
	b := s.readNext
	s.readNext, s.readRunning = nil, true
	go func() {
		// The batch is not any one caller's: it runs until answered or
		// until the store shuts down (retryOnLeader bounds it too).
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-s.shutdownCh:
				cancel()
			case <-ctx.Done():
			}
		}()
		b.index, b.err = s.readIndex(ctx)
		cancel()
		close(b.done)
		s.readMu.Lock()
		s.readRunning = false
		if s.readNext != nil {
			s.startReadBatch()
		}
		s.readMu.Unlock()
	}()
}

// readIndex asks the leader (this server or another) for a read index.
func (s *Store) readIndex(ctx context.Context) (uint64, error) {
	var index uint64
	err := s.retryOnLeader(ctx, func(ctx context.Context, leaderAddr string) error {
		var err error
		if leaderAddr == "" {
			index, err = s.ReadIndex()
		} else {
			index, err = s.forwarder.ForwardReadIndex(ctx, leaderAddr)
		}
		return err
	})
	return index, err
}

// ReadIndex is the leader's half of ConsistentState: an index such that a
// state that has applied it reflects every write acknowledged before the
// call. Leader only.
//
// It costs a heartbeat round to a quorum (Raft's VerifyLeader), not a log
// entry: no write, no fsync. Why this leader's applied index is enough once
// VerifyLeader succeeds, for a write acknowledged before the call:
//
//   - Acknowledged in an earlier term: this leader established leadership
//     with a barrier committed in its own term (leadershipLoop), and Raft
//     applies a barrier only after every entry before it. leaderTerm
//     records that term; a leader whose barrier has not committed yet (its
//     commit index may still be a follower's stale one) answers not-leader.
//   - Acknowledged in this term: only this server leads it, and it
//     acknowledges a write only once its own FSM has applied it (the Apply
//     future answers after the FSM).
//   - Acknowledged in a later term: that term's leader was elected by a
//     quorum before the write, so before this call; any of that quorum
//     answers this term's heartbeats with a refusal, and VerifyLeader fails.
//     The term is read again afterwards, so the quorum that answered did so
//     in the term whose barrier leaderTerm vouches for.
//
// No clock is trusted: a deposed leader that has not noticed yet fails
// VerifyLeader rather than serving from a lease.
func (s *Store) ReadIndex() (uint64, error) {
	term := s.raft.CurrentTerm()
	if !s.IsLeader() || s.leaderTerm.Load() != term {
		return 0, s.notLeader()
	}
	start := time.Now()
	err := s.wait(s.raft.VerifyLeader())
	if err == nil && s.raft.CurrentTerm() != term {
		err = fmt.Errorf("term changed from %d during the check", term)
	}
	s.metrics.observeReadIndex(err, time.Since(start))
	if err != nil {
		// A read has no effect, so any failure may be retried.
		return 0, fmt.Errorf("%w: verify leadership: %v", ErrNoLeader, err)
	}
	return s.fsm.AppliedIndex(), nil
}

// retryOnLeader runs fn against the leader — locally (leaderAddr "") or at
// its address — retrying while no leader is known or the one tried was not
// the leader any more, until ctx or ApplyTimeout ends.
func (s *Store) retryOnLeader(ctx context.Context, fn func(ctx context.Context, leaderAddr string) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	backoff := 2 * time.Millisecond
	for {
		var err error
		leaderAddr, leaderID := s.raft.LeaderWithID()
		switch {
		case s.raft.State() == raft.Leader:
			err = fn(ctx, "")
		case leaderAddr != "" && string(leaderID) != s.cfg.ServerID && s.forwarder != nil:
			err = fn(ctx, string(leaderAddr))
		default:
			err = fmt.Errorf("%w: electing", ErrNoLeader)
		}
		if err == nil || !(errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoLeader)) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %v)", err, ctx.Err())
		case <-s.shutdownCh:
			return ErrShutdown
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}

// wait waits for a Raft future, or for Shutdown. Raft does not answer futures
// still queued when it shuts down (their Error would block forever), so every
// wait in the store goes through here.
func (s *Store) wait(f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-s.shutdownCh:
		// The entry may have been committed before Raft stopped.
		return fmt.Errorf("%w: server shut down while waiting", ErrOutcomeUnknown)
	}
}

// raftError maps raft's errors onto the store's sentinels.
func (s *Store) raftError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrNotVoter):
		return s.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		// Never entered the log: safe to retry.
		return fmt.Errorf("%w: %v", ErrNoLeader, err)
	case diskFull(err):
		// The leader could not append the entry to its own log and
		// stepped down; an entry not in the leader's log reaches no other
		// server, so nothing was written and the next leader may take it.
		return fmt.Errorf("%w: the leader could not write its log and stepped down: %v", ErrNoLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		// Refused before it entered the log: another server may take it.
		return fmt.Errorf("%w: %w", ErrNoLeader, ErrShutdown)
	}
	return err
}

func (s *Store) notLeader() error {
	id, addr := s.Leader()
	if id == s.cfg.ServerID {
		id, addr = "", ""
	}
	return &NotLeaderError{LeaderID: id, LeaderAddress: addr}
}

// RegisterLeadershipHook adds leader-only work. If this server already leads,
// the hook is established at once. Hooks must return promptly: Raft waits for
// the leadership loop before it reports the next change.
func (s *Store) RegisterLeadershipHook(h LeadershipHook) {
	s.hookMu.Lock()
	defer s.hookMu.Unlock()
	s.hooks = append(s.hooks, h)
	if s.leaderReady.Load() {
		ctx, cancel := context.WithCancel(context.Background())
		prev := s.leaderCancel
		s.leaderCancel = func() { prev(); cancel() }
		s.establish(ctx, h)
	}
}

func (s *Store) establish(ctx context.Context, h LeadershipHook) {
	if err := h.EstablishLeadership(ctx); err != nil {
		s.logger.Error("establishing leadership hook failed", "hook", fmt.Sprintf("%T", h), "error", err)
	}
}

// leadershipLoop turns Raft's leadership notifications into hook calls.
// Before establishing, the new leader commits a barrier so that hooks see every
// write of earlier terms.
func (s *Store) leadershipLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.shutdownCh:
			s.revoke()
			return
		case isLeader := <-s.leaderNotify:
			if !isLeader {
				s.revoke()
				continue
			}
			term, ok := s.barrierAsLeader()
			if !ok {
				continue
			}
			s.hookMu.Lock()
			if s.raft.State() == raft.Leader && !s.leaderReady.Load() {
				ctx, cancel := context.WithCancel(context.Background())
				s.leaderCancel = cancel
				s.leaderTerm.Store(term)
				s.leaderReady.Store(true)
				s.logger.Info("established leadership", "term", s.raft.CurrentTerm())
				for _, h := range s.hooks {
					s.establish(ctx, h)
				}
			}
			s.hookMu.Unlock()
		}
	}
}

// barrierAsLeader commits a barrier for a new term, retrying while this
// server stays the leader, and returns the term it was committed in. Raft
// says "leader" once per term: giving up after one failed barrier (an apply
// timeout on a loaded machine) would leave a leader that never runs its
// hooks — no placement, no health — for the whole term. It reports false
// when leadership was lost or the store shuts down.
func (s *Store) barrierAsLeader() (term uint64, ok bool) {
	backoff := 10 * time.Millisecond
	for {
		term := s.raft.CurrentTerm()
		err := s.wait(s.raft.Barrier(s.cfg.ApplyTimeout))
		if err == nil && s.raft.CurrentTerm() != term {
			// Committed, but in which term is not known: leadership
			// changed meanwhile, and the loop hears of it next.
			s.logger.Warn("barrier after election committed across a term change", "term", term)
			return 0, false
		}
		if err == nil {
			return term, true
		}
		if s.raft.State() != raft.Leader {
			s.logger.Warn("barrier after election failed; leadership lost", "error", err)
			return 0, false
		}
		s.logger.Warn("barrier after election failed; retrying", "error", err)
		select {
		case <-s.shutdownCh:
			return 0, false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (s *Store) revoke() {
	s.hookMu.Lock()
	defer s.hookMu.Unlock()
	if !s.leaderReady.Swap(false) {
		return
	}
	s.leaderCancel()
	for i := len(s.hooks) - 1; i >= 0; i-- {
		s.hooks[i].RevokeLeadership()
	}
	s.logger.Info("revoked leadership")
}

// Shutdown stops Raft and closes the log. The state stays on disk for the
// next Open. It is safe to call more than once.
func (s *Store) Shutdown() error {
	var err error
	s.shutdownOnce.Do(func() {
		close(s.shutdownCh)
		err = s.raft.Shutdown().Error()
		s.wg.Wait()
		s.transport.Close()
		if cerr := s.logStore.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// Raft exposes the underlying Raft node to tests and benchmarks in this
// module (the benchmark compares Store.Apply with raw raft.Apply).
func (s *Store) Raft() *raft.Raft { return s.raft }
