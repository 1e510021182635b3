package placement

import (
	"context"
	"fmt"
	"time"

	"github.com/agenthost/agenthost/scheduler"
	"github.com/agenthost/agenthost/store"
)

// rebuildLocked builds the model from the current state. s.mu must be held;
// the change feed (which takes s.mu too) then continues from the state's index.
func (s *Service) rebuildLocked() error {
	st := s.store.State()
	cfg, err := st.ClusterConfig()
	if err != nil {
		return err
	}
	m := scheduler.NewCluster(schedulerConfig(cfg, s.cfg.SampleSize))
	orgs, err := st.Orgs()
	if err != nil {
		return err
	}
	for _, o := range orgs {
		m.UpsertOrg(toOrg(o))
	}
	nodes, err := st.Nodes()
	if err != nil {
		return err
	}
	for _, n := range nodes {
		m.UpsertNode(toNode(n))
	}
	agents, err := st.Agents()
	if err != nil {
		return err
	}
	for _, a := range agents {
		m.UpsertAgent(toAgent(a))
	}
	s.model, s.modelIndex, s.stale = m, st.Index(), false
	s.logger.Debug("scheduler model rebuilt", "index", st.Index(), "model", m.String())
	return nil
}

// StateChanged follows the store's change feed (store.ChangeHandler).
func (s *Service) StateChanged(index uint64, changes []store.Change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.tracking || s.model == nil || index <= s.modelIndex {
		return
	}
	s.modelIndex = index
	for _, c := range changes {
		switch after := c.After.(type) {
		case *store.Agent:
			s.model.UpsertAgent(toAgent(after))
		case *store.Node:
			s.model.UpsertNode(toNode(after))
			before, ok := c.Before.(*store.Node)
			if after.Status == store.NodeDown && (!ok || before.Status != store.NodeDown) || after.Drain.Due(time.Now()) {
				s.requestReschedule()
			} else if d := after.Drain; after.Status == store.NodeDraining && d != nil && d.Agents != store.DrainKeep {
				// Due later: look again at the deadline rather than
				// up to RescheduleInterval after it.
				time.AfterFunc(time.Until(d.Deadline), s.requestReschedule)
			}
		case *store.Org:
			s.model.UpsertOrg(toOrg(after))
		case *store.ClusterConfig:
			s.model.SetConfig(schedulerConfig(*after, s.cfg.SampleSize))
		case nil:
			switch before := c.Before.(type) {
			case *store.Agent:
				s.model.RemoveAgent(before.ID)
			case *store.Node:
				s.model.RemoveNode(before.ID)
			case *store.Org:
				s.model.RemoveOrg(before.ID)
			}
		}
	}
}

// StateReset marks the model for a rebuild (a snapshot was restored).
func (s *Service) StateReset() {
	s.mu.Lock()
	s.stale = true
	s.mu.Unlock()
}

func (s *Service) requestReschedule() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// reschedule finds agents that should run on down nodes and re-places them
// (policy reschedule) or marks them ERROR (policy fail); and the agents of
// draining nodes whose deadline has come, which it stops or re-places as
// the drain says. A re-placement that
// finds no room marks the agent ERROR with the reason and is tried again on
// the next pass, since its desired state stays running.
func (s *Service) reschedule() {
	st := s.store.State()
	cfg, err := st.ClusterConfig()
	if err != nil {
		s.logger.Error("reschedule: read config", "error", err)
		return
	}
	nodes, err := st.Nodes()
	if err != nil {
		s.logger.Error("reschedule: list nodes", "error", err)
		return
	}
	var moves, drainMoves []scheduler.Request
	var failed, drainStops []*store.Agent
	now := time.Now()
	for _, n := range nodes {
		if n.Status == store.NodeDraining && n.Drain.Due(now) {
			agents, err := st.AgentsByNode(n.ID)
			if err != nil {
				s.logger.Error("drain: list agents", "node", n.ID, "error", err)
				return
			}
			for _, a := range agents {
				switch {
				case !a.HoldsResources():
				case n.Drain.Agents == store.DrainStop:
					drainStops = append(drainStops, a)
				case n.Drain.Agents == store.DrainMove:
					drainMoves = append(drainMoves, scheduler.Request{Kind: scheduler.KindMove, AgentID: a.ID})
				}
			}
			continue
		}
		if n.Status != store.NodeDown {
			continue
		}
		agents, err := st.AgentsByNode(n.ID)
		if err != nil {
			s.logger.Error("reschedule: list agents", "node", n.ID, "error", err)
			return
		}
		for _, a := range agents {
			if !a.HoldsResources() {
				continue
			}
			if cfg.ReschedulePolicy == store.RescheduleFail {
				if a.Status != store.StatusError {
					failed = append(failed, a)
				}
				continue
			}
			moves = append(moves, scheduler.Request{Kind: scheduler.KindMove, AgentID: a.ID})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, a := range failed {
		s.setError(ctx, a.ID, fmt.Sprintf("node %s is down; the cluster's reschedule policy is %q, so the agent was not moved", a.NodeID, store.RescheduleFail))
	}
	for _, a := range drainStops {
		if _, err := s.store.Apply(ctx, &store.AgentSetDesired{ID: a.ID, Desired: store.DesiredStopped}); err != nil {
			s.logger.Warn("drain: could not stop agent", "agent", a.ID, "node", a.NodeID, "error", err)
		}
	}
	for why, moves := range map[string][]scheduler.Request{"its node is down": moves, "its node is draining": drainMoves} {
		for len(moves) > 0 {
			n := min(len(moves), s.cfg.MaxBatch)
			s.moveBatch(ctx, moves[:n], why)
			moves = moves[n:]
		}
	}
}

// moveBatch re-places agents on other nodes; why is said of an agent that
// finds no room.
func (s *Service) moveBatch(ctx context.Context, reqs []scheduler.Request, why string) {
	s.mu.Lock()
	if s.stale {
		if err := s.rebuildLocked(); err != nil {
			s.mu.Unlock()
			s.logger.Error("reschedule: rebuild model", "error", err)
			return
		}
	}
	decisions := scheduler.Place(s.model, reqs, s.seed.Add(1))
	s.mu.Unlock()
	plan := &store.PlanApply{}
	for _, d := range decisions {
		if !d.OK() {
			s.metrics.rejected.WithLabelValues(string(d.Reason)).Inc()
			s.setError(ctx, d.AgentID, why+" and "+d.Message)
			continue
		}
		plan.Items = append(plan.Items, store.PlanItem{Op: store.PlanMove, AgentID: d.AgentID, NodeID: d.NodeID})
	}
	if len(plan.Items) == 0 {
		return
	}
	_, result, err := s.store.ApplyPlan(plan)
	if err != nil {
		s.logger.Warn("reschedule: plan not committed", "error", err)
		return
	}
	for i, err := range result.Errors {
		if err != nil {
			s.logger.Info("reschedule: move refused; will retry", "agent", plan.Items[i].AgentID, "error", err)
			s.mu.Lock()
			s.stale = true
			s.mu.Unlock()
		} else {
			s.metrics.moved.Inc()
		}
	}
}

func (s *Service) setError(ctx context.Context, agentID, msg string) {
	st := s.store.State()
	if a, _ := st.Agent(agentID); a != nil && a.Status == store.StatusError && a.ErrorMsg == msg {
		return
	}
	if _, err := s.store.Apply(ctx, &store.AgentSetStatus{ID: agentID, Status: store.StatusError, ErrorMsg: msg}); err != nil {
		s.logger.Warn("could not mark agent failed", "agent", agentID, "error", err)
	}
}

func schedulerConfig(c store.ClusterConfig, sample int) scheduler.Config {
	return scheduler.Config{
		PortStart: c.PortRangeStart, PortEnd: c.PortRangeEnd,
		Algorithm: scheduler.Algorithm(c.SchedulerAlgorithm), SampleSize: sample,
	}
}

func toOrg(o *store.Org) scheduler.Org {
	return scheduler.Org{ID: o.ID, MaxAgents: o.Plan.MaxAgents, MaxRunning: o.Plan.MaxRunning}
}

func toNode(n *store.Node) scheduler.Node {
	return scheduler.Node{
		ID:        n.ID,
		Capacity:  scheduler.Resources{CPUMillis: n.Capacity.CPUMillis, MemoryMB: n.Capacity.MemoryMB},
		MaxAgents: n.Capacity.MaxAgents,
		Labels:    n.Labels,
		Runtimes:  n.Runtimes,
		Eligible:  n.Status == store.NodeReady,
		Down:      n.Status == store.NodeDown,
	}
}

func toAgent(a *store.Agent) scheduler.Agent {
	return scheduler.Agent{
		ID: a.ID, OrgID: a.OrgID, NodeID: a.NodeID, Port: a.Port,
		Resources:   scheduler.Resources{CPUMillis: a.Resources.CPUMillis, MemoryMB: a.Resources.MemoryMB},
		Runtime:     a.Runtime,
		Constraints: a.Constraints,
		Holds:       a.HoldsResources(),
	}
}
