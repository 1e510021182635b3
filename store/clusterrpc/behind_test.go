package clusterrpc

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
)

// TestServerBehindAnswersInsteadOfWaiting: a server that has not applied a
// committed index within ApplyTimeout (here an index no write has reached
// yet, as a server whose log stopped would see it) says so instead of
// waiting, refuses writes up front until it has caught up, and takes them
// again once it has.
func TestServerBehindAnswersInsteadOfWaiting(t *testing.T) {
	tc := NewTestClusterWith(t, 3, func(cfg *ServerConfig) { cfg.Store.ApplyTimeout = 500 * time.Millisecond })
	leader := tc.WaitForLeader()
	f := tc.Servers[tc.Follower()].Store
	target := tc.Servers[leader].Store.AppliedIndex() + 3

	start := time.Now()
	err := f.CatchUp(context.Background(), target)
	if !errors.Is(err, store.ErrBehind) {
		t.Fatalf("CatchUp to an index not yet written = %v, want ErrBehind", err)
	}
	if waited := time.Since(start); waited > 30*time.Second {
		t.Fatalf("CatchUp answered after %v, not after about ApplyTimeout", waited)
	}

	if _, err := createOrg(t, f, "org-refused"); !errors.Is(err, store.ErrBehind) {
		t.Fatalf("write through a server behind the cluster = %v, want ErrBehind", err)
	}
	if o, _ := tc.Servers[leader].Store.State().Org("org-refused"); o != nil {
		t.Fatal("a write refused as behind was committed")
	}

	for i := range 3 {
		if _, err := createOrg(t, tc.Servers[leader].Store, fmt.Sprintf("org-b%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	tc.WaitForIndex(target)
	if _, err := createOrg(t, f, "org-accepted"); err != nil {
		t.Fatalf("write through the server once caught up: %v", err)
	}
}
