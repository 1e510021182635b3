// Command runtime measures how long the default runtime image (Debian +
// OpenCode) takes from container start to a healthy OpenCode server, through
// the node agent's containerd driver (own network namespace, isolation
// rules, limits, generated OpenCode configuration) beside `ctr run -d` of the
// same image with host networking, in the same run.
//
//	go run ./test/bench/runtime [-runs 10]
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/agenthost/agenthost/nodeagent"
	"github.com/agenthost/agenthost/nodeagent/driver"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd/containerdtest"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd/drivertest"
	"github.com/agenthost/agenthost/nodeagent/runtime/opencode"
)

const (
	pollInterval = 20 * time.Millisecond
	password     = "bench-password"
)

func main() {
	runs := flag.Int("runs", 10, "container starts per path")
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
	build := exec.Command("go", "run", "./deploy/runtime/build")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build the runtime image: %w", err)
	}
	archive := filepath.Join("build", "runtime", "opencode-runtime.oci.tar")
	image := nodeagent.DefaultConfig().Runtimes["opencode"].Image

	daemon, err := containerdtest.Start()
	if err != nil {
		return err
	}
	defer daemon.Stop()
	tmp, err := os.MkdirTemp("", "ahbench-rt-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	drv, err := drivertest.New(drivertest.Options{Address: daemon.Address, Subnet: netip.MustParsePrefix("10.213.249.0/24"), Dir: tmp})
	if err != nil {
		return err
	}
	defer drivertest.Close(drv)
	start := time.Now()
	if _, err := drivertest.Import(drv, archive); err != nil {
		return err
	}
	fmt.Printf("runtime image imported in %s\n", time.Since(start).Round(time.Millisecond))

	var peer, ours []time.Duration
	for i := range runs {
		d, err := ctrRun(daemon.Address, image, tmp, i)
		if err != nil {
			return fmt.Errorf("ctr run: %w", err)
		}
		peer = append(peer, d)
		d, err = driverCreate(drv, image, i)
		if err != nil {
			return fmt.Errorf("driver: %w", err)
		}
		ours = append(ours, d)
	}
	fmt.Printf("\ncontainer start → OpenCode healthy, runtime image, %d runs each, health polled every %s\n\n", runs, pollInterval)
	fmt.Printf("%-48s %9s %9s %9s\n", "path", "p50", "p90", "vs ctr")
	pp := pct(peer, 50)
	for _, row := range []struct {
		name string
		d    []time.Duration
	}{
		{"ctr run -d (host network) + health poll", peer},
		{"node agent driver (netns, rules, limits, config)", ours},
	} {
		fmt.Printf("%-48s %9s %9s %8.2fx\n", row.name, ms(pct(row.d, 50)), ms(pct(row.d, 90)), float64(pct(row.d, 50))/float64(pp))
	}
	return nil
}

// config writes an agent's OpenCode configuration into dir, as the node
// agent does.
func config(dir string) error {
	return opencode.WriteConfig(dir, containerd.ConfigPath, opencode.AgentConfig{
		Model: opencode.OfflineModel, OfflineModelURL: "http://127.0.0.1:9/v1",
	})
}

func ctrRun(address, image, tmp string, i int) (time.Duration, error) {
	port := 21000 + i
	id := fmt.Sprintf("peer-%d", i)
	cfgDir, ws := filepath.Join(tmp, id, "config"), filepath.Join(tmp, id, "workspace")
	if err := config(cfgDir); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(ws, 0o755); err != nil {
		return 0, err
	}
	if err := os.Chown(ws, 1000, 1000); err != nil {
		return 0, err
	}
	args := []string{"--address", address, "-n", "agenthost", "run", "-d", "--net-host",
		"--env", "AGENTHOST_RUNTIME_PORT=" + strconv.Itoa(port), "--env", "OPENCODE_SERVER_PASSWORD=" + password,
		"--mount", "type=bind,src=" + ws + ",dst=/workspace,options=rbind:rw",
		"--mount", "type=bind,src=" + cfgDir + ",dst=" + containerd.ConfigPath + ",options=rbind:ro"}
	for _, e := range opencode.RuntimeEnv(containerd.ConfigPath) {
		args = append(args, "--env", e)
	}
	start := time.Now()
	out, err := exec.Command("ctr", append(args, image, id)...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, out)
	}
	if err := pollHealth("127.0.0.1:" + strconv.Itoa(port)); err != nil {
		return 0, err
	}
	d := time.Since(start)
	for _, a := range [][]string{{"task", "kill", "-s", "SIGKILL", id}, {"task", "delete", id}, {"container", "delete", id}} {
		if a[1] == "delete" {
			time.Sleep(200 * time.Millisecond)
		}
		exec.Command("ctr", append([]string{"--address", address, "-n", "agenthost"}, a...)...).Run()
	}
	return d, nil
}

func driverCreate(drv *containerd.Driver, image string, i int) (time.Duration, error) {
	ctx := context.Background()
	id := fmt.Sprintf("agent-%d", i)
	if err := config(drv.Dirs(id).Config); err != nil {
		return 0, err
	}
	env := append(opencode.RuntimeEnv(containerd.ConfigPath), "OPENCODE_SERVER_PASSWORD="+password)
	start := time.Now()
	c, err := drv.Create(ctx, driver.AgentSpec{AgentID: id, Image: image, Env: env, CPUMillis: 2000, MemoryMB: 2048,
		HostPort: 31000 + i, RuntimePort: 4096})
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

func pollHealth(addr string) error {
	client := http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/global/health", nil)
		req.SetBasicAuth(opencode.Username, password)
		resp, err := client.Do(req)
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

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d.Microseconds())/1000) }
