// Package network gives each agent container a network namespace of its own,
// wired with CNI (go-cni with Debian's ptp and host-local plugins): an address
// from the node's agent subnet, outbound NAT, and the agent's host port
// forwarded to the runtime's port inside.
//
// The NAT is agenthost's own iptables rules (firewall.go), not CNI's portmap
// plugin nor ptp's ipMasq: those run a dozen iptables processes per container
// between them, 370 ms of a 450 ms set-up on a quiet machine. The outbound
// masquerade is one rule for the subnet, installed once; an agent's host-port
// DNAT goes in the same iptables-restore transaction as its isolation rules.
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
//
// Set-ups and teardowns of different agents run concurrently; only those of
// one agent are serialised (agentLocks), so that a node given many agents at
// once (a crashed node's, re-placed) wires them side by side. That is safe
// because nothing they do is shared between agents: each has its own
// namespace (a unique name), record file, CNI result cache entry (keyed by
// its id) and ptp veth pair (a random name); host-local serialises its
// allocations with a lock file of its own; go-cni takes only a read lock to
// invoke plugins; and the iptables-restore transactions (--noflush, --wait)
// delete and add only the rules tagged with their agent's id, while iptables
// itself serialises the transactions (the xtables lock with the legacy
// backend, an atomic, retried batch with nftables).
type Network struct {
	cfg      Config
	cni      gocni.CNI
	legacy   gocni.CNI // removes networks set up with portmap and ipMasq
	firewall *firewall
	logger   *slog.Logger
	locks    agentLocks
}

// New loads the CNI configuration and installs agenthost's chains and the
// subnet's masquerade.
func New(cfg Config) (*Network, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, err
	}
	cni, err := loadCNI(cfg, false)
	if err != nil {
		return nil, err
	}
	legacy, err := loadCNI(cfg, true)
	if err != nil {
		return nil, err
	}
	fw, err := newFirewall(cfg.Subnet, cfg.Blocked, cfg.HostPorts)
	if err != nil {
		return nil, err
	}
	return &Network{cfg: cfg, cni: cni, legacy: legacy, firewall: fw, logger: cfg.Logger.With("component", "network"),
		locks: agentLocks{held: map[string]*agentLock{}}}, nil
}

// loadCNI returns the node's network: ptp with host-local addresses. The
// legacy network adds ptp's ipMasq and portmap, as agenthost used before it
// installed those rules itself; it only removes networks that it set up.
func loadCNI(cfg Config, legacy bool) (gocni.CNI, error) {
	ptp := map[string]any{
		"type": "ptp",
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]string{{{"subnet": cfg.Subnet.String()}}},
			"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
			"dataDir": filepath.Join(cfg.StateDir, "ipam"),
		},
	}
	plugins := []any{ptp}
	if legacy {
		ptp["ipMasq"] = true
		plugins = append(plugins, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}})
	}
	conflist, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "agenthost", "plugins": plugins})
	if err != nil {
		return nil, err
	}
	cni, err := gocni.New(gocni.WithPluginDir(cfg.PluginDirs), gocni.WithMinNetworkCount(1),
		gocni.WithInterfacePrefix("eth"), gocni.WithConfListBytes(conflist))
	if err != nil {
		return nil, fmt.Errorf("load CNI config: %w", err)
	}
	return cni, nil
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
	defer n.locks.lock(agentID)()
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
	if err := n.record(agentID, setupRecord{NetNS: path, HostPort: hostPort, RuntimePort: runtimePort, OwnNAT: true}); err != nil {
		ns.Remove()
		return "", "", err
	}
	began := time.Now()
	result, err := n.cni.Setup(ctx, agentID, path)
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
		err = routeLocalnet(result)
	}
	if err == nil {
		err = n.firewall.install(agentID, ip, hostPort, runtimePort)
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
	defer n.locks.lock(agentID)()
	began := time.Now()
	err := n.teardown(ctx, agentID, netnsPath, hostPort, runtimePort)
	n.logger.Debug("agent network removed", "agent", agentID, "took", time.Since(began).Round(time.Millisecond), "err", err)
	return err
}

func (n *Network) teardown(ctx context.Context, agentID, netnsPath string, hostPort, runtimePort int) error {
	var errs []error
	if err := n.firewall.release(agentID); err != nil {
		errs = append(errs, err)
	}
	// A network set up before agenthost installed its own NAT rules has
	// portmap's and ipMasq's, which only their plugins remove.
	cni, opts := n.cni, []gocni.NamespaceOpts(nil)
	if r, err := n.readRecord(agentID); err == nil && !r.OwnNAT {
		cni, opts = n.legacy, []gocni.NamespaceOpts{gocni.WithCapabilityPortMap(portMap(hostPort, runtimePort))}
	}
	if err := cni.Remove(ctx, agentID, netnsPath, opts...); err != nil {
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
	// OwnNAT is false in the records of networks set up by an agenthost
	// that used portmap and ptp's ipMasq, whose rules their plugins remove.
	OwnNAT bool `json:"ownNAT"`
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

func (n *Network) readRecord(agentID string) (setupRecord, error) {
	var r setupRecord
	b, err := os.ReadFile(n.recordPath(agentID))
	if err != nil {
		return r, err
	}
	return r, json.Unmarshal(b, &r)
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

// routeLocalnet lets the agent's host-side veth carry packets from
// 127.0.0.0/8, which the kernel otherwise refuses to route off the loopback
// interface: the host's connections to 127.0.0.1:<host port> leave through
// it after their DNAT (and take the node's address in POSTROUTING). Set per
// interface, as portmap does, not for every interface of the host.
func routeLocalnet(result *gocni.Result) error {
	for name, iface := range result.Interfaces {
		if iface.Sandbox != "" {
			continue // the container's end
		}
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+name+"/route_localnet", []byte("1"), 0o644); err != nil {
			return fmt.Errorf("route_localnet on %s: %w", name, err)
		}
		return nil
	}
	return errors.New("CNI gave the container no host-side interface")
}

// agentLocks gives each agent a mutex of its own, held through a set-up or
// teardown of its network and forgotten once no one holds or awaits it.
type agentLocks struct {
	mu   sync.Mutex
	held map[string]*agentLock
}

type agentLock struct {
	sync.Mutex
	users int // holders and waiters, under agentLocks.mu
}

// lock locks agentID's mutex and returns its unlock.
func (l *agentLocks) lock(agentID string) (unlock func()) {
	l.mu.Lock()
	a := l.held[agentID]
	if a == nil {
		a = &agentLock{}
		l.held[agentID] = a
	}
	a.users++
	l.mu.Unlock()
	a.Lock()
	return func() {
		a.Unlock()
		l.mu.Lock()
		if a.users--; a.users == 0 {
			delete(l.held, agentID)
		}
		l.mu.Unlock()
	}
}
