package nodeagent

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agenthost/agenthost/nodeagent/driver"
)

// recordingDriver is a test double of driver.Driver: it records when each
// call began and ended and how many creates ran at once, and creates take
// createTime. Nothing runs.
type recordingDriver struct {
	dir        string
	createTime time.Duration

	mu                  sync.Mutex
	containers          map[string]driver.Container
	inFlight, maxFlight int
	lastRemovalEnd      time.Time
	firstCreateStart    time.Time
}

func (d *recordingDriver) Create(_ context.Context, spec driver.AgentSpec) (driver.Container, error) {
	d.mu.Lock()
	if d.firstCreateStart.IsZero() {
		d.firstCreateStart = time.Now()
	}
	d.inFlight++
	d.maxFlight = max(d.maxFlight, d.inFlight)
	d.mu.Unlock()
	time.Sleep(d.createTime)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inFlight--
	// An address nothing answers on: the health check fails quietly.
	c := driver.Container{AgentID: spec.AgentID, State: driver.StateRunning, Address: "127.0.0.1:1"}
	d.containers[spec.AgentID] = c
	return c, nil
}

func (d *recordingDriver) remove(id string) error {
	time.Sleep(d.createTime / 2)
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.containers, id)
	d.lastRemovalEnd = time.Now()
	return nil
}

func (d *recordingDriver) Start(context.Context, string, []string) (driver.Container, error) {
	return driver.Container{}, fmt.Errorf("recordingDriver: no starts expected")
}
func (d *recordingDriver) Stop(_ context.Context, id string, _ time.Duration) error { return nil }
func (d *recordingDriver) Delete(_ context.Context, id string) error                { return d.remove(id) }
func (d *recordingDriver) List(context.Context) ([]driver.Container, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []driver.Container
	for _, c := range d.containers {
		out = append(out, c)
	}
	return out, nil
}
func (d *recordingDriver) Stats(context.Context, string) (driver.Stats, error) {
	return driver.Stats{}, nil
}
func (d *recordingDriver) Logs(context.Context, string, int) (driver.Log, error) {
	return driver.Log{}, nil
}
func (d *recordingDriver) Dirs(id string) driver.Dirs {
	base := filepath.Join(d.dir, id)
	return driver.Dirs{Workspace: filepath.Join(base, "ws"), Config: filepath.Join(base, "config"), ConfigSeenAt: filepath.Join(base, "seen")}
}

// TestReconcileRemovesFirstThenCreatesInParallel: one reconcile of a node
// given 8 agents while it holds 3 containers of agents no longer its own
// deletes those first — every removal done before the first create, since
// a freed port may be a new agent's — then creates ParallelActions at once.
func TestReconcileRemovesFirstThenCreatesInParallel(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ControlAddrs = []string{"127.0.0.1:1"}
	cfg.Name, cfg.AdvertiseAddr = "node-parallel", "127.0.0.1"
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.HealthTimeout = 100 * time.Millisecond
	drv := &recordingDriver{dir: t.TempDir(), createTime: 100 * time.Millisecond, containers: map[string]driver.Container{}}
	for i := range 3 {
		id := fmt.Sprintf("stale-%d", i)
		drv.containers[id] = driver.Container{AgentID: id, State: driver.StateRunning}
	}
	a, err := New(cfg, drv)
	if err != nil {
		t.Fatal(err)
	}
	var desired []Assignment
	for i := range 8 {
		desired = append(desired, Assignment{AgentID: fmt.Sprintf("new-%d", i), OrgID: "org", Desired: "running",
			Port: 30000 + i, Runtime: "opencode", Status: statusProvisioning, RuntimePassword: "pw"})
	}
	a.desired, a.index = desired, 7

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends the background health checks
	if err := a.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	list, _ := drv.List(ctx)
	if len(list) != 8 {
		t.Fatalf("%d containers after the reconcile, want the 8 new ones: %v", len(list), list)
	}
	for _, c := range list {
		if c.AgentID[:4] != "new-" {
			t.Errorf("container %s left", c.AgentID)
		}
	}
	if drv.firstCreateStart.Before(drv.lastRemovalEnd) {
		t.Errorf("a create began %v before the last removal ended", drv.lastRemovalEnd.Sub(drv.firstCreateStart))
	}
	if drv.maxFlight != cfg.ParallelActions {
		t.Errorf("%d creates at once, want ParallelActions = %d", drv.maxFlight, cfg.ParallelActions)
	}
}
