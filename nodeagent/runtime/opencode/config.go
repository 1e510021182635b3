package opencode

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Files written into an agent's read-only config directory, which the
// container sees at ConfigMount.
const (
	ConfigMount      = "/etc/agenthost"
	ConfigFile       = "opencode.json"
	InstructionsFile = "instructions.md"
)

// OfflineProvider is the provider ID under which agenthost's offline model
// appears to OpenCode, and OfflineModel the model to ask for: an agent whose
// model is "agenthost/offline" talks to the offline model.
const (
	OfflineProvider = "agenthost"
	OfflineModel    = OfflineProvider + "/offline"
)

// AgentConfig is what an agent's OpenCode is configured with.
type AgentConfig struct {
	// Model is "provider/model", e.g. anthropic/claude-sonnet-4-6 or
	// agenthost/offline.
	Model string
	// Provider, when its Kind is set, declares Model's provider: a model
	// server OpenCode does not know by itself.
	Provider Provider
	// OfflineModelURL is the offline model's base URL as the container
	// reaches it (…/v1); empty leaves the offline provider out.
	OfflineModelURL string
	// HiddenPrompt becomes an instructions file: part of the system prompt,
	// never a chat message.
	HiddenPrompt string
	// Permission is the policy for tools that change things or reach out
	// (edit, bash, webfetch): "ask" (the default, so that requests reach the
	// API), "allow" or "deny".
	Permission string
}

// ProviderOpenAICompatible is the one provider kind declared in the config:
// anthropic and openai are OpenCode's own, keyed by their usual variables.
const ProviderOpenAICompatible = "openai-compatible"

// Provider is a model server from the operator's catalog.
type Provider struct {
	Kind    string
	BaseURL string
	// APIKeyEnv names the environment variable holding the key; OpenCode
	// reads it when it starts ({env:NAME}), so the key stays out of files.
	APIKeyEnv string
	// Name is the model's display name.
	Name string
}

// WriteConfig writes opencode.json and the instructions file into dir, which
// OpenCode will see at mountedAt (ConfigMount in a container). The
// container's environment must point OPENCODE_CONFIG at mountedAt/opencode.json.
func WriteConfig(dir, mountedAt string, cfg AgentConfig) error {
	if cfg.Model == "" || !strings.Contains(cfg.Model, "/") {
		return fmt.Errorf("opencode: model %q: want provider/model", cfg.Model)
	}
	perm := cfg.Permission
	if perm == "" {
		perm = "ask"
	}
	if perm != "ask" && perm != "allow" && perm != "deny" {
		return fmt.Errorf("opencode: permission policy %q: want ask, allow or deny", perm)
	}
	doc := map[string]any{
		"$schema":    "https://opencode.ai/config.json",
		"model":      cfg.Model,
		"permission": map[string]string{"edit": perm, "bash": perm, "webfetch": perm},
		"autoupdate": false,
		"share":      "disabled",
	}
	providers := map[string]any{}
	if cfg.Provider.Kind != "" {
		if cfg.Provider.Kind != ProviderOpenAICompatible {
			return fmt.Errorf("opencode: model %s: provider kind %q cannot be declared (want %s)", cfg.Model, cfg.Provider.Kind, ProviderOpenAICompatible)
		}
		providerID, modelID, _ := strings.Cut(cfg.Model, "/")
		if providerID == OfflineProvider {
			return fmt.Errorf("opencode: model %s: provider %s is agenthost's offline model", cfg.Model, OfflineProvider)
		}
		options := map[string]any{"baseURL": cfg.Provider.BaseURL}
		if cfg.Provider.APIKeyEnv != "" {
			options["apiKey"] = "{env:" + cfg.Provider.APIKeyEnv + "}"
		}
		name := cfg.Provider.Name
		if name == "" {
			name = modelID
		}
		providers[providerID] = map[string]any{
			"npm":     "@ai-sdk/openai-compatible",
			"name":    providerID,
			"options": options,
			"models":  map[string]any{modelID: map[string]any{"name": name, "tool_call": true}},
		}
	}
	if cfg.OfflineModelURL != "" {
		providers[OfflineProvider] = map[string]any{
			"npm":     "@ai-sdk/openai-compatible",
			"name":    "agenthost offline model",
			"options": map[string]any{"baseURL": cfg.OfflineModelURL, "apiKey": "offline"},
			"models": map[string]any{
				"offline": map[string]any{
					"name":      "agenthost offline model (deterministic replies)",
					"tool_call": true,
					// A price, so that cost accounting is exercised too:
					// USD per million tokens.
					"cost":  map[string]any{"input": 1, "output": 2},
					"limit": map[string]any{"context": 128000, "output": 8192},
				},
			},
		}
	}
	if len(providers) > 0 {
		doc["provider"] = providers
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	instructions := filepath.Join(dir, InstructionsFile)
	if cfg.HiddenPrompt != "" {
		doc["instructions"] = []string{filepath.Join(mountedAt, InstructionsFile)}
		if err := writeFile(instructions, []byte(cfg.HiddenPrompt)); err != nil {
			return err
		}
	} else if err := os.Remove(instructions); err != nil && !os.IsNotExist(err) {
		return err
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, ConfigFile), b)
}

// writeFile replaces path atomically, world-readable: the container's user
// must read it, and it holds no secret (keys travel as environment).
func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// RuntimeEnv is the environment OpenCode runs with, whatever starts it (the
// runtime image sets the same): its configuration file in configDir, and no
// update checks, model catalogue downloads, plugin or LSP installs, or
// sharing — an agent's runtime reaches out only where its work takes it.
func RuntimeEnv(configDir string) []string {
	return []string{
		"OPENCODE_CONFIG=" + filepath.Join(configDir, ConfigFile),
		"OPENCODE_DISABLE_AUTOUPDATE=1",
		"OPENCODE_DISABLE_MODELS_FETCH=1",
		"OPENCODE_DISABLE_LSP_DOWNLOAD=1",
		"OPENCODE_DISABLE_DEFAULT_PLUGINS=1",
		"OPENCODE_DISABLE_SHARE=1",
	}
}
