package containerd

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/errdefs"

	"github.com/agenthost/agenthost/nodeagent/driver"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd/containerdtest"
)

var daemon *containerdtest.Daemon

func TestMain(m *testing.M) {
	code := m.Run()
	if daemon != nil {
		daemon.Stop()
	}
	os.Exit(code)
}

// newDriver returns a driver on the package's private containerd, with the
// test image imported, and deletes the test's containers when it ends.
func newDriver(t *testing.T) *Driver {
	t.Helper()
	containerdtest.Require(t)
	if daemon == nil {
		d, err := containerdtest.Start()
		if err != nil {
			t.Fatalf("start containerd: %v", err)
		}
		daemon = d
	}
	cfg := DefaultConfig()
	cfg.Address = daemon.Address
	cfg.DataDir = t.TempDir()
	cfg.LogMaxBytes = 64 << 10
	cfg.LogCheckInterval = 100 * time.Millisecond
	cfg.Logger = slog.New(slog.DiscardHandler)
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "image.tar")
	if err := containerdtest.BuildImage(context.Background(), archive); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names, err := d.ImportImage(context.Background(), f)
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if !slices.Contains(names, containerdtest.ImageName) {
		t.Fatalf("imported %v, want %s", names, containerdtest.ImageName)
	}
	t.Cleanup(func() {
		list, _ := d.List(context.Background())
		for _, c := range list {
			d.Delete(context.Background(), c.AgentID)
		}
		d.Close()
	})
	return d
}

func spec(id, script string) driver.AgentSpec {
	return driver.AgentSpec{AgentID: id, Image: containerdtest.ImageName, Env: []string{"SCRIPT=" + script}}
}

func waitState(t *testing.T, d *Driver, id string, want driver.State) driver.Container {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		list, err := d.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			if c.AgentID == id && c.State == want {
				return c
			}
		}
		if time.Now().After(deadline) {
			logs, _ := os.ReadFile(d.LogPath(id))
			t.Fatalf("agent %s never reached %s; containers %+v\nlog:\n%s", id, want, list, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitFile(t *testing.T, path, want string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never contained %q; has %q", path, want, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A start with a new environment replaces the agent's variables — changed,
// added and removed — and keeps the image's own (PATH).
func TestStartReplacesEnvironment(t *testing.T) {
	d := newDriver(t)
	ctx := context.Background()
	script := `echo "a=${A:-none} b=${B:-none} c=${C:-none} path=${PATH:+set}" >> /workspace/env; exec sleep 1000`
	s := spec("agent-env", script)
	s.Env = append(s.Env, "A=1", "B=2")
	if _, err := d.Create(ctx, s); err != nil {
		t.Fatalf("create: %v", err)
	}
	envFile := filepath.Join(d.WorkspaceDir(s.AgentID), "env")
	waitFile(t, envFile, "a=1 b=2 c=none path=set")
	if err := d.Stop(ctx, s.AgentID, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, s.AgentID, driver.StateStopped)
	if _, err := d.Start(ctx, s.AgentID, []string{"SCRIPT=" + script, "A=3", "C=4"}); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitFile(t, envFile, "a=3 b=none c=4 path=set")
	// A start without an environment keeps the last one.
	if err := d.Stop(ctx, s.AgentID, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, s.AgentID, driver.StateStopped)
	if _, err := d.Start(ctx, s.AgentID, nil); err != nil {
		t.Fatalf("start: %v", err)
	}
	if got := waitFile(t, envFile, "\n"); strings.Count(waitFile(t, envFile, "a=3 b=none c=4 path=set\na=3 b=none c=4 path=set"), "\n") != 3 {
		t.Fatalf("env file after three boots: %q", got)
	}
}

func TestAgentLifecycleKeepsWorkspaceUntilDelete(t *testing.T) {
	d := newDriver(t)
	ctx := context.Background()
	s := spec("agent-life", `echo started >> /workspace/boots; echo to-stdout; echo to-stderr >&2; exec sleep 1000`)
	if _, err := d.Create(ctx, s); err != nil {
		t.Fatalf("create: %v", err)
	}
	waitState(t, d, s.AgentID, driver.StateRunning)
	waitFile(t, filepath.Join(d.WorkspaceDir(s.AgentID), "boots"), "started")
	logs := waitFile(t, d.LogPath(s.AgentID), "to-stderr")
	if !strings.Contains(logs, "to-stdout") {
		t.Fatalf("log lacks stdout: %q", logs)
	}

	// Creating again adopts the existing container: never a second copy.
	if _, err := d.Create(ctx, s); err != nil {
		t.Fatalf("create again: %v", err)
	}
	list, _ := d.List(ctx)
	if len(list) != 1 {
		t.Fatalf("%d containers after a repeated create, want 1", len(list))
	}

	// PID 1 ignores SIGTERM here, so Stop must escalate to SIGKILL.
	start := time.Now()
	if err := d.Stop(ctx, s.AgentID, 300*time.Millisecond); err != nil {
		t.Fatalf("stop: %v", err)
	}
	c := waitState(t, d, s.AgentID, driver.StateStopped)
	if c.ExitCode != 137 || c.OOMKilled {
		t.Fatalf("stopped agent: exit %d, oom %v; want 137 (SIGKILL) and no OOM", c.ExitCode, c.OOMKilled)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Fatalf("stop returned before the grace period")
	}
	if err := d.Stop(ctx, s.AgentID, time.Second); err != nil {
		t.Fatalf("stopping a stopped agent: %v", err)
	}

	if _, err := d.Start(ctx, s.AgentID, nil); err != nil {
		t.Fatalf("start: %v", err)
	}
	waitState(t, d, s.AgentID, driver.StateRunning)
	boots := waitFile(t, filepath.Join(d.WorkspaceDir(s.AgentID), "boots"), "started\nstarted\n")
	if strings.Count(boots, "started") != 2 {
		t.Fatalf("workspace after restart: %q", boots)
	}

	if err := d.Delete(ctx, s.AgentID); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if list, _ := d.List(ctx); len(list) != 0 {
		t.Fatalf("containers after delete: %+v", list)
	}
	if _, err := os.Stat(d.AgentDir(s.AgentID)); !os.IsNotExist(err) {
		t.Fatalf("agent directory survived delete: %v", err)
	}
	snaps := d.client.SnapshotService(d.cfg.Snapshotter)
	if _, err := snaps.Stat(d.ctx(ctx), s.AgentID); !errdefs.IsNotFound(err) {
		t.Fatalf("snapshot survived delete: %v", err)
	}
	if err := d.Delete(ctx, s.AgentID); err != nil {
		t.Fatalf("deleting a deleted agent: %v", err)
	}
}

func TestMemoryLimitKillsHogAndIsReportedAsOOM(t *testing.T) {
	d := newDriver(t)
	s := spec("agent-hog", `x=$(head -c 100000000 /dev/zero | tr '\000' a); echo survived`)
	s.MemoryMB = 32
	if _, err := d.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	c := waitState(t, d, s.AgentID, driver.StateStopped)
	if !c.OOMKilled {
		logs, _ := os.ReadFile(d.LogPath(s.AgentID))
		t.Fatalf("hog exited %d without an OOM kill; log %q", c.ExitCode, logs)
	}
	if logs, _ := os.ReadFile(d.LogPath(s.AgentID)); strings.Contains(string(logs), "survived") {
		t.Fatalf("the hog survived its memory limit")
	}
}

func TestPidsLimitCapsProcesses(t *testing.T) {
	d := newDriver(t)
	// The loop runs in a subshell: busybox sh abandons a script whose fork fails.
	s := spec("agent-forks", `(for i in $(seq 60); do sleep 1000 & done); echo spawned; exec sleep 1000`)
	s.PidsLimit = 16
	if _, err := d.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, s.AgentID, driver.StateRunning)
	waitFile(t, d.LogPath(s.AgentID), "spawned")
	st, err := d.Stats(context.Background(), s.AgentID)
	if err != nil {
		t.Fatal(err)
	}
	if st.PidsLimit != 16 || st.Pids > 16 || st.Pids < 10 {
		t.Fatalf("pids %d of limit %d; want the limit 16 reached, not passed", st.Pids, st.PidsLimit)
	}
	if !strings.Contains(waitFile(t, d.LogPath(s.AgentID), "spawned"), "fork") {
		t.Fatalf("no fork failure was reported in the log")
	}
}

func TestStatsAndLimits(t *testing.T) {
	d := newDriver(t)
	s := spec("agent-stats", `exec sleep 1000`)
	s.MemoryMB, s.CPUMillis = 64, 500
	if _, err := d.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, s.AgentID, driver.StateRunning)
	st, err := d.Stats(context.Background(), s.AgentID)
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryLimit != 64<<20 || st.MemoryBytes == 0 || st.Pids != 1 {
		t.Fatalf("stats %+v: want a 64 MiB limit, some memory in use, one process", st)
	}
	if _, err := d.Stats(context.Background(), "nobody"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("stats of an unknown agent: %v", err)
	}
	s2 := spec("agent-stats-2", `exec sleep 1000`)
	s2.MemoryMB = 32
	if _, err := d.Create(context.Background(), s2); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, s2.AgentID, driver.StateRunning)
	total, err := d.NodeTotals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if total.MemoryLimit != 96<<20 || total.Pids != 2 || total.MemoryBytes < st.MemoryBytes {
		t.Fatalf("node totals %+v: want the two agents' limits (96 MiB) and processes (2)", total)
	}
}

func TestMissingImageIsAClearError(t *testing.T) {
	d := newDriver(t)
	s := spec("agent-noimage", "true")
	s.Image = "agenthost.local/absent:1"
	_, err := d.Create(context.Background(), s)
	if !errors.Is(err, driver.ErrImageMissing) {
		t.Fatalf("got %v, want ErrImageMissing", err)
	}
	if list, _ := d.List(context.Background()); len(list) != 0 {
		t.Fatalf("a failed create left %d containers", len(list))
	}
	if _, err := os.Stat(d.AgentDir(s.AgentID)); !os.IsNotExist(err) {
		t.Fatalf("a failed create left the agent directory")
	}
}

func TestLogFileIsCapped(t *testing.T) {
	d := newDriver(t)
	// 64 KiB cap (newDriver): write ~1 MiB.
	s := spec("agent-chatty", `i=0; while [ $i -lt 20000 ]; do echo "line $i of a chatty agent"; i=$((i+1)); done; echo done-writing; exec sleep 1000`)
	if _, err := d.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	waitFile(t, d.LogPath(s.AgentID)+".1", "line")
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, _ := os.Stat(d.LogPath(s.AgentID))
		prev, _ := os.Stat(d.LogPath(s.AgentID) + ".1")
		if cur != nil && prev != nil && cur.Size() <= 64<<10 && prev.Size() <= 64<<10 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("logs not capped at 64 KiB: %v, %v", cur, prev)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
