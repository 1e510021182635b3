package api

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agenthost/agenthost/store"
)

// TestCatalogModelsReachTheAgent: an operator's openai-compatible model from
// the models file is listed, chosen by name or as the org's default, and
// recorded with its provider on the agent, which is what its node is told
// (the node writes it into OpenCode's configuration: nodeagent's
// TestConfigureWritesTheRuntimeConfigAndEnvironment, and OpenCode reaching
// such a server: opencode's TestOpenAICompatibleProvider).
func TestCatalogModelsReachTheAgent(t *testing.T) {
	file := filepath.Join(t.TempDir(), "models.json")
	os.WriteFile(file, []byte(`{"models": [
		{"id": "selfhosted/coder-7b", "name": "Coder 7B", "kind": "openai-compatible", "baseURL": "http://models.internal:8000/v1", "apiKeyEnv": "SELFHOSTED_KEY"},
		{"id": "openai/gpt-5", "name": "GPT-5", "kind": "openai"}
	]}`), 0o600)
	models, err := LoadModels(file)
	if err != nil {
		t.Fatal(err)
	}
	h := htNew(t, htOptions{config: func(c *Config) { c.Models = models }})
	o := h.org("models", store.Plan{})

	var list struct {
		Models []struct {
			ID        string `json:"id"`
			Kind      string `json:"kind"`
			BaseURL   string `json:"baseURL"`
			APIKeyEnv string `json:"apiKeyEnv"`
			Default   bool   `json:"default"`
		} `json:"models"`
	}
	h.mustStatus(h.do(nil, "GET", "/api/v1/models", o.Token, nil), 200).decode(t, &list)
	found := false
	for _, m := range list.Models {
		if m.ID == "selfhosted/coder-7b" {
			found = m.Kind == "openai-compatible" && m.BaseURL == "http://models.internal:8000/v1" && m.APIKeyEnv == "SELFHOSTED_KEY" && !m.Default
		}
	}
	if !found || len(list.Models) != len(referenceModels)+2 {
		t.Fatalf("models = %+v", list.Models)
	}

	want := &store.ModelProvider{Kind: "openai-compatible", BaseURL: "http://models.internal:8000/v1", APIKeyEnv: "SELFHOSTED_KEY", Name: "Coder 7B"}
	check := func(id, model string, provider *store.ModelProvider) {
		t.Helper()
		a := h.agent(id)
		if a.Model != model || (provider == nil) != (a.ModelProvider == nil) || (provider != nil && *a.ModelProvider != *provider) {
			t.Fatalf("agent %s: model %q provider %+v; want %q %+v", id, a.Model, a.ModelProvider, model, provider)
		}
	}
	check(h.createAgent(o.Token, map[string]any{"name": "chosen", "model": "selfhosted/coder-7b"}), "selfhosted/coder-7b", want)
	check(h.createAgent(o.Token, map[string]any{"name": "built-in", "model": "openai/gpt-5"}), "openai/gpt-5", nil)
	check(h.createAgent(o.Token, map[string]any{"name": "offline", "model": OfflineModelID}), OfflineModelID, nil)
	check(h.createAgent(o.Token, map[string]any{"name": "node default"}), "", nil)

	// The org's default: set by the operator, checked against the catalog,
	// and taken by agents created without a model.
	r := h.do(nil, "PATCH", "/api/v1/orgs/"+o.ID, h.opToken, map[string]any{"defaultModel": "nope/unknown"})
	if r.status != 400 || !strings.Contains(string(r.body), "unknown model") {
		t.Fatalf("unknown default model: %s", r)
	}
	h.mustStatus(h.do(nil, "PATCH", "/api/v1/orgs/"+o.ID, h.opToken, map[string]any{"defaultModel": "selfhosted/coder-7b"}), 200)
	check(h.createAgent(o.Token, map[string]any{"name": "org default"}), "selfhosted/coder-7b", want)
	h.mustStatus(h.do(nil, "GET", "/api/v1/models", o.Token, nil), 200).decode(t, &list)
	for _, m := range list.Models {
		if m.Default != (m.ID == "selfhosted/coder-7b") {
			t.Fatalf("default flags: %+v", list.Models)
		}
	}
	if r := h.do(nil, "POST", "/api/v1/agents", o.Token, map[string]any{"name": "x", "model": "selfhosted/other"}); r.status != 400 {
		t.Fatalf("a model outside the catalog: %s", r)
	}
}

func TestLoadModelsRefusesBadEntries(t *testing.T) {
	for name, entry := range map[string]string{
		"no base URL":          `{"id": "s/m", "name": "M", "kind": "openai-compatible"}`,
		"base URL not http":    `{"id": "s/m", "name": "M", "kind": "openai-compatible", "baseURL": "file:///etc/passwd"}`,
		"key env on anthropic": `{"id": "anthropic/x", "name": "X", "kind": "anthropic", "apiKeyEnv": "KEY"}`,
		"key env lower case":   `{"id": "s/m", "name": "M", "kind": "openai-compatible", "baseURL": "http://h/v1", "apiKeyEnv": "key"}`,
		"offline's provider":   `{"id": "agenthost/other", "name": "M", "kind": "openai-compatible", "baseURL": "http://h/v1"}`,
		"unknown kind":         `{"id": "s/m", "name": "M", "kind": "grpc"}`,
		"no provider":          `{"id": "m", "name": "M", "kind": "openai"}`,
		"unknown field":        `{"id": "s/m", "name": "M", "kind": "openai", "temperature": 1}`,
	} {
		file := filepath.Join(t.TempDir(), "models.json")
		os.WriteFile(file, []byte(`{"models": [`+entry+`]}`), 0o600)
		if _, err := LoadModels(file); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
}
