package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/agenthost/agenthost/internal/exemem"
	"github.com/agenthost/agenthost/nodeagent"
	"github.com/agenthost/agenthost/nodeagent/driver"
	"github.com/agenthost/agenthost/nodeagent/driver/containerd"
	"github.com/agenthost/agenthost/nodeagent/driver/process"
	"github.com/agenthost/agenthost/nodeagent/network"
	"github.com/agenthost/agenthost/nodeagent/runtime/offlinemodel"
)

// nodeOptions are the flags of `agenthost node`.
type nodeOptions struct {
	control       []string
	name          string
	advertise     string
	cpuMillis     int64
	memoryMB      int64
	maxAgents     int
	labels        []string
	dataDir       string
	containerd    string
	namespace     string
	cniPluginDirs []string
	subnet        string
	blocked       []string
	runtimeImage  string
	importImages  []string
	pullImages    []string
	gossipBind    string
	serviceBind   string
	driver        string
	processCmd    string
	offlineModel  string
	defaultModel  string
	permission    string
	metricsAddr   string
	// registry, when set, receives the node agent's metrics and nothing
	// serves them here (dev serves them with the control node's).
	registry *prometheus.Registry
}

func defaultNodeOptions() nodeOptions {
	def := nodeagent.DefaultConfig()
	drv := containerd.DefaultConfig()
	net := network.DefaultConfig()
	return nodeOptions{
		name:          def.Name,
		cpuMillis:     def.CPUMillis,
		memoryMB:      def.MemoryMB,
		maxAgents:     def.MaxAgents,
		dataDir:       "/var/lib/agenthost/node",
		containerd:    drv.Address,
		namespace:     drv.Namespace,
		cniPluginDirs: net.PluginDirs,
		subnet:        net.Subnet.String(),
		runtimeImage:  def.Runtimes["opencode"].Image,
		gossipBind:    def.GossipBind,
		serviceBind:   def.RuntimeServiceBind,
		driver:        "containerd",
		processCmd:    "opencode serve --port {port} --hostname 127.0.0.1",
		defaultModel:  def.DefaultModel,
		permission:    def.PermissionPolicy,
	}
}

func newNodeCommand() *cobra.Command {
	opts := defaultNodeOptions()
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a node agent: run this host's agents in containerd",
		Long: `Run the node agent of this host. It registers with the control plane (no
manual step), heartbeats to the leader, and runs the agents the control plane
assigns to it in containerd, each in its own network namespace. Containers keep
running while the node agent or the control plane is down, and a restarted node
agent adopts them.`,
		Example: `  agenthost node --control 10.0.0.1:7400,10.0.0.2:7400 --advertise 10.0.1.5 \
    --import-image /var/lib/agenthost/opencode.oci.tar`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runNode(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&opts.control, "control", nil, "control nodes' cluster addresses, comma-separated (required)")
	f.StringVar(&opts.name, "name", opts.name, "node name, unique in the cluster")
	f.StringVar(&opts.advertise, "advertise", "", "address proxies reach this host's agent ports at (required)")
	f.Int64Var(&opts.cpuMillis, "cpu-millis", opts.cpuMillis, "CPU offered to agents, in millicores (default: all cores)")
	f.Int64Var(&opts.memoryMB, "memory-mb", opts.memoryMB, "memory offered to agents, in MB (default: host memory less a reserve)")
	f.IntVar(&opts.maxAgents, "max-agents", opts.maxAgents, "most agents running at once on this node")
	f.StringSliceVar(&opts.labels, "label", nil, "node labels that agents' constraints match, key=value")
	f.StringVar(&opts.dataDir, "data-dir", opts.dataDir, "agents' workspaces, config files and logs, and network state")
	f.StringVar(&opts.containerd, "containerd-address", opts.containerd, "containerd socket")
	f.StringVar(&opts.namespace, "containerd-namespace", opts.namespace, "containerd namespace for agenthost's containers and images")
	f.StringSliceVar(&opts.cniPluginDirs, "cni-plugin-dir", opts.cniPluginDirs, "directories holding CNI plugins")
	f.StringVar(&opts.subnet, "subnet", opts.subnet, "IPv4 subnet for this node's agents (distinct per node)")
	f.StringSliceVar(&opts.blocked, "block", nil, "destinations agents may never reach, as prefixes (add the control plane's)")
	f.StringVar(&opts.runtimeImage, "runtime-image", opts.runtimeImage, "image reference of the opencode runtime")
	f.StringSliceVar(&opts.importImages, "import-image", nil, "OCI image archives to import at start (offline)")
	f.StringSliceVar(&opts.pullImages, "pull-image", nil, "image references to pull at start (needs a reachable registry)")
	f.StringVar(&opts.gossipBind, "gossip-bind", opts.gossipBind, "gossip (memberlist) address, TCP and UDP")
	f.StringVar(&opts.serviceBind, "runtime-service-bind", opts.serviceBind, "AgentRuntimeService address (control nodes reach agents' runtimes through it); bind to a private interface")
	f.StringVar(&opts.offlineModel, "offline-model", "", "serve the offline model (deterministic replies, no provider key) to this node's agents on this port, e.g. :7490; agents with model agenthost/offline use it")
	f.StringVar(&opts.defaultModel, "default-model", opts.defaultModel, "model of agents created without one and without an org default (provider/model)")
	f.StringVar(&opts.permission, "permission-policy", opts.permission, "runtimes' policy for edits, shell commands and web fetches: ask (requests reach the API), allow or deny")
	f.StringVar(&opts.driver, "driver", opts.driver, "containerd, or process: runtimes as plain child processes with NO isolation, for a developer machine only")
	f.StringVar(&opts.metricsAddr, "metrics-addr", opts.metricsAddr, "address for /metrics, e.g. 10.0.1.7:7492 (empty: none); Prometheus must reach it, so a private interface")
	f.StringVar(&opts.processCmd, "process-command", opts.processCmd, "with --driver process: the runtime's command; {port} is the agent's port")
	return cmd
}

// runNode runs a node agent until ctx ends.
func runNode(ctx context.Context, opts nodeOptions) error {
	logger := slog.Default()
	if len(opts.control) == 0 || opts.advertise == "" {
		return fmt.Errorf("--control and --advertise are required")
	}
	// The offline model listens before the driver starts, so that the
	// firewall can open its port to agents.
	modelURL, modelPort, stopModel, err := serveOfflineModel(opts, logger)
	if err != nil {
		return err
	}
	defer stopModel()
	var drv driver.Driver
	switch opts.driver {
	case "containerd":
		d, err := containerdDriver(ctx, opts, modelPort, logger)
		if err != nil {
			return err
		}
		defer d.Close()
		drv = d
	case "process":
		d, err := process.New(process.Config{
			Command: strings.Fields(opts.processCmd), DataDir: opts.dataDir,
			LogMaxBytes: containerd.DefaultConfig().LogMaxBytes, Logger: logger,
		})
		if err != nil {
			return err
		}
		defer d.Close()
		drv = d
	default:
		return fmt.Errorf("--driver %q: want containerd or process", opts.driver)
	}

	cfg := nodeagent.DefaultConfig()
	cfg.ControlAddrs = opts.control
	cfg.Name = opts.name
	cfg.AdvertiseAddr = opts.advertise
	cfg.CPUMillis, cfg.MemoryMB, cfg.MaxAgents = opts.cpuMillis, opts.memoryMB, opts.maxAgents
	cfg.GossipBind = opts.gossipBind
	cfg.RuntimeServiceBind = opts.serviceBind
	cfg.Labels = map[string]string{}
	for _, l := range opts.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("--label %q: want key=value", l)
		}
		cfg.Labels[k] = v
	}
	rt := cfg.Runtimes["opencode"]
	rt.Image = opts.runtimeImage
	cfg.Runtimes["opencode"] = rt
	cfg.Logger = logger
	cfg.DefaultModel = opts.defaultModel
	cfg.PermissionPolicy = opts.permission
	cfg.OfflineModelURL = modelURL
	if opts.registry != nil {
		// Only a registry that is there: a nil *Registry in the interface
		// would not compare equal to nil and would be registered into.
		cfg.Registerer = opts.registry
	}
	if cfg.Registerer == nil && opts.metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		cfg.Registerer = reg
		stop, err := serveMetrics(opts.metricsAddr, reg)
		if err != nil {
			return err
		}
		defer stop()
	}
	agent, err := nodeagent.New(cfg, drv)
	if err != nil {
		return err
	}
	// The node agent runs a small part of the one agenthost binary; let the
	// rest of it leave its resident memory (see internal/exemem).
	if err := exemem.Release(); err != nil {
		logger.Warn("could not release unused pages of the binary", "err", err)
	}
	logger.Info("node agent started", "node", cfg.Name, "control", strings.Join(cfg.ControlAddrs, ","), "driver", opts.driver)
	return agent.Run(ctx)
}

// containerdDriver connects to containerd with CNI networking and imports
// the requested image archives.
func containerdDriver(ctx context.Context, opts nodeOptions, modelPort uint16, logger *slog.Logger) (*containerd.Driver, error) {
	subnet, err := netip.ParsePrefix(opts.subnet)
	if err != nil {
		return nil, fmt.Errorf("--subnet: %w", err)
	}
	ncfg := network.DefaultConfig()
	ncfg.Subnet = subnet
	ncfg.PluginDirs = opts.cniPluginDirs
	ncfg.StateDir = filepath.Join(opts.dataDir, "cni")
	ncfg.Logger = logger
	if modelPort != 0 {
		ncfg.HostPorts = []uint16{modelPort}
	}
	for _, b := range opts.blocked {
		p, err := netip.ParsePrefix(b)
		if err != nil {
			return nil, fmt.Errorf("--block %s: %w", b, err)
		}
		ncfg.Blocked = append(ncfg.Blocked, p)
	}
	net, err := network.New(ncfg)
	if err != nil {
		return nil, err
	}
	dcfg := containerd.DefaultConfig()
	dcfg.Address = opts.containerd
	dcfg.Namespace = opts.namespace
	dcfg.DataDir = opts.dataDir
	dcfg.Network = net
	dcfg.Logger = logger
	drv, err := containerd.New(dcfg)
	if err != nil {
		return nil, err
	}
	for _, path := range opts.importImages {
		f, err := os.Open(path)
		if err != nil {
			drv.Close()
			return nil, fmt.Errorf("--import-image: %w", err)
		}
		var size int64
		if fi, err := f.Stat(); err == nil {
			size = fi.Size()
		}
		logger.Info("importing image archive", "path", path, "size", mebibytes(size))
		pr := &progressReader{r: f}
		stopProgress := pr.report(logger.With("path", path), "importing image archive", size, 2*time.Second)
		names, err := drv.ImportImage(ctx, pr)
		stopProgress()
		f.Close()
		if err != nil {
			drv.Close()
			return nil, err
		}
		logger.Info("image imported", "names", strings.Join(names, ", "))
	}
	for _, ref := range opts.pullImages {
		logger.Info("pulling image", "ref", ref)
		if err := drv.PullImage(ctx, ref); err != nil {
			drv.Close()
			return nil, err
		}
	}
	return drv, nil
}

// serveOfflineModel starts the offline model when --offline-model asks for it
// and returns its URL as the node's runtimes reach it: the node's address on
// the agents' subnet for containers, loopback for the process driver.
func serveOfflineModel(opts nodeOptions, logger *slog.Logger) (url string, port uint16, stop func(), err error) {
	if opts.offlineModel == "" {
		return "", 0, func() {}, nil
	}
	l, err := net.Listen("tcp", opts.offlineModel)
	if err != nil {
		return "", 0, nil, fmt.Errorf("--offline-model: %w", err)
	}
	port = uint16(l.Addr().(*net.TCPAddr).Port)
	srv := &http.Server{Handler: offlinemodel.New(logger).Handler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	host := "127.0.0.1"
	if opts.driver == "containerd" {
		subnet, err := netip.ParsePrefix(opts.subnet)
		if err != nil {
			l.Close()
			return "", 0, nil, fmt.Errorf("--subnet: %w", err)
		}
		host = network.HostAddr(subnet).String()
	}
	url = fmt.Sprintf("http://%s:%d/v1", host, port)
	logger.Info("serving the offline model to agents", "listen", l.Addr().String(), "agents_reach", url)
	return url, port, func() { srv.Close() }, nil
}
