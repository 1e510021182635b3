package store

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/hashicorp/go-memdb"
)

// Appliers for agents, nodes and cluster configuration: the commands whose
// invariants (ports, caps, capacity) the scheduler relies on.

func applyAgentCreate(txn *memdb.Txn, index uint64, c *AgentCreate) error {
	a := c.Agent
	if err := requireID("agent", a.ID); err != nil {
		return err
	}
	if err := validateName("agent", a.Name); err != nil {
		return err
	}
	if a.Runtime == "" {
		return invalidf("agent runtime is required")
	}
	if err := validateDesired(a.Desired); err != nil {
		return err
	}
	if err := validateStatus(a.Status); err != nil {
		return err
	}
	if a.Resources.CPUMillis < 0 || a.Resources.MemoryMB < 0 {
		return invalidf("agent resources must not be negative")
	}
	if a.NodeID == "" || a.Port <= 0 {
		return invalidf("agent must be placed on a node with a port")
	}
	if (len(a.RuntimePasswordSealed) == 0) != (a.RuntimePasswordKeyID == "") {
		return invalidf("agent's sealed runtime password and its key id go together")
	}
	if existing, err := first[*Agent](txn, tableAgents, "id", a.ID); err != nil {
		return err
	} else if existing != nil {
		return fmt.Errorf("%w: agent %q", ErrAlreadyExists, a.ID)
	}
	org, err := mustGetOrg(txn, a.OrgID)
	if err != nil {
		return err
	}
	if a.ScopeID != "" {
		if _, err := mustGetScope(txn, a.OrgID, a.ScopeID); err != nil {
			return err
		}
	}
	usage, err := orgUsage(txn, org.ID, "")
	if err != nil {
		return err
	}
	if org.Plan.MaxAgents > 0 && usage.agents >= org.Plan.MaxAgents {
		return fmt.Errorf("%w: org %q has %d of %d agents", ErrAgentLimit, org.ID, usage.agents, org.Plan.MaxAgents)
	}
	if a.HoldsResources() && org.Plan.MaxRunning > 0 && usage.running >= org.Plan.MaxRunning {
		return fmt.Errorf("%w: org %q runs %d of %d agents", ErrRunningCap, org.ID, usage.running, org.Plan.MaxRunning)
	}
	cfg, err := clusterConfig(txn)
	if err != nil {
		return err
	}
	if a.Port < cfg.PortRangeStart || a.Port > cfg.PortRangeEnd {
		return fmt.Errorf("%w: port %d not in %d-%d", ErrPortOutOfRange, a.Port, cfg.PortRangeStart, cfg.PortRangeEnd)
	}
	if holder, err := first[*Agent](txn, tableAgents, "port", a.Port); err != nil {
		return err
	} else if holder != nil {
		return fmt.Errorf("%w: port %d is held by agent %q", ErrPortInUse, a.Port, holder.ID)
	}
	node, err := first[*Node](txn, tableNodes, "id", a.NodeID)
	if err != nil {
		return err
	}
	if node == nil || !node.Eligible() {
		return fmt.Errorf("%w: node %q", ErrNodeNotEligible, a.NodeID)
	}
	if err := checkNodeSuits(node, &a); err != nil {
		return err
	}
	if a.HoldsResources() {
		if err := checkCapacity(txn, node, &a); err != nil {
			return err
		}
	}
	a.CreateIndex, a.ModifyIndex = index, index
	return putAgent(txn, nil, &a)
}

func applyAgentSetDesired(txn *memdb.Txn, index uint64, c *AgentSetDesired) error {
	existing, err := mustGetAgent(txn, c.ID)
	if err != nil {
		return err
	}
	if err := validateDesired(c.Desired); err != nil {
		return err
	}
	if c.Status != "" {
		if err := validateStatus(c.Status); err != nil {
			return err
		}
	}
	a := *existing
	if c.Desired == DesiredRunning && !existing.HoldsResources() {
		org, err := mustGetOrg(txn, a.OrgID)
		if err != nil {
			return err
		}
		usage, err := orgUsage(txn, org.ID, a.ID)
		if err != nil {
			return err
		}
		if org.Plan.MaxRunning > 0 && usage.running >= org.Plan.MaxRunning {
			return fmt.Errorf("%w: org %q runs %d of %d agents", ErrRunningCap, org.ID, usage.running, org.Plan.MaxRunning)
		}
		node, err := first[*Node](txn, tableNodes, "id", a.NodeID)
		if err != nil {
			return err
		}
		// A draining node keeps its agents, including their restarts; a
		// down or removed node can run nothing.
		if node == nil || node.Status == NodeDown {
			return fmt.Errorf("%w: node %q", ErrNodeNotEligible, a.NodeID)
		}
		if err := checkCapacity(txn, node, &a); err != nil {
			return err
		}
	}
	a.Desired = c.Desired
	if c.Status != "" {
		a.Status = c.Status
		if c.Status != StatusError {
			a.ErrorMsg = ""
		}
	}
	a.ModifyIndex = index
	return putAgent(txn, existing, &a)
}

func applyAgentSetStatus(txn *memdb.Txn, index uint64, c *AgentSetStatus) error {
	existing, err := mustGetAgent(txn, c.ID)
	if err != nil {
		return err
	}
	if err := validateStatus(c.Status); err != nil {
		return err
	}
	if c.FromNode != "" && c.FromNode != existing.NodeID {
		return fmt.Errorf("%w: agent %q is on %q, report came from %q", ErrStaleNode, c.ID, existing.NodeID, c.FromNode)
	}
	errorMsg := ""
	if c.Status == StatusError {
		errorMsg = c.ErrorMsg
	}
	if existing.Status == c.Status && existing.ErrorMsg == errorMsg {
		return nil // nothing changed; do not wake watchers
	}
	a := *existing
	a.Status, a.ErrorMsg = c.Status, errorMsg
	a.ModifyIndex = index
	return putAgent(txn, existing, &a)
}

// applyAgentSetRuntimePassword is a compare-and-set: the agent must exist (a
// re-seal racing a deletion never makes it again) and still hold the sealed
// password the proposer read (nothing written since is overwritten).
func applyAgentSetRuntimePassword(txn *memdb.Txn, index uint64, c *AgentSetRuntimePassword) error {
	if len(c.Sealed) == 0 || c.KeyID == "" {
		return invalidf("a sealed runtime password and its key id are required")
	}
	existing, err := mustGetAgent(txn, c.ID)
	if err != nil {
		return err
	}
	if existing.RuntimePasswordKeyID != c.IfKeyID || !bytes.Equal(existing.RuntimePasswordSealed, c.IfSealed) {
		return fmt.Errorf("%w: agent %q's runtime password changed since it was read", ErrConflict, c.ID)
	}
	a := *existing
	a.RuntimePasswordSealed, a.RuntimePasswordKeyID = c.Sealed, c.KeyID
	a.ModifyIndex = index
	return putAgent(txn, existing, &a)
}

func applyAgentDelete(txn *memdb.Txn, c *AgentDelete) error {
	a, err := mustGetAgent(txn, c.ID)
	if err != nil {
		return err
	}
	return putAgent(txn, a, nil)
}

func applyNodeRegister(txn *memdb.Txn, index uint64, c *NodeRegister) error {
	n := c.Node
	if err := requireID("node", n.ID); err != nil {
		return err
	}
	if n.Name == "" || n.Address == "" {
		return invalidf("node needs a name and an address")
	}
	if n.Capacity.CPUMillis < 0 || n.Capacity.MemoryMB < 0 || n.Capacity.MaxAgents < 0 {
		return invalidf("node capacity must not be negative")
	}
	if taken, err := first[*Node](txn, tableNodes, "name", n.Name); err != nil {
		return err
	} else if taken != nil && taken.ID != n.ID {
		return fmt.Errorf("%w: a node named %q", ErrAlreadyExists, n.Name)
	}
	existing, err := first[*Node](txn, tableNodes, "id", n.ID)
	if err != nil {
		return err
	}
	n.Status = NodeReady
	n.CreateIndex = index
	if existing != nil {
		n.CreateIndex = existing.CreateIndex
		if existing.Status == NodeDraining || existing.Drain != nil {
			n.Status, n.Drain = NodeDraining, existing.Drain
		}
	}
	n.ModifyIndex = index
	return txn.Insert(tableNodes, &n)
}

func applyNodeSetStatus(txn *memdb.Txn, index uint64, c *NodeSetStatus) error {
	existing, err := first[*Node](txn, tableNodes, "id", c.ID)
	if err != nil {
		return err
	}
	if existing == nil {
		return fmt.Errorf("%w: node %q", ErrNotFound, c.ID)
	}
	if err := validateNodeStatus(c.Status); err != nil {
		return err
	}
	if err := validateTime("node last-seen time", c.LastSeen); err != nil {
		return err
	}
	if err := validateDrain(c.Drain); err != nil {
		return err
	}
	if c.Drain != nil && c.Status != NodeDraining {
		return invalidf("a drain goes with status %q, not %q", NodeDraining, c.Status)
	}
	n := *existing
	n.Status = c.Status
	switch {
	case c.Status == NodeDraining && c.Drain != nil:
		d := *c.Drain
		d.Deadline = d.Deadline.UTC()
		n.Drain = &d
	case c.Status == NodeReady:
		n.Drain = nil // undrained, or back from down without a drain
	default:
		// Draining without a new drain, or down: the drain stays, so a
		// node that comes back keeps draining (NodeRegister).
	}
	if !c.LastSeen.IsZero() {
		n.LastSeen = c.LastSeen.UTC()
	}
	n.ModifyIndex = index
	return txn.Insert(tableNodes, &n)
}

func applyNodeDelete(txn *memdb.Txn, c *NodeDelete) error {
	n, err := first[*Node](txn, tableNodes, "id", c.ID)
	if err != nil {
		return err
	}
	if n == nil {
		return fmt.Errorf("%w: node %q", ErrNotFound, c.ID)
	}
	if a, err := first[*Agent](txn, tableAgents, "node", n.ID); err != nil {
		return err
	} else if a != nil {
		return fmt.Errorf("%w: node %q still hosts agents", ErrConflict, n.ID)
	}
	return txn.Delete(tableNodes, n)
}

func applyClusterConfigSet(txn *memdb.Txn, index uint64, c *ClusterConfigSet) error {
	if err := validateClusterConfig(c.Config); err != nil {
		return err
	}
	if c.ExpectedModifyIndex != 0 {
		row, err := first[*configRow](txn, tableConfig, "id", configSingletonID)
		if err != nil {
			return err
		}
		if row == nil || row.Config.ModifyIndex != c.ExpectedModifyIndex {
			return fmt.Errorf("%w: the cluster configuration changed since it was read", ErrConflict)
		}
	}
	agents, err := all[*Agent](txn, tableAgents, "id")
	if err != nil {
		return err
	}
	for _, a := range agents {
		if a.Port < c.Config.PortRangeStart || a.Port > c.Config.PortRangeEnd {
			return fmt.Errorf("%w: agent %q holds port %d outside %d-%d; agents keep their ports until deleted",
				ErrConflict, a.ID, a.Port, c.Config.PortRangeStart, c.Config.PortRangeEnd)
		}
	}
	cfg := c.Config
	cfg.ModifyIndex = index
	return txn.Insert(tableConfig, &configRow{ID: configSingletonID, Config: cfg})
}

func mustGetAgent(txn *memdb.Txn, id string) (*Agent, error) {
	a, err := first[*Agent](txn, tableAgents, "id", id)
	if err != nil {
		return nil, err
	}
	if a == nil {
		return nil, fmt.Errorf("%w: agent %q", ErrNotFound, id)
	}
	return a, nil
}

func clusterConfig(txn *memdb.Txn) (ClusterConfig, error) {
	row, err := first[*configRow](txn, tableConfig, "id", configSingletonID)
	if err != nil {
		return ClusterConfig{}, err
	}
	if row == nil {
		return DefaultClusterConfig(), nil
	}
	return row.Config, nil
}

type usage struct{ agents, running int }

// orgUsage counts an org's agents and those holding resources, leaving out
// the agent named by except (the one being changed). O(1): it reads the
// org's usage row, which putAgent keeps exact.
func orgUsage(txn *memdb.Txn, orgID, except string) (usage, error) {
	row, err := first[*usageRow](txn, tableOrgUsage, "id", orgID)
	if err != nil || row == nil {
		return usage{}, err
	}
	u := usage{agents: row.Agents, running: row.Running}
	if except != "" {
		a, err := first[*Agent](txn, tableAgents, "id", except)
		if err != nil {
			return u, err
		}
		if a != nil && a.OrgID == orgID {
			u.agents--
			if a.HoldsResources() {
				u.running--
			}
		}
	}
	return u, nil
}

// NodeAllocation is what the agents that hold resources on a node reserve.
type NodeAllocation struct {
	CPUMillis int64
	MemoryMB  int64
	Agents    int
}

// nodeAllocation sums the reservations on a node, leaving out agent except.
// O(1): it reads the node's usage row.
func nodeAllocation(txn *memdb.Txn, nodeID, except string) (NodeAllocation, error) {
	row, err := first[*usageRow](txn, tableNodeUsage, "id", nodeID)
	if err != nil || row == nil {
		return NodeAllocation{}, err
	}
	alloc := NodeAllocation{CPUMillis: row.CPUMillis, MemoryMB: row.MemoryMB, Agents: row.Running}
	if except != "" {
		a, err := first[*Agent](txn, tableAgents, "id", except)
		if err != nil {
			return alloc, err
		}
		if a != nil && a.NodeID == nodeID && a.HoldsResources() {
			alloc.CPUMillis -= a.Resources.CPUMillis
			alloc.MemoryMB -= a.Resources.MemoryMB
			alloc.Agents--
		}
	}
	return alloc, nil
}

// putAgent writes an agent change — before nil for a creation, after nil for
// a deletion — and keeps the org and node usage rows in step with it. Every
// agent write goes through here.
func putAgent(txn *memdb.Txn, before, after *Agent) error {
	if before != nil {
		if err := addUsage(txn, before, -1); err != nil {
			return err
		}
	}
	if after != nil {
		if err := addUsage(txn, after, +1); err != nil {
			return err
		}
		return txn.Insert(tableAgents, after)
	}
	return txn.Delete(tableAgents, before)
}

func addUsage(txn *memdb.Txn, a *Agent, sign int) error {
	holds := 0
	if a.HoldsResources() {
		holds = 1
	}
	err := updateUsage(txn, tableOrgUsage, a.OrgID, func(r *usageRow) {
		r.Agents += sign
		r.Running += sign * holds
	})
	if err != nil || holds == 0 {
		return err
	}
	return updateUsage(txn, tableNodeUsage, a.NodeID, func(r *usageRow) {
		r.Running += sign
		r.CPUMillis += int64(sign) * a.Resources.CPUMillis
		r.MemoryMB += int64(sign) * a.Resources.MemoryMB
	})
}

// updateUsage copies a usage row, changes it, and writes it back; a row that
// falls to zero is deleted, so the state stays the same whatever the order of
// creations and deletions that led to it.
func updateUsage(txn *memdb.Txn, table, id string, change func(*usageRow)) error {
	existing, err := first[*usageRow](txn, table, "id", id)
	if err != nil {
		return err
	}
	row := usageRow{ID: id}
	if existing != nil {
		row = *existing
	}
	change(&row)
	if row == (usageRow{ID: id}) {
		if existing == nil {
			return nil
		}
		return txn.Delete(table, existing)
	}
	return txn.Insert(table, &row)
}

// checkNodeSuits refuses a node that does not offer the agent's runtime (a
// node listing none offers any) or lacks a label the agent's constraints need.
func checkNodeSuits(node *Node, a *Agent) error {
	if len(node.Runtimes) > 0 && !slices.Contains(node.Runtimes, a.Runtime) {
		return fmt.Errorf("%w: node %q does not offer runtime %q", ErrNodeNotEligible, node.ID, a.Runtime)
	}
	for k, v := range a.Constraints {
		if node.Labels[k] != v {
			return fmt.Errorf("%w: node %q lacks label %s=%s", ErrNodeNotEligible, node.ID, k, v)
		}
	}
	return nil
}

// checkCapacity refuses a placement that would overcommit the node. A zero
// capacity field means that dimension is not limited.
func checkCapacity(txn *memdb.Txn, node *Node, a *Agent) error {
	alloc, err := nodeAllocation(txn, node.ID, a.ID)
	if err != nil {
		return err
	}
	capy := node.Capacity
	switch {
	case capy.CPUMillis > 0 && alloc.CPUMillis+a.Resources.CPUMillis > capy.CPUMillis:
		return fmt.Errorf("%w: node %q cpu %d+%d > %d millicores", ErrNoCapacity, node.ID, alloc.CPUMillis, a.Resources.CPUMillis, capy.CPUMillis)
	case capy.MemoryMB > 0 && alloc.MemoryMB+a.Resources.MemoryMB > capy.MemoryMB:
		return fmt.Errorf("%w: node %q memory %d+%d > %d MB", ErrNoCapacity, node.ID, alloc.MemoryMB, a.Resources.MemoryMB, capy.MemoryMB)
	case capy.MaxAgents > 0 && alloc.Agents+1 > capy.MaxAgents:
		return fmt.Errorf("%w: node %q runs %d of %d agents", ErrNoCapacity, node.ID, alloc.Agents, capy.MaxAgents)
	}
	return nil
}

// applyPlan applies each item on its own: appliers check everything before
// they write, so a refused item has written nothing and the next item sees a
// consistent state. Only an internal error (a failed memdb write) aborts the
// whole plan.
func applyPlan(txn *memdb.Txn, index uint64, c *PlanApply) (any, error) {
	if len(c.Items) == 0 {
		return nil, invalidf("plan has no items")
	}
	result := &PlanResult{Errors: make([]error, len(c.Items))}
	for i, item := range c.Items {
		var err error
		switch item.Op {
		case PlanCreate:
			if item.Agent == nil {
				err = invalidf("plan item %d: create without an agent", i)
			} else {
				err = applyAgentCreate(txn, index, &AgentCreate{Agent: *item.Agent})
			}
		case PlanStart, PlanMove:
			err = applyAgentPlace(txn, index, item)
		default:
			err = invalidf("plan item %d: unknown op %q", i, item.Op)
		}
		if err != nil && ErrorCode(err) == "internal" {
			return nil, fmt.Errorf("plan item %d: %w", i, err)
		}
		result.Errors[i] = err
	}
	return result, nil
}

// applyAgentPlace starts an agent (PlanStart) or moves a running one
// (PlanMove) onto item.NodeID, keeping its port. Starting on its own node
// needs that node up; any other node must be ready (eligible) and offer the
// agent's runtime. Capacity is re-checked on the target node, and a start
// re-checks the org's running cap.
func applyAgentPlace(txn *memdb.Txn, index uint64, item PlanItem) error {
	existing, err := mustGetAgent(txn, item.AgentID)
	if err != nil {
		return err
	}
	if item.Op == PlanMove && !existing.HoldsResources() {
		return fmt.Errorf("%w: agent %q is not meant to run; nothing to move", ErrConflict, existing.ID)
	}
	if item.Op == PlanStart && existing.HoldsResources() && existing.NodeID == item.NodeID {
		return nil // already running there
	}
	node, err := first[*Node](txn, tableNodes, "id", item.NodeID)
	if err != nil {
		return err
	}
	switch {
	case node == nil || node.Status == NodeDown:
		return fmt.Errorf("%w: node %q", ErrNodeNotEligible, item.NodeID)
	case node.ID != existing.NodeID && !node.Eligible():
		return fmt.Errorf("%w: node %q takes no new agents", ErrNodeNotEligible, node.ID)
	}
	if err := checkNodeSuits(node, existing); err != nil {
		return err
	}
	if !existing.HoldsResources() {
		org, err := mustGetOrg(txn, existing.OrgID)
		if err != nil {
			return err
		}
		usage, err := orgUsage(txn, org.ID, existing.ID)
		if err != nil {
			return err
		}
		if org.Plan.MaxRunning > 0 && usage.running >= org.Plan.MaxRunning {
			return fmt.Errorf("%w: org %q runs %d of %d agents", ErrRunningCap, org.ID, usage.running, org.Plan.MaxRunning)
		}
	}
	if err := checkCapacity(txn, node, existing); err != nil {
		return err
	}
	a := *existing
	a.NodeID = node.ID
	a.Desired = DesiredRunning
	a.Status = StatusProvisioning
	a.ErrorMsg = ""
	a.ModifyIndex = index
	return putAgent(txn, existing, &a)
}
