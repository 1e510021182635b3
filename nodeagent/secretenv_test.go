package nodeagent

import (
	"slices"
	"testing"
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
