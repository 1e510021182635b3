package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// Tokens: an org's tenants manage their own (/tokens), operators any org's
// (/orgs/{orgId}/tokens). The token is in the create response only; the
// store keeps its hash.

type tokenView struct {
	ID         string  `json:"id"`
	OrgID      *string `json:"orgId"`
	Label      string  `json:"label"`
	Role       string  `json:"role"`
	Last4      string  `json:"last4"`
	CreatedAt  string  `json:"createdAt"`
	LastUsedAt *string `json:"lastUsedAt"`
}

type createdToken struct {
	tokenView
	// Token is shown this once.
	Token string `json:"token"`
}

func viewToken(t *store.Token) tokenView {
	v := tokenView{ID: t.ID, OrgID: nullable(t.OrgID), Label: t.Label, Role: string(t.Role), Last4: t.Last4, CreatedAt: timestamp(t.CreatedAt)}
	if !t.LastUsedAt.IsZero() {
		ts := timestamp(t.LastUsedAt)
		v.LastUsedAt = &ts
	}
	return v
}

const maxLabelLength = 100

// mintToken makes a token, stores its hash, and returns it for the one
// response that shows it. bootstrap makes the FSM refuse it when an
// operator token exists already.
func (s *Server) mintToken(ctx context.Context, orgID, label string, role store.TokenRole, bootstrap bool) (createdToken, error) {
	if len([]rune(label)) > maxLabelLength {
		return createdToken{}, badRequest("label is limited to %d characters", maxLabelLength)
	}
	secret, hash, last4, err := NewToken()
	if err != nil {
		return createdToken{}, err
	}
	t := store.Token{ID: newID(prefixToken), OrgID: orgID, Label: label, Role: role, Hash: hash, Last4: last4, CreatedAt: time.Now().UTC()}
	index, err := s.store.Apply(ctx, &store.TokenCreate{Token: t, Bootstrap: bootstrap})
	if err != nil {
		return createdToken{}, err
	}
	// The token works here as soon as it is handed out.
	if err := s.store.CatchUp(ctx, index); err != nil {
		return createdToken{}, err
	}
	return createdToken{tokenView: viewToken(&t), Token: secret}, nil
}

// listTokens lists an org's tokens, or with orgID "" the operator tokens
// of no org.
func listTokens(w http.ResponseWriter, st *store.State, orgID string) error {
	var tokens []*store.Token
	var err error
	if orgID == "" {
		tokens, err = st.TokensByRole(store.RoleOperator)
	} else {
		tokens, err = st.TokensByOrg(orgID)
	}
	if err != nil {
		return err
	}
	out := []tokenView{}
	for _, t := range tokens {
		if t.OrgID == orgID {
			out = append(out, viewToken(t))
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

type createTokenRequest struct {
	Label string `json:"label"`
	Role  string `json:"role"`
}

func (s *Server) listOwnTokens(w http.ResponseWriter, r *http.Request, p Principal) error {
	return listTokens(w, s.store.State(), p.OrgID)
}

func (s *Server) createOwnToken(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req createTokenRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	if req.Role != "" && req.Role != string(store.RoleTenant) {
		return badRequest("tenant tokens can only create tenant tokens")
	}
	t, err := s.mintToken(r.Context(), p.OrgID, req.Label, store.RoleTenant, false)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, t)
}

// revokeToken deletes an org's token (orgID "" for operator tokens of no
// org); another org's token is 404.
func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, orgID string) error {
	id := r.PathValue("tokenId")
	t, err := s.store.State().Token(id)
	if err != nil {
		return err
	}
	if t == nil || t.OrgID != orgID {
		return notFound("token %q not found", id)
	}
	if _, err := s.store.Apply(r.Context(), &store.TokenRevoke{ID: id}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"id": id, "revoked": true})
}

func (s *Server) revokeOwnToken(w http.ResponseWriter, r *http.Request, p Principal) error {
	return s.revokeToken(w, r, p.OrgID)
}

// Orgs and their plans (operator).

type orgView struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Plan         store.Plan `json:"plan"`
	DefaultModel *string    `json:"defaultModel"`
	Usage        *orgUsage  `json:"usage,omitempty"`
	CreatedAt    string     `json:"createdAt"`
}

type orgUsage struct {
	Agents  int `json:"agents"`
	Running int `json:"running"`
}

func (s *Server) viewOrg(st *store.State, o *store.Org) (orgView, error) {
	agents, err := st.AgentsByOrg(o.ID)
	if err != nil {
		return orgView{}, err
	}
	u := orgUsage{Agents: len(agents)}
	for _, a := range agents {
		if a.HoldsResources() {
			u.Running++
		}
	}
	return orgView{ID: o.ID, Name: o.Name, Plan: o.Plan, DefaultModel: nullable(o.DefaultModel), Usage: &u, CreatedAt: timestamp(o.CreatedAt)}, nil
}

func (s *Server) listOrgs(w http.ResponseWriter, r *http.Request, _ Principal) error {
	st := s.store.State()
	orgs, err := st.Orgs()
	if err != nil {
		return err
	}
	out := []orgView{}
	for _, o := range orgs {
		v, err := s.viewOrg(st, o)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"orgs": out})
}

type orgRequest struct {
	Name         *string     `json:"name"`
	Plan         *store.Plan `json:"plan"`
	DefaultModel *string     `json:"defaultModel"`
}

func (s *Server) checkOrgRequest(req *orgRequest) error {
	if req.Name != nil && !store.ValidName(*req.Name) {
		return badRequest("name must be 1-%d characters", store.MaxNameLength)
	}
	if req.Plan != nil && (req.Plan.MaxAgents < 0 || req.Plan.MaxRunning < 0) {
		return badRequest("plan caps must not be negative (0 is unlimited)")
	}
	if req.DefaultModel != nil && *req.DefaultModel != "" {
		return s.models.checkModel(*req.DefaultModel)
	}
	return nil
}

func (s *Server) createOrg(w http.ResponseWriter, r *http.Request, _ Principal) error {
	var req orgRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.Name == nil {
		return badRequest("name is required")
	}
	if err := s.checkOrgRequest(&req); err != nil {
		return err
	}
	o := store.Org{ID: newID(prefixOrg), Name: *req.Name, CreatedAt: time.Now().UTC()}
	if req.Plan != nil {
		o.Plan = *req.Plan
	}
	if req.DefaultModel != nil {
		o.DefaultModel = *req.DefaultModel
	}
	index, err := s.store.Apply(r.Context(), &store.OrgCreate{Org: o})
	if err != nil {
		return err
	}
	return s.writeOrg(w, r, index, o.ID, http.StatusCreated)
}

func (s *Server) writeOrg(w http.ResponseWriter, r *http.Request, index uint64, id string, status int) error {
	if err := s.store.CatchUp(r.Context(), index); err != nil {
		return err
	}
	st := s.store.State()
	o, err := st.Org(id)
	if err != nil {
		return err
	}
	if o == nil {
		return notFound("org %q not found", id)
	}
	v, err := s.viewOrg(st, o)
	if err != nil {
		return err
	}
	return writeJSON(w, status, v)
}

func (s *Server) org(r *http.Request) (*store.Org, error) {
	id := r.PathValue("orgId")
	o, err := s.store.State().Org(id)
	if err == nil && o == nil && s.catchUp(r.Context()) {
		o, err = s.store.State().Org(id)
	}
	if err != nil {
		return nil, err
	}
	if o == nil {
		return nil, notFound("org %q not found", id)
	}
	return o, nil
}

func (s *Server) getOrg(w http.ResponseWriter, r *http.Request, _ Principal) error {
	o, err := s.org(r)
	if err != nil {
		return err
	}
	return s.writeOrg(w, r, 0, o.ID, http.StatusOK)
}

func (s *Server) updateOrg(w http.ResponseWriter, r *http.Request, _ Principal) error {
	var req orgRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.Name == nil && req.Plan == nil && req.DefaultModel == nil {
		return badRequest("nothing to update: give name, plan or defaultModel")
	}
	if err := s.checkOrgRequest(&req); err != nil {
		return err
	}
	o, err := s.org(r)
	if err != nil {
		return err
	}
	index, err := s.store.Apply(r.Context(), &store.OrgUpdate{ID: o.ID, Name: req.Name, Plan: req.Plan, DefaultModel: req.DefaultModel})
	if err != nil {
		return err
	}
	return s.writeOrg(w, r, index, o.ID, http.StatusOK)
}

func (s *Server) listOrgTokens(w http.ResponseWriter, r *http.Request, _ Principal) error {
	o, err := s.org(r)
	if err != nil {
		return err
	}
	return listTokens(w, s.store.State(), o.ID)
}

func (s *Server) createOrgToken(w http.ResponseWriter, r *http.Request, _ Principal) error {
	var req createTokenRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	o, err := s.org(r)
	if err != nil {
		return err
	}
	role := store.TokenRole(req.Role)
	switch role {
	case "":
		role = store.RoleTenant
	case store.RoleTenant, store.RoleOperator:
	default:
		return badRequest("role must be \"tenant\" or \"operator\"")
	}
	t, err := s.mintToken(r.Context(), o.ID, req.Label, role, false)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, t)
}

func (s *Server) revokeOrgToken(w http.ResponseWriter, r *http.Request, _ Principal) error {
	o, err := s.org(r)
	if err != nil {
		return err
	}
	return s.revokeToken(w, r, o.ID)
}

// Nodes (operator).

type nodeView struct {
	ID         string             `json:"id"`
	Name       string             `json:"name"`
	Address    string             `json:"address"`
	Status     string             `json:"status"`
	Capacity   store.NodeCapacity `json:"capacity"`
	Allocated  nodeAllocated      `json:"allocated"`
	AgentCount int                `json:"agentCount"`
	Labels     map[string]string  `json:"labels"`
	Runtimes   []string           `json:"runtimes"`
	LastSeen   *string            `json:"lastSeen"`
	// Drain is set while the node drains.
	Drain *drainView `json:"drain"`
}

type drainView struct {
	Agents   string  `json:"agents"`
	Deadline *string `json:"deadline"`
}

type nodeAllocated struct {
	CPUMillis int64 `json:"cpuMillis"`
	MemoryMB  int64 `json:"memoryMB"`
	Agents    int   `json:"agents"`
}

func viewNode(st *store.State, n *store.Node) (nodeView, error) {
	alloc, err := st.NodeAllocation(n.ID)
	if err != nil {
		return nodeView{}, err
	}
	agents, err := st.AgentsByNode(n.ID)
	if err != nil {
		return nodeView{}, err
	}
	v := nodeView{ID: n.ID, Name: n.Name, Address: n.Address, Status: string(n.Status), Capacity: n.Capacity,
		Allocated:  nodeAllocated{CPUMillis: alloc.CPUMillis, MemoryMB: alloc.MemoryMB, Agents: alloc.Agents},
		AgentCount: len(agents), Labels: n.Labels, Runtimes: nonNil(n.Runtimes)}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if !n.LastSeen.IsZero() {
		ts := timestamp(n.LastSeen)
		v.LastSeen = &ts
	}
	if d := n.Drain; d != nil {
		v.Drain = &drainView{Agents: string(d.Agents)}
		if !d.Deadline.IsZero() {
			ts := timestamp(d.Deadline)
			v.Drain.Deadline = &ts
		}
	}
	return v, nil
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request, _ Principal) error {
	st := s.store.State()
	nodes, err := st.Nodes()
	if err != nil {
		return err
	}
	out := []nodeView{}
	for _, n := range nodes {
		v, err := viewNode(st, n)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"nodes": out})
}

// drainRequest is POST /api/v1/nodes/{nodeId}/drain's optional body.
type drainRequest struct {
	// Agents: keep (default: the node only takes no new agents), stop or
	// move (to other nodes, keeping their ports and so their URLs).
	Agents string `json:"agents"`
	// DeadlineSeconds is how long the node's agents have before they are
	// stopped or moved; 0 is at once.
	DeadlineSeconds int64 `json:"deadlineSeconds"`
}

// maxDrainDeadline bounds a drain's deadline (a week).
const maxDrainDeadline = 7 * 24 * 3600

func (s *Server) drainNode(w http.ResponseWriter, r *http.Request, _ Principal) error {
	var req drainRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	drain := &store.NodeDrain{Agents: store.DrainAgents(req.Agents)}
	switch drain.Agents {
	case "":
		drain.Agents = store.DrainKeep
	case store.DrainKeep, store.DrainStop, store.DrainMove:
	default:
		return apiError(http.StatusBadRequest, CodeInvalidRequest, "agents must be keep, stop or move")
	}
	if req.DeadlineSeconds < 0 || req.DeadlineSeconds > maxDrainDeadline {
		return apiError(http.StatusBadRequest, CodeInvalidRequest, "deadlineSeconds must be between 0 and %d", maxDrainDeadline)
	}
	if req.DeadlineSeconds > 0 {
		if drain.Agents == store.DrainKeep {
			return apiError(http.StatusBadRequest, CodeInvalidRequest, "a deadline needs agents stop or move")
		}
		drain.Deadline = time.Now().UTC().Add(time.Duration(req.DeadlineSeconds) * time.Second)
	}
	return s.setNodeStatus(w, r, store.NodeDraining, drain)
}

func (s *Server) undrainNode(w http.ResponseWriter, r *http.Request, _ Principal) error {
	return s.setNodeStatus(w, r, store.NodeReady, nil)
}

// deleteNode removes a node for good: refused (409) while agents are placed
// on it — drain it with agents move or stop first.
func (s *Server) deleteNode(w http.ResponseWriter, r *http.Request, _ Principal) error {
	id := r.PathValue("nodeId")
	index, err := s.store.Apply(r.Context(), &store.NodeDelete{ID: id})
	if errors.Is(err, store.ErrNotFound) {
		return notFound("node %q not found", id)
	}
	if err != nil {
		return err
	}
	if err := s.store.CatchUp(r.Context(), index); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"id": id, "deleted": true})
}

// setNodeStatus drains or undrains a node. A down node is refused: it comes
// back ready on its own when it heartbeats again.
func (s *Server) setNodeStatus(w http.ResponseWriter, r *http.Request, status store.NodeStatus, drain *store.NodeDrain) error {
	id := r.PathValue("nodeId")
	n, err := s.store.State().Node(id)
	if err != nil {
		return err
	}
	if n == nil {
		return notFound("node %q not found", id)
	}
	if n.Status == store.NodeDown {
		return apiError(http.StatusConflict, CodeConflict, "node %s is down; it rejoins as ready when it comes back", id)
	}
	index, err := s.store.Apply(r.Context(), &store.NodeSetStatus{ID: id, Status: status, Drain: drain})
	if err != nil {
		return err
	}
	if err := s.store.CatchUp(r.Context(), index); err != nil {
		return err
	}
	st := s.store.State()
	if n, err = st.Node(id); err != nil || n == nil {
		return errors.Join(err, notFound("node %q not found", id))
	}
	v, err := viewNode(st, n)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, v)
}

// bootstrap makes the cluster's first operator token. It needs no token —
// there is none yet — so it answers only on the server's own host (a
// loopback peer, not forwarded by a proxy) and only while no operator token
// exists; the store refuses a second bootstrap even when two race.
func (s *Server) bootstrap(w http.ResponseWriter, r *http.Request, _ Principal) error {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() || r.Header.Get("X-Forwarded-For") != "" {
		return apiError(http.StatusForbidden, CodeForbidden, "bootstrap answers only on the server's own host (loopback)")
	}
	var req createTokenRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	if req.Label == "" {
		req.Label = "bootstrap"
	}
	t, err := s.mintToken(r.Context(), "", req.Label, store.RoleOperator, true)
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return apiError(http.StatusConflict, CodeConflict, "the cluster is bootstrapped already: an operator token exists")
		}
		return err
	}
	return writeJSON(w, http.StatusCreated, t)
}

// Operator tokens of no org (the bootstrap token and those made from it).

func (s *Server) listOperatorTokens(w http.ResponseWriter, r *http.Request, _ Principal) error {
	return listTokens(w, s.store.State(), "")
}

func (s *Server) createOperatorToken(w http.ResponseWriter, r *http.Request, _ Principal) error {
	var req createTokenRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	if req.Role != "" && req.Role != string(store.RoleOperator) {
		return badRequest("tokens of no org are operator tokens; make tenant tokens under /api/v1/orgs/{orgId}/tokens")
	}
	t, err := s.mintToken(r.Context(), "", req.Label, store.RoleOperator, false)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, t)
}

func (s *Server) revokeOperatorToken(w http.ResponseWriter, r *http.Request, _ Principal) error {
	return s.revokeToken(w, r, "")
}

// Bootstrap makes the cluster's first operator token, as POST
// /api/v1/operator/bootstrap does; store.ErrConflict when one exists.
func (s *Server) Bootstrap(ctx context.Context, label string) (token string, err error) {
	t, err := s.mintToken(ctx, "", label, store.RoleOperator, true)
	return t.Token, err
}

// CreateOrg makes an org with a plan and a first tenant token for it, for
// set-ups that script what an operator would do through the API (dev).
func (s *Server) CreateOrg(ctx context.Context, name string, plan store.Plan, tokenLabel string) (orgID, token string, err error) {
	o := store.Org{ID: newID(prefixOrg), Name: name, Plan: plan, CreatedAt: time.Now().UTC()}
	if _, err := s.store.Apply(ctx, &store.OrgCreate{Org: o}); err != nil {
		return "", "", err
	}
	t, err := s.mintToken(ctx, o.ID, tokenLabel, store.RoleTenant, false)
	return o.ID, t.Token, err
}

// Secrets keys: the key-encryption keys live in each server's key file,
// outside Raft; these endpoints show which keys seal the stored secrets and
// agents' runtime passwords, and re-seal them under the current key, the
// last step of a rotation (docs/operations.md).

type secretKeysView struct {
	// CurrentKeyID is the key this server seals with.
	CurrentKeyID string `json:"currentKeyId"`
	// SecretsByKey counts the secrets sealed under each key.
	SecretsByKey map[string]int `json:"secretsByKey"`
	// RuntimePasswordsByKey counts the agents' runtime passwords sealed
	// under each key.
	RuntimePasswordsByKey map[string]int `json:"runtimePasswordsByKey"`
	// Resealed is how many secrets and runtime passwords the call
	// re-sealed (reseal only).
	Resealed *int `json:"resealed,omitempty"`
}

func (s *Server) secretKeys(ctx context.Context, resealed *int) (secretKeysView, error) {
	kr := s.keyring.Load()
	st, err := s.store.ConsistentState(ctx)
	if err != nil {
		return secretKeysView{}, err
	}
	inUse, err := clusterrpc.SecretKeysInUse(st)
	if err != nil {
		return secretKeysView{}, err
	}
	return secretKeysView{CurrentKeyID: kr.CurrentID(), SecretsByKey: inUse.Secrets, RuntimePasswordsByKey: inUse.RuntimePasswords, Resealed: resealed}, nil
}

func (s *Server) getSecretKeys(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if s.keyring.Load() == nil {
		return errSecretsUnavailable
	}
	v, err := s.secretKeys(r.Context(), nil)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, v)
}

func (s *Server) resealSecrets(w http.ResponseWriter, r *http.Request, _ Principal) error {
	kr := s.keyring.Load()
	if kr == nil {
		return errSecretsUnavailable
	}
	n, err := clusterrpc.ResealSecrets(r.Context(), s.store, kr)
	if err != nil {
		if errors.Is(err, keyring.ErrUnknownKey) {
			return apiError(http.StatusConflict, CodeConflict,
				"%d secrets and runtime passwords re-sealed, but some are sealed under a key this server's key file lacks: %v", n, err)
		}
		return err
	}
	v, err := s.secretKeys(r.Context(), &n)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, v)
}
