// Package placement runs the scheduler on the leader. It receives placement
// requests (new agents, starts) from the store's ApplyLocal, batches the ones
// that arrive together, asks the pure scheduler for decisions against its
// model, commits them as one PlanApply entry, and answers each caller with its
// own outcome. Decisions the FSM refuses because the model was stale are
// retried on the refreshed model. It also re-places the agents of nodes that
// go down, or fails them, as the cluster's reschedule policy says.
//
// The model (a scheduler.Cluster) follows the store through its change feed,
// so it never needs rebuilding except after a snapshot restore or a change of
// leader. Imported by the control node's assembly (store/clusterrpc, cmd).
package placement

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agenthost/agenthost/scheduler"
	"github.com/agenthost/agenthost/store"
)

// Config configures the placement service.
type Config struct {
	// MaxBatch bounds the requests committed in one Raft entry.
	MaxBatch int
	// MaxWait bounds how long the first request of a batch waits for others.
	// Requests queue while a plan commits, so under load batches fill
	// without waiting; MaxWait only adds latency at low load.
	MaxWait time.Duration
	// MaxAttempts bounds how often one request is re-decided after the FSM
	// refused a decision made on a stale model.
	MaxAttempts int
	// RescheduleInterval is how often the leader looks again for agents that
	// should run but sit on down nodes (a re-placement may have found no room).
	RescheduleInterval time.Duration
	// SampleSize is the scheduler's number of feasible nodes compared.
	SampleSize int
	Logger     *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
}

// DefaultConfig returns the production settings.
func DefaultConfig() Config {
	return Config{
		MaxBatch:           256,
		MaxWait:            500 * time.Microsecond,
		MaxAttempts:        5,
		RescheduleInterval: 10 * time.Second,
		SampleSize:         scheduler.DefaultSampleSize,
		Logger:             slog.Default(),
	}
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	if c.MaxBatch < 1 || c.MaxWait < 0 || c.MaxAttempts < 1 || c.RescheduleInterval <= 0 || c.Logger == nil {
		return errors.New("placement config: batch, attempts and interval must be positive, wait non-negative, logger set")
	}
	return nil
}

// Service is the leader's placement service.
type Service struct {
	cfg     Config
	store   *store.Store
	logger  *slog.Logger
	metrics *metrics

	requests chan *request
	kick     chan struct{} // a node went down: reschedule soon

	// mu guards the model and what it is in step with.
	mu         sync.Mutex
	model      *scheduler.Cluster
	modelIndex uint64
	tracking   bool // the change feed updates the model (only while leading)
	stale      bool // rebuild before the next decision

	seed   atomic.Uint64
	active atomic.Bool
	// lastBatch is the size of the previous batch: waiting for company only
	// pays when requests have been arriving together (run goroutine only).
	lastBatch int
	cancel    context.CancelFunc
	done      chan struct{}
}

type request struct {
	ctx      context.Context
	cmd      store.Command
	attempts int
	reply    chan outcome
}

type outcome struct {
	index uint64
	err   error
}

// New installs the placement service on st: as its placer, its change
// handler and a leadership hook.
func New(st *store.Store, cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{
		cfg:      cfg,
		store:    st,
		logger:   cfg.Logger.With("component", "placement"),
		metrics:  newMetrics(cfg.Registerer),
		requests: make(chan *request, 4*cfg.MaxBatch),
		kick:     make(chan struct{}, 1),
	}
	st.SetChangeHandler(s)
	st.SetPlacer(s)
	st.RegisterLeadershipHook(s)
	return s, nil
}

// EstablishLeadership builds the model and starts deciding.
func (s *Service) EstablishLeadership(ctx context.Context) error {
	s.mu.Lock()
	s.tracking = true
	err := s.rebuildLocked()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.done = make(chan struct{})
	s.active.Store(true)
	go s.run(ctx, s.done)
	s.requestReschedule()
	return nil
}

// RevokeLeadership stops deciding; queued requests are answered "not
// leader", so their callers retry on the new leader.
func (s *Service) RevokeLeadership() {
	s.active.Store(false)
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
	s.mu.Lock()
	s.tracking = false
	s.mu.Unlock()
	for {
		select {
		case r := <-s.requests:
			r.reply <- outcome{err: fmt.Errorf("%w: leadership lost before placement", store.ErrNotLeader)}
		default:
			return
		}
	}
}

// Place queues a placement request and waits for its outcome.
func (s *Service) Place(ctx context.Context, cmd store.Command) (uint64, error) {
	if !s.active.Load() {
		return 0, fmt.Errorf("%w: placement is not running on this server yet", store.ErrNoLeader)
	}
	start := time.Now()
	r := &request{ctx: ctx, cmd: cmd, reply: make(chan outcome, 1)}
	select {
	case s.requests <- r:
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: %v", store.ErrNoLeader, ctx.Err())
	}
	select {
	case o := <-r.reply:
		s.metrics.observePlacement(o.err, time.Since(start))
		return o.index, o.err
	case <-ctx.Done():
		// The request may still be committed.
		return 0, fmt.Errorf("%w: %v", store.ErrOutcomeUnknown, ctx.Err())
	}
}

func (s *Service) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	ticker := time.NewTicker(s.cfg.RescheduleInterval)
	defer ticker.Stop()
	for {
		var batch []*request
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			s.reschedule()
			continue
		case <-s.kick:
			s.reschedule()
			continue
		case r := <-s.requests:
			batch = append(batch, r)
		}
		batch = s.fill(ctx, batch)
		s.lastBatch = len(batch)
		for len(batch) > 0 {
			batch = s.decide(batch)
		}
	}
}

// fill adds queued requests to the batch, waiting at most MaxWait for more.
func (s *Service) fill(ctx context.Context, batch []*request) []*request {
	timer := time.NewTimer(s.cfg.MaxWait)
	defer timer.Stop()
	for len(batch) < s.cfg.MaxBatch {
		select {
		case r := <-s.requests:
			batch = append(batch, r)
			continue
		default:
		}
		if s.cfg.MaxWait == 0 || s.lastBatch <= 1 {
			break // a lone caller is not kept waiting
		}
		select {
		case r := <-s.requests:
			batch = append(batch, r)
			continue
		case <-timer.C:
		case <-ctx.Done():
		}
		break
	}
	return batch
}

// decide places a batch, commits it, answers the callers, and returns the
// requests to try again (refused on a stale model).
func (s *Service) decide(batch []*request) []*request {
	start := time.Now()
	var live []*request
	var reqs []scheduler.Request
	st := s.store.State()
	for _, r := range batch {
		if r.ctx.Err() != nil {
			r.reply <- outcome{err: fmt.Errorf("%w: %v", store.ErrOutcomeUnknown, r.ctx.Err())}
			continue
		}
		// A retried create whose first attempt was committed must hear
		// "already exists", as the FSM would say, not a cap it now meets.
		if c, ok := r.cmd.(*store.AgentCreate); ok {
			if a, _ := st.Agent(c.Agent.ID); a != nil {
				r.reply <- outcome{err: fmt.Errorf("%w: agent %q", store.ErrAlreadyExists, c.Agent.ID)}
				continue
			}
		}
		sr, err := toSchedulerRequest(r.cmd)
		if err != nil {
			r.reply <- outcome{err: err}
			continue
		}
		live = append(live, r)
		reqs = append(reqs, sr)
	}
	if len(live) == 0 {
		return nil
	}

	s.mu.Lock()
	if s.stale {
		if err := s.rebuildLocked(); err != nil {
			s.mu.Unlock()
			for _, r := range live {
				r.reply <- outcome{err: err}
			}
			return nil
		}
	}
	decisions := scheduler.Place(s.model, reqs, s.seed.Add(1))
	s.mu.Unlock()

	plan := &store.PlanApply{}
	var planned []*request
	for i, d := range decisions {
		r := live[i]
		if !d.OK() {
			s.metrics.rejected.WithLabelValues(string(d.Reason)).Inc()
			r.reply <- outcome{err: reasonError(d)}
			continue
		}
		plan.Items = append(plan.Items, planItem(r.cmd, d))
		planned = append(planned, r)
	}
	s.metrics.decisionLatency.Observe(time.Since(start).Seconds())
	if len(planned) == 0 {
		return nil
	}
	index, result, err := s.store.ApplyPlan(plan)
	s.metrics.batchSize.Observe(float64(len(planned)))
	if err != nil {
		for _, r := range planned {
			r.reply <- outcome{err: err}
		}
		return nil
	}
	var retry []*request
	for i, r := range planned {
		err := result.Errors[i]
		if err != nil && staleDecision(err) && r.attempts+1 < s.cfg.MaxAttempts {
			r.attempts++
			s.metrics.retries.Inc()
			retry = append(retry, r)
			continue
		}
		if reason := refusalReason(err); reason != "" {
			// The FSM's re-check refused what the scheduler allowed (a cap
			// met by a concurrent write): a refusal all the same.
			s.metrics.rejected.WithLabelValues(reason).Inc()
		}
		r.reply <- outcome{index: index, err: err}
	}
	if len(retry) > 0 {
		// The model disagreed with the FSM; start again from the state.
		s.mu.Lock()
		s.stale = true
		s.mu.Unlock()
	}
	return retry
}

// staleDecision reports refusals that a fresh model can avoid.
func staleDecision(err error) bool {
	return errors.Is(err, store.ErrPortInUse) || errors.Is(err, store.ErrNoCapacity) ||
		errors.Is(err, store.ErrNodeNotEligible) || errors.Is(err, store.ErrPortOutOfRange)
}

// reasonError maps a scheduler refusal to the store's sentinel: the one place
// where scheduler reasons become errors the API layer understands.
func reasonError(d scheduler.Decision) error {
	var sentinel error
	switch d.Reason {
	case scheduler.ReasonAgentLimit:
		sentinel = store.ErrAgentLimit
	case scheduler.ReasonRunningCap:
		sentinel = store.ErrRunningCap
	case scheduler.ReasonNoPorts:
		sentinel = store.ErrNoPorts
	case scheduler.ReasonNoNode:
		sentinel = store.ErrNoNodeFits
	case scheduler.ReasonUnknownAgent:
		sentinel = store.ErrNotFound
	default:
		return errors.New(d.Message)
	}
	return fmt.Errorf("%w: %s", sentinel, d.Message)
}

func toSchedulerRequest(cmd store.Command) (scheduler.Request, error) {
	switch c := cmd.(type) {
	case *store.AgentCreate:
		a := c.Agent
		if a.Desired != store.DesiredRunning {
			return scheduler.Request{}, fmt.Errorf("%w: a new agent is created running", store.ErrInvalid)
		}
		return scheduler.Request{
			Kind: scheduler.KindCreate, AgentID: a.ID, OrgID: a.OrgID, Runtime: a.Runtime,
			Resources:   scheduler.Resources{CPUMillis: a.Resources.CPUMillis, MemoryMB: a.Resources.MemoryMB},
			Constraints: a.Constraints,
		}, nil
	case *store.AgentSetDesired:
		return scheduler.Request{Kind: scheduler.KindStart, AgentID: c.ID}, nil
	}
	return scheduler.Request{}, fmt.Errorf("%w: %s is not a placement request", store.ErrInvalid, cmd.CommandType())
}

func planItem(cmd store.Command, d scheduler.Decision) store.PlanItem {
	if c, ok := cmd.(*store.AgentCreate); ok {
		a := c.Agent
		a.NodeID, a.Port = d.NodeID, d.Port
		a.Status = store.StatusProvisioning
		return store.PlanItem{Op: store.PlanCreate, Agent: &a}
	}
	return store.PlanItem{Op: store.PlanStart, AgentID: d.AgentID, NodeID: d.NodeID}
}
