package opencode_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agenthost/agenthost/nodeagent/runtime/opencode"
)

// TestOpenAICompatibleProvider configures OpenCode for a model server of the
// operator's catalog — here the offline model under the name
// "selfhosted/coder-7b", answering at its own base URL — and checks that a
// message reaches that server for that model with the key from the
// environment variable the catalog names, and that the key is in no file.
func TestOpenAICompatibleProvider(t *testing.T) {
	ctx := context.Background()
	srv, c := start(t, opencode.AgentConfig{
		Model:    "selfhosted/coder-7b",
		Provider: opencode.Provider{Kind: opencode.ProviderOpenAICompatible, APIKeyEnv: "SELFHOSTED_API_KEY", Name: "Coder 7B"},
	})
	s, err := c.CreateSession(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send(ctx, s.ID, "hello self-hosted"); err != nil {
		t.Fatal(err)
	}
	waitIdle(t, c)
	if got := text(lastAssistant(t, c, s.ID)); got != "Offline model reply to: hello self-hosted" {
		t.Fatalf("reply = %q\n%s", got, srv.Log())
	}
	if !srv.Model.SawRequest("coder-7b", "Bearer "+srv.ProviderKey) {
		t.Fatalf("the model server never saw coder-7b asked for with the key from SELFHOSTED_API_KEY")
	}
	config, err := os.ReadFile(filepath.Join(srv.ConfigDir, opencode.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(config), srv.ProviderKey) || !strings.Contains(string(config), "{env:SELFHOSTED_API_KEY}") {
		t.Fatalf("the config should name the key's variable, not hold the key:\n%s", config)
	}
}

func TestWriteConfigRefusesUndeclarableProviders(t *testing.T) {
	for _, cfg := range []opencode.AgentConfig{
		{Model: "anthropic/claude-sonnet-4-6", Provider: opencode.Provider{Kind: "anthropic", BaseURL: "http://x/v1"}},
		{Model: opencode.OfflineModel, Provider: opencode.Provider{Kind: opencode.ProviderOpenAICompatible, BaseURL: "http://x/v1"}},
	} {
		if err := opencode.WriteConfig(t.TempDir(), "/etc/agenthost", cfg); err == nil {
			t.Errorf("%+v was written", cfg)
		}
	}
}
