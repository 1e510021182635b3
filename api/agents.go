package api

import (
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agenthost/agenthost/nodeagent/runtime"
	"github.com/agenthost/agenthost/nodeagent/runtime/remote"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// Limits on what a create request carries, besides the name's 1–100.
const (
	maxPromptBytes = 256 << 10
	maxTags        = 20
)

var tagPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`)

// workspaceDir is the directory an agent's runtime works in; OpenCode's web
// UI names a project by its directory, base64url-encoded, in session URLs.
const workspaceDir = "/workspace"

var workspaceSlug = base64.RawURLEncoding.EncodeToString([]byte(workspaceDir))

// agentURL is the address of an agent's web UI: a<port>.<public host>.
func (s *Server) agentURL(a *store.Agent) string {
	u := *s.cfg.PublicURL
	host := u.Hostname()
	if port := u.Port(); port != "" {
		u.Host = net.JoinHostPort("a"+strconv.Itoa(a.Port)+"."+host, port)
	} else {
		u.Host = "a" + strconv.Itoa(a.Port) + "." + host
	}
	u.Path, u.RawPath, u.RawQuery, u.Fragment = "", "", "", ""
	return u.String()
}

type sessionView struct {
	ID    string  `json:"id"`
	Title *string `json:"title"`
	URL   string  `json:"url"`
}

func (s *Server) sessionView(a *store.Agent, sess runtime.Session) sessionView {
	return sessionView{ID: sess.ID, Title: nullable(sess.Title), URL: s.agentURL(a) + "/" + workspaceSlug + "/session/" + sess.ID}
}

// agentState is the state every tenant read of agents comes from — get,
// list, and the lookup that start, stop, restart, delete and the calls to
// an agent begin with: a linearizable one (Store.ConsistentState), on
// whichever server answers. A follower's own state may lag the leader's, and
// a partitioned server's without bound, so a local read could show an agent
// an acknowledged stop stopped or an acknowledged delete deleted, or let a
// stop act twice (test/cluster's linearizability tests found all three).
// The price is a read index from the leader per call, shared by the calls
// that arrive while one is in flight, and no answer (503) without a leader.
func (s *Server) agentState(ctx context.Context) (*store.State, error) {
	return s.store.ConsistentState(ctx)
}

// agent looks up the caller's agent; another org's agent is exactly as
// absent as a missing one.
func (s *Server) agent(r *http.Request, p Principal) (*store.Agent, error) {
	id := r.PathValue("agentId")
	if !plausibleID(id) {
		return nil, notFound("agent %q not found", id)
	}
	st, err := s.agentState(r.Context())
	if err != nil {
		return nil, err
	}
	a, err := st.OrgAgent(p.OrgID, id)
	if err != nil {
		return nil, err
	}
	if a == nil {
		return nil, notFound("agent %q not found", id)
	}
	return a, nil
}

// runtimeOf reaches a running agent's runtime through its node.
func (s *Server) runtimeOf(a *store.Agent) (*remote.Runtime, error) {
	if a.Status != store.StatusRunning || a.Desired != store.DesiredRunning {
		return nil, notRunning(a.ID)
	}
	n, err := s.store.State().Node(a.NodeID)
	if err != nil {
		return nil, err
	}
	if n == nil || n.RuntimeServiceAddress == "" || n.Status == store.NodeDown {
		return nil, apiError(http.StatusBadGateway, CodeAgentNotResponding, "agent %s is not responding: its node is unreachable", a.ID)
	}
	return remote.New(s.rtc, n.RuntimeServiceAddress, a.ID), nil
}

// runningAgent is agent + runtimeOf: the start of every call that talks to
// the agent.
func (s *Server) runningAgent(r *http.Request, p Principal) (*store.Agent, *remote.Runtime, error) {
	a, err := s.agent(r, p)
	if err != nil {
		return nil, nil, err
	}
	rt, err := s.runtimeOf(a)
	return a, rt, err
}

type createAgentRequest struct {
	Name          *string  `json:"name"`
	InitialPrompt string   `json:"initialPrompt"`
	HiddenPrompt  string   `json:"hiddenPrompt"`
	ScopeID       string   `json:"scopeId"`
	Scope         string   `json:"scope"`
	Model         string   `json:"model"`
	Tags          []string `json:"tags"`
	Autostart     bool     `json:"autostart"`
}

type createAgentResponse struct {
	AgentID  string        `json:"agentId"`
	ScopeID  *string       `json:"scopeId"`
	URL      string        `json:"url"`
	Sessions []sessionView `json:"sessions"`
}

// validate checks the request and resolves its scope; the answer is a 400
// before anything is written.
func (s *Server) validateCreate(ctx context.Context, orgID string, req *createAgentRequest) (scopeID string, err error) {
	if req.Name == nil {
		return "", badRequest("name is required")
	}
	if !store.ValidName(*req.Name) {
		return "", badRequest("name must be 1-%d characters", store.MaxNameLength)
	}
	if len(req.InitialPrompt) > maxPromptBytes || len(req.HiddenPrompt) > maxPromptBytes {
		return "", badRequest("initialPrompt and hiddenPrompt are limited to %d KiB each", maxPromptBytes>>10)
	}
	if req.Model != "" {
		if err := s.models.checkModel(req.Model); err != nil {
			return "", err
		}
	}
	if len(req.Tags) > maxTags {
		return "", badRequest("at most %d tags", maxTags)
	}
	for _, t := range req.Tags {
		if !tagPattern.MatchString(t) {
			return "", badRequest("tag %q: 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter or digit", t)
		}
	}
	find := func(st *store.State) (byID, byName *store.Scope, err error) {
		if req.ScopeID != "" && plausibleID(req.ScopeID) {
			if byID, err = st.Scope(orgID, req.ScopeID); err != nil {
				return nil, nil, err
			}
		}
		if req.Scope != "" {
			if byName, err = st.ScopeByName(orgID, req.Scope); err != nil {
				return nil, nil, err
			}
		}
		return byID, byName, nil
	}
	byID, byName, err := find(s.store.State())
	missing := func() bool { return (req.ScopeID != "" && byID == nil) || (req.Scope != "" && byName == nil) }
	if err == nil && missing() && s.catchUp(ctx) {
		// Perhaps made through another server a moment ago.
		byID, byName, err = find(s.store.State())
	}
	switch {
	case err != nil:
		return "", err
	case req.ScopeID != "" && byID == nil:
		return "", badRequest("scope %q not found", req.ScopeID)
	case req.Scope != "" && byName == nil:
		return "", badRequest("scope %q not found", req.Scope)
	}
	switch {
	case byID != nil && byName != nil && byID.ID != byName.ID:
		return "", badRequest("scopeId and scope name different scopes")
	case byID != nil:
		return byID.ID, nil
	case byName != nil:
		return byName.ID, nil
	}
	return "", nil
}

func (s *Server) createAgent(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req createAgentRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	scopeID, err := s.validateCreate(r.Context(), p.OrgID, &req)
	if err != nil {
		return err
	}
	kr := s.keyring.Load()
	if kr == nil {
		return errNoRuntimePasswordKey
	}
	model, provider := s.models.resolve(s.store.State(), p.OrgID, req.Model)
	id := newID(prefixAgent)
	key := idempotencyKey(r)
	if key != "" {
		id = derivedID(prefixAgent, p.OrgID, key)
	}
	a := store.Agent{
		ID:            id,
		OrgID:         p.OrgID,
		Name:          *req.Name,
		ScopeID:       scopeID,
		Model:         model,
		ModelProvider: provider,
		Runtime:       s.cfg.AgentRuntime,
		Resources:     s.cfg.AgentResources,
		Tags:          slices.Compact(slices.Sorted(slices.Values(req.Tags))),
		HiddenPrompt:  req.HiddenPrompt,
		Autostart:     req.Autostart,
		Desired:       store.DesiredRunning,
		Status:        store.StatusProvisioning,
		CreatedAt:     time.Now().UTC(),
	}
	// The runtime password reaches Raft sealed only; the control servers
	// open it for the agent's node and for proxies.
	if err := clusterrpc.SealRuntimePassword(kr, &a, store.NewRuntimePassword()); err != nil {
		return err
	}
	start := time.Now()
	index, err := s.store.Apply(r.Context(), &store.AgentCreate{Agent: a})
	switch {
	case err != nil && key != "" && errors.Is(err, store.ErrAlreadyExists):
		// A retry of a create that went through before: carry on with it,
		// from a state that has it.
		st, err := s.store.ConsistentState(r.Context())
		if err != nil {
			return err
		}
		index = st.Index()
	case err != nil:
		if errors.Is(err, store.ErrRunningCap) {
			// Creating past the running cap is the plan's limit too: the
			// reference's 429 for create.
			return apiError(http.StatusTooManyRequests, CodeRunningCap, "concurrent agent cap reached for your plan")
		}
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CreateTimeout)
	defer cancel()
	ready, err := s.waitForStatus(ctx, index, p.OrgID, a.ID, store.StatusRunning)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return apiError(http.StatusGatewayTimeout, CodeTimeout,
				"agent %s was not ready within %s; it is still provisioning (poll GET /api/v1/agents/%s, or delete it)", a.ID, s.cfg.CreateTimeout, a.ID)
		}
		return err
	}
	s.metrics.createToReady.Observe(time.Since(start).Seconds())
	resp := createAgentResponse{AgentID: a.ID, ScopeID: nullable(scopeID), URL: s.agentURL(ready), Sessions: []sessionView{}}
	if req.InitialPrompt != "" {
		rt, err := s.runtimeOf(ready)
		if err != nil {
			return err
		}
		sess, err := rt.CreateSession(r.Context(), "")
		if err != nil {
			return err
		}
		if err := rt.Send(r.Context(), sess.ID, req.InitialPrompt); err != nil {
			return err
		}
		resp.Sessions = append(resp.Sessions, s.sessionView(ready, sess))
	}
	return writeJSON(w, http.StatusOK, resp)
}

// waitForStatus waits until the agent reports want while it should run (or,
// for STOPPED, while it should be stopped). ERROR ends the wait with a 502
// carrying the agent's error message; deletion with a 404. index is the
// write that asked for the change: a follower first catches up to it.
func (s *Server) waitForStatus(ctx context.Context, index uint64, orgID, id string, want store.AgentStatus) (*store.Agent, error) {
	if err := s.store.CatchUp(ctx, index); err != nil {
		return nil, err
	}
	for {
		applied := s.store.AppliedIndex()
		a, err := s.store.State().OrgAgent(orgID, id)
		if err != nil {
			return nil, err
		}
		if a == nil {
			return nil, notFound("agent %q was deleted", id)
		}
		wantDesired := store.DesiredRunning
		if want == store.StatusStopped {
			wantDesired = store.DesiredStopped
		}
		switch {
		case a.Desired != wantDesired:
			return nil, apiError(http.StatusConflict, CodeConflict, "agent %s was changed by another request while this one waited", id)
		case a.Status == want:
			return a, nil
		case a.Status == store.StatusError && want == store.StatusRunning:
			return nil, apiError(http.StatusBadGateway, CodeProvisioningFailed, "agent %s failed to start: %s", id, a.ErrorMsg)
		}
		if err := s.store.WaitForIndex(ctx, applied+1); err != nil {
			return nil, err
		}
	}
}

type agentView struct {
	AgentID   string        `json:"agentId"`
	Name      string        `json:"name"`
	Status    string        `json:"status"`
	Busy      bool          `json:"busy"`
	URL       string        `json:"url"`
	Sessions  []sessionView `json:"sessions"`
	ErrorMsg  *string       `json:"errorMsg"`
	CreatedAt string        `json:"createdAt"`
	// Beyond the reference: what the agent was created with.
	ScopeID   *string  `json:"scopeId"`
	Model     *string  `json:"model"`
	Tags      []string `json:"tags"`
	Autostart bool     `json:"autostart"`
}

func (s *Server) agentView(a *store.Agent) agentView {
	return agentView{
		AgentID: a.ID, Name: a.Name, Status: string(a.Status), URL: s.agentURL(a),
		Sessions: []sessionView{}, ErrorMsg: nullable(a.ErrorMsg), CreatedAt: timestamp(a.CreatedAt),
		ScopeID: nullable(a.ScopeID), Model: nullable(a.Model), Tags: nonNil(a.Tags), Autostart: a.Autostart,
	}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// liveTimeout bounds the live part of GET agent: a node that does not answer
// makes the agent look idle with no sessions, not the request hang.
const liveTimeout = 5 * time.Second

func (s *Server) getAgent(w http.ResponseWriter, r *http.Request, p Principal) error {
	a, err := s.agent(r, p)
	if err != nil {
		return err
	}
	view := s.agentView(a)
	if rt, err := s.runtimeOf(a); err == nil {
		ctx, cancel := context.WithTimeout(r.Context(), liveTimeout)
		defer cancel()
		// Busy first: a reply that ends while sessions are read is then
		// seen as busy once more, never as idle too early.
		busy, berr := rt.BusyContext(ctx)
		sessions, serr := rt.Sessions(ctx)
		if berr == nil && serr == nil {
			view.Busy = busy
			for _, sess := range sessions {
				view.Sessions = append(view.Sessions, s.sessionView(a, sess))
			}
		} else {
			s.logger.Warn("agent did not answer for GET agent", "agent", a.ID, "error", errors.Join(berr, serr))
		}
	}
	return writeJSON(w, http.StatusOK, view)
}

// Listing is paginated by agent ID: cursor is the last ID of the previous
// page.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

type listAgentsResponse struct {
	Agents     []agentView `json:"agents"`
	NextCursor *string     `json:"nextCursor"`
}

// listAgents answers from the store alone (status, not busy): a list must
// not fan out to every node. GET one agent for its live state.
func (s *Server) listAgents(w http.ResponseWriter, r *http.Request, p Principal) error {
	q := r.URL.Query()
	limit := defaultPageSize
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxPageSize {
			return badRequest("limit must be 1-%d", maxPageSize)
		}
		limit = n
	}
	status := strings.ToUpper(q.Get("status"))
	switch store.AgentStatus(status) {
	case "", store.StatusProvisioning, store.StatusRunning, store.StatusStopped, store.StatusError:
	default:
		return badRequest("status must be PROVISIONING, RUNNING, STOPPED or ERROR")
	}
	tag, cursor := q.Get("tag"), q.Get("cursor")
	st, err := s.agentState(r.Context())
	if err != nil {
		return err
	}
	resp := listAgentsResponse{Agents: []agentView{}}
	err = st.EachOrgAgentAfter(p.OrgID, cursor, func(a *store.Agent) bool {
		if (status != "" && string(a.Status) != status) || (tag != "" && !slices.Contains(a.Tags, tag)) {
			return true
		}
		if len(resp.Agents) == limit {
			next := resp.Agents[len(resp.Agents)-1].AgentID
			resp.NextCursor = &next
			return false
		}
		resp.Agents = append(resp.Agents, s.agentView(a))
		return true
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, resp)
}

func (s *Server) deleteAgent(w http.ResponseWriter, r *http.Request, p Principal) error {
	a, err := s.agent(r, p)
	if err != nil {
		return err
	}
	if _, err := s.store.Apply(r.Context(), &store.AgentDelete{ID: a.ID}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"agentId": a.ID, "deleted": true})
}

type lifecycleResponse struct {
	AgentID   string `json:"agentId"`
	Status    string `json:"status"`
	Started   *bool  `json:"started,omitempty"`
	Stopped   *bool  `json:"stopped,omitempty"`
	Restarted *bool  `json:"restarted,omitempty"`
}

// settled reports whether an agent is in a state that start, stop and
// restart act on: RUNNING or STOPPED, with nothing pending.
func settled(a *store.Agent) bool {
	return (a.Status == store.StatusRunning && a.Desired == store.DesiredRunning) ||
		(a.Status == store.StatusStopped && a.Desired == store.DesiredStopped)
}

func (s *Server) startAgent(w http.ResponseWriter, r *http.Request, p Principal) error {
	a, err := s.agent(r, p)
	if err != nil {
		return err
	}
	if !settled(a) {
		return badRequest("agent %s is %s and cannot be started now", a.ID, a.Status)
	}
	started := a.Status == store.StatusStopped
	if started {
		if err := s.start(r.Context(), a); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, lifecycleResponse{AgentID: a.ID, Status: string(store.StatusRunning), Started: &started})
}

func (s *Server) stopAgent(w http.ResponseWriter, r *http.Request, p Principal) error {
	a, err := s.agent(r, p)
	if err != nil {
		return err
	}
	if !settled(a) {
		return badRequest("agent %s is %s and cannot be stopped now", a.ID, a.Status)
	}
	stopped := a.Status == store.StatusRunning
	if stopped {
		if err := s.stop(r.Context(), a); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, lifecycleResponse{AgentID: a.ID, Status: string(store.StatusStopped), Stopped: &stopped})
}

func (s *Server) restartAgent(w http.ResponseWriter, r *http.Request, p Principal) error {
	a, err := s.agent(r, p)
	if err != nil {
		return err
	}
	if !settled(a) {
		return badRequest("agent %s is %s and cannot be restarted now", a.ID, a.Status)
	}
	if a.Status == store.StatusRunning {
		if err := s.stop(r.Context(), a); err != nil {
			return err
		}
	}
	if err := s.start(r.Context(), a); err != nil {
		return err
	}
	restarted := true
	return writeJSON(w, http.StatusOK, lifecycleResponse{AgentID: a.ID, Status: string(store.StatusRunning), Restarted: &restarted})
}

// start asks for the agent to run (the scheduler re-checks the running cap
// and the node's room) and waits up to StartTimeout for it to be healthy.
func (s *Server) start(ctx context.Context, a *store.Agent) error {
	index, err := s.store.Apply(ctx, &store.AgentSetDesired{ID: a.ID, Desired: store.DesiredRunning, Status: store.StatusProvisioning})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	if _, err := s.waitForStatus(wctx, index, a.OrgID, a.ID, store.StatusRunning); err != nil {
		return failedTo("start", a.ID, err)
	}
	return nil
}

// stop asks for the agent to stop (the node gives it 3 s to exit) and waits
// for the node to report it stopped.
func (s *Server) stop(ctx context.Context, a *store.Agent) error {
	index, err := s.store.Apply(ctx, &store.AgentSetDesired{ID: a.ID, Desired: store.DesiredStopped})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.StopTimeout)
	defer cancel()
	if _, err := s.waitForStatus(wctx, index, a.OrgID, a.ID, store.StatusStopped); err != nil {
		return failedTo("stop", a.ID, err)
	}
	return nil
}

// failedTo is the reference's 503 "container failed to start/stop" for a
// wait that timed out or ended in ERROR.
func failedTo(verb, id string, err error) error {
	var e *Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &e) && e.Code == CodeProvisioningFailed) {
		return apiError(http.StatusServiceUnavailable, CodeAgentNotReady, "container failed to %s: %v", verb, err)
	}
	return err
}
