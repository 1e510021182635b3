package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/agenthost/agenthost/store"
)

// ProviderKind says how a model is reached.
type ProviderKind string

const (
	ProviderAnthropic        ProviderKind = "anthropic"
	ProviderOpenAI           ProviderKind = "openai"
	ProviderOpenAICompatible ProviderKind = "openai-compatible"
	// ProviderOpenCode models are served by OpenCode's own gateway (the
	// reference's free models).
	ProviderOpenCode ProviderKind = "opencode"
)

// Model is one model agents may use.
type Model struct {
	// ID is "provider/model", as agents and OpenCode name it.
	ID   string `json:"id"`
	Name string `json:"name"`
	// Kind is the provider's API; BaseURL is where an openai-compatible
	// provider answers (…/v1).
	Kind    ProviderKind `json:"kind"`
	BaseURL string       `json:"baseURL,omitempty"`
	// APIKeyEnv names the secret (an environment variable in the agent)
	// that holds an openai-compatible server's API key; empty when it
	// needs none. anthropic and openai models read their usual variables
	// (ANTHROPIC_API_KEY, OPENAI_API_KEY).
	APIKeyEnv string `json:"apiKeyEnv,omitempty"`
}

// provider is what a node needs to reach the model, for the kinds OpenCode
// does not know by itself.
func (m Model) provider() *store.ModelProvider {
	if m.Kind != ProviderOpenAICompatible || m.ID == OfflineModelID {
		return nil
	}
	return &store.ModelProvider{Kind: string(m.Kind), BaseURL: m.BaseURL, APIKeyEnv: m.APIKeyEnv, Name: m.Name}
}

// Models is the catalog: the reference's models, the offline model, and
// those an operator adds in the server's models file.
type Models struct {
	list []Model
}

// OfflineModelID is agenthost's own deterministic model (see
// nodeagent/runtime/offlinemodel): agents use it with no provider key.
const OfflineModelID = "agenthost/offline"

// referenceModels are the models the reference lists for POST /agents.
var referenceModels = []Model{
	{ID: "opencode/nemotron-3-super-free", Name: "Nemotron 3 Super", Kind: ProviderOpenCode},
	{ID: "opencode/minimax-m2.5-free", Name: "MiniMax M2.5", Kind: ProviderOpenCode},
	{ID: "opencode/big-pickle", Name: "Big Pickle", Kind: ProviderOpenCode},
	{ID: "opencode/mimo-v2-flash-free", Name: "Mimo V2 Flash", Kind: ProviderOpenCode},
	{ID: "anthropic/claude-opus-4-6", Name: "Claude Opus 4.6", Kind: ProviderAnthropic},
	{ID: "anthropic/claude-sonnet-4-6", Name: "Claude Sonnet 4.6", Kind: ProviderAnthropic},
	{ID: OfflineModelID, Name: "agenthost offline model (deterministic, no provider needed)", Kind: ProviderOpenAICompatible},
}

// DefaultModels is the reference's catalog with the offline model.
func DefaultModels() *Models {
	return &Models{list: slices.Clone(referenceModels)}
}

// LoadModels reads extra models from a JSON file ({"models": [Model…]}) and
// adds them to the default catalog. A model of the catalog may be listed
// again to change its name or provider.
func LoadModels(path string) (*Models, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("models file: %w", err)
	}
	var doc struct {
		Models []Model `json:"models"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("models file %s: %w", path, err)
	}
	m := DefaultModels()
	for _, extra := range doc.Models {
		if err := extra.validate(); err != nil {
			return nil, fmt.Errorf("models file %s: %w", path, err)
		}
		if i := slices.IndexFunc(m.list, func(x Model) bool { return x.ID == extra.ID }); i >= 0 {
			m.list[i] = extra
		} else {
			m.list = append(m.list, extra)
		}
	}
	return m, nil
}

func (m Model) validate() error {
	provider, name, ok := strings.Cut(m.ID, "/")
	if !ok || provider == "" || name == "" || strings.ContainsAny(m.ID, " \t\n") {
		return fmt.Errorf("model id %q: want provider/model", m.ID)
	}
	switch m.Kind {
	case ProviderAnthropic, ProviderOpenAI, ProviderOpenCode:
	case ProviderOpenAICompatible:
		u, err := url.Parse(m.BaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("model %s: an openai-compatible model needs an http(s) baseURL", m.ID)
		}
	default:
		return fmt.Errorf("model %s: kind %q is not anthropic, openai, opencode or openai-compatible", m.ID, m.Kind)
	}
	if m.Name == "" {
		return errors.New("model " + m.ID + ": name is required")
	}
	if m.APIKeyEnv != "" && (m.Kind != ProviderOpenAICompatible || !store.ValidSecretKey(m.APIKeyEnv)) {
		return fmt.Errorf("model %s: apiKeyEnv is for openai-compatible models and must match ^[A-Z0-9_]+$", m.ID)
	}
	if provider == "agenthost" {
		return fmt.Errorf("model %s: the agenthost provider is the offline model's own", m.ID)
	}
	return nil
}

// Lookup returns the model with this id.
func (m *Models) Lookup(id string) (Model, bool) {
	i := slices.IndexFunc(m.list, func(x Model) bool { return x.ID == id })
	if i < 0 {
		return Model{}, false
	}
	return m.list[i], true
}

// All lists the catalog in order.
func (m *Models) All() []Model { return slices.Clone(m.list) }

// resolve picks an agent's model: the one asked for, else the org's
// default (both were checked against the catalog), with the provider a node
// needs to reach it. "" leaves the choice to the node's default.
func (m *Models) resolve(st *store.State, orgID, asked string) (string, *store.ModelProvider) {
	id := asked
	if id == "" {
		if o, err := st.Org(orgID); err == nil && o != nil {
			id = o.DefaultModel
		}
	}
	model, ok := m.Lookup(id)
	if !ok {
		// An org default the catalog has lost since: the node is told the
		// name alone, as before the catalog changed.
		return id, nil
	}
	return id, model.provider()
}

// checkModel is the 400 for a model outside the catalog.
func (m *Models) checkModel(id string) error {
	if _, ok := m.Lookup(id); !ok {
		return badRequest("unknown model %q (GET /api/v1/models lists them)", id)
	}
	return nil
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request, p Principal) error {
	def := ""
	if o, err := s.store.State().Org(p.OrgID); err == nil && o != nil {
		def = o.DefaultModel
	}
	type modelView struct {
		Model
		Default bool `json:"default"`
	}
	out := []modelView{}
	for _, m := range s.models.All() {
		out = append(out, modelView{Model: m, Default: m.ID == def})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"models": out})
}
