package clusterrpc

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
)

// TestConsistentReadsShareReadIndexes: many concurrent consistent reads on
// a follower cost the leader a few barriers, not one each — and each read
// still sees the write its caller made just before it.
func TestConsistentReadsShareReadIndexes(t *testing.T) {
	tc := NewTestCluster(t, 3)
	leader := tc.WaitForLeader()
	ls := tc.Servers[leader].Store
	fs := tc.Servers[(leader+1)%3].Store
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const readers = 200
	before := ls.Raft().LastIndex()
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := fs.ConsistentState(ctx); err != nil {
				errs <- err
			}
			if i%20 != 0 {
				return
			}
			// Some readers write first: their read must see it.
			id := fmt.Sprintf("org-%d", i)
			if _, err := ls.Apply(ctx, &store.OrgCreate{Org: store.Org{ID: id, Name: id, CreatedAt: time.Now().UTC()}}); err != nil {
				errs <- err
				return
			}
			st, err := fs.ConsistentState(ctx)
			if err != nil {
				errs <- err
				return
			}
			if o, _ := st.Org(id); o == nil {
				errs <- fmt.Errorf("a consistent read missed %s, written before it", id)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every barrier is a log entry; so is every write (10 of them).
	barriers := int(ls.Raft().LastIndex()-before) - readers/20
	t.Logf("%d consistent reads cost %d barriers", readers+readers/20, barriers)
	if barriers < 1 || barriers > readers/4 {
		t.Fatalf("%d reads cost %d barriers", readers+readers/20, barriers)
	}
}
