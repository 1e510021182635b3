package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// Linearizability of the tenant agent API (issue 9, point 3). Concurrent
// clients create, get, list, stop and delete agents of one org while a fault
// happens; every call is recorded with its call and return times, and
// porcupine checks the history against the sequential specification below,
// one agent at a time (a history is linearizable when every object's is:
// linearizability is local).
//
// How the history is made:
//
//   - Creates carry a unique name. The server picks the ID, so a create
//     whose outcome is unknown (transport error, timeout, 5xx) is matched to
//     its agent afterwards by name, from every list and get the clients saw
//     and a final list once the cluster is whole again. A name found under
//     two IDs is a create applied twice, and fails the test. An unknown
//     create whose name is nowhere never took effect: nobody but its client
//     could know the agent's ID, and its client never learned it, so nobody
//     could have deleted it.
//   - A write whose outcome is unknown may take effect at any moment after
//     its call, or never: it is kept in the history with its return at the
//     end of time (after every other operation), never dropped.
//   - A read that failed (transport error, timeout, 5xx) observed nothing
//     and changed nothing, so it is left out.
//   - A list is one observation per agent: present with its status, or
//     absent. Absences that ended before the agent's create was sent, or began
//     after its delete was acknowledged, hold in every linearization and are
//     left out, to keep the histories small.
//   - Only the client that created an agent stops or deletes it, and none
//     after a write of its own to it had an unknown outcome; anyone reads
//     it. Stop is check-then-act (a settled RUNNING agent is stopped, and the
//     answer says stopped: true), so two stops racing each other could both
//     say true with every read linearizable; one writer per agent at a time
//     keeps "stopped" a claim the model can check exactly.
//
// The specification, per agent, is its desired state as Raft holds it — not
// yet created, live (running or stopped) or deleted — with what each answer
// says about it (docs/api.md):
//
//   - create → 200 {agentId} once RUNNING: not created → live, running.
//   - get → 404 when not created or deleted; 200 with a status otherwise. A
//     running agent is PROVISIONING, RUNNING or ERROR (the node reports
//     STOPPED only for an agent meant to be stopped); a stopped one STOPPED
//     or ERROR (a node that loses it reports ERROR).
//   - stop → 200 stopped:true once the node reports the agent STOPPED:
//     running → stopped; 200 stopped:false: already stopped; 400: not
//     settled (still provisioning, a stop in flight, ERROR), nothing changes;
//     404 as get.
//   - delete → 200: live → deleted; 404 as get.
//
// The status a node reports moves on its own (PROVISIONING → RUNNING, or
// ERROR), so the model does not predict it beyond the above: it checks that
// no read shows an agent that is not there yet or any more, nor a running one
// that an acknowledged stop stopped, nor a stop acting twice.

// linKind is what a linearizability client did.
type linKind string

const (
	linCreate linKind = "create"
	linGet    linKind = "get"
	linList   linKind = "list" // one agent's part of a list
	linStop   linKind = "stop"
	linDelete linKind = "delete"
)

// linInput is an operation as porcupine sees it.
type linInput struct {
	Kind    linKind
	AgentID string
}

// linOutput is what came back. Unknown marks a write whose outcome is
// unknown; Code is the HTTP status otherwise (a list's absence is a 404).
type linOutput struct {
	Unknown bool
	Code    int
	Status  string // get and list: the agent's status
	Stopped bool   // stop: the answer's "stopped"
}

// linPhase is where an agent is in its life.
type linPhase uint8

const (
	phaseAbsent linPhase = iota
	phaseLive
	phaseDeleted
)

// linState is one agent's desired state; comparable, as porcupine's default
// equality needs.
type linState struct {
	Phase   linPhase
	Stopped bool
}

func (s linState) String() string {
	switch {
	case s.Phase == phaseAbsent:
		return "not created"
	case s.Phase == phaseDeleted:
		return "deleted"
	case s.Stopped:
		return "stopped"
	}
	return "running"
}

// linStep is the sequential specification (see the top of this file).
func linStep(state, input, output any) (bool, any) {
	s, in, out := state.(linState), input.(linInput), output.(linOutput)
	live := s.Phase == phaseLive
	switch in.Kind {
	case linCreate:
		// Known (200) or unknown: only its effect is recorded.
		return s.Phase == phaseAbsent, linState{Phase: phaseLive}
	case linGet, linList:
		if out.Code == http.StatusNotFound {
			return !live, s
		}
		return live && statusAllowed(s, out.Status), s
	case linStop:
		switch {
		case out.Unknown:
			if live {
				return true, linState{Phase: phaseLive, Stopped: true}
			}
			return true, s
		case out.Code == http.StatusOK && out.Stopped:
			return live && !s.Stopped, linState{Phase: phaseLive, Stopped: true}
		case out.Code == http.StatusOK:
			return live && s.Stopped, s
		case out.Code == http.StatusBadRequest:
			return live, s
		case out.Code == http.StatusNotFound:
			return !live, s
		}
	case linDelete:
		switch {
		case out.Unknown:
			if live {
				return true, linState{Phase: phaseDeleted}
			}
			return true, s
		case out.Code == http.StatusOK:
			return live, linState{Phase: phaseDeleted}
		case out.Code == http.StatusNotFound:
			return !live, s
		}
	}
	return false, s
}

// statusAllowed reports whether a live agent in state s may show status.
func statusAllowed(s linState, status string) bool {
	if s.Stopped {
		return status == "STOPPED" || status == "ERROR"
	}
	return status == "PROVISIONING" || status == "RUNNING" || status == "ERROR"
}

// agentModel is the porcupine model: one partition per agent.
var agentModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byAgent := map[string][]porcupine.Operation{}
		var ids []string
		for _, op := range history {
			id := op.Input.(linInput).AgentID
			if _, ok := byAgent[id]; !ok {
				ids = append(ids, id)
			}
			byAgent[id] = append(byAgent[id], op)
		}
		var out [][]porcupine.Operation
		for _, id := range ids {
			out = append(out, byAgent[id])
		}
		return out
	},
	Init: func() any { return linState{} },
	Step: linStep,
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		switch {
		case out.Unknown:
			return fmt.Sprintf("%s %s → unknown", in.Kind, in.AgentID)
		case in.Kind == linStop && out.Code == http.StatusOK:
			return fmt.Sprintf("stop %s → 200 stopped:%v", in.AgentID, out.Stopped)
		case out.Status != "":
			return fmt.Sprintf("%s %s → %s", in.Kind, in.AgentID, out.Status)
		}
		return fmt.Sprintf("%s %s → %d", in.Kind, in.AgentID, out.Code)
	},
	DescribeState:             func(state any) string { return state.(linState).String() },
	DescribeOperationMetadata: func(info any) string { return fmt.Sprint(info) },
}

// linRecord is one call a client made, as recorded.
type linRecord struct {
	client    int
	kind      linKind
	addr      string // the server (or proxy) it went to
	name      string // create: the agent's name
	agentID   string // "" for a list, and for a create until matched
	call, ret time.Duration
	code      int // 0 after a transport error
	body      []byte
	err       error
}

// outcomeUnknown reports a call that may or may not have taken effect: no
// answer, or an answer that does not say.
func (r *linRecord) outcomeUnknown() bool {
	if r.err != nil || r.code >= 500 {
		return true
	}
	switch r.kind {
	case linCreate:
		return r.code != http.StatusOK && (r.code < 400 || r.code >= 500)
	case linStop:
		return r.code != http.StatusOK && r.code != http.StatusBadRequest && r.code != http.StatusNotFound
	case linDelete:
		return r.code != http.StatusOK && r.code != http.StatusNotFound
	}
	return false
}

// linHistory is every call of every client, and the agents they learned of.
type linHistory struct {
	c     *Cluster
	org   Org
	start time.Time

	mu      sync.Mutex
	records []*linRecord
	names   map[string]map[string]bool // agent name → IDs seen with it
	known   []string                   // agent IDs seen, for reads
}

func newLinHistory(c *Cluster, org Org) *linHistory {
	return &linHistory{c: c, org: org, start: time.Now(), names: map[string]map[string]bool{}}
}

// send sends r's call and fills in its times and answer; add records it
// once the caller has filled in the rest.
func (h *linHistory) send(ctx context.Context, r *linRecord, method, path string, body any) *linRecord {
	// A read that gets no answer in 3 s tells nothing (and a server cut off
	// from the leader cannot answer one): the client moves on. A write waits
	// longer (a create includes the agent's start), as one that times out
	// stays in the history for good.
	timeout := 5 * time.Second
	if r.kind == linGet || r.kind == linList {
		timeout = 3 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r.call = time.Since(h.start)
	res, err := h.c.Do(ctx, r.addr, method, path, h.org.Token, body)
	r.ret = time.Since(h.start)
	if err != nil {
		r.err = err
	} else {
		r.code, r.body = res.Code, res.Body
	}
	return r
}

func (h *linHistory) add(r *linRecord) {
	h.mu.Lock()
	h.records = append(h.records, r)
	h.mu.Unlock()
}

// learn records an agent's name and ID as an answer showed them.
func (h *linHistory) learn(id, name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.names[name] == nil {
		h.names[name] = map[string]bool{}
	}
	if !h.names[name][id] {
		h.names[name][id] = true
		if !slices.Contains(h.known, id) {
			h.known = append(h.known, id)
		}
	}
}

// someKnown returns an agent ID some answer showed, favouring recent ones.
func (h *linHistory) someKnown(rng *rand.Rand) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.known) == 0 {
		return ""
	}
	if rng.IntN(2) == 0 {
		return h.known[max(0, len(h.known)-1-rng.IntN(8))]
	}
	return h.known[rng.IntN(len(h.known))]
}

// listedAgent is an agent as a list shows it.
type listedAgent struct {
	AgentID string `json:"agentId"`
	Name    string `json:"name"`
	Status  string `json:"status"`
}

// list lists the org's agents (one page holds them all) and records the call.
func (h *linHistory) list(ctx context.Context, client int, addr string) (*linRecord, []listedAgent) {
	r := h.send(ctx, &linRecord{client: client, kind: linList, addr: addr}, "GET", "/api/v1/agents?limit=1000", nil)
	defer h.add(r)
	if r.err != nil || r.code != http.StatusOK {
		return r, nil
	}
	var page struct {
		Agents     []listedAgent `json:"agents"`
		NextCursor *string       `json:"nextCursor"`
	}
	if err := json.Unmarshal(r.body, &page); err != nil || page.NextCursor != nil {
		r.err = fmt.Errorf("list: %v (or more than a page)", err)
		return r, nil
	}
	for _, a := range page.Agents {
		h.learn(a.AgentID, a.Name)
	}
	return r, page.Agents
}

// ownAgent is an agent a client created and may still write to.
type ownAgent struct{ id string }

// linClient is one client: its own agents, and the addresses it sends to
// in turn.
type linClient struct {
	h     *linHistory
	id    int
	addrs []string
	next  int
	rng   *rand.Rand
	own   []*ownAgent
}

func (lc *linClient) addr() string {
	a := lc.addrs[lc.next%len(lc.addrs)]
	lc.next++
	return a
}

// run sends calls until ctx ends: mostly reads of any agent, some creates,
// and stops and deletes of the client's own agents.
func (lc *linClient) run(ctx context.Context) {
	for i := 0; ctx.Err() == nil; i++ {
		var r *linRecord
		roll, own, id := lc.rng.IntN(100), len(lc.own), lc.h.someKnown(lc.rng)
		switch {
		// A client without agents does not wait for its creates (slow
		// under load) before it reads others'.
		case (own == 0 && (id == "" || roll < 50)) || (roll < 15 && own < 6):
			r = lc.create(ctx, i)
		case roll < 50 && id != "":
			r = lc.h.send(ctx, &linRecord{client: lc.id, kind: linGet, addr: lc.addr(), agentID: id}, "GET", "/api/v1/agents/"+id, nil)
			if r.err == nil && r.code == http.StatusOK {
				var a listedAgent
				if json.Unmarshal(r.body, &a) == nil {
					lc.h.learn(a.AgentID, a.Name)
				}
			}
			lc.h.add(r)
		case roll < 62 || own == 0:
			r, _ = lc.h.list(ctx, lc.id, lc.addr())
		case roll < 85:
			a := lc.own[lc.rng.IntN(len(lc.own))]
			r = lc.write(ctx, a, linStop, "POST", "/api/v1/agents/"+a.id+"/stop")
		default:
			a := lc.own[lc.rng.IntN(len(lc.own))]
			r = lc.write(ctx, a, linDelete, "DELETE", "/api/v1/agents/"+a.id)
			if !r.outcomeUnknown() {
				lc.drop(a) // deleted, or (404) never there
			}
		}
		if r.err != nil || r.code >= 500 {
			time.Sleep(50 * time.Millisecond) // no leader, or a dead server: do not spin
		}
	}
}

func (lc *linClient) create(ctx context.Context, i int) *linRecord {
	name := fmt.Sprintf("lin-c%d-%d", lc.id, i)
	r := lc.h.send(ctx, &linRecord{client: lc.id, kind: linCreate, addr: lc.addr(), name: name}, "POST", "/api/v1/agents", map[string]any{"name": name})
	defer lc.h.add(r)
	if r.err == nil && r.code == http.StatusOK {
		var created struct {
			AgentID string `json:"agentId"`
		}
		if json.Unmarshal(r.body, &created) == nil && created.AgentID != "" {
			r.agentID = created.AgentID
			lc.h.learn(created.AgentID, name)
			lc.own = append(lc.own, &ownAgent{id: created.AgentID})
		}
	}
	return r
}

// write sends a stop or delete of one of the client's agents; after an
// unknown outcome the client leaves the agent alone (the call may still be
// running on a server).
func (lc *linClient) write(ctx context.Context, a *ownAgent, kind linKind, method, path string) *linRecord {
	r := lc.h.send(ctx, &linRecord{client: lc.id, kind: kind, addr: lc.addr(), agentID: a.id}, method, path, nil)
	lc.h.add(r)
	if r.outcomeUnknown() {
		lc.drop(a)
	}
	return r
}

func (lc *linClient) drop(a *ownAgent) {
	lc.own = slices.DeleteFunc(lc.own, func(o *ownAgent) bool { return o == a })
}

// startLinClients starts eight clients: six send to the servers in turn,
// each from another one first, and two through the proxy. stop ends them and
// waits.
func startLinClients(c *Cluster, h *linHistory) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 8 {
		lc := &linClient{h: h, id: i, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))}
		if i < 6 {
			for j := range c.Servers {
				lc.addrs = append(lc.addrs, c.Servers[(i+j)%len(c.Servers)].HTTPAddr)
			}
		} else {
			lc.addrs = []string{c.Proxy.HTTPAddr}
		}
		wg.Go(func() { lc.run(ctx) })
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// firstAcknowledgedWrite is when the first create, stop or delete sent after
// t was acknowledged, or 0.
func (h *linHistory) firstAcknowledgedWrite(t time.Duration) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	var first time.Duration
	for _, r := range h.records {
		if r.kind != linGet && r.kind != linList && r.call > t && r.err == nil && r.code == http.StatusOK && (first == 0 || r.ret < first) {
			first = r.ret
		}
	}
	return first
}

// settle waits, once the fault is over, until every server lists the same
// agents, and records a last list from each: the final word on which
// unknown creates took effect.
func (h *linHistory) settle(t *testing.T) {
	t.Helper()
	waitFor(t, 60*time.Second, "every server to list the same agents", func() bool {
		var first []listedAgent
		for i, s := range h.c.Servers {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, list := h.list(ctx, -1, s.HTTPAddr)
			cancel()
			if list == nil {
				return false
			}
			if i > 0 && !slices.EqualFunc(first, list, func(a, b listedAgent) bool { return a.AgentID == b.AgentID }) {
				return false
			}
			first = list
		}
		return true
	})
}

// operations turns the records into porcupine's history, and fails the test
// for a name created twice.
func (h *linHistory) operations(t *testing.T) []porcupine.Operation {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	idOf := map[string]string{}
	for name, ids := range h.names {
		if len(ids) > 1 {
			t.Errorf("create of %q took effect %d times: %v", name, len(ids), ids)
		}
		for id := range ids {
			idOf[name] = id
		}
	}
	var end time.Duration
	for _, r := range h.records {
		end = max(end, r.ret)
	}
	end++ // after every answer: where an unknown outcome returns

	// Each agent's create call and acknowledged delete return bound the
	// absences worth checking.
	created, deleted := map[string]time.Duration{}, map[string]time.Duration{}
	for _, r := range h.records {
		switch {
		case r.kind == linCreate:
			if id := idOf[r.name]; id != "" {
				created[id] = r.call
			}
		case r.kind == linDelete && r.err == nil && r.code == http.StatusOK:
			deleted[r.agentID] = r.ret
		}
	}
	var ops []porcupine.Operation
	add := func(r *linRecord, id string, out linOutput) {
		ret := r.ret
		if out.Unknown {
			ret = end
		}
		ops = append(ops, porcupine.Operation{
			ClientId: r.client + 1, // the settling lists are client -1
			Input:    linInput{Kind: r.kind, AgentID: id},
			Call:     int64(r.call), Output: out, Return: int64(ret),
			Metadata: fmt.Sprintf("%s via %s, %v–%v", r.kind, h.serverName(r.addr), r.call.Round(time.Millisecond), r.ret.Round(time.Millisecond)),
		})
	}
	for _, r := range h.records {
		unknown := r.outcomeUnknown()
		switch r.kind {
		case linCreate:
			id := idOf[r.name]
			switch {
			case id == "":
				// Never took effect (see the top of the file), or refused.
			case unknown || r.code == http.StatusOK:
				add(r, id, linOutput{Unknown: unknown, Code: r.code})
			}
		case linGet:
			if unknown || (r.code != http.StatusOK && r.code != http.StatusNotFound) {
				continue // observed nothing (other 4xx are counted in the summary)
			}
			out := linOutput{Code: r.code}
			if r.code == http.StatusOK {
				var a listedAgent
				if err := json.Unmarshal(r.body, &a); err != nil {
					t.Errorf("get %s: %v", r.agentID, err)
					continue
				}
				out.Status = a.Status
			}
			add(r, r.agentID, out)
		case linList:
			if unknown || r.code != http.StatusOK {
				continue
			}
			var page struct {
				Agents []listedAgent `json:"agents"`
			}
			json.Unmarshal(r.body, &page) // checked when listed
			present := map[string]string{}
			for _, a := range page.Agents {
				present[a.AgentID] = a.Status
			}
			for id, call := range created {
				if status, ok := present[id]; ok {
					add(r, id, linOutput{Code: http.StatusOK, Status: status})
				} else if r.ret >= call && (deleted[id] == 0 || r.call <= deleted[id]) {
					add(r, id, linOutput{Code: http.StatusNotFound})
				}
			}
		case linStop:
			out := linOutput{Unknown: unknown, Code: r.code}
			if !unknown && r.code == http.StatusOK {
				var res struct{ Stopped bool }
				if err := json.Unmarshal(r.body, &res); err != nil {
					t.Errorf("stop %s: %v", r.agentID, err)
					continue
				}
				out.Stopped = res.Stopped
			}
			add(r, r.agentID, out)
		case linDelete:
			add(r, r.agentID, linOutput{Unknown: unknown, Code: r.code})
		}
	}
	return ops
}

func (h *linHistory) serverName(addr string) string {
	for _, p := range h.c.all() {
		if p.HTTPAddr == addr {
			return p.Name
		}
	}
	return addr
}

// summary counts the calls by kind and outcome, for the log.
func (h *linHistory) summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	counts := map[string]int{}
	for _, r := range h.records {
		outcome := fmt.Sprint(r.code)
		switch {
		case r.err != nil:
			outcome = "error"
		case r.outcomeUnknown():
			outcome += "(unknown)"
		}
		counts[string(r.kind)+" "+outcome]++
	}
	var keys []string
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %d; ", k, counts[k])
	}
	return fmt.Sprintf("%d calls, %d agents seen: %s", len(h.records), len(h.known), b.String())
}

// checkLinearizable fails the test unless porcupine finds the history
// linearizable; a check that times out (Unknown) fails as well. On failure
// the agents whose histories are not linearizable are logged, and the
// visualization written to a file that outlives the test.
func checkLinearizable(t *testing.T, ops []porcupine.Operation) {
	t.Helper()
	started := time.Now()
	res, info := porcupine.CheckOperationsVerbose(agentModel, ops, 60*time.Second)
	t.Logf("porcupine: %s for %d operations over %d agents in %v", res, len(ops), len(agentModel.Partition(ops)), time.Since(started).Round(time.Millisecond))
	if res == porcupine.Ok {
		return
	}
	single := agentModel
	single.Partition = nil
	shown := 0
	for _, part := range agentModel.Partition(ops) {
		if porcupine.CheckOperations(single, part) {
			continue
		}
		shown++
		if shown > 3 {
			continue
		}
		sort.Slice(part, func(i, j int) bool { return part[i].Call < part[j].Call })
		var b strings.Builder
		for _, op := range part {
			fmt.Fprintf(&b, "\n  client %d: %s  [%s]", op.ClientId, agentModel.DescribeOperation(op.Input, op.Output), op.Metadata)
		}
		t.Logf("not linearizable: agent %s:%s", part[0].Input.(linInput).AgentID, b.String())
	}
	f, err := os.CreateTemp("", "agenthost-linearizability-*.html")
	if err == nil {
		err = porcupine.Visualize(agentModel, info, f)
		f.Close()
	}
	if err != nil {
		t.Errorf("porcupine visualization: %v", err)
	} else {
		t.Logf("porcupine visualization: %s", f.Name())
	}
	t.Fatalf("the history is not linearizable: porcupine says %s (%d agents' histories are not linearizable)", res, shown)
}

// linFault is one fault a linearizability test injects into the leader
// while the clients run, and how it ends.
type linFault struct {
	what            string // "killed", "partitioned"
	inject, recover func(leader int)
}

// runLinearizability runs the eight clients through rounds of the fault —
// each: load, fault the leader, wait until the cluster acknowledges a write
// again, keep the fault a while, end it — then checks the whole history.
// The short version is one round; -faults runs three, longer.
func runLinearizability(t *testing.T, c *Cluster, orgName string, fault linFault) {
	org := c.CreateOrg(orgName)
	rounds, warmup, after, tail := 1, 1500*time.Millisecond, 3*time.Second, time.Second
	if *faults {
		rounds, warmup, after, tail = 3, 5*time.Second, 8*time.Second, 5*time.Second
	}
	h := newLinHistory(c, org)
	stop := startLinClients(c, h)
	defer stop()

	for round := range rounds {
		time.Sleep(warmup)
		leader := c.WaitForLeader(30 * time.Second)
		at := time.Since(h.start)
		fault.inject(leader)
		t.Logf("round %d: %s leader %s", round+1, fault.what, c.Servers[leader].Name)
		waitFor(t, 45*time.Second, "a write acknowledged after the fault", func() bool { return h.firstAcknowledgedWrite(at) > 0 })
		time.Sleep(after)
		fault.recover(leader)
		c.WaitForLeader(30 * time.Second)
	}
	time.Sleep(tail)
	stop()

	h.settle(t)
	t.Log(h.summary())
	checkLinearizable(t, h.operations(t))
}

// TestLinearizableLeaderKilled is scenario 1 checked for linearizability:
// kill -9 the leader while eight clients create, read, stop and delete
// agents, restart it, and check the whole history.
func TestLinearizableLeaderKilled(t *testing.T) {
	c := StartCluster(t)
	runLinearizability(t, c, "linearizability-kill", linFault{what: "killed", inject: c.Kill9, recover: c.Restart})
}

// TestLinearizableLeaderPartitioned is scenario 2 checked for
// linearizability: the leader is cut off from the other servers while the
// clients keep sending to all three, then the partition heals.
func TestLinearizableLeaderPartitioned(t *testing.T) {
	c := StartClusterWith(t, Options{Partitionable: true})
	runLinearizability(t, c, "linearizability-partition", linFault{what: "partitioned", inject: c.Partition, recover: func(int) { c.Heal() }})
}
