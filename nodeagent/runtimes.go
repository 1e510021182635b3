package nodeagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/agenthost/agenthost/nodeagent/driver"
	"github.com/agenthost/agenthost/nodeagent/runtime"
	"github.com/agenthost/agenthost/nodeagent/runtime/opencode"
)

// ErrAgentNotRunning is returned for an agent this node does not run now
// (the API's "agent is not running").
var ErrAgentNotRunning = errors.New("agent is not running on this node")

// ErrUnknownAgent is returned for an agent not assigned to this node at all.
var ErrUnknownAgent = errors.New("agent is not assigned to this node")

// runtimes holds an adapter per running agent. An adapter follows its
// runtime's events from the moment the agent is healthy, so that busy state
// is known from memory.
type runtimes struct {
	logger *slog.Logger
	mu     sync.Mutex
	byID   map[string]*liveRuntime
}

type liveRuntime struct {
	rt       runtime.Runtime
	addr     string
	password string
}

func newRuntimes(logger *slog.Logger) *runtimes {
	return &runtimes{logger: logger, byID: map[string]*liveRuntime{}}
}

// set makes (or keeps) the adapter for an agent whose runtime answers at addr.
func (r *runtimes) set(agentID, adapter, addr, password string) (runtime.Runtime, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l := r.byID[agentID]; l != nil {
		if l.addr == addr && l.password == password {
			return l.rt, nil
		}
		l.rt.Close()
		delete(r.byID, agentID)
	}
	var rt runtime.Runtime
	switch adapter {
	case AdapterOpenCode:
		c, err := opencode.New(opencode.Config{BaseURL: "http://" + addr, Password: password, Logger: r.logger.With("agent", agentID)})
		if err != nil {
			return nil, err
		}
		rt = c
	default:
		return nil, fmt.Errorf("runtime has no adapter")
	}
	r.byID[agentID] = &liveRuntime{rt: rt, addr: addr, password: password}
	return rt, nil
}

// busy counts the agents whose runtime is working on a reply.
func (r *runtimes) busy() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.byID {
		if l.rt.Busy() {
			n++
		}
	}
	return n
}

func (r *runtimes) drop(agentID string) {
	r.mu.Lock()
	l := r.byID[agentID]
	delete(r.byID, agentID)
	r.mu.Unlock()
	if l != nil {
		l.rt.Close()
	}
}

func (r *runtimes) closeAll() {
	r.mu.Lock()
	all := r.byID
	r.byID = map[string]*liveRuntime{}
	r.mu.Unlock()
	for _, l := range all {
		l.rt.Close()
	}
}

// Runtime returns the adapter of an agent running on this node, making it
// when needed (after a node agent restart, running agents are adopted
// without a health check). It fails with ErrAgentNotRunning for an agent
// that is not assigned here as running, or whose container does not run.
func (a *Agent) Runtime(ctx context.Context, agentID string) (runtime.Runtime, error) {
	as, ok := a.assignment(agentID)
	if !ok || as.Desired != "running" {
		return nil, fmt.Errorf("%w: %s", ErrAgentNotRunning, agentID)
	}
	rt, ok := a.cfg.Runtimes[as.Runtime]
	if !ok || rt.Adapter == "" {
		return nil, fmt.Errorf("agent %s: runtime %q has no adapter on this node", agentID, as.Runtime)
	}
	a.runtimes.mu.Lock()
	l := a.runtimes.byID[agentID]
	a.runtimes.mu.Unlock()
	if l != nil && l.password == as.RuntimePassword {
		return l.rt, nil
	}
	containers, err := a.driver.List(ctx)
	if err != nil {
		return nil, err
	}
	for _, c := range containers {
		if c.AgentID == agentID && c.State == driver.StateRunning && c.Address != "" {
			return a.runtimes.set(agentID, rt.Adapter, c.Address, as.RuntimePassword)
		}
	}
	return nil, fmt.Errorf("%w: %s has no running container", ErrAgentNotRunning, agentID)
}

// pruneRuntimes closes the adapters of agents that are no longer desired
// running here, or whose container does not run at the adapter's address
// (stopped, crashed, or given a new address): an adapter must never outlive
// its container, or it would present the agent's password to whatever gets
// the address next.
func (a *Agent) pruneRuntimes(desired map[string]Assignment, containers map[string]driver.Container) {
	a.runtimes.mu.Lock()
	var stale []string
	for id, l := range a.runtimes.byID {
		as, ok := desired[id]
		if !ok || as.Desired != "running" || as.RuntimePassword != l.password {
			stale = append(stale, id)
			continue
		}
		// A container missing from the listing may have been created after
		// it was taken; only one seen stopped or moved is stale.
		if c, listed := containers[id]; listed && (c.State != driver.StateRunning || c.Address != l.addr) {
			stale = append(stale, id)
		}
	}
	a.runtimes.mu.Unlock()
	for _, id := range stale {
		a.runtimes.drop(id)
	}
}

// Workspace returns the host directory of an agent's workspace, for uploads.
func (a *Agent) Workspace(agentID string) (string, error) {
	if _, ok := a.assignment(agentID); !ok {
		return "", fmt.Errorf("%w: %s", ErrAgentNotRunning, agentID)
	}
	return a.driver.Dirs(agentID).Workspace, nil
}

// Logs returns the tail of an agent's container output (driver.Logs). Any
// agent assigned here may be asked, running or not: a container's last
// words matter most once it stopped.
func (a *Agent) Logs(ctx context.Context, agentID string, lines int) (driver.Log, error) {
	if _, ok := a.assignment(agentID); !ok {
		return driver.Log{}, fmt.Errorf("%w: %s", ErrUnknownAgent, agentID)
	}
	return a.driver.Logs(ctx, agentID, lines)
}

func (a *Agent) assignment(agentID string) (Assignment, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, as := range a.desired {
		if as.AgentID == agentID {
			return as, true
		}
	}
	return Assignment{}, false
}

// configure writes the runtime's configuration files for an agent and
// returns the environment its container needs.
func (a *Agent) configure(as Assignment, rt Runtime) ([]string, error) {
	if rt.Adapter != AdapterOpenCode {
		return nil, nil
	}
	if as.RuntimePassword == "" {
		return nil, errors.New("the agent has no runtime password; it cannot be run safely")
	}
	model := as.Model
	if model == "" {
		model = a.cfg.DefaultModel
	}
	if model == opencode.OfflineModel && a.cfg.OfflineModelURL == "" {
		return nil, fmt.Errorf("model %s: node %s serves no offline model", model, a.cfg.Name)
	}
	dirs := a.driver.Dirs(as.AgentID)
	err := opencode.WriteConfig(dirs.Config, dirs.ConfigSeenAt, opencode.AgentConfig{
		Model: model, Provider: as.ModelProvider, OfflineModelURL: a.cfg.OfflineModelURL, HiddenPrompt: as.HiddenPrompt, Permission: a.cfg.PermissionPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("write the agent's runtime configuration: %w", err)
	}
	env := append(opencode.RuntimeEnv(dirs.ConfigSeenAt), "OPENCODE_SERVER_PASSWORD="+as.RuntimePassword)
	secrets, err := secretEnv(as.Env)
	if err != nil {
		return nil, err
	}
	return append(secrets, env...), nil
}

// secretEnv turns secrets into environment entries, in a stable order. A
// secret may not replace what the platform sets for the runtime: its
// configuration, its password, its home.
func secretEnv(secrets map[string]string) ([]string, error) {
	keys := slices.Sorted(maps.Keys(secrets))
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if !validEnvKey(k) {
			return nil, fmt.Errorf("secret %q is not a valid environment variable name", k)
		}
		if strings.HasPrefix(k, "OPENCODE_") || strings.HasPrefix(k, "AGENTHOST_") || strings.HasPrefix(k, "XDG_") ||
			k == "HOME" || k == "PATH" || k == "USER" {
			return nil, fmt.Errorf("secret %s would override the runtime's own environment; rename it", k)
		}
		out = append(out, k+"="+secrets[k])
	}
	return out, nil
}

func validEnvKey(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
