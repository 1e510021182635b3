package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agenthost/agenthost/api"
	"github.com/agenthost/agenthost/nodeagent/driver/process/processtest"
	"github.com/agenthost/agenthost/proxy"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

func TestMain(m *testing.M) {
	processtest.ServeStandInIfAsked()
	os.Exit(m.Run())
}

// requireTool returns the path of a tool from Debian's prometheus package.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: these tests need Debian's prometheus package (make setup installs it)", name)
	}
	return p
}

// target is one component's /metrics, as Prometheus scrapes it.
type target struct {
	job, name string
	addr      string // host:port
}

// cluster is a control plane of three servers, each with its REST API and
// /metrics, a node agent running stand-in runtimes with the process driver,
// and an edge proxy: every component whose metrics the dashboards and alert
// rules read, in this process.
type cluster struct {
	t       *testing.T
	tc      *clusterrpc.TestCluster
	apis    []*api.Server
	targets []target
	proxy   string // the proxy's HTTP address
	domain  string
}

const testNode = "node-metrics"

func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{t: t, domain: "agents.test"}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	newRegistry := func() *prometheus.Registry {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		return reg
	}
	serveMetrics := func(job, name string, reg *prometheus.Registry, mux *http.ServeMux) {
		if mux == nil {
			mux = http.NewServeMux()
		}
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		hs := httptest.NewServer(mux)
		t.Cleanup(hs.Close)
		c.targets = append(c.targets, target{job: job, name: name, addr: strings.TrimPrefix(hs.URL, "http://")})
	}

	var regs []*prometheus.Registry
	c.tc = clusterrpc.NewTestClusterWith(t, 3, func(cfg *clusterrpc.ServerConfig) {
		// Production timings: a loaded machine must not see leadership
		// churn, which would show as a passing AgenthostNoLeader.
		clusterrpc.ProductionTimings(cfg)
		reg := newRegistry()
		regs = append(regs, reg)
		cfg.Store.Registerer = reg
	})
	// Agents' ports from this test's own range, below the ephemeral ports
	// that listeners on :0 get (other tests use 321xx–323xx).
	ccfg := store.DefaultClusterConfig()
	ccfg.PortRangeStart, ccfg.PortRangeEnd = 32400, 32499
	if _, err := c.leader().Store.Apply(ctx, &store.ClusterConfigSet{Config: ccfg}); err != nil {
		t.Fatal(err)
	}
	var apiAddrs, controlAddrs []string
	for i, srv := range c.tc.Servers {
		acfg := api.DefaultConfig()
		acfg.Store = srv.Store
		acfg.Keyring = clusterrpc.TestKeyring()
		acfg.PublicURL = &url.URL{Scheme: "http", Host: c.domain}
		acfg.Logger = slog.New(slog.DiscardHandler)
		acfg.Registerer = regs[i]
		a, err := api.New(acfg)
		if err != nil {
			t.Fatal(err)
		}
		go a.Run(ctx)
		c.apis = append(c.apis, a)
		// As `agenthost server` serves it.
		mux := http.NewServeMux()
		mux.Handle("/", a.Handler())
		mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(srv.Store.Status())
		})
		serveMetrics("agenthost-server", srv.Store.Status().ServerID, regs[i], mux)
		apiAddrs = append(apiAddrs, c.targets[i].addr)
		controlAddrs = append(controlAddrs, srv.Addr())
	}

	// The node agent: one agent slot, so that one agent fills it.
	nodeReg := newRegistry()
	processtest.StartNode(ctx, t, processtest.NodeConfig{Name: testNode, ControlAddrs: controlAddrs,
		CPUMillis: 2000, MemoryMB: 2048, MaxAgents: 1, Registerer: nodeReg})
	serveMetrics("agenthost-node", testNode, nodeReg, nil)

	// The edge proxy.
	pcfg := proxy.DefaultConfig()
	pcfg.Domain = c.domain
	pcfg.ControlAddrs, pcfg.APIAddrs = controlAddrs, apiAddrs
	pcfg.Logger = slog.New(slog.DiscardHandler)
	pcfg.AccessLog = false
	proxyReg := newRegistry()
	pcfg.Registerer = proxyReg
	p, err := proxy.New(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	proxyDone := make(chan struct{})
	go func() { defer close(proxyDone); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-proxyDone })
	ps := httptest.NewUnstartedServer(nil)
	ps.Config = p.NewServer()
	ps.Listener = p.FastListener(ps.Listener, ps.Config)
	ps.Start()
	t.Cleanup(ps.Close)
	c.proxy = strings.TrimPrefix(ps.URL, "http://")
	serveMetrics("agenthost-proxy", "proxy", proxyReg, nil)

	waitFor(t, 20*time.Second, "the node to register and the proxy to sync", func() bool {
		n, _ := c.leader().Store.State().Node(testNode)
		return n != nil && p.Synced()
	})
	return c
}

func (c *cluster) leader() *clusterrpc.Server { return c.tc.Servers[c.tc.WaitForLeader()] }

// leaderAPI is the REST API of the leader, for set-up that should not be
// forwarded.
func (c *cluster) leaderAPI() *api.Server { return c.apis[c.tc.WaitForLeader()] }

// do sends a request through the edge proxy to host (a subdomain of the
// proxy's domain, or "" for the apex) and returns the status and body.
func (c *cluster) do(method, host, path, token string, body any) (int, []byte) {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+c.proxy+path, r)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Host = c.domain
	if host != "" {
		req.Host = host + "." + c.domain
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		c.t.Fatalf("%s %s%s: %v", method, req.Host, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// scrape returns a target's /metrics text.
func scrape(t *testing.T, addr string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/metrics: %d %v", addr, resp.StatusCode, err)
	}
	return b
}

// prometheusServer is Debian's prometheus, started by the test with the
// shipped configuration (deploy/prometheus/prometheus.yml and alerts.yml)
// scraping the cluster every second.
type prometheusServer struct {
	t    *testing.T
	addr string
}

// scrapeInterval replaces the shipped configuration's 15 s, so that a test
// sees rates within seconds.
const scrapeInterval = "1s"

func startPrometheus(t *testing.T, targets []target) *prometheusServer {
	t.Helper()
	bin := requireTool(t, "prometheus")
	dir := t.TempDir()
	cfg, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cfg, []byte("interval: 15s")) {
		t.Fatal("prometheus.yml: no 15s interval to shorten")
	}
	cfg = bytes.ReplaceAll(cfg, []byte("interval: 15s"), []byte("interval: "+scrapeInterval))
	writeFile(t, filepath.Join(dir, "prometheus.yml"), cfg)
	rules, err := os.ReadFile("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "alerts.yml"), rules)
	// The shipped target files name the example hosts; the test's name
	// this process's listeners, in the same files.
	files := map[string]string{"agenthost-server": "servers.yml", "agenthost-node": "nodes.yml", "agenthost-proxy": "proxies.yml"}
	byFile := map[string][]string{}
	for _, tg := range targets {
		byFile[files[tg.job]] = append(byFile[files[tg.job]], tg.addr)
	}
	for job, file := range files {
		if _, err := os.Stat(filepath.Join("prometheus", "targets", file)); err != nil {
			t.Fatalf("job %s: %v", job, err)
		}
		writeFile(t, filepath.Join(dir, "targets", file), fmt.Appendf(nil, "- targets: [%s]\n", strings.Join(byFile[file], ", ")))
	}

	addr := freeAddr(t)
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill() // this test's own prometheus, by its PID
		<-exited
		if t.Failed() {
			t.Logf("prometheus output:\n%s", logs.String())
		}
	})
	p := &prometheusServer{t: t, addr: addr}
	waitFor(t, 30*time.Second, "prometheus to scrape every target", func() bool {
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", logs.String())
		default:
		}
		var active struct {
			ActiveTargets []struct {
				Health     string `json:"health"`
				ScrapePool string `json:"scrapePool"`
			} `json:"activeTargets"`
		}
		if err := p.get("/api/v1/targets", nil, &active); err != nil {
			return false
		}
		up := 0
		for _, at := range active.ActiveTargets {
			if at.Health == "up" {
				up++
			}
		}
		return up == len(targets) && len(active.ActiveTargets) == len(targets)
	})
	return p
}

// get calls Prometheus's HTTP API and decodes its data into out.
func (p *prometheusServer) get(path string, query url.Values, out any) error {
	resp, err := http.Get("http://" + p.addr + path + "?" + query.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return fmt.Errorf("%s: %d, %w", path, resp.StatusCode, err)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s", path, env.Error)
	}
	return json.Unmarshal(env.Data, out)
}

// sample is one element of an instant vector.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s sample) value() string { v, _ := s.Value[1].(string); return v }

// query evaluates expr now; a scalar answer comes back as one sample.
func (p *prometheusServer) query(expr string) ([]sample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.get("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	switch data.ResultType {
	case "vector":
		var v []sample
		return v, json.Unmarshal(data.Result, &v)
	case "scalar":
		var s [2]any
		return []sample{{Value: s}}, json.Unmarshal(data.Result, &s)
	}
	return nil, fmt.Errorf("%s: a %s, not an instant vector", expr, data.ResultType)
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !ok(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitAgent waits for the agent's status in the leader's state.
func (c *cluster) waitAgent(id string, status store.AgentStatus) {
	c.t.Helper()
	waitFor(c.t, 30*time.Second, "agent "+id+" "+string(status), func() bool {
		a, _ := c.leader().Store.State().Agent(id)
		return a != nil && a.Status == status
	})
}
