// Package network gives each agent container a network namespace of its own,
// wired with CNI (go-cni with Debian's ptp, host-local and portmap plugins):
// an address from the node's agent subnet, outbound NAT, and the agent's host
// port forwarded to the runtime's port inside.
//
// ptp rather than a bridge: every packet between two containers crosses the
// host's routing and so its FORWARD chain, where the isolation rules drop it.
// Per container, the rules (firewall.go) refuse anything addressed to the host
// itself (the node agent, a control plane on this host), to other agents, to
// link-local metadata addresses and to configured control-plane prefixes; they
// are installed with the container's network and removed with it.
//
// Used by the containerd driver through its Network interface.
package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/containerd/pkg/netns"
	gocni "github.com/containerd/go-cni"
	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Config configures agent networking on one node.
type Config struct {
	// Subnet is where agents' addresses come from; each node needs its own.
	Subnet netip.Prefix
	// PluginDirs hold the CNI plugin binaries.
	PluginDirs []string
	// StateDir keeps IP allocations and is the base of the network
	// namespaces' bind mounts.
	StateDir string
	// NetNSDir is where network namespaces are bind-mounted.
	NetNSDir string
	// Blocked are destinations agents may never reach besides the host
	// itself, other agents and link-local addresses: the control plane's
	// addresses, other nodes, internal services.
	Blocked []netip.Prefix
	// HostPorts are TCP ports on the node that agents may reach: services
	// meant for them, such as the offline model. Everything else on the
	// node is closed to them.
	HostPorts []uint16
	Logger    *slog.Logger
}

// DefaultConfig returns Debian's plugin directory and a /16 for agents.
func DefaultConfig() Config {
	return Config{
		Subnet:     netip.MustParsePrefix("10.213.0.0/16"),
		PluginDirs: []string{"/usr/lib/cni", "/opt/cni/bin"},
		StateDir:   "/var/lib/agenthost/node/cni",
		NetNSDir:   "/var/run/netns",
		Logger:     slog.Default(),
	}
}

// Validate reports settings that cannot work.
func (c Config) Validate() error {
	if !c.Subnet.IsValid() || !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 28 {
		return fmt.Errorf("agent subnet %s must be an IPv4 prefix of /28 or larger", c.Subnet)
	}
	if len(c.PluginDirs) == 0 || c.StateDir == "" || c.NetNSDir == "" || c.Logger == nil {
		return errors.New("plugin dirs, state dir, netns dir and logger are required")
	}
	return nil
}

// Network is the CNI network of one node's agents.
type Network struct {
	cfg      Config
	cni      gocni.CNI
	firewall *firewall
	logger   *slog.Logger
	mu       sync.Mutex // serialises setup and teardown (CNI and iptables)
}

// New loads the CNI configuration and installs the isolation chains.
func New(cfg Config) (*Network, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	conflist, err := json.Marshal(map[string]any{
		"cniVersion": "1.0.0",
		"name":       "agenthost",
		"plugins": []any{
			map[string]any{
				"type":   "ptp",
				"ipMasq": true,
				"ipam": map[string]any{
					"type":    "host-local",
					"ranges":  [][]map[string]string{{{"subnet": cfg.Subnet.String()}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
					"dataDir": filepath.Join(cfg.StateDir, "ipam"),
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	})
	if err != nil {
		return nil, err
	}
	cni, err := gocni.New(gocni.WithPluginDir(cfg.PluginDirs), gocni.WithMinNetworkCount(1),
		gocni.WithInterfacePrefix("eth"), gocni.WithConfListBytes(conflist))
	if err != nil {
		return nil, fmt.Errorf("load CNI config: %w", err)
	}
	fw, err := newFirewall(cfg.Subnet, cfg.Blocked, cfg.HostPorts)
	if err != nil {
		return nil, err
	}
	return &Network{cfg: cfg, cni: cni, firewall: fw, logger: cfg.Logger.With("component", "network")}, nil
}

func portMap(hostPort, runtimePort int) []gocni.PortMapping {
	return []gocni.PortMapping{{HostPort: int32(hostPort), ContainerPort: int32(runtimePort), Protocol: "tcp"}}
}

// HostAddr is the node's address as agents see it: the gateway of their
// point-to-point links (host-local gives the subnet's first address), where
// the services in HostPorts answer them.
func (n *Network) HostAddr() netip.Addr { return HostAddr(n.cfg.Subnet) }

// HostAddr is the gateway address agents in subnet see the node at.
func HostAddr(subnet netip.Prefix) netip.Addr { return subnet.Masked().Addr().Next() }

// Setup creates the agent's network namespace, attaches it, forwards
// hostPort to runtimePort, and isolates it. It returns the namespace's path
// and the runtime's address as seen from this node (containerIP:runtimePort).
//
// The namespace is recorded before anything else is wired, so that a node
// agent killed halfway leaves a record: the next Setup for the agent (or its
// Teardown) removes the leftover first, and no orphaned namespace keeps the
// agent's address or its rules.
func (n *Network) Setup(ctx context.Context, agentID string, hostPort, runtimePort int) (string, string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.teardownRecorded(ctx, agentID); err != nil {
		return "", "", fmt.Errorf("remove leftover network: %w", err)
	}
	if err := os.MkdirAll(n.cfg.NetNSDir, 0o755); err != nil {
		return "", "", err
	}
	ns, err := netns.NewNetNS(n.cfg.NetNSDir)
	if err != nil {
		return "", "", fmt.Errorf("create network namespace: %w", err)
	}
	path := ns.GetPath()
	if err := n.record(agentID, setupRecord{NetNS: path, HostPort: hostPort, RuntimePort: runtimePort}); err != nil {
		ns.Remove()
		return "", "", err
	}
	began := time.Now()
	result, err := n.cni.Setup(ctx, agentID, path, gocni.WithCapabilityPortMap(portMap(hostPort, runtimePort)))
	cniTook := time.Since(began)
	if err != nil {
		n.teardown(ctx, agentID, path, hostPort, runtimePort)
		return "", "", fmt.Errorf("CNI setup: %w", err)
	}
	ip, err := containerIP(result)
	if err == nil {
		err = loopbackUp(path)
	}
	if err == nil {
		err = n.firewall.isolate(agentID, ip)
	}
	if err != nil {
		n.teardown(ctx, agentID, path, hostPort, runtimePort)
		return "", "", err
	}
	n.logger.Debug("agent network ready", "agent", agentID, "cni", cniTook.Round(time.Millisecond), "total", time.Since(began).Round(time.Millisecond))
	return path, netip.AddrPortFrom(ip, uint16(runtimePort)).String(), nil
}

// Teardown undoes Setup; it succeeds on what is already gone.
func (n *Network) Teardown(ctx context.Context, agentID, netnsPath string, hostPort, runtimePort int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.teardown(ctx, agentID, netnsPath, hostPort, runtimePort)
}

func (n *Network) teardown(ctx context.Context, agentID, netnsPath string, hostPort, runtimePort int) error {
	var errs []error
	if err := n.firewall.release(agentID); err != nil {
		errs = append(errs, err)
	}
	if err := n.cni.Remove(ctx, agentID, netnsPath, gocni.WithCapabilityPortMap(portMap(hostPort, runtimePort))); err != nil {
		errs = append(errs, fmt.Errorf("CNI remove: %w", err))
	}
	if netnsPath != "" {
		if err := netns.LoadNetNS(netnsPath).Remove(); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove network namespace: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.Remove(n.recordPath(agentID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// setupRecord is what Teardown needs, written before the network exists.
type setupRecord struct {
	NetNS       string `json:"netns"`
	HostPort    int    `json:"hostPort"`
	RuntimePort int    `json:"runtimePort"`
}

func (n *Network) recordPath(agentID string) string {
	return filepath.Join(n.cfg.StateDir, "agents", agentID+".json")
}

func (n *Network) record(agentID string, r setupRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(n.recordPath(agentID)), 0o700); err != nil {
		return err
	}
	return os.WriteFile(n.recordPath(agentID), b, 0o600)
}

// teardownRecorded removes a network that a previous Setup left behind.
func (n *Network) teardownRecorded(ctx context.Context, agentID string) error {
	b, err := os.ReadFile(n.recordPath(agentID))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var r setupRecord
	if err := json.Unmarshal(b, &r); err != nil {
		os.Remove(n.recordPath(agentID))
		return nil
	}
	n.logger.Warn("removing a network left by an interrupted setup", "agent", agentID, "netns", r.NetNS)
	return n.teardown(ctx, agentID, r.NetNS, r.HostPort, r.RuntimePort)
}

func containerIP(result *gocni.Result) (netip.Addr, error) {
	for _, cfg := range result.Interfaces {
		for _, ipc := range cfg.IPConfigs {
			if ip, ok := netip.AddrFromSlice(ipc.IP); ok && ip.Unmap().Is4() && !ip.Unmap().IsLoopback() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, errors.New("CNI gave the container no IPv4 address")
}

// loopbackUp brings up the namespace's loopback interface, without which
// nothing in the container can use 127.0.0.1. It is what CNI's loopback
// plugin does, done in process: one ioctl instead of another plugin exec
// on every agent start.
func loopbackUp(netnsPath string) error {
	return ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("loopback: %w", err)
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			return fmt.Errorf("loopback flags: %w", err)
		}
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
			return fmt.Errorf("bring up loopback: %w", err)
		}
		return nil
	})
}
