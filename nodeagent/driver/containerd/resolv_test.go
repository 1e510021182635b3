package containerd

import (
	"os"
	"path/filepath"
	"testing"
)

func TestAgentResolvConfLeavesOutLocalResolvers(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got := string(agentResolvConf(write("a", "# comment\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nnameserver 169.254.169.253\nsearch corp.example\noptions edns0\n")))
	if want := "nameserver 10.0.0.2\nsearch corp.example\noptions edns0\n"; got != want {
		t.Fatalf("resolv.conf = %q, want %q", got, want)
	}
	if got := string(agentResolvConf(write("b", "nameserver 127.0.0.53\n"))); got[0] != '#' {
		t.Fatalf("only a local resolver: %q", got)
	}
	if got := string(agentResolvConf(filepath.Join(dir, "missing"))); got[0] != '#' {
		t.Fatalf("no file: %q", got)
	}
}
