package scheduler

import (
	"fmt"
	"math/rand/v2"
	"slices"
)

// Kind is what a request asks for.
type Kind string

const (
	// KindCreate places a new agent: a node and a port, within the org's caps.
	KindCreate Kind = "create"
	// KindStart starts a stopped agent: on its own node when it can run there,
	// else on another node; its port never changes.
	KindStart Kind = "start"
	// KindMove re-places an agent that should run but whose node is lost,
	// keeping its port. Caps are not re-checked: the agent already counts.
	KindMove Kind = "move"
)

// Request is one placement request.
type Request struct {
	Kind    Kind
	AgentID string
	// OrgID, Runtime, Resources and Constraints describe a new agent
	// (KindCreate); for start and move they are taken from the model's Agent.
	OrgID     string
	Runtime   string
	Resources Resources
	// Constraints are node labels the agent needs, all of which must match.
	Constraints map[string]string
}

// Reason says why a request was refused.
type Reason string

const (
	ReasonAgentLimit   Reason = "agent_limit"
	ReasonRunningCap   Reason = "running_cap"
	ReasonNoPorts      Reason = "no_ports"
	ReasonNoNode       Reason = "no_node"
	ReasonUnknownAgent Reason = "unknown_agent"
)

// Decision answers one request: a node and a port, or a Reason.
type Decision struct {
	AgentID string
	NodeID  string
	Port    int
	// Reason is empty when the request can be placed.
	Reason  Reason
	Message string
}

// OK reports whether the request was placed.
func (d Decision) OK() bool { return d.Reason == "" }

// Place decides a batch of requests against the model, each one seeing the
// effect of those before it (ports taken, capacity used, caps counted). It does
// not change c. The same model, requests and seed give the same decisions.
func Place(c *Cluster, reqs []Request, seed uint64) []Decision {
	p := &planner{
		c:     c,
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		nodes: make(map[*nodeState]*nodeDelta),
		orgs:  make(map[string]*orgDelta),
		ports: make(map[int]bool),

		portWord: c.ports.cursor,
	}
	out := make([]Decision, len(reqs))
	for i, r := range reqs {
		out[i] = p.decide(r)
	}
	return out
}

type nodeDelta struct {
	used   Resources
	agents int
}

type orgDelta struct{ agents, running int }

// planner holds the effects of a batch's earlier decisions over the model.
type planner struct {
	c     *Cluster
	rng   *rand.Rand
	nodes map[*nodeState]*nodeDelta
	orgs  map[string]*orgDelta
	ports map[int]bool
	// portWord is where the batch's next port search starts: the word of
	// the last port it took. Searches run in one order from the model's
	// cursor, so every free port before that one is the batch's already;
	// starting there, a search skips at most a word's worth of the batch's
	// ports instead of all of them, and a batch stays amortised O(1) a port.
	portWord int
}

func (p *planner) decide(r Request) Decision {
	switch r.Kind {
	case KindCreate:
		return p.create(r)
	case KindStart:
		return p.start(r)
	case KindMove:
		return p.move(r)
	}
	return Decision{AgentID: r.AgentID, Reason: ReasonUnknownAgent, Message: fmt.Sprintf("unknown request kind %q", r.Kind)}
}

func (p *planner) create(r Request) Decision {
	d := Decision{AgentID: r.AgentID}
	agents, running := p.c.OrgUsage(r.OrgID)
	od := p.orgDelta(r.OrgID)
	var org Org
	if os, ok := p.c.orgs[r.OrgID]; ok {
		org = os.Org
	}
	if org.MaxAgents > 0 && agents+od.agents >= org.MaxAgents {
		return refuse(d, ReasonAgentLimit, "Agent limit reached for your plan (%d agents)", org.MaxAgents)
	}
	if org.MaxRunning > 0 && running+od.running >= org.MaxRunning {
		return refuse(d, ReasonRunningCap, "concurrent agent cap reached (%d running)", org.MaxRunning)
	}
	if p.c.ports.Free()-len(p.ports) <= 0 {
		return refuse(d, ReasonNoPorts, "No available ports. Retry later.")
	}
	port := p.c.ports.next(p.portWord, func(port int) bool { return p.ports[port] })
	if port == 0 {
		return refuse(d, ReasonNoPorts, "No available ports. Retry later.")
	}
	ns := p.choose(r.Runtime, r.Constraints, r.Resources, "")
	if ns == nil {
		return refuse(d, ReasonNoNode, "no node has room for an agent needing %dm CPU and %d MB memory (%d eligible nodes)",
			r.Resources.CPUMillis, r.Resources.MemoryMB, len(p.c.eligible))
	}
	p.ports[port] = true
	p.portWord = (port - p.c.ports.start) / 64
	p.reserve(ns, r.Resources)
	od.agents++
	od.running++
	d.NodeID, d.Port = ns.ID, port
	return d
}

func (p *planner) start(r Request) Decision {
	d := Decision{AgentID: r.AgentID}
	a, ok := p.c.agents[r.AgentID]
	if !ok {
		return refuse(d, ReasonUnknownAgent, "agent %s is not known to the scheduler", r.AgentID)
	}
	d.Port = a.Port
	if a.Holds {
		d.NodeID = a.NodeID // already running: nothing to place
		return d
	}
	_, running := p.c.OrgUsage(a.OrgID)
	od := p.orgDelta(a.OrgID)
	if os, ok := p.c.orgs[a.OrgID]; ok && os.MaxRunning > 0 && running+od.running >= os.MaxRunning {
		return refuse(d, ReasonRunningCap, "concurrent agent cap reached (%d running)", os.MaxRunning)
	}
	// Prefer the agent's own node (its workspace lives there), draining or
	// not, as long as it is up and has room.
	ns, ok := p.c.nodes[a.NodeID]
	if !ok || ns.Down || !p.fits(ns, a.Resources) {
		ns = p.choose(a.Runtime, a.Constraints, a.Resources, a.NodeID)
	}
	if ns == nil {
		return refuse(d, ReasonNoNode, "no node has room to start agent %s (%dm CPU, %d MB memory)",
			a.ID, a.Resources.CPUMillis, a.Resources.MemoryMB)
	}
	p.reserve(ns, a.Resources)
	od.running++
	d.NodeID = ns.ID
	return d
}

func (p *planner) move(r Request) Decision {
	d := Decision{AgentID: r.AgentID}
	a, ok := p.c.agents[r.AgentID]
	if !ok {
		return refuse(d, ReasonUnknownAgent, "agent %s is not known to the scheduler", r.AgentID)
	}
	d.Port = a.Port
	ns := p.choose(a.Runtime, a.Constraints, a.Resources, a.NodeID)
	if ns == nil {
		return refuse(d, ReasonNoNode, "no other node has room for agent %s (%dm CPU, %d MB memory)",
			a.ID, a.Resources.CPUMillis, a.Resources.MemoryMB)
	}
	p.reserve(ns, a.Resources)
	d.NodeID = ns.ID
	return d
}

func refuse(d Decision, reason Reason, format string, args ...any) Decision {
	d.Reason, d.Message = reason, fmt.Sprintf(format, args...)
	return d
}

func (p *planner) orgDelta(id string) *orgDelta {
	od, ok := p.orgs[id]
	if !ok {
		od = &orgDelta{}
		p.orgs[id] = od
	}
	return od
}

func (p *planner) reserve(ns *nodeState, res Resources) {
	nd, ok := p.nodes[ns]
	if !ok {
		nd = &nodeDelta{}
		p.nodes[ns] = nd
	}
	nd.used.CPUMillis += res.CPUMillis
	nd.used.MemoryMB += res.MemoryMB
	nd.agents++
}

// usage is a node's use including this batch's reservations.
func (p *planner) usage(ns *nodeState) (Resources, int) {
	used, agents := ns.used, ns.agents
	if nd, ok := p.nodes[ns]; ok {
		used.CPUMillis += nd.used.CPUMillis
		used.MemoryMB += nd.used.MemoryMB
		agents += nd.agents
	}
	return used, agents
}

func (p *planner) fits(ns *nodeState, res Resources) bool {
	used, agents := p.usage(ns)
	capy := ns.Capacity
	return (capy.CPUMillis == 0 || used.CPUMillis+res.CPUMillis <= capy.CPUMillis) &&
		(capy.MemoryMB == 0 || used.MemoryMB+res.MemoryMB <= capy.MemoryMB) &&
		(ns.MaxAgents == 0 || agents+1 <= ns.MaxAgents)
}

func (p *planner) feasible(ns *nodeState, runtime string, constraints map[string]string, res Resources) bool {
	if runtime != "" && len(ns.Runtimes) > 0 && !slices.Contains(ns.Runtimes, runtime) {
		return false
	}
	for k, v := range constraints {
		if ns.Labels[k] != v {
			return false
		}
	}
	return p.fits(ns, res)
}

// choose visits eligible nodes from a random offset and returns the best of
// the first SampleSize feasible ones, or nil when no node is feasible.
func (p *planner) choose(runtime string, constraints map[string]string, res Resources, exclude string) *nodeState {
	pool := p.c.eligible
	n := len(pool)
	if n == 0 {
		return nil
	}
	start := p.rng.IntN(n)
	var best *nodeState
	var bestScore float64
	found := 0
	for k := 0; k < n && found < p.c.cfg.SampleSize; k++ {
		ns := pool[(start+k)%n]
		if ns.ID == exclude || !p.feasible(ns, runtime, constraints, res) {
			continue
		}
		found++
		s := p.score(ns, res)
		if best == nil || s > bestScore {
			best, bestScore = ns, s
		}
	}
	return best
}

// score ranks a feasible node: for binpack, the higher its utilisation after
// the placement the better; for spread, the lower.
func (p *planner) score(ns *nodeState, res Resources) float64 {
	used, agents := p.usage(ns)
	var sum float64
	var dims int
	if ns.Capacity.CPUMillis > 0 {
		sum += float64(used.CPUMillis+res.CPUMillis) / float64(ns.Capacity.CPUMillis)
		dims++
	}
	if ns.Capacity.MemoryMB > 0 {
		sum += float64(used.MemoryMB+res.MemoryMB) / float64(ns.Capacity.MemoryMB)
		dims++
	}
	if ns.MaxAgents > 0 {
		sum += float64(agents+1) / float64(ns.MaxAgents)
		dims++
	}
	util := 0.0
	if dims > 0 {
		util = sum / float64(dims)
	}
	if p.c.cfg.Algorithm == Spread {
		return -util
	}
	return util
}
