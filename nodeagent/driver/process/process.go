// Package process is the node agent's driver for machines without
// containerd (a developer's laptop): each agent's runtime runs as a plain
// child process of the node agent, in the agent's workspace directory, on the
// agent's host port.
//
// It isolates NOTHING: no container, no resource limits, no network
// namespace, the same user as the node agent. It is chosen only by an
// explicit flag (`agenthost node --driver process`), says so loudly when it
// starts, and is never a fallback for containerd nor what CI tests in its
// place. Processes do not outlive the node agent: it stops them on exit and a
// restarted node agent starts them again.
package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agenthost/agenthost/nodeagent/driver"
)

// Config configures the process driver.
type Config struct {
	// Command runs one agent's runtime; "{port}" in an argument is replaced
	// by the agent's host port, where the runtime must listen (on loopback).
	Command []string
	// DataDir holds each agent's workspace and log.
	DataDir string
	// LogMaxBytes caps an agent's log file (rotated once).
	LogMaxBytes int64
	Logger      *slog.Logger
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	if len(c.Command) == 0 || c.DataDir == "" || c.LogMaxBytes < 4096 || c.Logger == nil {
		return errors.New("process driver: command, data dir, a log cap of at least 4 KiB and a logger are required")
	}
	if !strings.Contains(strings.Join(c.Command, " "), "{port}") {
		return errors.New("process driver: the command must take the agent's port as {port}")
	}
	return nil
}

// Driver runs agents as child processes.
type Driver struct {
	cfg    Config
	logger *slog.Logger

	mu    sync.Mutex
	procs map[string]*proc
}

type proc struct {
	spec     driver.AgentSpec
	cmd      *exec.Cmd
	done     chan struct{}
	exitCode uint32
	exitedAt time.Time
	log      *os.File
}

var _ driver.Driver = (*Driver)(nil)

// New returns the driver, warning that it isolates nothing.
func New(cfg Config) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger.With("component", "process-driver")
	logger.Warn("PROCESS DRIVER: agents run as plain processes on this host with NO isolation " +
		"(no container, no limits, no network separation, same user). Use it only on a developer machine.")
	return &Driver{cfg: cfg, logger: logger, procs: map[string]*proc{}}, nil
}

func (d *Driver) agentDir(id string) string  { return filepath.Join(d.cfg.DataDir, "agents", id) }
func (d *Driver) workspace(id string) string { return filepath.Join(d.agentDir(id), "workspace") }

// Dirs reports the agent's workspace and config directories; the runtime, a
// plain process, reads the config where it is.
func (d *Driver) Dirs(id string) driver.Dirs {
	cfg := filepath.Join(d.agentDir(id), "config")
	return driver.Dirs{Workspace: d.workspace(id), Config: cfg, ConfigSeenAt: cfg}
}

// LogPath is the agent's log file (capped by driver.CapLogFile at each
// start, the previous one being LogPath+".1").
func (d *Driver) LogPath(id string) string { return filepath.Join(d.agentDir(id), driver.AgentLogName) }

// Logs reads the tail of the agent's log files (driver.TailAgentLog).
func (d *Driver) Logs(_ context.Context, id string, lines int) (driver.Log, error) {
	return driver.TailAgentLog(d.agentDir, id, lines)
}

// Create starts the agent's runtime process (or starts it again).
func (d *Driver) Create(ctx context.Context, spec driver.AgentSpec) (driver.Container, error) {
	if spec.AgentID == "" || spec.HostPort <= 0 {
		return driver.Container{}, errors.New("agent spec needs an agent id and a host port")
	}
	d.mu.Lock()
	p, ok := d.procs[spec.AgentID]
	if !ok {
		p = &proc{spec: spec}
		d.procs[spec.AgentID] = p
	}
	d.mu.Unlock()
	if err := os.MkdirAll(d.workspace(spec.AgentID), 0o700); err != nil {
		return driver.Container{}, err
	}
	return d.Start(ctx, spec.AgentID, nil)
}

// Start starts a stopped agent's process again, with env when it is given.
func (d *Driver) Start(_ context.Context, id string, env []string) (driver.Container, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.procs[id]
	if !ok {
		return driver.Container{}, fmt.Errorf("%w: %s", driver.ErrNotFound, id)
	}
	if p.running() {
		return d.describe(id, p), nil
	}
	if env != nil {
		p.spec.Env = env
	}
	args := make([]string, len(d.cfg.Command))
	for i, a := range d.cfg.Command {
		args[i] = strings.ReplaceAll(a, "{port}", strconv.Itoa(p.spec.HostPort))
	}
	log, err := os.OpenFile(d.LogPath(id), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return driver.Container{}, err
	}
	driver.CapLogFile(d.LogPath(id), d.cfg.LogMaxBytes)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = d.workspace(id)
	cmd.Env = append(os.Environ(), p.spec.Env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return driver.Container{}, fmt.Errorf("start %s: %w", args[0], err)
	}
	p.cmd, p.log, p.done = cmd, log, make(chan struct{})
	go func(p *proc, cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		d.mu.Lock()
		p.exitCode = uint32(cmd.ProcessState.ExitCode())
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			p.exitCode = 128 + uint32(ws.Signal())
		}
		p.exitedAt = time.Now()
		p.log.Close()
		d.mu.Unlock()
		close(done)
	}(p, cmd, p.done)
	return d.describe(id, p), nil
}

func (p *proc) running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs.
func (d *Driver) Stop(ctx context.Context, id string, grace time.Duration) error {
	d.mu.Lock()
	p, ok := d.procs[id]
	d.mu.Unlock()
	if !ok || !p.running() {
		return nil
	}
	pgid := -p.cmd.Process.Pid
	syscall.Kill(pgid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	case <-ctx.Done():
		return ctx.Err()
	}
	syscall.Kill(pgid, syscall.SIGKILL)
	<-p.done
	return nil
}

// Delete stops the process and removes its workspace and log.
func (d *Driver) Delete(ctx context.Context, id string) error {
	if err := d.Stop(ctx, id, time.Second); err != nil {
		return err
	}
	d.mu.Lock()
	delete(d.procs, id)
	d.mu.Unlock()
	return os.RemoveAll(d.agentDir(id))
}

// List reports the processes this driver started.
func (d *Driver) List(context.Context) ([]driver.Container, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]driver.Container, 0, len(d.procs))
	for id, p := range d.procs {
		out = append(out, d.describe(id, p))
	}
	return out, nil
}

func (d *Driver) describe(id string, p *proc) driver.Container {
	c := driver.Container{AgentID: id, State: driver.StateCreated, Address: "127.0.0.1:" + strconv.Itoa(p.spec.HostPort), Labels: p.spec.Labels}
	switch {
	case p.running():
		c.State = driver.StateRunning
	case p.done != nil:
		c.State, c.ExitCode, c.ExitedAt = driver.StateStopped, p.exitCode, p.exitedAt
	}
	return c
}

// Stats reports the process's resident memory (no limits apply here).
func (d *Driver) Stats(_ context.Context, id string) (driver.Stats, error) {
	d.mu.Lock()
	p, ok := d.procs[id]
	d.mu.Unlock()
	if !ok || !p.running() {
		return driver.Stats{}, fmt.Errorf("%w: %s is not running", driver.ErrNotFound, id)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return driver.Stats{}, err
	}
	var st driver.Stats
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			st.MemoryBytes = kb << 10
		}
	}
	st.Pids = 1
	return st, nil
}

// Close stops every agent process; they do not outlive the node agent.
func (d *Driver) Close() error {
	d.mu.Lock()
	ids := make([]string, 0, len(d.procs))
	for id := range d.procs {
		ids = append(ids, id)
	}
	d.mu.Unlock()
	for _, id := range ids {
		d.Stop(context.Background(), id, 3*time.Second)
	}
	return nil
}
