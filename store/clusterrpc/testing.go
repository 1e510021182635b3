package clusterrpc

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
)

// TestServerConfig returns a configuration for in-process test clusters:
// tight Raft timings, a random loopback port, its own data directory.
func TestServerConfig(t testing.TB, id, dataDir string) *ServerConfig {
	t.Helper()
	sc := store.DefaultConfig()
	sc.ServerID = id
	sc.DataDir = dataDir
	// Tight, but with room for the race detector and a loaded 2-core
	// machine: a lease that expires under CPU starvation turns into
	// leadership churn that the tests would misread as bugs.
	sc.HeartbeatTimeout = 300 * time.Millisecond
	sc.ElectionTimeout = 300 * time.Millisecond
	sc.LeaderLeaseTimeout = 200 * time.Millisecond
	sc.CommitTimeout = 5 * time.Millisecond
	sc.ApplyTimeout = 10 * time.Second
	sc.Logger = testLogger()
	cfg := DefaultServerConfig()
	cfg.Store = sc
	cfg.BindAddr = "127.0.0.1:0"
	cfg.JoinRetryInterval = 20 * time.Millisecond
	// Tests register nodes straight through the store, with no node agent
	// to heartbeat; tests of liveness set a short TTL themselves.
	cfg.NodeHeartbeatTTL = time.Hour
	cfg.GossipBind = "127.0.0.1:0"
	// Nor should gossip declare a node agent of theirs dead because the
	// race detector and a loaded machine delayed its acks past 150 ms: with
	// these timings it takes seconds of silence. Tests of liveness run
	// real processes at production timings (test/cluster).
	cfg.GossipProbe = GossipProbe{Interval: time.Second, Timeout: time.Second, SuspicionMult: 8}
	cfg.Keyring = TestKeyring()
	return cfg
}

// testKeyring is made once per process, so that every test server, and the
// tests that seal for them, share it.
var testKeyring = sync.OnceValue(func() *keyring.Keyring {
	line, err := keyring.NewKeyLine("test")
	if err != nil {
		panic(err)
	}
	kr, err := keyring.Parse([]byte(line))
	if err != nil {
		panic(err)
	}
	return kr
})

// TestKeyring is the keyring test servers hold unless a test gives them
// another: a fresh key, the same for the whole process.
func TestKeyring() *keyring.Keyring { return testKeyring() }

// WithTestRuntimePassword returns a with password sealed as its runtime
// password under TestKeyring, for tests and benchmarks that create agents
// in the store directly, as the API would.
func WithTestRuntimePassword(a store.Agent, password string) store.Agent {
	if err := SealRuntimePassword(TestKeyring(), &a, password); err != nil {
		panic(err) // sealing fails only when crypto/rand does
	}
	return a
}

func testLogger() *slog.Logger {
	if os.Getenv("AGENTHOST_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestCluster is a Raft cluster of in-process servers on loopback.
type TestCluster struct {
	t       testing.TB
	Servers []*Server
	configs []*ServerConfig
}

// NewTestCluster starts n servers that bootstrap together (n = 1 bootstraps
// alone) and waits for a leader. They are shut down when the test ends.
func NewTestCluster(t testing.TB, n int) *TestCluster {
	t.Helper()
	return NewTestClusterWith(t, n, nil)
}

// ProductionTimings gives a test cluster Raft's production timings, for tests
// that load the machine (many concurrent writers under the race detector) and
// must not see leadership churn that they would misread as bugs.
func ProductionTimings(cfg *ServerConfig) {
	def := store.DefaultConfig()
	cfg.Store.HeartbeatTimeout = def.HeartbeatTimeout
	cfg.Store.ElectionTimeout = def.ElectionTimeout
	cfg.Store.LeaderLeaseTimeout = def.LeaderLeaseTimeout
}

// NewTestClusterWith is NewTestCluster with a hook that adjusts each
// server's configuration before it starts.
func NewTestClusterWith(t testing.TB, n int, adjust func(*ServerConfig)) *TestCluster {
	t.Helper()
	tc := &TestCluster{t: t}
	// Bind every port first so that each server knows all the others before
	// any starts.
	var addrs []string
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		cfg := TestServerConfig(t, fmt.Sprintf("server-%d", i), t.TempDir())
		cfg.Listener = ln
		cfg.BootstrapExpect = n
		if adjust != nil {
			adjust(cfg)
		}
		tc.configs = append(tc.configs, cfg)
		addrs = append(addrs, ln.Addr().String())
	}
	for i, cfg := range tc.configs {
		if n > 1 {
			cfg.Join = slices.Clone(addrs)
		}
		srv, err := StartServer(cfg)
		if err != nil {
			t.Fatalf("start server %d: %v", i, err)
		}
		tc.Servers = append(tc.Servers, srv)
	}
	t.Cleanup(tc.Shutdown)
	tc.WaitForLeader()
	return tc
}

// WaitForLeader waits until the running servers agree on a leader that has
// established leadership, and returns its index in Servers.
func (tc *TestCluster) WaitForLeader() int {
	tc.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for i, s := range tc.Servers {
			if s != nil && s.Store.IsLeader() {
				return i
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	tc.t.Fatalf("no leader within 15s")
	return -1
}

// Follower returns the index of a running server that is not the leader.
func (tc *TestCluster) Follower() int {
	tc.t.Helper()
	leader := tc.WaitForLeader()
	for i, s := range tc.Servers {
		if s != nil && i != leader {
			return i
		}
	}
	tc.t.Fatalf("no follower running")
	return -1
}

// Kill shuts server i down, as a crash would leave it: its data directory
// stays for Restart.
func (tc *TestCluster) Kill(i int) {
	tc.t.Helper()
	if err := tc.Servers[i].Shutdown(); err != nil {
		tc.t.Logf("shutdown server %d: %v", i, err)
	}
	tc.Servers[i] = nil
}

// Restart starts server i again from its data directory, on its old address.
func (tc *TestCluster) Restart(i int) *Server {
	tc.t.Helper()
	cfg := *tc.configs[i]
	storeCfg := *cfg.Store
	cfg.Store = &storeCfg
	cfg.BindAddr = storeCfg.AdvertiseAddr
	cfg.Listener = nil
	var srv *Server
	var err error
	// The old port can take a moment to be free again.
	for attempt := 0; attempt < 50; attempt++ {
		srv, err = StartServer(&cfg)
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		tc.t.Fatalf("restart server %d: %v", i, err)
	}
	tc.Servers[i] = srv
	return srv
}

// WaitForIndex waits until every running server has applied index.
func (tc *TestCluster) WaitForIndex(index uint64) {
	tc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for i, s := range tc.Servers {
		if s == nil {
			continue
		}
		if err := s.Store.WaitForIndex(ctx, index); err != nil {
			tc.t.Fatalf("server %d did not apply index %d (at %d): %v", i, index, s.Store.State().Index(), err)
		}
	}
}

// Shutdown stops every running server.
func (tc *TestCluster) Shutdown() {
	for i, s := range tc.Servers {
		if s != nil {
			s.Shutdown()
			tc.Servers[i] = nil
		}
	}
}

// ScanDataFiles makes every running server take a snapshot, shuts the
// cluster down, and hands scan every file of every server's data directory
// (Raft's bolt log and the snapshots among them). canary is a value the
// test wrote to the store: it must turn up in a bolt file and in a
// snapshot, so that a scan that finds nothing has shown that it looked.
func (tc *TestCluster) ScanDataFiles(canary string, scan func(path string, b []byte)) {
	tc.t.Helper()
	for i, s := range tc.Servers {
		if s == nil {
			continue
		}
		if err := s.Store.Raft().Snapshot().Error(); err != nil {
			tc.t.Fatalf("snapshot server %d: %v", i, err)
		}
	}
	tc.Shutdown()
	canaryIn := map[string]bool{}
	for _, cfg := range tc.configs {
		err := filepath.WalkDir(cfg.Store.DataDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			scan(path, b)
			if bytes.Contains(b, []byte(canary)) {
				switch {
				case strings.HasSuffix(path, ".db"):
					canaryIn["bolt"] = true
				case strings.Contains(path, "snapshots"):
					canaryIn["snapshot"] = true
				}
			}
			return nil
		})
		if err != nil {
			tc.t.Fatal(err)
		}
	}
	if !canaryIn["bolt"] || !canaryIn["snapshot"] {
		tc.t.Fatalf("the canary was found in %v; the scan must see the bolt files and the snapshots", canaryIn)
	}
}
