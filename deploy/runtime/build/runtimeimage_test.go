package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agenthost/agenthost/nodeagent"
	"github.com/agenthost/agenthost/nodeagent/driver"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd/containerdtest"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd/drivertest"
)

// agentSubnet is this test's agent network; other packages' tests use
// other /24s of 10.213.0.0/16.
var agentSubnet = netip.MustParsePrefix("10.213.30.0/24")

// TestImageRunsOpenCodeOnContainerd builds the archive as `make
// runtime-image` does (the same program, the same cache in build/runtime,
// so that only the first run on a machine pays for the build), imports it
// into a private containerd and runs it through the node agent's driver
// with agent networking, as a node would.
func TestImageRunsOpenCodeOnContainerd(t *testing.T) {
	containerdtest.Require(t)
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := findRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig(root)
	if current, err := cfg.UpToDate(); err != nil {
		t.Fatal(err)
	} else if !current {
		requireBuildTools(t)
	}
	buildArchive(t, root)
	resolved, err := cfg.resolve()
	if err != nil {
		t.Fatal(err)
	}
	version := resolved.OpenCodeVersion

	if want := nodeagent.DefaultConfig().Runtimes["opencode"].Image; want != ImageName {
		t.Fatalf("the archive is named %s, the node agent's default runtime image is %s", ImageName, want)
	}

	daemon, err := containerdtest.Start()
	if err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	t.Cleanup(daemon.Stop)
	d, err := drivertest.New(drivertest.Options{Address: daemon.Address, Subnet: agentSubnet, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Cleanup(func() { drivertest.Close(d) })

	start := time.Now()
	names, err := drivertest.Import(d, cfg.ArchivePath())
	if err != nil {
		t.Fatalf("import %s: %v", cfg.ArchivePath(), err)
	}
	if !slices.Contains(names, ImageName) {
		t.Fatalf("the archive imported as %v, want %s", names, ImageName)
	}
	t.Logf("imported and unpacked %v in %s", names, since(start))

	spec := driver.AgentSpec{AgentID: "runtime-image", Image: ImageName, HostPort: freePort(t), RuntimePort: RuntimePort}
	t.Cleanup(func() { d.Delete(ctx, spec.AgentID) })
	writeAgentConfig(t, d, spec.AgentID)
	start = time.Now()
	c, err := d.Create(ctx, spec)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	var health struct {
		Healthy bool   `json:"healthy"`
		Version string `json:"version"`
	}
	body := waitHealthy(t, d, spec.AgentID, "http://"+c.Address+"/global/health")
	if err := json.Unmarshal([]byte(body), &health); err != nil || !health.Healthy || health.Version != version {
		t.Fatalf("GET /global/health = %s, want healthy and version %s", body, version)
	}
	t.Logf("create to healthy in %s: %s", since(start), body)

	t.Run("opencode version", func(t *testing.T) {
		if got := strings.TrimSpace(execIn(t, daemon, spec.AgentID, "opencode --version")); got != version {
			t.Fatalf("opencode --version = %q, want %s", got, version)
		}
	})
	t.Run("config from /etc/agenthost", func(t *testing.T) {
		got, err := httpGet("http://" + c.Address + "/config")
		if err != nil || !strings.Contains(got, `"username":"agenthost-check"`) {
			t.Fatalf("GET /config = %s (%v); OpenCode did not read /etc/agenthost/opencode.json", got, err)
		}
	})
	t.Run("tools", func(t *testing.T) {
		out := execIn(t, daemon, spec.AgentID, `for tool in bash git curl rg jq make ssh tar gzip xz unzip file patch diff awk less ps; do command -v "$tool" >/dev/null || echo "missing $tool"; done
git --version && rg --version && curl --version && bash --version`)
		if strings.Contains(out, "missing") || !strings.Contains(out, "git version") || !strings.Contains(out, "ripgrep") {
			t.Fatalf("tools:\n%s", out)
		}
	})
	t.Run("names resolve without DNS", func(t *testing.T) {
		// Without /etc/hosts each lookup waits for DNS timeouts; curl
		// resolves the hostname at start.
		start := time.Now()
		out := execIn(t, daemon, spec.AgentID, `getent ahosts localhost && getent ahosts "$(hostname)" && curl --version >/dev/null`)
		if took := time.Since(start); took > 3*time.Second || !strings.Contains(out, "localhost") {
			t.Fatalf("resolving localhost and the hostname took %s:\n%s", took.Round(time.Millisecond), out)
		}
	})
	t.Run("user", func(t *testing.T) {
		// Every process, the entrypoint's included, runs as agent.
		out := execIn(t, daemon, spec.AgentID, `id -un; id -u; id -g; echo "$HOME"; pwd; ps -eo uid=,args=`)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) < 6 || lines[0] != "agent" || lines[1] != "1000" || lines[2] != "1000" || lines[3] != "/home/agent" || lines[4] != "/workspace" {
			t.Fatalf("user, home and working directory:\n%s", out)
		}
		serving := false
		for _, p := range lines[5:] {
			uid, args, _ := strings.Cut(strings.TrimSpace(p), " ")
			if uid != "1000" {
				t.Errorf("process %q runs as uid %s, want 1000", args, uid)
			}
			serving = serving || strings.HasPrefix(args, "opencode serve --hostname 0.0.0.0 --port 4096")
		}
		if !serving {
			t.Errorf("no `opencode serve` among the processes:\n%s", out)
		}
	})
	t.Run("workspace", func(t *testing.T) {
		// Uploads and the session database live in the persistent workspace.
		for _, p := range []string{"uploads", ".agenthost/opencode.db"} {
			if _, err := os.Stat(filepath.Join(d.WorkspaceDir(spec.AgentID), p)); err != nil {
				t.Errorf("workspace lacks %s: %v", p, err)
			}
		}
	})
	t.Run("orphans are reaped", func(t *testing.T) {
		// A background job outliving its shell is reparented to PID 1.
		execIn(t, daemon, spec.AgentID, `sleep 0.2 & exit 0`)
		deadline := time.Now().Add(10 * time.Second)
		for {
			out := execIn(t, daemon, spec.AgentID, `ps -eo stat=,args= | awk '$1 ~ /^Z/'`)
			if strings.TrimSpace(out) == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("zombies left in the container:\n%s", out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	t.Run("stops on SIGTERM", func(t *testing.T) {
		const grace = 20 * time.Second
		start := time.Now()
		if err := d.Stop(ctx, spec.AgentID, grace); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		list, err := d.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			if c.AgentID == spec.AgentID && (c.State != driver.StateStopped || c.ExitCode == 137) {
				t.Fatalf("after Stop: %+v; want stopped by SIGTERM, not SIGKILL", c)
			}
		}
		if took >= grace {
			t.Fatalf("stop took %s, the whole grace period", took)
		}
		t.Logf("stopped in %s", took.Round(time.Millisecond))
	})
}

// writeAgentConfig writes the agent's opencode.json as the node agent does
// before Create; the image's OPENCODE_CONFIG must point at it. The driver
// gives the workspace to the image's user (uid 1000) and leaves the config
// directory readable to it.
func writeAgentConfig(t *testing.T, d *containerd.Driver, agentID string) {
	t.Helper()
	if err := os.MkdirAll(d.AgentDir(agentID), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(d.ConfigDir(agentID), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.ConfigDir(agentID), "opencode.json"), []byte(`{"username":"agenthost-check"}`), 0o644); err != nil {
		t.Fatal(err)
	}
}

// requireBuildTools skips (locally) or fails (in CI) when the archive must
// be built and the tools for it are missing.
func requireBuildTools(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"mmdebstrap", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("building the runtime image needs %s; run `make setup` as root", strings.Join(missing, ", "))
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI must run this test, not skip it)")
	}
	t.Skip(msg)
}

// buildArchive runs the build program as `make runtime-image` does, as its
// own process: compressing 300 MB under the race detector would take minutes.
// With the archive up to date it returns at once.
func buildArchive(t *testing.T, root string) {
	t.Helper()
	cmd := exec.Command("go", "run", "./deploy/runtime/build")
	cmd.Dir = root
	w := &logWriter{t: t}
	cmd.Stdout, cmd.Stderr = w, w
	start := time.Now()
	err := cmd.Run()
	w.flush()
	if err != nil {
		t.Fatalf("go run ./deploy/runtime/build: %v", err)
	}
	t.Logf("build step took %s", since(start))
}

// logWriter passes a command's output to t.Log line by line, as it comes.
type logWriter struct {
	t   *testing.T
	buf []byte
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.t.Log(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

func (w *logWriter) flush() {
	if len(w.buf) > 0 {
		w.t.Log(string(w.buf))
		w.buf = nil
	}
}

// execIn runs a shell script in the agent's running container, as the
// image's user, and returns its combined output.
func execIn(t *testing.T, daemon *containerdtest.Daemon, agentID, script string) string {
	t.Helper()
	id := fmt.Sprintf("check-%d", time.Now().UnixNano())
	out, err := exec.Command("ctr", "--address", daemon.Address, "-n", containerd.DefaultConfig().Namespace,
		"task", "exec", "--exec-id", id, agentID, "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("exec %q: %v\n%s", script, err, out)
	}
	return string(out)
}

// waitHealthy polls url until it answers 200 and returns the body, failing
// with the container's log after a minute.
func waitHealthy(t *testing.T, d *containerd.Driver, agentID, url string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		body, err := httpGet(url)
		if err == nil {
			return body
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(d.LogPath(agentID))
			list, _ := d.List(context.Background())
			t.Fatalf("%s never answered: %v\ncontainers: %+v\nlog:\n%s", url, err, list, logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func httpGet(url string) (string, error) {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), err
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
