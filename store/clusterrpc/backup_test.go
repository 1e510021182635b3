package clusterrpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
)

// hashOf is a server's state hash, as hex.
func hashOf(t *testing.T, s *store.Store) string {
	t.Helper()
	h, err := s.State().Hash()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h)
}

// TestSnapshotSaveRestoreIntoAFreshCluster: a backup taken through a
// follower restores into another, fresh 3-server cluster with the same state
// hash on every server, survives a restart there, and takes writes; a
// damaged backup is refused whole and changes nothing; a follower refuses to
// restore.
func TestSnapshotSaveRestoreIntoAFreshCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := newPasswordFixture(t, 3)
	kr := TestKeyring()
	for i := range 5 {
		f.agent(kr, fmt.Sprintf("agent-%d", i), store.NewRuntimePassword())
	}
	f.apply(&store.ScopeCreate{Scope: store.Scope{ID: "sc1", OrgID: "org", Name: "scope", CreatedAt: f.now, UpdatedAt: f.now}})
	// Through a follower: the backup is still consistent (a read index).
	var backup bytes.Buffer
	st, err := f.tc.Servers[f.tc.Follower()].Store.ConsistentState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.WriteSnapshot(&backup, st); err != nil {
		t.Fatal(err)
	}
	index := st.Index()
	want := hashOf(t, f.s)
	info, err := store.InspectSnapshot(bytes.NewReader(backup.Bytes()))
	if err != nil || info.Index != index || info.Hash != want || info.Size != int64(backup.Len()) {
		t.Fatalf("inspect: %+v %v; saved at %d, state hash %s, %d bytes", info, err, index, want, backup.Len())
	}

	fresh := NewTestCluster(t, 3)
	leader := fresh.Servers[fresh.WaitForLeader()].Store
	// More history here than in the backup: its index is below what the
	// fresh servers have applied.
	for i := range 40 {
		if _, err := leader.Apply(ctx, &store.OrgCreate{Org: store.Org{ID: fmt.Sprintf("fresh-%d", i), Name: fmt.Sprintf("fresh %d", i), CreatedAt: f.now}}); err != nil {
			t.Fatal(err)
		}
	}
	appliedBefore := leader.AppliedIndex()
	if appliedBefore <= index {
		t.Fatalf("the fresh cluster's index %d should be past the backup's %d", appliedBefore, index)
	}
	before := hashOf(t, leader)

	// Damaged: one byte changed, or cut short. Refused, nothing changed.
	damaged := bytes.Clone(backup.Bytes())
	damaged[len(damaged)/2] ^= 0x40
	for name, b := range map[string][]byte{"altered": damaged, "truncated": backup.Bytes()[:backup.Len()-10]} {
		if _, err := store.InspectSnapshot(bytes.NewReader(b)); !errors.Is(err, store.ErrSnapshotInvalid) {
			t.Errorf("inspect %s backup: %v", name, err)
		}
		if _, err := leader.RestoreSnapshot(ctx, bytes.NewReader(b)); !errors.Is(err, store.ErrSnapshotInvalid) {
			t.Errorf("restore %s backup: %v", name, err)
		}
	}
	if got := hashOf(t, leader); got != before {
		t.Fatal("a refused restore changed the state")
	}
	if _, err := fresh.Servers[fresh.Follower()].Store.RestoreSnapshot(ctx, bytes.NewReader(backup.Bytes())); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("restore on a follower: %v", err)
	}

	if _, err := leader.RestoreSnapshot(ctx, bytes.NewReader(backup.Bytes())); err != nil {
		t.Fatal(err)
	}
	waitForHash := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			same := true
			for _, s := range fresh.Servers {
				same = same && hashOf(t, s.Store) == want
			}
			if same {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not every server has the backup's state", what)
			}
		}
	}
	waitForHash("after restore")
	// Every server's applied index moved on past the restore, so that
	// watches waiting for the next index see the restored state.
	for i, srv := range fresh.Servers {
		for deadline := time.Now().Add(10 * time.Second); srv.Store.AppliedIndex() <= appliedBefore; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("server %d's applied index %d stayed behind %d after the restore", i, srv.Store.AppliedIndex(), appliedBefore)
			}
		}
	}

	// The restored state is on disk: a server restarted comes back with it.
	victim := fresh.Follower()
	fresh.Kill(victim)
	fresh.Restart(victim)
	waitForHash("after a restart")

	// And the cluster goes on taking writes.
	leader = fresh.Servers[fresh.WaitForLeader()].Store
	index, err = leader.Apply(ctx, &store.OrgCreate{Org: store.Org{ID: "org2", Name: "after restore", CreatedAt: f.now}})
	if err != nil {
		t.Fatal(err)
	}
	fresh.WaitForIndex(index)
	for _, s := range fresh.Servers {
		if o, err := s.Store.State().Org("org2"); err != nil || o == nil {
			t.Fatalf("a write after the restore: %v %v", o, err)
		}
		if a, err := s.Store.State().Agent("agent-3"); err != nil || a == nil {
			t.Fatalf("a restored agent: %v %v", a, err)
		}
	}
}
