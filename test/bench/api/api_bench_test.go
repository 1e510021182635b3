// Package apibench measures the tenant REST API beside its peers, in one run
// (make bench):
//
//   - BenchmarkCreateToReady: POST /api/v1/agents until it answers (the agent
//     is RUNNING: placed, created by the node agent on a private containerd,
//     health-checked and reported back through Raft), alternating with the
//     same create written straight into Raft and waited for in the store —
//     the node-agent-only figure. The image is imported once before the
//     runs (cached). Target: API p50 ≤ 1.1× the node-agent-only p50.
//   - BenchmarkReads: GET one agent and GET the agent list (a page of 100 of
//     1,000 agents) on a 3-server cluster, every server serving the API and
//     the clients spread over all three, beside a plain net/http server
//     answering the same bytes on the same loopback (direct HTTP).
//
// Both need the real parts; CreateToReady needs root and containerd (make
// setup). Figures are printed as tables at the end of each benchmark.
package apibench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agenthost/agenthost/api"
	"github.com/agenthost/agenthost/nodeagent"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd/containerdtest"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd/drivertest"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// createRuns is how many creates each path makes; p99 of 30 is the slowest
// but one, which is what a p99 of so few runs can honestly say.
const createRuns = 30

func BenchmarkCreateToReady(b *testing.B) {
	containerdtest.Require(b)
	daemon, err := containerdtest.Start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(daemon.Stop)
	tmp := b.TempDir()
	archive := filepath.Join(tmp, "image.tar")
	if err := containerdtest.BuildImage(context.Background(), archive); err != nil {
		b.Fatal(err)
	}
	drv, err := drivertest.New(drivertest.Options{Address: daemon.Address, Subnet: netip.MustParsePrefix("10.213.252.0/24"),
		Dir: tmp, Archives: []string{archive}})
	if err != nil {
		b.Fatal(err)
	}
	// Delete every container through the driver before containerd stops,
	// so that no network namespace or rule outlives the run.
	b.Cleanup(func() { drivertest.Close(drv) })

	tc := clusterrpc.NewTestCluster(b, 1)
	tc.WaitForLeader()
	control := tc.Servers[0]
	s := control.Store

	cfg := nodeagent.DefaultConfig()
	cfg.ControlAddrs = []string{control.Addr()}
	cfg.Name, cfg.AdvertiseAddr = "bench-node", "127.0.0.1"
	cfg.Runtimes = map[string]nodeagent.Runtime{"opencode": {Image: containerdtest.ImageName, Port: 4096, HealthPath: "/global/health"}}
	cfg.HealthInterval = 50 * time.Millisecond
	cfg.GossipBind = "127.0.0.1:0"
	cfg.RuntimeServiceBind = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.DiscardHandler)
	agent, err := nodeagent.New(cfg, drv)
	if err != nil {
		b.Fatal(err)
	}
	actx, stopAgent := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); agent.Run(actx) }()
	b.Cleanup(func() { stopAgent(); <-done })
	for n, _ := s.State().Node("bench-node"); n == nil; n, _ = s.State().Node("bench-node") {
		time.Sleep(20 * time.Millisecond)
	}

	srv, hs := startAPI(b, s)
	ctx := context.Background()
	orgID, token, err := srv.CreateOrg(ctx, "bench", store.Plan{}, "bench")
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Timeout: 90 * time.Second}

	var viaAPI, viaRaft []time.Duration
	for i := range createRuns {
		d, id, err := createThroughAPI(client, hs.URL, token, fmt.Sprintf("api-%d", i))
		if err != nil {
			b.Fatalf("API create %d: %v", i, err)
		}
		viaAPI = append(viaAPI, d)
		if err := deleteAndDrain(ctx, s, drv, id); err != nil {
			b.Fatal(err)
		}
		d, err = createThroughRaft(ctx, s, orgID, fmt.Sprintf("raft-%d", i), api.DefaultConfig().AgentResources)
		if err != nil {
			b.Fatalf("node-agent-only create %d: %v", i, err)
		}
		viaRaft = append(viaRaft, d)
		if err := deleteAndDrain(ctx, s, drv, fmt.Sprintf("raft-%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	ratio := float64(pct(viaAPI, 50)) / float64(pct(viaRaft, 50))
	b.ReportMetric(float64(pct(viaAPI, 50).Microseconds())/1000, "api-p50-ms")
	b.ReportMetric(float64(pct(viaAPI, 99).Microseconds())/1000, "api-p99-ms")
	b.ReportMetric(float64(pct(viaRaft, 50).Microseconds())/1000, "nodeagent-p50-ms")
	b.ReportMetric(ratio, "api/nodeagent-p50")
	fmt.Printf("\ncreate → ready, cached image, private containerd, %d runs each, alternating\n", createRuns)
	fmt.Printf("%-52s %9s %9s\n", "path", "p50", "p99")
	fmt.Printf("%-52s %9s %9s\n", "node agent only (AgentCreate in Raft → RUNNING)", ms(pct(viaRaft, 50)), ms(pct(viaRaft, 99)))
	fmt.Printf("%-52s %9s %9s\n", "POST /api/v1/agents → 200 (RUNNING)", ms(pct(viaAPI, 50)), ms(pct(viaAPI, 99)))
	fmt.Printf("API / node agent only at p50: %.2fx (target ≤ 1.10x); at p99: %.2fx\n\n",
		ratio, float64(pct(viaAPI, 99))/float64(pct(viaRaft, 99)))
}

// startAPI serves the REST API of one control server, with the defaults.
func startAPI(b *testing.B, s *store.Store) (*api.Server, *httptest.Server) {
	b.Helper()
	acfg := api.DefaultConfig()
	acfg.Store = s
	acfg.Keyring = clusterrpc.TestKeyring() // the test cluster's
	acfg.PublicURL = &url.URL{Scheme: "http", Host: "localhost:7480"}
	srv, err := api.New(acfg)
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	b.Cleanup(hs.Close)
	return srv, hs
}

func createThroughAPI(client *http.Client, base, token, name string) (time.Duration, string, error) {
	body, _ := json.Marshal(map[string]string{"name": name})
	req, _ := http.NewRequest("POST", base+"/api/v1/agents", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, "", fmt.Errorf("%d %s", resp.StatusCode, out)
	}
	var created struct {
		AgentID string `json:"agentId"`
	}
	if err := json.Unmarshal(out, &created); err != nil || created.AgentID == "" {
		return 0, "", fmt.Errorf("create answered %s", out)
	}
	return d, created.AgentID, nil
}

// createThroughRaft is what the API does minus HTTP, auth, validation and
// the response: the create command, then waiting on the store for RUNNING.
func createThroughRaft(ctx context.Context, s *store.Store, orgID, id string, res store.Resources) (time.Duration, error) {
	start := time.Now()
	if _, err := s.Apply(ctx, &store.AgentCreate{Agent: clusterrpc.WithTestRuntimePassword(store.Agent{ID: id, OrgID: orgID, Name: id, Runtime: "opencode",
		Resources: res, Desired: store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: time.Now().UTC()}, store.NewRuntimePassword())}); err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		applied := s.AppliedIndex()
		a, _ := s.State().Agent(id)
		if a != nil && a.Status == store.StatusRunning {
			return time.Since(start), nil
		}
		if a != nil && a.Status == store.StatusError {
			return 0, fmt.Errorf("agent failed: %s", a.ErrorMsg)
		}
		if err := s.WaitForIndex(wctx, applied+1); err != nil {
			return 0, fmt.Errorf("agent %s not RUNNING within 60s: %w", id, err)
		}
	}
}

// deleteAndDrain deletes the agent and waits until its container is gone,
// so that every create starts from the same empty node.
func deleteAndDrain(ctx context.Context, s *store.Store, drv *containerd.Driver, id string) error {
	if _, err := s.Apply(ctx, &store.AgentDelete{ID: id}); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for list, _ := drv.List(ctx); len(list) > 0; list, _ = drv.List(ctx) {
		if time.Now().After(deadline) {
			return fmt.Errorf("agent %s's container still there after 30s", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// readAgents is how many agents the org holds for the read benchmarks.
const readAgents = 1000

func BenchmarkReads(b *testing.B) {
	tc := clusterrpc.NewTestCluster(b, 3)
	leader := tc.WaitForLeader()
	ctx := context.Background()
	var bases []string
	var servers []*api.Server
	for _, cs := range tc.Servers {
		srv, hs := startAPI(b, cs.Store)
		servers = append(servers, srv)
		bases = append(bases, hs.URL)
	}
	orgID, token, err := servers[leader].CreateOrg(ctx, "bench", store.Plan{}, "bench")
	if err != nil {
		b.Fatal(err)
	}
	// The agents go in straight through Raft, placed on a node registered
	// in the store with no node agent behind it (they stay PROVISIONING):
	// the benchmark is about reading them.
	ls := tc.Servers[leader].Store
	if _, err := ls.Apply(ctx, &store.NodeRegister{Node: store.Node{ID: "bench-node", Name: "bench-node", Address: "127.0.0.1:7500",
		Capacity: store.NodeCapacity{CPUMillis: 1 << 30, MemoryMB: 1 << 30, MaxAgents: 2 * readAgents},
		Runtimes: []string{"opencode"}, LastSeen: time.Now().UTC()}}); err != nil {
		b.Fatal(err)
	}
	errs := make(chan error, 8)
	for w := range 8 {
		go func() {
			for i := w; i < readAgents; i += 8 {
				id := fmt.Sprintf("ag%020d", i)
				_, err := ls.Apply(ctx, &store.AgentCreate{Agent: store.Agent{ID: id, OrgID: orgID, Name: fmt.Sprintf("agent-%d", i),
					Runtime: "opencode", Tags: []string{"bench"}, Desired: store.DesiredRunning, Status: store.StatusProvisioning,
					CreatedAt: time.Now().UTC()}})
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	st, err := ls.ConsistentState(ctx)
	if err != nil {
		b.Fatal(err)
	}
	tc.WaitForIndex(st.Index())

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	get := func(url string) ([]byte, error) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, body)
		}
		return body, err
	}
	const agentPath = "/api/v1/agents/ag00000000000000000500"
	const listPath = "/api/v1/agents?limit=100&tag=bench"
	agentBody, err := get(bases[0] + agentPath)
	if err != nil {
		b.Fatal(err)
	}
	listBody, err := get(bases[0] + listPath)
	if err != nil {
		b.Fatal(err)
	}
	if !strings.Contains(string(listBody), `"nextCursor":"ag`) {
		b.Fatalf("the list is not a full page: %.200s", listBody)
	}
	// The peer: the same bytes from a plain handler, through the same client.
	direct := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/api/v1/agents" {
			w.Write(listBody)
			return
		}
		w.Write(agentBody)
	}))
	b.Cleanup(direct.Close)

	rates := map[string]float64{}
	measure := func(name string, bases []string, path string) {
		b.Run(name, func(b *testing.B) {
			var next atomic.Uint64
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					base := bases[next.Add(1)%uint64(len(bases))]
					if _, err := get(base + path); err != nil {
						b.Error(err)
						return
					}
				}
			})
			rate := float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(rate, "req/s")
			rates[name] = rate
		})
	}
	measure("direct-agent", []string{direct.URL}, agentPath)
	measure("get-agent", bases, agentPath)
	measure("direct-list", []string{direct.URL}, listPath)
	measure("list-agents", bases, listPath)

	fmt.Printf("\nreads on a 3-server cluster (clients spread over all three, %d concurrent), %d agents in the org\n", 16*runtime.GOMAXPROCS(0), readAgents)
	fmt.Printf("%-40s %12s %10s\n", "request", "req/s", "vs direct")
	for _, row := range [][2]string{{"get-agent", "direct-agent"}, {"list-agents", "direct-list"}} {
		fmt.Printf("%-40s %12.0f %9.2fx\n", "GET "+map[string]string{"get-agent": "one agent", "list-agents": "agents (page of 100)"}[row[0]],
			rates[row[0]], rates[row[0]]/rates[row[1]])
	}
	fmt.Println()
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d.Microseconds())/1000) }
