package scheduler

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the scheduler pure: no Raft, no containerd, no HTTP,
// and not the store (which brings Raft with it), directly or transitively.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/hashicorp/raft",
		"github.com/containerd/",
		"net/http",
		"github.com/agenthost/agenthost/store",
		"github.com/hashicorp/go-memdb",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f)) {
				t.Errorf("scheduler depends on %s", dep)
			}
		}
	}
}
