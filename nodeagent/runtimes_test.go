package nodeagent

import (
	"encoding/json"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agenthost/agenthost/nodeagent/driver/process"
	"github.com/agenthost/agenthost/nodeagent/runtime/opencode"
)

func TestSecretEnv(t *testing.T) {
	got, err := secretEnv(map[string]string{"OPENAI_API_KEY": "b", "ANTHROPIC_API_KEY": "a=1"})
	if err != nil || !slices.Equal(got, []string{"ANTHROPIC_API_KEY=a=1", "OPENAI_API_KEY=b"}) {
		t.Fatalf("secretEnv = %v, %v", got, err)
	}
	for _, bad := range []string{"OPENCODE_SERVER_PASSWORD", "OPENCODE_CONFIG", "HOME", "PATH", "XDG_DATA_HOME", "AGENTHOST_X", "lower", "A-B", ""} {
		if _, err := secretEnv(map[string]string{bad: "x"}); err == nil {
			t.Errorf("secret %q accepted", bad)
		}
	}
}

func TestControlIPs(t *testing.T) {
	got := controlIPs([]string{"10.0.0.1:7400", "127.0.0.1:7400", "[2001:db8::1]:7400"})
	for _, want := range []string{"10.0.0.1", "127.0.0.1", "2001:db8::1"} {
		if !got[netip.MustParseAddr(want)] {
			t.Errorf("%s missing from %v", want, got)
		}
	}
	if len(got) != 3 {
		t.Errorf("got %v", got)
	}
}

// TestConfigureWritesTheRuntimeConfigAndEnvironment checks what a container
// is given: the model (or the node's default), the hidden prompt as an
// instructions file, the password and the secrets as environment.
func TestConfigureWritesTheRuntimeConfigAndEnvironment(t *testing.T) {
	drv, err := process.New(process.Config{Command: []string{"true", "{port}"}, DataDir: t.TempDir(), LogMaxBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ControlAddrs, cfg.AdvertiseAddr = []string{"127.0.0.1:1"}, "127.0.0.1"
	cfg.DefaultModel = "anthropic/claude-sonnet-4-6"
	cfg.Logger = slog.New(slog.DiscardHandler)
	a, err := New(cfg, drv)
	if err != nil {
		t.Fatal(err)
	}
	rt := cfg.Runtimes["opencode"]
	as := Assignment{AgentID: "a1", Runtime: "opencode", RuntimePassword: "pw", HiddenPrompt: "house rules",
		Env: map[string]string{"ANTHROPIC_API_KEY": "sk-test"}}
	env, err := a.configure(as, rt)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ANTHROPIC_API_KEY=sk-test", "OPENCODE_SERVER_PASSWORD=pw", "OPENCODE_CONFIG=" + filepath.Join(drv.Dirs("a1").ConfigSeenAt, "opencode.json")} {
		if !slices.Contains(env, want) {
			t.Errorf("env %v lacks %s", env, want)
		}
	}
	b, err := os.ReadFile(filepath.Join(drv.Dirs("a1").Config, "opencode.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Model        string            `json:"model"`
		Instructions []string          `json:"instructions"`
		Permission   map[string]string `json:"permission"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Model != "anthropic/claude-sonnet-4-6" || len(doc.Instructions) != 1 || doc.Permission["bash"] != "ask" {
		t.Fatalf("opencode.json = %s", b)
	}
	if strings.Contains(string(b), "pw") || strings.Contains(string(b), "sk-test") {
		t.Fatalf("a secret was written into opencode.json: %s", b)
	}
	if p, _ := os.ReadFile(filepath.Join(drv.Dirs("a1").Config, "instructions.md")); string(p) != "house rules" {
		t.Fatalf("instructions = %q", p)
	}

	// A model server from the operator's catalog is declared as a provider,
	// its key named, not written.
	as = Assignment{AgentID: "a4", Runtime: "opencode", RuntimePassword: "pw", Model: "selfhosted/coder-7b",
		ModelProvider: opencode.Provider{Kind: opencode.ProviderOpenAICompatible, BaseURL: "http://models.internal:8000/v1", APIKeyEnv: "SELFHOSTED_KEY"},
		Env:           map[string]string{"SELFHOSTED_KEY": "sk-self"}}
	if env, err = a.configure(as, rt); err != nil || !slices.Contains(env, "SELFHOSTED_KEY=sk-self") {
		t.Fatalf("configure with a provider: %v, env %v", err, env)
	}
	b, err = os.ReadFile(filepath.Join(drv.Dirs("a4").Config, "opencode.json"))
	if err != nil {
		t.Fatal(err)
	}
	var withProvider struct {
		Model    string `json:"model"`
		Provider map[string]struct {
			NPM     string            `json:"npm"`
			Options map[string]string `json:"options"`
			Models  map[string]any    `json:"models"`
		} `json:"provider"`
	}
	if err := json.Unmarshal(b, &withProvider); err != nil {
		t.Fatal(err)
	}
	p := withProvider.Provider["selfhosted"]
	if withProvider.Model != "selfhosted/coder-7b" || p.NPM != "@ai-sdk/openai-compatible" || p.Models["coder-7b"] == nil ||
		p.Options["baseURL"] != "http://models.internal:8000/v1" || p.Options["apiKey"] != "{env:SELFHOSTED_KEY}" || strings.Contains(string(b), "sk-self") {
		t.Fatalf("opencode.json with a provider = %s", b)
	}

	// No password: refused. The offline model on a node without it: refused.
	if _, err := a.configure(Assignment{AgentID: "a2", Runtime: "opencode"}, rt); err == nil {
		t.Fatal("an agent without a runtime password was configured")
	}
	if _, err := a.configure(Assignment{AgentID: "a3", Runtime: "opencode", RuntimePassword: "pw", Model: "agenthost/offline"}, rt); err == nil {
		t.Fatal("the offline model was configured on a node that serves none")
	}
}
