package scheduler

import "fmt"

// Algorithm chooses how nodes are ranked.
type Algorithm string

const (
	// Binpack fills the fullest node that fits, leaving whole nodes free.
	Binpack Algorithm = "binpack"
	// Spread prefers the emptiest node, spreading agents out.
	Spread Algorithm = "spread"
)

// Config is the cluster configuration the scheduler works under.
type Config struct {
	// PortStart and PortEnd bound agent ports, inclusive.
	PortStart, PortEnd int
	// Algorithm ranks feasible nodes.
	Algorithm Algorithm
	// SampleSize is how many feasible nodes are compared per decision.
	SampleSize int
}

// DefaultSampleSize balances placement quality against cost per decision.
const DefaultSampleSize = 8

// Resources are CPU and memory; zero capacity means that dimension is unlimited.
type Resources struct {
	CPUMillis int64
	MemoryMB  int64
}

// Node is what the scheduler knows of a node.
type Node struct {
	ID string
	// Capacity and MaxAgents bound what agents holding resources may use.
	Capacity  Resources
	MaxAgents int
	Labels    map[string]string
	// Runtimes offered; empty means any.
	Runtimes []string
	// Eligible nodes take new placements (status ready). A draining node
	// still restarts its own agents; a down node runs nothing.
	Eligible bool
	Down     bool
}

// Org holds an org's caps (zero = unlimited).
type Org struct {
	ID         string
	MaxAgents  int
	MaxRunning int
}

// Agent is what the scheduler knows of an existing agent.
type Agent struct {
	ID        string
	OrgID     string
	NodeID    string
	Port      int
	Resources Resources
	// Runtime and Constraints restrict where the agent may be re-placed.
	Runtime     string
	Constraints map[string]string
	// Holds is true while the agent should be running: it then counts
	// against its node's capacity and its org's running cap.
	Holds bool
}

type nodeState struct {
	Node
	used   Resources
	agents int // agents holding resources
	pos    int // index in Cluster.eligible, or -1
}

type orgState struct {
	Org
	agents, running int
}

// Cluster is the scheduler's model of the cluster. Its Upsert and Remove
// methods keep per-node usage, per-org counts and the port bitmap in step, in
// O(1) each; the caller feeds it every change to nodes, orgs and agents. It is
// not safe for concurrent use: the caller serialises updates and Place.
type Cluster struct {
	cfg      Config
	nodes    map[string]*nodeState
	eligible []*nodeState // sampling pool: nodes that take new placements
	orgs     map[string]*orgState
	agents   map[string]Agent
	ports    *PortSet
	// detached counts agents holding resources on nodes the model does not
	// know (recorded before their node, or kept after it was removed), so
	// that the node finds its usage when it is upserted and an agent removed
	// meanwhile is never subtracted from a node that did not count it.
	detached map[string]*nodeState
}

// NewCluster returns an empty model.
func NewCluster(cfg Config) *Cluster {
	if cfg.SampleSize <= 0 {
		cfg.SampleSize = DefaultSampleSize
	}
	if cfg.Algorithm == "" {
		cfg.Algorithm = Binpack
	}
	return &Cluster{
		cfg:    cfg,
		nodes:  make(map[string]*nodeState),
		orgs:   make(map[string]*orgState),
		agents: make(map[string]Agent),
		ports:  NewPortSet(cfg.PortStart, cfg.PortEnd),

		detached: make(map[string]*nodeState),
	}
}

// Config returns the configuration in force.
func (c *Cluster) Config() Config { return c.cfg }

// SetConfig changes the configuration; a new port range rebuilds the bitmap.
func (c *Cluster) SetConfig(cfg Config) {
	if cfg.SampleSize <= 0 {
		cfg.SampleSize = DefaultSampleSize
	}
	if cfg.Algorithm == "" {
		cfg.Algorithm = Binpack
	}
	rangeChanged := cfg.PortStart != c.cfg.PortStart || cfg.PortEnd != c.cfg.PortEnd
	c.cfg = cfg
	if rangeChanged {
		c.ports = NewPortSet(cfg.PortStart, cfg.PortEnd)
		for _, a := range c.agents {
			c.ports.Hold(a.Port)
		}
	}
}

// FreePorts is the number of ports in the range that no agent holds.
func (c *Cluster) FreePorts() int { return c.ports.Free() }

// Agent returns the model's record of an agent.
func (c *Cluster) Agent(id string) (Agent, bool) {
	a, ok := c.agents[id]
	return a, ok
}

// NodeCount is the number of nodes in the model.
func (c *Cluster) NodeCount() int { return len(c.nodes) }

// UpsertNode adds a node or replaces what is known of it, keeping its usage.
func (c *Cluster) UpsertNode(n Node) {
	ns, ok := c.nodes[n.ID]
	if !ok {
		if ns, ok = c.detached[n.ID]; ok {
			delete(c.detached, n.ID)
		} else {
			ns = &nodeState{pos: -1}
		}
		c.nodes[n.ID] = ns
	}
	ns.Node = n
	c.setEligible(ns, n.Eligible)
}

// RemoveNode forgets a node. Agents still placed on it keep their record.
func (c *Cluster) RemoveNode(id string) {
	if ns, ok := c.nodes[id]; ok {
		c.setEligible(ns, false)
		delete(c.nodes, id)
		if ns.agents > 0 {
			c.detached[id] = ns
		}
	}
}

func (c *Cluster) setEligible(ns *nodeState, eligible bool) {
	switch {
	case eligible && ns.pos < 0:
		ns.pos = len(c.eligible)
		c.eligible = append(c.eligible, ns)
	case !eligible && ns.pos >= 0:
		last := c.eligible[len(c.eligible)-1]
		c.eligible[ns.pos] = last
		last.pos = ns.pos
		c.eligible = c.eligible[:len(c.eligible)-1]
		ns.pos = -1
	}
}

// UpsertOrg adds an org or changes its caps, keeping its counts.
func (c *Cluster) UpsertOrg(o Org) {
	os, ok := c.orgs[o.ID]
	if !ok {
		os = &orgState{}
		c.orgs[o.ID] = os
	}
	os.Org = o
}

// RemoveOrg forgets an org's caps. Its counts stay while it has agents, so
// that they are right if those agents are removed later or the org returns.
func (c *Cluster) RemoveOrg(id string) {
	if os, ok := c.orgs[id]; ok {
		if os.agents == 0 {
			delete(c.orgs, id)
		} else {
			os.Org = Org{ID: id}
		}
	}
}

// UpsertAgent records an agent, replacing its previous record's contribution
// to node usage, org counts and ports.
func (c *Cluster) UpsertAgent(a Agent) {
	c.RemoveAgent(a.ID)
	c.agents[a.ID] = a
	c.ports.Hold(a.Port)
	os := c.org(a.OrgID)
	os.agents++
	if a.Holds {
		os.running++
		ns := c.usage(a.NodeID)
		ns.used.CPUMillis += a.Resources.CPUMillis
		ns.used.MemoryMB += a.Resources.MemoryMB
		ns.agents++
	}
}

// RemoveAgent forgets an agent, freeing its port and its reservations.
func (c *Cluster) RemoveAgent(id string) {
	a, ok := c.agents[id]
	if !ok {
		return
	}
	delete(c.agents, id)
	c.ports.Release(a.Port)
	os := c.org(a.OrgID)
	os.agents--
	if a.Holds {
		os.running--
		ns := c.usage(a.NodeID)
		ns.used.CPUMillis -= a.Resources.CPUMillis
		ns.used.MemoryMB -= a.Resources.MemoryMB
		ns.agents--
		if ns.agents == 0 && c.nodes[a.NodeID] != ns {
			delete(c.detached, a.NodeID)
		}
	}
}

// usage returns the state that counts agents on node id: the node's, or a
// detached one while the model does not know the node.
func (c *Cluster) usage(id string) *nodeState {
	if ns, ok := c.nodes[id]; ok {
		return ns
	}
	ns, ok := c.detached[id]
	if !ok {
		ns = &nodeState{Node: Node{ID: id}, pos: -1}
		c.detached[id] = ns
	}
	return ns
}

// org returns the org's state, creating an unlimited placeholder for an org
// whose agents arrive before the org itself (the caller's order of updates).
func (c *Cluster) org(id string) *orgState {
	os, ok := c.orgs[id]
	if !ok {
		os = &orgState{Org: Org{ID: id}}
		c.orgs[id] = os
	}
	return os
}

// NodeUsage reports what agents holding resources use on a node.
func (c *Cluster) NodeUsage(id string) (used Resources, agents int, ok bool) {
	ns, ok := c.nodes[id]
	if !ok {
		return Resources{}, 0, false
	}
	return ns.used, ns.agents, true
}

// OrgUsage reports an org's agent and running counts.
func (c *Cluster) OrgUsage(id string) (agents, running int) {
	if os, ok := c.orgs[id]; ok {
		return os.agents, os.running
	}
	return 0, 0
}

func (c *Cluster) String() string {
	return fmt.Sprintf("cluster{nodes: %d (%d eligible), orgs: %d, agents: %d, free ports: %d}",
		len(c.nodes), len(c.eligible), len(c.orgs), len(c.agents), c.ports.Free())
}
