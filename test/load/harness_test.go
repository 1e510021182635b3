package load_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agenthost/agenthost/api"
	"github.com/agenthost/agenthost/nodeagent/driver/process"
	"github.com/agenthost/agenthost/nodeagent/driver/process/processtest"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

func TestMain(m *testing.M) {
	processtest.ServeStandInIfAsked()
	os.Exit(m.Run())
}

// Agents' ports come from this package's own range, below the ephemeral
// ports (from 32768) that listeners on :0 and the clients' connections get,
// which a stand-in runtime would otherwise find taken (deploy uses 324xx,
// test/e2e 321xx–323xx).
const portRangeStart, portRangeEnd = 31900, 31999

// cluster is a control plane of three servers, each with its REST API, and
// one node agent running stand-in runtimes with the process driver, all in
// this process (as deploy's tests start them, without the proxy).
type cluster struct {
	t    *testing.T
	tc   *clusterrpc.TestCluster
	apis []*api.Server
	urls []string // each API's base URL
	drv  *process.Driver
}

const testNode = "node-load"

// startCluster starts the cluster with a node that offers exactly slots
// agents of the API's default resources.
func startCluster(t *testing.T, slots int) *cluster {
	t.Helper()
	c := &cluster{t: t}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	c.tc = clusterrpc.NewTestClusterWith(t, 3, func(cfg *clusterrpc.ServerConfig) {
		// Production timings: a loaded machine must not see leadership
		// churn, whose 503s would be mistaken for a failure of the test.
		clusterrpc.ProductionTimings(cfg)
	})
	ccfg := store.DefaultClusterConfig()
	ccfg.PortRangeStart, ccfg.PortRangeEnd = portRangeStart, portRangeEnd
	if _, err := c.leader().Store.Apply(ctx, &store.ClusterConfigSet{Config: ccfg}); err != nil {
		t.Fatal(err)
	}
	var controlAddrs []string
	for _, srv := range c.tc.Servers {
		acfg := api.DefaultConfig()
		acfg.Store = srv.Store
		acfg.Keyring = clusterrpc.TestKeyring()
		acfg.PublicURL = &url.URL{Scheme: "http", Host: "agents.test"}
		acfg.Logger = slog.New(slog.DiscardHandler)
		a, err := api.New(acfg)
		if err != nil {
			t.Fatal(err)
		}
		go a.Run(ctx)
		c.apis = append(c.apis, a)
		hs := httptest.NewServer(a.Handler())
		t.Cleanup(hs.Close)
		c.urls = append(c.urls, hs.URL)
		controlAddrs = append(controlAddrs, srv.Addr())
	}

	res := api.DefaultConfig().AgentResources
	c.drv = processtest.StartNode(ctx, t, processtest.NodeConfig{Name: testNode, ControlAddrs: controlAddrs,
		CPUMillis: int64(slots) * res.CPUMillis, MemoryMB: int64(slots) * res.MemoryMB, MaxAgents: slots})

	waitFor(t, 20*time.Second, "the node to register", func() bool {
		n, _ := c.leader().Store.State().Node(testNode)
		return n != nil
	})
	return c
}

func (c *cluster) leader() *clusterrpc.Server { return c.tc.Servers[c.tc.WaitForLeader()] }

// leaderAPI is the REST API of the leader, for set-up that should not be
// forwarded.
func (c *cluster) leaderAPI() *api.Server { return c.apis[c.tc.WaitForLeader()] }

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// resources are what this process holds that a leak would grow: the
// baseline the test returns to.
type resources struct {
	goroutines int
	fds        int // entries of /proc/self/fd
	children   int // processes whose parent is this one
	containers int // the process driver's agents
	ports      int // agents holding a port in the leader's state
}

func (r resources) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, %d child processes, %d containers, %d ports held",
		r.goroutines, r.fds, r.children, r.containers, r.ports)
}

func (c *cluster) resources() resources {
	c.t.Helper()
	cs, err := c.drv.List(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	agents, err := c.leader().Store.State().Agents()
	if err != nil {
		c.t.Fatal(err)
	}
	ports := 0
	for _, a := range agents {
		if a.Port > 0 {
			ports++
		}
	}
	return resources{
		goroutines: runtime.NumGoroutine(),
		fds:        countFDs(c.t),
		children:   countChildren(c.t),
		containers: len(cs),
		ports:      ports,
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	return len(fdTargets(t))
}

// fdTargets are what this process's open file descriptors point at
// ("socket:[123]", a path), sorted.
func fdTargets(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			out = append(out, target)
		}
	}
	slices.Sort(out)
	return out
}

// newFDs are the targets of now that base does not have.
func newFDs(base, now []string) []string {
	var out []string
	for _, f := range now {
		if _, found := slices.BinarySearch(base, f); !found {
			out = append(out, f)
		}
	}
	return out
}

// countChildren counts the processes whose parent is this one, from
// /proc/<pid>/stat (the fourth field, after the command in parentheses).
func countChildren(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self, n := os.Getpid(), 0
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		s := string(b)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 {
			if ppid, _ := strconv.Atoi(fields[1]); ppid == self {
				n++
			}
		}
	}
	return n
}

// waitNoAgents waits until no agent holds a port and the process driver has
// no container and this process no child.
func (c *cluster) waitNoAgents(t *testing.T) {
	t.Helper()
	waitFor(t, 60*time.Second, "every agent and its process to be gone", func() bool {
		r := c.resources()
		return r.ports == 0 && r.containers == 0 && r.children == 0
	})
}
