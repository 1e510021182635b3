package api

import (
	"context"
	"net/http"
	"time"

	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
)

// Scopes group an org's agents and secrets; secrets are sealed with the
// keyring before they reach the store and never leave it unsealed through
// the API.

type scopeView struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	Description *string `json:"description"`
	AgentCount  *int    `json:"agentCount,omitempty"`
	SecretCount *int    `json:"secretCount,omitempty"`
	CreatedAt   string  `json:"createdAt,omitempty"`
	UpdatedAt   string  `json:"updatedAt,omitempty"`
}

type scopeAgentView struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	CreatedAt string `json:"createdAt"`
}

type secretView struct {
	ID        string `json:"id"`
	Key       string `json:"key"`
	CreatedAt string `json:"createdAt"`
	UpdatedAt string `json:"updatedAt"`
}

// scope finds the caller's scope named in the path, and returns the state
// it was found in.
func (s *Server) scope(r *http.Request, p Principal) (*store.Scope, *store.State, error) {
	id := r.PathValue("scopeId")
	if !plausibleID(id) {
		return nil, nil, notFound("scope %q not found", id)
	}
	st := s.store.State()
	sc, err := st.Scope(p.OrgID, id)
	if err == nil && sc == nil && s.catchUp(r.Context()) {
		st = s.store.State()
		sc, err = st.Scope(p.OrgID, id)
	}
	if err != nil {
		return nil, nil, err
	}
	if sc == nil {
		return nil, nil, notFound("scope %q not found", id)
	}
	return sc, st, nil
}

func (s *Server) listScopes(w http.ResponseWriter, r *http.Request, p Principal) error {
	st := s.store.State()
	scopes, err := st.ScopesByOrg(p.OrgID)
	if err != nil {
		return err
	}
	out := []scopeView{}
	for _, sc := range scopes {
		agents, err := st.AgentsByScope(sc.ID)
		if err != nil {
			return err
		}
		secrets, err := st.Secrets(p.OrgID, sc.ID)
		if err != nil {
			return err
		}
		na, ns := len(agents), len(secrets)
		out = append(out, scopeView{ID: sc.ID, Name: sc.Name, Description: nullable(sc.Description),
			AgentCount: &na, SecretCount: &ns, CreatedAt: timestamp(sc.CreatedAt), UpdatedAt: timestamp(sc.UpdatedAt)})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"scopes": out})
}

func validDescription(d string) error {
	if len([]rune(d)) > store.MaxDescriptionLength {
		return badRequest("description is limited to %d characters", store.MaxDescriptionLength)
	}
	return nil
}

func (s *Server) createScope(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req struct {
		Name        *string `json:"name"`
		Description string  `json:"description"`
	}
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.Name == nil {
		return badRequest("name is required")
	}
	if !store.ValidName(*req.Name) {
		return badRequest("name must be 1-%d characters", store.MaxNameLength)
	}
	if err := validDescription(req.Description); err != nil {
		return err
	}
	now := time.Now().UTC()
	sc := store.Scope{ID: newID(prefixScope), OrgID: p.OrgID, Name: *req.Name, Description: req.Description, CreatedAt: now, UpdatedAt: now}
	if _, err := s.store.Apply(r.Context(), &store.ScopeCreate{Scope: sc}); err != nil {
		return scopeNameTaken(err, sc.Name)
	}
	return writeJSON(w, http.StatusCreated, scopeView{ID: sc.ID, Name: sc.Name, Description: nullable(sc.Description), CreatedAt: timestamp(now)})
}

// scopeNameTaken words the store's "already exists" for a scope name.
func scopeNameTaken(err error, name string) error {
	if e := toAPIError(err); e.Status == http.StatusConflict {
		return apiError(http.StatusConflict, CodeConflict, "a scope named %q already exists", name)
	}
	return err
}

func (s *Server) getScope(w http.ResponseWriter, r *http.Request, p Principal) error {
	sc, st, err := s.scope(r, p)
	if err != nil {
		return err
	}
	agents, err := st.AgentsByScope(sc.ID)
	if err != nil {
		return err
	}
	secrets, err := st.Secrets(p.OrgID, sc.ID)
	if err != nil {
		return err
	}
	out := struct {
		scopeView
		Agents  []scopeAgentView `json:"agents"`
		Secrets []secretView     `json:"secrets"`
	}{
		scopeView: scopeView{ID: sc.ID, Name: sc.Name, Description: nullable(sc.Description), CreatedAt: timestamp(sc.CreatedAt), UpdatedAt: timestamp(sc.UpdatedAt)},
		Agents:    []scopeAgentView{},
		Secrets:   secretViews(secrets),
	}
	for _, a := range agents {
		out.Agents = append(out.Agents, scopeAgentView{ID: a.ID, Name: a.Name, Status: string(a.Status), CreatedAt: timestamp(a.CreatedAt)})
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) updateScope(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req struct {
		Name        *string `json:"name"`
		Description *string `json:"description"`
	}
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.Name == nil && req.Description == nil {
		return badRequest("nothing to update: give name or description")
	}
	if req.Name != nil && !store.ValidName(*req.Name) {
		return badRequest("name must be 1-%d characters", store.MaxNameLength)
	}
	if req.Description != nil {
		if err := validDescription(*req.Description); err != nil {
			return err
		}
	}
	sc, _, err := s.scope(r, p)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	if _, err := s.store.Apply(r.Context(), &store.ScopeUpdate{ID: sc.ID, OrgID: p.OrgID, Name: req.Name, Description: req.Description, UpdatedAt: now}); err != nil {
		if req.Name != nil {
			return scopeNameTaken(err, *req.Name)
		}
		return err
	}
	name, desc := sc.Name, sc.Description
	if req.Name != nil {
		name = *req.Name
	}
	if req.Description != nil {
		desc = *req.Description
	}
	return writeJSON(w, http.StatusOK, scopeView{ID: sc.ID, Name: name, Description: nullable(desc), UpdatedAt: timestamp(now)})
}

func (s *Server) deleteScope(w http.ResponseWriter, r *http.Request, p Principal) error {
	sc, _, err := s.scope(r, p)
	if err != nil {
		return err
	}
	if _, err := s.store.Apply(r.Context(), &store.ScopeDelete{ID: sc.ID, OrgID: p.OrgID}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"deleted": true})
}

func secretViews(secrets []*store.Secret) []secretView {
	out := []secretView{}
	for _, sec := range secrets {
		out = append(out, secretView{ID: sec.ID, Key: sec.Key, CreatedAt: timestamp(sec.CreatedAt), UpdatedAt: timestamp(sec.UpdatedAt)})
	}
	return out
}

// secretScope is the scope of a secrets route: "" for /secrets, else the
// caller's scope named in the path (404 when it is not theirs); and the
// state to read the secrets from.
func (s *Server) secretScope(r *http.Request, p Principal) (string, *store.State, error) {
	if r.PathValue("scopeId") == "" {
		return "", s.store.State(), nil
	}
	sc, st, err := s.scope(r, p)
	if err != nil {
		return "", nil, err
	}
	return sc.ID, st, nil
}

func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request, p Principal) error {
	scopeID, st, err := s.secretScope(r, p)
	if err != nil {
		return err
	}
	secrets, err := st.Secrets(p.OrgID, scopeID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"secrets": secretViews(secrets)})
}

// maxSecretValue bounds a secret: environment variables beyond this are
// not what secrets are for.
const maxSecretValue = 64 << 10

func (s *Server) putSecret(w http.ResponseWriter, r *http.Request, p Principal) error {
	var req struct {
		Key   *string `json:"key"`
		Value *string `json:"value"`
	}
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	switch {
	case req.Key == nil || *req.Key == "":
		return badRequest("key is required")
	case !store.ValidSecretKey(*req.Key):
		return badRequest("key must be uppercase letters, digits and underscores (e.g. MY_API_KEY)")
	case len(*req.Key) > 256:
		return badRequest("key is limited to 256 characters")
	case req.Value == nil || *req.Value == "":
		return badRequest("value is required")
	case len(*req.Value) > maxSecretValue:
		return badRequest("value is limited to %d KiB", maxSecretValue>>10)
	}
	kr := s.keyring.Load()
	if kr == nil {
		return errSecretsUnavailable
	}
	scopeID, _, err := s.secretScope(r, p)
	if err != nil {
		return err
	}
	sealed, keyID, err := kr.Seal([]byte(*req.Value), keyring.SecretAAD(p.OrgID, scopeID, *req.Key))
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	sec := store.Secret{ID: newID(prefixSecret), OrgID: p.OrgID, ScopeID: scopeID, Key: *req.Key,
		Ciphertext: sealed, KeyID: keyID, CreatedAt: now, UpdatedAt: now}
	index, err := s.store.Apply(r.Context(), &store.SecretPut{Secret: sec})
	if err != nil {
		return err
	}
	// The put keeps an existing secret's ID: read back which one it was.
	stored, err := s.secretAfterPut(r.Context(), index, p.OrgID, scopeID, sec.Key)
	if err != nil {
		return err
	}
	created := stored.ID == sec.ID
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return writeJSON(w, status, map[string]any{"id": stored.ID, "key": stored.Key, "created": created})
}

// secretAfterPut reads the secret a put wrote at index, once this server
// has applied that far (a follower may lag the leader by a moment).
func (s *Server) secretAfterPut(ctx context.Context, index uint64, orgID, scopeID, key string) (*store.Secret, error) {
	if err := s.store.CatchUp(ctx, index); err != nil {
		return nil, err
	}
	sec, err := s.store.State().Secret(orgID, scopeID, key)
	if err != nil {
		return nil, err
	}
	if sec == nil {
		// Deleted by another request in between: it was written, though.
		return nil, apiError(http.StatusConflict, CodeConflict, "secret %s was deleted by another request", key)
	}
	return sec, nil
}

func (s *Server) deleteSecret(w http.ResponseWriter, r *http.Request, p Principal) error {
	scopeID, st, err := s.secretScope(r, p)
	if err != nil {
		return err
	}
	key := r.PathValue("key")
	if sec, err := st.Secret(p.OrgID, scopeID, key); err != nil {
		return err
	} else if sec == nil {
		return notFound("secret %q not found", key)
	}
	if _, err := s.store.Apply(r.Context(), &store.SecretDelete{OrgID: p.OrgID, ScopeID: scopeID, Key: key}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"deleted": true})
}
