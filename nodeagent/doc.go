// Package nodeagent is the node agent (`agenthost node`): it registers the
// host with the control plane, watches its assignments, reconciles them
// against a driver (driver/containerd), wires container networking, and
// reports health and busy state through runtime adapters (runtime/...).
package nodeagent
