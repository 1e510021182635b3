// Package nodeagent is the node agent (`agenthost node`): it registers the
// host with the control plane, watches its assignments, reconciles them against
// containerd, wires container networking, and reports health and busy state
// through runtime adapters (nodeagent/runtime/...).
//
// Built by the "Node agent" issue; the package exists now so that the layout
// of DESIGN.md holds from the start.
package nodeagent
