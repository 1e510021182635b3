// Package drivertest makes containerd drivers with agent networking for the
// tests and benchmarks of other packages: on a containerd of the caller's
// (usually containerdtest's private daemon), with all state in a directory of
// the caller's. The driver's own tests, inside package containerd, cannot
// import it.
package drivertest

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/agenthost/agenthost/nodeagent/driver/containerd"
	"github.com/agenthost/agenthost/nodeagent/network"
)

// Options says where the driver runs.
type Options struct {
	// Address is containerd's socket.
	Address string
	// Subnet gives agents their addresses; tests that run at once need
	// distinct ones.
	Subnet netip.Prefix
	// Dir holds CNI state (Dir/cni) and the agents' directories (Dir/node).
	Dir string
	// HostPorts are node ports agents may reach (network.Config.HostPorts).
	HostPorts []uint16
	// Archives are OCI image archives imported before New returns.
	Archives []string
}

// New returns a quiet driver with agent networking; Close undoes it.
func New(o Options) (*containerd.Driver, error) {
	quiet := slog.New(slog.DiscardHandler)
	ncfg := network.DefaultConfig()
	ncfg.Subnet = o.Subnet
	ncfg.StateDir = filepath.Join(o.Dir, "cni")
	ncfg.HostPorts = o.HostPorts
	ncfg.Logger = quiet
	netw, err := network.New(ncfg)
	if err != nil {
		return nil, err
	}
	dcfg := containerd.DefaultConfig()
	dcfg.Address = o.Address
	dcfg.DataDir = filepath.Join(o.Dir, "node")
	dcfg.Network = netw
	dcfg.Logger = quiet
	d, err := containerd.New(dcfg)
	if err != nil {
		return nil, err
	}
	for _, path := range o.Archives {
		if _, err := Import(d, path); err != nil {
			Close(d)
			return nil, err
		}
	}
	return d, nil
}

// Import imports an OCI image archive and returns the image names.
func Import(d *containerd.Driver, path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return d.ImportImage(context.Background(), f)
}

// Close deletes every container through the driver, so that no network
// namespace or isolation rule outlives it, and closes it.
func Close(d *containerd.Driver) {
	ctx := context.Background()
	list, _ := d.List(ctx)
	for _, c := range list {
		d.Delete(ctx, c.AgentID)
	}
	d.Close()
}
