package nodeagent

import (
	"fmt"
	"slices"

	"github.com/agenthost/agenthost/nodeagent/driver"
	"github.com/agenthost/agenthost/nodeagent/runtime/opencode"
)

// Assignment is one agent this node should host, as the control plane wants it.
type Assignment struct {
	AgentID   string
	OrgID     string
	Desired   string // "running" or "stopped"
	Port      int
	Runtime   string
	CPUMillis int64
	MemoryMB  int64
	// Model is "provider/model", empty for the node's default.
	Model string
	// ModelProvider says how to reach Model when OpenCode does not know
	// its provider; the zero value for built-in providers.
	ModelProvider   opencode.Provider
	HiddenPrompt    string
	RuntimePassword string
	// Env is the runtime's environment from secrets (provider keys).
	Env map[string]string
	// Status and ErrorMsg are what the control plane has on record.
	Status   string
	ErrorMsg string
}

// ActionKind is one step towards the desired state.
type ActionKind string

const (
	ActCreate ActionKind = "create" // no container yet: make and start it
	ActStart  ActionKind = "start"  // container exists but does not run
	ActStop   ActionKind = "stop"   // runs but should not
	ActDelete ActionKind = "delete" // not assigned here (any more): remove
	ActCheck  ActionKind = "check"  // runs: wait for health, then report RUNNING
	ActReport ActionKind = "report" // record a status without touching the container
)

// Action is one reconcile step.
type Action struct {
	Kind    ActionKind
	AgentID string
	// Status and ErrorMsg are reported for ActReport.
	Status   string
	ErrorMsg string
}

// Statuses, as the control plane spells them.
const (
	statusProvisioning = "PROVISIONING"
	statusRunning      = "RUNNING"
	statusStopped      = "STOPPED"
	statusError        = "ERROR"
)

// diff compares what the control plane wants with what the driver runs and
// returns the steps to converge, in a stable order. It is pure: the reconcile
// loop executes its result, and running it again on the new state yields
// nothing more to do — that is what makes the loop idempotent.
//
// An agent whose container died while the control plane believed it RUNNING
// is reported ERROR (with the exit reason) rather than restarted behind the
// user's back; an agent still PROVISIONING (just created, started or
// restarted, or re-placed) is started.
func diff(desired []Assignment, actual []driver.Container) []Action {
	running := map[string]driver.Container{}
	for _, c := range actual {
		running[c.AgentID] = c
	}
	var out []Action
	assigned := map[string]bool{}
	for _, a := range desired {
		assigned[a.AgentID] = true
		c, exists := running[a.AgentID]
		switch a.Desired {
		case "running":
			switch {
			case !exists:
				out = append(out, Action{Kind: ActCreate, AgentID: a.AgentID})
			case c.State == driver.StateRunning:
				if a.Status != statusRunning {
					out = append(out, Action{Kind: ActCheck, AgentID: a.AgentID})
				}
			case a.Status == statusRunning:
				msg := exitReason(c)
				out = append(out, Action{Kind: ActReport, AgentID: a.AgentID, Status: statusError, ErrorMsg: msg})
			case a.Status == statusError:
				// Already reported; wait for the user to restart it.
			default:
				out = append(out, Action{Kind: ActStart, AgentID: a.AgentID})
			}
		case "stopped":
			switch {
			case exists && c.State == driver.StateRunning:
				out = append(out, Action{Kind: ActStop, AgentID: a.AgentID})
			case a.Status != statusStopped && a.Status != statusError:
				out = append(out, Action{Kind: ActReport, AgentID: a.AgentID, Status: statusStopped})
			}
		}
	}
	for _, c := range actual {
		if !assigned[c.AgentID] {
			out = append(out, Action{Kind: ActDelete, AgentID: c.AgentID})
		}
	}
	slices.SortStableFunc(out, func(x, y Action) int {
		if x.AgentID < y.AgentID {
			return -1
		}
		if x.AgentID > y.AgentID {
			return 1
		}
		return 0
	})
	return out
}

// exitReason says, in words a person can act on, why a container stopped.
func exitReason(c driver.Container) string {
	switch {
	case c.OOMKilled:
		return "the agent ran out of memory and was killed (OOM); give it more memory or use less"
	case c.State == driver.StateCreated:
		return "the agent's container exists but was never started"
	default:
		return fmt.Sprintf("the agent's process exited with code %d", c.ExitCode)
	}
}
