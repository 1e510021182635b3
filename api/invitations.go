package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/agenthost/agenthost/store"
)

// Who may sign up, and the accounts that did: operators set the sign-up
// mode (GET/PATCH /api/v1/operator/config), make invitations — into an
// org, to an org of one's own, or for an operator account — and list,
// promote and remove accounts; a tenant invites people into its own org
// (/api/v1/invitations). An invitation's code is in the create response
// only; the store keeps its SHA-256, and signing up with it consumes it in
// the same Raft transaction as the account's creation.

const (
	defaultInvitationTTL = 7 * 24 * time.Hour
	maxInvitationHours   = 30 * 24
)

type invitationRequest struct {
	Email          string `json:"email"`
	OrgID          string `json:"orgId"`
	Operator       bool   `json:"operator"`
	ExpiresInHours int    `json:"expiresInHours"`
}

type invitationView struct {
	ID        string  `json:"id"`
	OrgID     *string `json:"orgId"`
	Email     *string `json:"email"`
	Operator  bool    `json:"operator"`
	CreatedAt string  `json:"createdAt"`
	ExpiresAt string  `json:"expiresAt"`
}

type createdInvitation struct {
	invitationView
	// Code is shown this once; SignupURL is the dashboard's sign-up page
	// with the code filled in.
	Code      string `json:"code"`
	SignupURL string `json:"signupUrl"`
}

func viewInvitation(inv *store.Invitation) invitationView {
	return invitationView{ID: inv.ID, OrgID: nullable(inv.OrgID), Email: nullable(inv.Email), Operator: inv.Operator,
		CreatedAt: timestamp(inv.CreatedAt), ExpiresAt: timestamp(inv.ExpiresAt)}
}

// invite makes an invitation from req; orgID is the org it admits to ("":
// an org of one's own).
func (s *Server) invite(w http.ResponseWriter, r *http.Request, req invitationRequest, orgID string) error {
	email := ""
	if req.Email != "" {
		email = normalizeEmail(req.Email)
		if err := store.ValidateEmail(email); err != nil {
			return badRequest("%q is not an email address", req.Email)
		}
	}
	ttl := defaultInvitationTTL
	if req.ExpiresInHours != 0 {
		if req.ExpiresInHours < 1 || req.ExpiresInHours > maxInvitationHours {
			return badRequest("expiresInHours must be between 1 and %d", maxInvitationHours)
		}
		ttl = time.Duration(req.ExpiresInHours) * time.Hour
	}
	st, cfg, err := s.consistentConfig(r.Context())
	if err != nil {
		return err
	}
	if cfg.SignupMode() == store.SignupClosed {
		return apiError(http.StatusConflict, CodeConflict, "sign-up is closed on this cluster, so an invitation would not be honoured; an operator sets the sign-up mode to invite or open first")
	}
	if email != "" {
		if acc, err := st.AccountByEmail(email); err != nil {
			return err
		} else if acc != nil {
			return apiError(http.StatusConflict, CodeConflict, "an account with this email exists")
		}
	}
	code := newSecret("ahi_")
	now := time.Now().UTC()
	inv := store.Invitation{ID: newID(prefixInvitation), OrgID: orgID, Email: email, Operator: req.Operator,
		Hash: hexSHA256(code), CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if key := idempotencyKey(r); key != "" {
		inv.ID = derivedID(prefixInvitation, orgID, key)
	}
	if _, err := s.store.Apply(r.Context(), &store.InvitationCreate{Invitation: inv}); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("org %q not found", orgID)
		}
		return err
	}
	signup := *s.cfg.PublicURL
	signup.Path, signup.RawQuery = "/app/signup", "invitation="+code
	return writeJSON(w, http.StatusCreated, createdInvitation{invitationView: viewInvitation(&inv), Code: code, SignupURL: signup.String()})
}

func writeInvitations(w http.ResponseWriter, list []*store.Invitation, err error) error {
	if err != nil {
		return err
	}
	out := make([]invitationView, 0, len(list))
	for _, inv := range list {
		out = append(out, viewInvitation(inv))
	}
	return writeJSON(w, http.StatusOK, map[string]any{"invitations": out})
}

// withdrawInvitation deletes an invitation into orgID, not an operator one
// (any one, with all: operators); another org's is a 404.
func (s *Server) withdrawInvitation(w http.ResponseWriter, r *http.Request, orgID string, all bool) error {
	id := r.PathValue("invitationId")
	inv, err := s.store.State().Invitation(id)
	if err != nil {
		return err
	}
	if inv == nil || !all && (inv.OrgID != orgID || inv.Operator) {
		return notFound("invitation %q not found", id)
	}
	if _, err := s.store.Apply(r.Context(), &store.InvitationDelete{ID: id}); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("invitation %q not found", id)
		}
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"id": id, "deleted": true})
}

// Tenants: invitations into their own org.

// listOwnInvitations lists the org's invitations but for operator ones
// (an operator's business, even when into this org).
func (s *Server) listOwnInvitations(w http.ResponseWriter, r *http.Request, p Principal) error {
	list, err := s.store.State().InvitationsByOrg(p.OrgID)
	list = slices.DeleteFunc(list, func(inv *store.Invitation) bool { return inv.Operator })
	return writeInvitations(w, list, err)
}

func (s *Server) createOwnInvitation(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req invitationRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	if req.Operator || (req.OrgID != "" && req.OrgID != p.OrgID) {
		return apiError(http.StatusForbidden, CodeForbidden, "a tenant invites into its own org only; operators make other invitations")
	}
	return s.invite(w, r, req, p.OrgID)
}

func (s *Server) withdrawOwnInvitation(w http.ResponseWriter, r *http.Request, p Principal) error {
	return s.withdrawInvitation(w, r, p.OrgID, false)
}

// Operators: any invitation.

func (s *Server) listInvitations(w http.ResponseWriter, r *http.Request, _ Principal) error {
	list, err := s.store.State().Invitations()
	return writeInvitations(w, list, err)
}

func (s *Server) createInvitation(w http.ResponseWriter, r *http.Request, _ Principal) error {
	var req invitationRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	return s.invite(w, r, req, req.OrgID)
}

func (s *Server) deleteInvitation(w http.ResponseWriter, r *http.Request, _ Principal) error {
	return s.withdrawInvitation(w, r, "", true)
}

// Operators: accounts.

type accountAdminView struct {
	ID        string `json:"id"`
	Email     string `json:"email"`
	OrgID     string `json:"orgId"`
	OrgName   string `json:"orgName"`
	Operator  bool   `json:"operator"`
	CreatedAt string `json:"createdAt"`
}

func viewAccountAdmin(st *store.State, a *store.Account) (accountAdminView, error) {
	v := accountAdminView{ID: a.ID, Email: a.Email, OrgID: a.OrgID, Operator: a.Operator, CreatedAt: timestamp(a.CreatedAt)}
	o, err := st.Org(a.OrgID)
	if o != nil {
		v.OrgName = o.Name
	}
	return v, err
}

func (s *Server) listAccounts(w http.ResponseWriter, r *http.Request, _ Principal) error {
	st := s.store.State()
	list, err := st.Accounts()
	if err != nil {
		return err
	}
	out := make([]accountAdminView, 0, len(list))
	for _, a := range list {
		v, err := viewAccountAdmin(st, a)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	return writeJSON(w, http.StatusOK, map[string]any{"accounts": out})
}

type accountUpdateRequest struct {
	Operator *bool `json:"operator"`
}

func (s *Server) updateAccount(w http.ResponseWriter, r *http.Request, _ Principal) error {
	var req accountUpdateRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.Operator == nil {
		return badRequest("nothing to update: give operator")
	}
	id := r.PathValue("accountId")
	index, err := s.store.Apply(r.Context(), &store.AccountSetOperator{AccountID: id, Operator: *req.Operator})
	if errors.Is(err, store.ErrNotFound) {
		return notFound("account %q not found", id)
	}
	if err != nil {
		return err
	}
	if err := s.store.WaitForIndex(r.Context(), index); err != nil {
		return err
	}
	st := s.store.State()
	a, err := st.Account(id)
	if err != nil || a == nil {
		return notFound("account %q not found", id)
	}
	v, err := viewAccountAdmin(st, a)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, v)
}

func (s *Server) deleteAccount(w http.ResponseWriter, r *http.Request, _ Principal) error {
	id := r.PathValue("accountId")
	if _, err := s.store.Apply(r.Context(), &store.AccountDelete{ID: id}); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("account %q not found", id)
		}
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"id": id, "deleted": true})
}

// Operators: the cluster's settings an operator may change while it runs.
// The agent port range is set at start (--agent-ports), not here: agents
// keep their ports, so narrowing it is refused while any holds one outside.

type clusterConfigView struct {
	Signup             string `json:"signup"`
	SchedulerAlgorithm string `json:"schedulerAlgorithm"`
	ReschedulePolicy   string `json:"reschedulePolicy"`
	PortRangeStart     int    `json:"portRangeStart"`
	PortRangeEnd       int    `json:"portRangeEnd"`
}

func viewClusterConfig(c store.ClusterConfig) clusterConfigView {
	return clusterConfigView{Signup: c.SignupMode(), SchedulerAlgorithm: c.SchedulerAlgorithm, ReschedulePolicy: c.ReschedulePolicy,
		PortRangeStart: c.PortRangeStart, PortRangeEnd: c.PortRangeEnd}
}

type clusterConfigRequest struct {
	Signup             *string `json:"signup"`
	SchedulerAlgorithm *string `json:"schedulerAlgorithm"`
	ReschedulePolicy   *string `json:"reschedulePolicy"`
}

func (s *Server) getClusterConfig(w http.ResponseWriter, r *http.Request, _ Principal) error {
	_, c, err := s.consistentConfig(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, viewClusterConfig(c))
}

func (s *Server) updateClusterConfig(w http.ResponseWriter, r *http.Request, _ Principal) error {
	var req clusterConfigRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.Signup == nil && req.SchedulerAlgorithm == nil && req.ReschedulePolicy == nil {
		return badRequest("nothing to update: give signup, schedulerAlgorithm or reschedulePolicy")
	}
	if req.Signup != nil && !oneOf(*req.Signup, store.SignupOpen, store.SignupInvite, store.SignupClosed) {
		return badRequest("signup must be %q, %q or %q", store.SignupOpen, store.SignupInvite, store.SignupClosed)
	}
	if req.SchedulerAlgorithm != nil && !oneOf(*req.SchedulerAlgorithm, store.AlgorithmBinpack, store.AlgorithmSpread) {
		return badRequest("schedulerAlgorithm must be %q or %q", store.AlgorithmBinpack, store.AlgorithmSpread)
	}
	if req.ReschedulePolicy != nil && !oneOf(*req.ReschedulePolicy, store.RescheduleReschedule, store.RescheduleFail) {
		return badRequest("reschedulePolicy must be %q or %q", store.RescheduleReschedule, store.RescheduleFail)
	}
	// Read, change, write only if no one wrote in between; a few tries, as
	// two operators rarely change settings in the same instant.
	for attempt := 0; ; attempt++ {
		_, c, err := s.consistentConfig(r.Context())
		if err != nil {
			return err
		}
		read := c.ModifyIndex
		if req.Signup != nil {
			c.Signup = *req.Signup
		}
		if req.SchedulerAlgorithm != nil {
			c.SchedulerAlgorithm = *req.SchedulerAlgorithm
		}
		if req.ReschedulePolicy != nil {
			c.ReschedulePolicy = *req.ReschedulePolicy
		}
		// read is 0 while the default is in force: the set is then
		// unconditional.
		index, err := s.store.Apply(r.Context(), &store.ClusterConfigSet{Config: c, ExpectedModifyIndex: read})
		if errors.Is(err, store.ErrConflict) && attempt < 3 {
			continue
		}
		if err != nil {
			return err
		}
		if err := s.store.WaitForIndex(r.Context(), index); err != nil {
			return err
		}
		c.ModifyIndex = index
		return writeJSON(w, http.StatusOK, viewClusterConfig(c))
	}
}

// consistentConfig is a consistent state (read index: no older than any
// acknowledged write) and the cluster configuration in it.
func (s *Server) consistentConfig(ctx context.Context) (*store.State, store.ClusterConfig, error) {
	st, err := s.store.ConsistentState(ctx)
	if err != nil {
		return nil, store.ClusterConfig{}, err
	}
	c, err := st.ClusterConfig()
	return st, c, err
}

func oneOf(v string, allowed ...string) bool { return slices.Contains(allowed, v) }
