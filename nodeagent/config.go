package nodeagent

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// AdapterOpenCode is the adapter for OpenCode's server (runtime/opencode).
const AdapterOpenCode = "opencode"

// Runtime says how to run one agent runtime on this node.
type Runtime struct {
	// Image is the image reference containers start from.
	Image string
	// Port is where the runtime listens inside the container.
	Port int
	// HealthPath answers 200 once the runtime is ready.
	HealthPath string
	// Adapter names the runtime adapter that configures the runtime and
	// speaks its API: "opencode", or "" for an image that only has to
	// answer its health path (tests' stand-ins).
	Adapter string
}

// Config configures a node agent.
type Config struct {
	// ControlAddrs are control nodes' cluster addresses; any one will do.
	ControlAddrs []string
	// Name identifies the node; it is also its id.
	Name string
	// AdvertiseAddr is the address proxies reach this node's agent ports at.
	AdvertiseAddr string
	// CPUMillis, MemoryMB and MaxAgents are what the node offers agents.
	// They default to the host's cores and memory (less a reserve).
	CPUMillis int64
	MemoryMB  int64
	MaxAgents int
	// Labels are matched against agents' constraints.
	Labels map[string]string
	// GossipBind is host:port of this node's memberlist member (port 0
	// picks one); it is advertised at AdvertiseAddr's host.
	GossipBind string
	// Runtimes maps runtime names to how they run here.
	Runtimes map[string]Runtime
	// RuntimeServiceBind is host:port of AgentRuntimeService, through which
	// control nodes reach the agents' runtimes (port 0 picks one); it is
	// advertised at AdvertiseAddr's host.
	RuntimeServiceBind string

	// HeartbeatInterval is how often the leader hears from this node.
	HeartbeatInterval time.Duration
	// WatchLagBound is how long the assignment watch may trail the leader's
	// applied index (named in heartbeat answers) before the node agent drops
	// it and watches through another control node: a server that stopped
	// applying the log would otherwise keep this node from ever hearing of
	// new placements.
	WatchLagBound time.Duration
	// ReconcileInterval bounds the time between full reconciles, even
	// without news from the control plane.
	ReconcileInterval time.Duration
	// ParallelActions is how many containers a reconcile creates, starts,
	// stops or deletes at once: a node that receives many agents at a time
	// (a crashed node's, re-placed here) starts them in a fraction of the
	// time one by one would take. Networking steps stay serial (the CNI
	// plugins and iptables), containerd's and the runtimes' start-up do
	// not.
	ParallelActions int
	// StopGrace is how long an agent has to exit after SIGTERM.
	StopGrace time.Duration
	// HealthTimeout bounds how long a starting agent may take to answer on
	// its health endpoint before it is reported ERROR.
	HealthTimeout time.Duration
	// HealthInterval is how often a starting agent's health endpoint is tried.
	HealthInterval time.Duration

	// DefaultModel is the model of an agent created without one
	// ("provider/model"); the org's default, when it has one, comes with the
	// assignment instead.
	DefaultModel string
	// OfflineModelURL is agenthost's offline model (an OpenAI-compatible
	// …/v1 endpoint) as the runtimes reach it; empty when this node serves
	// none. Agents whose model is agenthost/offline use it.
	OfflineModelURL string
	// PermissionPolicy is the runtime's policy for tools that change things
	// or reach out: "ask" (requests reach the API), "allow" or "deny".
	PermissionPolicy string

	Logger *slog.Logger
	// Registerer receives the node agent's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// DefaultConfig returns settings derived from this host.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	memMB := hostMemoryMB()
	return Config{
		Name:      host,
		CPUMillis: int64(runtime.NumCPU()) * 1000,
		// Keep a quarter (at most 2 GiB) for the system, containerd and us.
		MemoryMB:   max(memMB-min(memMB/4, 2048), 0),
		MaxAgents:  100,
		GossipBind: "0.0.0.0:7403",
		// Like the cluster port, bind it to a private interface until
		// internal traffic is mutual TLS.
		RuntimeServiceBind: "0.0.0.0:7404",
		Runtimes: map[string]Runtime{
			"opencode": {Image: "agenthost.local/opencode:latest", Port: 4096, HealthPath: "/global/health", Adapter: AdapterOpenCode},
		},
		HeartbeatInterval: 500 * time.Millisecond,
		WatchLagBound:     5 * time.Second,
		ReconcileInterval: 10 * time.Second,
		StopGrace:         3 * time.Second,
		HealthTimeout:     60 * time.Second,
		HealthInterval:    50 * time.Millisecond,
		ParallelActions:   4,
		DefaultModel:      "anthropic/claude-sonnet-4-6",
		PermissionPolicy:  "ask",
		Logger:            slog.Default(),
	}
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	var errs []error
	if len(c.ControlAddrs) == 0 {
		errs = append(errs, errors.New("at least one control address is required"))
	}
	if c.Name == "" || c.AdvertiseAddr == "" || c.GossipBind == "" || c.RuntimeServiceBind == "" {
		errs = append(errs, errors.New("node name, advertise address, gossip and runtime service bind addresses are required"))
	}
	if c.CPUMillis < 0 || c.MemoryMB < 0 || c.MaxAgents < 0 {
		errs = append(errs, errors.New("capacity must not be negative"))
	}
	if len(c.Runtimes) == 0 {
		errs = append(errs, errors.New("at least one runtime is required"))
	}
	for name, r := range c.Runtimes {
		if r.Image == "" || r.Port <= 0 || !strings.HasPrefix(r.HealthPath, "/") {
			errs = append(errs, fmt.Errorf("runtime %s needs an image, a port and a health path", name))
		}
		if r.Adapter != "" && r.Adapter != AdapterOpenCode {
			errs = append(errs, fmt.Errorf("runtime %s: unknown adapter %q", name, r.Adapter))
		}
	}
	if c.ParallelActions < 1 {
		errs = append(errs, errors.New("parallel actions must be at least 1"))
	}
	if c.HeartbeatInterval <= 0 || c.WatchLagBound <= 0 || c.ReconcileInterval <= 0 || c.StopGrace <= 0 || c.HealthTimeout <= 0 || c.HealthInterval <= 0 {
		errs = append(errs, errors.New("intervals, grace and timeouts must be positive"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("logger is required"))
	}
	return errors.Join(errs...)
}

// hostMemoryMB reads MemTotal from /proc/meminfo (0 when unreadable).
func hostMemoryMB() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			return kb / 1024
		}
	}
	return 0
}
