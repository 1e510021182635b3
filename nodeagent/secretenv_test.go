package nodeagent

import (
	"net/netip"
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
