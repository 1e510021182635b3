// Command nodeagent measures how long an agent takes from "create" to
// "healthy", on a private containerd, in three ways in one run:
//
//   - peer: `ctr run -d` of the test image (host network) plus polling its
//     health endpoint every 50 ms — the floor containerd itself sets;
//   - driver: the node agent's containerd driver (own network namespace via
//     CNI, isolation rules, limits, logger) plus the same polling;
//   - end to end: AgentCreate committed through a one-server control plane,
//     placed, watched by a node agent, created, health-checked and reported
//     RUNNING back through Raft.
//
// It also reports the node agent process's idle RSS and the memory added per
// running agent. Runs alternate so that drift on a shared machine hits all
// three alike. Needs root and containerd (make setup).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agenthost/agenthost/nodeagent"
	"github.com/agenthost/agenthost/nodeagent/driver"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd/containerdtest"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd/drivertest"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/test/bench/internal/benchcluster"
)

const pollInterval = 50 * time.Millisecond

func main() {
	runs := flag.Int("runs", 15, "creates per path")
	flag.Parse()
	if err := run(*runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(runs int) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (containerd)")
	}
	daemon, err := containerdtest.Start()
	if err != nil {
		return err
	}
	defer daemon.Stop()
	tmp, err := os.MkdirTemp("", "ahbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	archive := filepath.Join(tmp, "image.tar")
	if err := containerdtest.BuildImage(context.Background(), archive); err != nil {
		return err
	}
	quiet := slog.New(slog.DiscardHandler)
	drv, err := drivertest.New(drivertest.Options{Address: daemon.Address, Subnet: netip.MustParsePrefix("10.213.250.0/24"),
		Dir: tmp, Archives: []string{archive}})
	if err != nil {
		return err
	}
	// Whatever happens, delete every container through the driver before
	// containerd stops, so that no network namespace or rule outlives the run.
	defer drivertest.Close(drv)

	ctx := context.Background()
	control, cleanup, err := benchcluster.Start(tmp, nil)
	if err != nil {
		return err
	}
	defer cleanup()
	s := control.Store
	if _, err := s.Apply(ctx, &store.OrgCreate{Org: store.Org{ID: "bench", Name: "bench", CreatedAt: time.Now().UTC()}}); err != nil {
		return err
	}
	cfg := nodeagent.DefaultConfig()
	cfg.ControlAddrs = []string{control.Addr()}
	cfg.Name, cfg.AdvertiseAddr = "bench-node", "127.0.0.1"
	cfg.Runtimes = map[string]nodeagent.Runtime{"opencode": {Image: containerdtest.ImageName, Port: 4096, HealthPath: "/global/health"}}
	cfg.HealthInterval = pollInterval
	cfg.GossipBind = "127.0.0.1:0"
	cfg.RuntimeServiceBind = "127.0.0.1:0"
	cfg.Logger = quiet
	agent, err := nodeagent.New(cfg, drv)
	if err != nil {
		return err
	}
	actx, stop := context.WithCancel(ctx)
	defer stop()
	go agent.Run(actx)
	for n, _ := s.State().Node("bench-node"); n == nil; n, _ = s.State().Node("bench-node") {
		time.Sleep(20 * time.Millisecond)
	}

	var peer, direct, endToEnd []time.Duration
	for i := range runs {
		d, err := ctrRun(daemon.Address, i)
		if err != nil {
			return fmt.Errorf("ctr run: %w", err)
		}
		peer = append(peer, d)
		d, err = driverCreate(drv, i)
		if err != nil {
			return fmt.Errorf("driver: %w", err)
		}
		direct = append(direct, d)
		d, err = agentCreate(s, drv, i)
		if err != nil {
			return fmt.Errorf("node agent: %w", err)
		}
		endToEnd = append(endToEnd, d)
	}

	fmt.Printf("create → healthy on a private containerd, %d runs each, health polled every %s\n\n", runs, pollInterval)
	fmt.Printf("%-44s %9s %9s %9s\n", "path", "p50", "p90", "vs ctr")
	pp := pct(peer, 50)
	for _, row := range []struct {
		name string
		d    []time.Duration
	}{
		{"ctr run -d (host network) + health poll", peer},
		{"driver: CNI netns, rules, limits + poll", direct},
		{"node agent end to end (Raft, watch, report)", endToEnd},
	} {
		fmt.Printf("%-44s %9s %9s %8.2fx\n", row.name, ms(pct(row.d, 50)), ms(pct(row.d, 90)), float64(pct(row.d, 50))/float64(pp))
	}
	if err := reportMemory(s, drv, daemon.Address); err != nil {
		return err
	}
	return idleNodeAgentRSS(s, control.Addr(), daemon.Address, tmp)
}

func ctrRun(address string, i int) (time.Duration, error) {
	port := 20000 + i
	id := fmt.Sprintf("peer-%d", i)
	script := fmt.Sprintf("exec httpd -f -p %d -h /www", port)
	start := time.Now()
	out, err := exec.Command("ctr", "--address", address, "-n", "agenthost", "run", "-d", "--net-host",
		"--env", "SCRIPT="+script, containerdtest.ImageName, id).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, out)
	}
	if err := pollHealth("127.0.0.1:" + strconv.Itoa(port)); err != nil {
		return 0, err
	}
	d := time.Since(start)
	exec.Command("ctr", "--address", address, "-n", "agenthost", "task", "kill", "-s", "SIGKILL", id).Run()
	time.Sleep(100 * time.Millisecond)
	exec.Command("ctr", "--address", address, "-n", "agenthost", "task", "delete", id).Run()
	exec.Command("ctr", "--address", address, "-n", "agenthost", "container", "delete", id).Run()
	return d, nil
}

func driverCreate(drv *containerd.Driver, i int) (time.Duration, error) {
	ctx := context.Background()
	id := fmt.Sprintf("direct-%d", i)
	start := time.Now()
	c, err := drv.Create(ctx, driver.AgentSpec{AgentID: id, Image: containerdtest.ImageName, HostPort: 30000 + i, RuntimePort: 4096})
	if err != nil {
		return 0, err
	}
	if err := pollHealth(c.Address); err != nil {
		return 0, err
	}
	d := time.Since(start)
	drv.Stop(ctx, id, time.Second)
	return d, drv.Delete(ctx, id)
}

func agentCreate(s *store.Store, drv *containerd.Driver, i int) (time.Duration, error) {
	ctx := context.Background()
	id := fmt.Sprintf("agent-%d", i)
	start := time.Now()
	if _, err := s.Apply(ctx, &store.AgentCreate{Agent: store.Agent{ID: id, OrgID: "bench", Name: id, Runtime: "opencode",
		Desired: store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: time.Now().UTC()}}); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		a, _ := s.State().Agent(id)
		if a != nil && a.Status == store.StatusRunning {
			break
		}
		if a != nil && a.Status == store.StatusError {
			return 0, fmt.Errorf("agent failed: %s", a.ErrorMsg)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("agent %s not RUNNING within 60s", id)
		}
		s.WaitForIndex(ctx, s.AppliedIndex()+1)
	}
	d := time.Since(start)
	if _, err := s.Apply(ctx, &store.AgentDelete{ID: id}); err != nil {
		return 0, err
	}
	for list, _ := drv.List(ctx); len(list) > 0; list, _ = drv.List(ctx) {
		time.Sleep(50 * time.Millisecond)
	}
	return d, nil
}

func pollHealth(addr string) error {
	client := http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := client.Get("http://" + addr + "/global/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(pollInterval)
	}
	return fmt.Errorf("%s never healthy", addr)
}

// reportMemory prints this process's idle footprint as a node agent and the
// memory each running agent adds beyond its shim.
func reportMemory(s *store.Store, drv *containerd.Driver, address string) error {
	runtime.GC()
	debug.FreeOSMemory()
	time.Sleep(500 * time.Millisecond)
	fmt.Println()

	ctx := context.Background()
	const n = 5
	shimsBefore := shimRSS(address)
	before := rss(os.Getpid())
	for i := range n {
		id := fmt.Sprintf("mem-%d", i)
		if _, err := s.Apply(ctx, &store.AgentCreate{Agent: store.Agent{ID: id, OrgID: "bench", Name: id, Runtime: "opencode",
			Desired: store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: time.Now().UTC()}}); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		running := 0
		var statuses []string
		for i := range n {
			a, _ := s.State().Agent(fmt.Sprintf("mem-%d", i))
			if a != nil && a.Status == store.StatusRunning {
				running++
			}
			if a != nil {
				statuses = append(statuses, string(a.Status)+" "+a.ErrorMsg)
			}
		}
		if running == n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("memory agents not RUNNING within 60s: %v", statuses)
		}
		time.Sleep(50 * time.Millisecond)
	}
	runtime.GC()
	debug.FreeOSMemory()
	time.Sleep(500 * time.Millisecond)
	added := float64(rss(os.Getpid())-before) / n / (1 << 20)
	shims := float64(shimRSS(address)-shimsBefore) / n / (1 << 20)
	fmt.Printf("memory added per running agent beyond containerd's shim: %.2f MB in the node agent, no other process (target ≤ 3 MB); the shim itself: %.1f MB\n", added, shims)
	return nil
}

// idleNodeAgentRSS runs a real `agenthost node` process against the control
// plane and reports its resident memory once it has registered and settled.
func idleNodeAgentRSS(s *store.Store, controlAddr, containerdAddr, dir string) error {
	bin := filepath.Join(dir, "agenthost")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/agenthost").CombinedOutput(); err != nil {
		return fmt.Errorf("build agenthost: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "node", "--control", controlAddr, "--advertise", "127.0.0.1", "--name", "idle-node",
		"--containerd-address", containerdAddr, "--data-dir", filepath.Join(dir, "idle-node"), "--subnet", "10.213.251.0/24",
		"--gossip-bind", "127.0.0.1:0", "--runtime-service-bind", "127.0.0.1:0", "--log-level", "warn")
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for n, _ := s.State().Node("idle-node"); n == nil; n, _ = s.State().Node("idle-node") {
		if time.Now().After(deadline) {
			return fmt.Errorf("idle node never registered")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	fmt.Printf("agenthost node process RSS while idle (registered, heartbeating, watching): %.1f MB (target ≤ 30 MB)\n", float64(rss(cmd.Process.Pid))/(1<<20))
	return nil
}

func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// shimRSS sums the RSS of this daemon's shims.
func shimRSS(address string) int64 {
	out, _ := exec.Command("pgrep", "-f", address).Output()
	var total int64
	for _, f := range strings.Fields(string(out)) {
		pid, _ := strconv.Atoi(f)
		if pid != os.Getpid() {
			total += rss(pid)
		}
	}
	return total
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d.Microseconds())/1000) }
