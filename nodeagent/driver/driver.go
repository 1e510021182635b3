// Package driver defines what the node agent asks of a container runtime:
// run one agent's container from an AgentSpec, stop it, delete it, list what
// runs, report its resource use and read its output. Implementations: driver/containerd (the
// real one) and, later, driver/process (a developer's laptop, not isolated).
//
// It is a leaf package: the node agent's reconcile loop depends on the Driver
// interface, cmd/agenthost picks the implementation.
package driver

import (
	"context"
	"errors"
	"time"
)

// AgentSpec is everything needed to run one agent's container.
type AgentSpec struct {
	// AgentID names the container; one container per agent.
	AgentID string
	// Image is an image reference already present (see ImageStore).
	Image string
	// Env is the container's environment, "KEY=value" (secrets included).
	Env []string
	// CPUMillis becomes a CFS quota (1000 = one core); 0 means unlimited.
	CPUMillis int64
	// MemoryMB is a hard memory limit; 0 means unlimited.
	MemoryMB int64
	// PidsLimit bounds the processes in the container; 0 means the driver default.
	PidsLimit int64
	// HostPort is the agent's cluster-wide port on this node, mapped to
	// RuntimePort inside the container.
	HostPort    int
	RuntimePort int
	// Labels are recorded on the container (org, modify index, ...).
	Labels map[string]string
}

// State is a container's observed state.
type State string

const (
	StateCreated State = "created" // exists, never started or task deleted
	StateRunning State = "running"
	StateStopped State = "stopped" // task exited
)

// Container is what a driver reports about one agent's container.
type Container struct {
	AgentID string
	State   State
	// ExitCode and OOMKilled describe the last exit when State is stopped.
	ExitCode  uint32
	OOMKilled bool
	ExitedAt  time.Time
	// Address is where the runtime's port answers from this node
	// (host:port), once the container runs.
	Address string
	Labels  map[string]string
}

// Stats is one container's resource use.
type Stats struct {
	// CPUNanos is the CPU time used since start.
	CPUNanos    uint64
	MemoryBytes uint64
	MemoryLimit uint64
	Pids        uint64
	PidsLimit   uint64
}

// Driver runs agents' containers on this node. Every method is idempotent:
// creating what exists, stopping what is stopped and deleting what is gone
// succeed.
type Driver interface {
	// Create makes the container and its workspace, and starts it.
	Create(ctx context.Context, spec AgentSpec) (Container, error)
	// Start starts a stopped container again, keeping its workspace. env,
	// when not nil, replaces the environment the container was created
	// with: secrets may have changed while it was stopped, and a (re)start
	// is when an agent takes up the current ones.
	Start(ctx context.Context, agentID string, env []string) (Container, error)
	// Stop sends SIGTERM, waits up to grace, then SIGKILLs.
	Stop(ctx context.Context, agentID string, grace time.Duration) error
	// Delete removes the container, its filesystem, network and workspace.
	Delete(ctx context.Context, agentID string) error
	// List reports every agent container this driver manages.
	List(ctx context.Context) ([]Container, error)
	// Stats reports a running container's resource use.
	Stats(ctx context.Context, agentID string) (Stats, error)
	// Dirs says where an agent's directories are; they need not exist yet.
	Dirs(agentID string) Dirs
	// Logs returns the last lines (1 to MaxLogLines) of what the agent's
	// container wrote to stdout and stderr, at most MaxLogBytes, from its
	// log file and the rotated one before it (TailLog), whether the
	// container runs or not. ErrNotFound for an agent with no directory
	// on this node.
	Logs(ctx context.Context, agentID string, lines int) (Log, error)
}

// Dirs are an agent's directories on the node.
type Dirs struct {
	// Workspace is the agent's persistent working directory.
	Workspace string
	// Config holds the runtime's configuration files; the runtime reads
	// them, read-only, at ConfigSeenAt.
	Config       string
	ConfigSeenAt string
}

// ErrNotFound is returned for an agent this driver has no container for.
var ErrNotFound = errors.New("no container for agent")

// ErrImageMissing is returned when the spec's image is not present.
var ErrImageMissing = errors.New("image not present on this node")
