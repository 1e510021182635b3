package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// runAsOwnUser makes server i run as a user of its own: an unused uid
// derived from this test process's PID, owning the server's data directory
// and a copy of the key file (which must be its owner's, mode 600). It
// returns the key file's path.
func (c *Cluster) runAsOwnUser(s *Proc, i int, keyFile string) string {
	c.t.Helper()
	if os.Geteuid() != 0 {
		c.t.Fatal("Partitionable needs root")
	}
	s.uid = 200000 + (os.Getpid()%100000)*4 + i
	// The servers must reach their directories: the test's temporary
	// directory and its parent are 0700, root's.
	for _, dir := range []string{c.Dir, filepath.Dir(c.Dir)} {
		if err := os.Chmod(dir, 0o755); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		c.t.Fatal(err)
	}
	own := filepath.Join(c.Dir, s.Name+".key")
	if err := os.WriteFile(own, key, 0o600); err != nil {
		c.t.Fatal(err)
	}
	for _, path := range []string{s.DataDir, own} {
		if err := os.Chown(path, s.uid, s.uid); err != nil {
			c.t.Fatal(err)
		}
	}
	return own
}

// Partition cuts server i off from the other servers (the cluster was
// started with Options.Partitionable): nftables drops every packet one of
// them sends to the other's cluster or gossip port. Node agents, the proxy
// and the test still reach every server. Heal removes the rules.
func (c *Cluster) Partition(i int) {
	c.t.Helper()
	c.Heal()
	if c.Servers[i].uid == 0 {
		c.t.Fatal("Partition needs a cluster started with Options.Partitionable")
	}
	portsOf := func(p *Proc) (tcp []string, udp string) {
		_, cp, _ := strings.Cut(p.ClusterAddr, ":")
		_, gp, _ := strings.Cut(p.GossipAddr, ":")
		return []string{cp, gp}, gp
	}
	table := fmt.Sprintf("agenthost_cluster_test_%d", os.Getpid())
	var rules strings.Builder
	fmt.Fprintf(&rules, "table inet %s {\n\tchain output {\n\t\ttype filter hook output priority 0; policy accept;\n", table)
	drop := func(from, to *Proc) {
		tcp, udp := portsOf(to)
		fmt.Fprintf(&rules, "\t\tmeta skuid %d tcp dport { %s } drop\n", from.uid, strings.Join(tcp, ", "))
		fmt.Fprintf(&rules, "\t\tmeta skuid %d udp dport %s drop\n", from.uid, udp)
	}
	for j, other := range c.Servers {
		if j != i {
			drop(c.Servers[i], other)
			drop(other, c.Servers[i])
		}
	}
	rules.WriteString("\t}\n}\n")
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("nft: %v: %s\n%s", err, out, rules.String())
	}
	c.nftTable = table
}

// Heal removes Partition's rules.
func (c *Cluster) Heal() {
	if c.nftTable == "" {
		return
	}
	if out, err := exec.Command("nft", "delete", "table", "inet", c.nftTable).CombinedOutput(); err != nil {
		c.t.Errorf("nft delete table %s: %v: %s", c.nftTable, err, out)
	}
	c.nftTable = ""
}

// TestLeaderPartitioned cuts the leader off from the other two servers:
// the old leader acknowledges no write sent to it, the majority elects a
// leader and takes writes, and once healed all three agree and the old
// leader holds the majority's writes.
func TestLeaderPartitioned(t *testing.T) {
	c := StartClusterWith(t, Options{Partitionable: true})
	old := c.WaitForLeader(30 * time.Second)
	majority := (old + 1) % len(c.Servers)
	c.Partition(old)
	partitioned := time.Now()

	// The minority side: writes to the old leader, all through the
	// partition; none may be acknowledged.
	stop := make(chan struct{})
	var minoritySent, minorityAcked atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			res, err := c.Do(ctx, c.Servers[old].HTTPAddr, "POST", "/api/v1/orgs", c.OperatorToken, map[string]any{"name": fmt.Sprintf("minority-%d", i)})
			cancel()
			minoritySent.Add(1)
			if err == nil && res.OK() {
				minorityAcked.Add(1)
				t.Errorf("the partitioned old leader acknowledged a write: %v", res)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	// The majority side elects and takes writes.
	var ids []string
	var elected time.Duration
	waitFor(t, 15*time.Second, "a write acknowledged by the majority", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		res, err := c.Do(ctx, c.Servers[majority].HTTPAddr, "POST", "/api/v1/orgs", c.OperatorToken, map[string]any{"name": "majority-0"})
		if err != nil || !res.OK() {
			return false
		}
		var created struct{ ID string }
		res.Decode(t, &created)
		ids = append(ids, created.ID)
		return true
	})
	elected = time.Since(partitioned)
	for i := 1; i < 5; i++ {
		res, err := c.Do(context.Background(), c.Servers[majority].HTTPAddr, "POST", "/api/v1/orgs", c.OperatorToken, map[string]any{"name": fmt.Sprintf("majority-%d", i)})
		if err != nil || !res.OK() {
			t.Fatalf("majority write %d: %v %v", i, res, err)
		}
		var created struct{ ID string }
		res.Decode(t, &created)
		ids = append(ids, created.ID)
	}
	st, _ := c.Status(old)
	t.Logf("partitioned %s: the majority took writes again after %v; the old leader's state now: %s", c.Servers[old].Name, elected.Round(time.Millisecond), st.State)
	time.Sleep(time.Second) // let the minority writer try a while longer
	close(stop)
	wg.Wait()
	t.Logf("the old leader acknowledged %d of %d writes sent to it during the partition", minorityAcked.Load(), minoritySent.Load())

	c.Heal()
	healed := time.Now()
	leader := c.WaitForLeader(30 * time.Second)
	waitFor(t, 30*time.Second, "the old leader to hold the majority's writes", func() bool {
		return c.holdsOrgs(old, ids)
	})
	t.Logf("healed: %s leads, all three agree, the old leader caught up %v after the heal", c.Servers[leader].Name, time.Since(healed).Round(time.Millisecond))
}
