package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/agenthost/agenthost/api"
	"github.com/agenthost/agenthost/nodeagent/runtime/opencode"
	"github.com/agenthost/agenthost/proxy"

	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

func newDevCommand() *cobra.Command {
	opts := serverOptions{
		name:            "dev",
		bind:            "127.0.0.1:7400",
		httpAddr:        "127.0.0.1:7480",
		bootstrapExpect: 1,
	}
	var noNode bool
	var runtimeArchive, agentPorts, proxyAddr string
	node := defaultNodeOptions()
	node.name = "dev-node"
	node.advertise = "127.0.0.1"
	node.gossipBind = "127.0.0.1:7403"
	node.serviceBind = "127.0.0.1:7404"
	// Every flow works with no provider key: new agents talk to the
	// offline model unless told otherwise.
	node.offlineModel = ":7490"
	node.defaultModel = opencode.OfflineModel
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run agenthost on this machine: a single-node cluster in one process",
		Long: `Run the embedded single-machine cluster in one process: a control node with
a one-server Raft and a node agent running agents in containerd (make dev starts
containerd when it is not running). State lives in --data-dir and survives
restarts. The edge proxy runs in it too, on --proxy-addr with the domain
localhost: agents are at http://a<port>.localhost:<proxy port>, which browsers
resolve with no DNS set-up.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// dev keeps its key file beside its state, made on first start.
			// (A cluster keeps it elsewhere: the data directory is what
			// backups copy, and the key must not travel with them.)
			if opts.secretsKeyFile == "" {
				opts.secretsKeyFile = filepath.Join(opts.dataDir, "secrets.key")
				opts.createKeyFile = true
			}
			var proxyPort string
			if proxyAddr != "" {
				var err error
				if _, proxyPort, err = net.SplitHostPort(proxyAddr); err != nil {
					return fmt.Errorf("--proxy-addr: %w", err)
				}
				if opts.publicURL == "" {
					opts.publicURL = "http://localhost:" + proxyPort
				}
			}
			// One /metrics for the whole dev cluster: the control node's,
			// the node agent's and the proxy's series on one registry.
			opts.registry = prometheus.NewRegistry()
			opts.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			node.registry = opts.registry
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			err := runServer(ctx, opts, func(httpAddr string, srv *clusterrpc.Server, apiSrv *api.Server) {
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "agenthost dev is running (Ctrl-C to stop)\n")
				fmt.Fprintf(out, "  data dir:      %s\n", opts.dataDir)
				fmt.Fprintf(out, "  cluster addr:  %s\n", srv.Addr())
				fmt.Fprintf(out, "  REST API:      http://%s/api/v1 (docs at http://%s/docs)\n", httpAddr, httpAddr)
				fmt.Fprintf(out, "  dashboard:     http://%s/app/ (sign up there; `agenthost operator accounts promote EMAIL` adds the operator pages)\n", httpAddr)
				fmt.Fprintf(out, "  status:        http://%s/v1/status\n", httpAddr)
				fmt.Fprintf(out, "  metrics:       http://%s/metrics\n", httpAddr)
				tokensFile := filepath.Join(opts.dataDir, devTokensFile)
				if err := devBootstrap(ctx, apiSrv, srv.Store, tokensFile, "http://"+httpAddr); err != nil {
					slog.Error("could not make the dev tokens", "error", err)
				} else {
					fmt.Fprintf(out, "  tokens:        %s (source it: AGENTHOST_ADDR, AGENTHOST_TOKEN, AGENTHOST_OPERATOR_TOKEN)\n", tokensFile)
				}
				if proxyAddr != "" {
					popts := proxyOptions{domain: "localhost", control: []string{srv.Addr()}, api: []string{httpAddr}, httpAddr: proxyAddr, accessLog: true, rings: proxy.DefaultConfig().Rings,
						registry: opts.registry}
					started := make(chan struct{})
					go func() {
						err := runProxy(ctx, popts, func(string, string) { close(started) })
						if err != nil && ctx.Err() == nil {
							slog.Error("the dev proxy stopped", "error", err)
						}
					}()
					select {
					case <-started:
						fmt.Fprintf(out, "  proxy:         http://localhost:%s (agents at http://a<port>.localhost:%s)\n", proxyPort, proxyPort)
					case <-time.After(5 * time.Second):
					}
				}
				if agentPorts != "" {
					if err := setPortRange(ctx, srv.Store, agentPorts); err != nil {
						slog.Error("--agent-ports", "error", err)
					}
				}
				if noNode {
					return
				}
				node.control = []string{srv.Addr()}
				node.dataDir = filepath.Join(opts.dataDir, "node")
				if _, err := os.Stat(runtimeArchive); err == nil {
					node.importImages = []string{runtimeArchive}
				} else {
					slog.Warn("no runtime image archive; agents cannot start until the image is in containerd (run `make runtime-image`)", "archive", runtimeArchive)
				}
				go func() {
					if err := runNode(ctx, node); err != nil && ctx.Err() == nil {
						slog.Error("the dev node agent stopped; agents cannot run (is containerd running? try `make dev`)", "error", err)
					}
				}()
				fmt.Fprintf(out, "  node agent:    dev-node, containerd at %s\n", node.containerd)
			})
			cancel()
			return err
		},
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	f := cmd.Flags()
	f.StringVar(&runtimeArchive, "runtime-archive", filepath.Join("build", "runtime", "opencode-runtime.oci.tar"), "runtime image archive (make runtime-image) imported at start")
	f.StringVar(&opts.dataDir, "data-dir", filepath.Join(home, ".agenthost", "dev"), "directory for the dev cluster's state")
	f.StringVar(&opts.bind, "bind", opts.bind, "cluster address to listen on")
	f.StringVar(&opts.httpAddr, "http-addr", opts.httpAddr, "HTTP address for /metrics and /v1/status")
	f.BoolVar(&noNode, "no-node", false, "run the control node only, without a node agent")
	f.StringVar(&opts.gossipBind, "gossip-bind", "127.0.0.1:7402", "the control node's gossip address")
	f.StringVar(&proxyAddr, "proxy-addr", "127.0.0.1:7481", "the edge proxy's address (empty: no proxy); agents' URLs point at it")
	f.StringVar(&opts.publicURL, "public-url", "", "where users reach agenthost (default: http://localhost:<proxy port>)")
	f.StringVar(&agentPorts, "agent-ports", "", "agents' port range, START-END (default: the cluster's, 10000-59999)")
	f.StringVar(&node.containerd, "containerd-address", node.containerd, "containerd socket")
	f.StringVar(&node.subnet, "subnet", node.subnet, "IPv4 subnet for the agents")
	f.StringVar(&node.gossipBind, "node-gossip-bind", node.gossipBind, "the node agent's gossip address")
	f.StringVar(&node.serviceBind, "runtime-service-bind", node.serviceBind, "the node agent's AgentRuntimeService address")
	f.StringVar(&node.offlineModel, "offline-model", node.offlineModel, "port of the offline model agents use by default")
	return cmd
}

// devTokensFile holds the tokens dev makes on its first start: readable by
// its owner only, since the store keeps nothing but their hashes.
const devTokensFile = "tokens.env"

// devBootstrap makes, on a fresh data directory, an operator token and a
// tenant token for the org "default", writes them to path, and opens
// dashboard sign-up (a dev cluster is one person's: the invitation-only
// default would only be in the way). Later starts find the cluster
// bootstrapped and leave it as it is.
func devBootstrap(ctx context.Context, apiSrv *api.Server, st *store.Store, path, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	operatorToken, err := apiSrv.Bootstrap(ctx, "dev operator")
	if errors.Is(err, store.ErrConflict) {
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("the dev cluster was bootstrapped but %s is gone; make tokens with an operator token, or start afresh with a new --data-dir", path)
		}
		return nil
	}
	if err != nil {
		return err
	}
	_, tenantToken, err := apiSrv.CreateOrg(ctx, "default", store.Plan{}, "dev")
	if err != nil {
		return err
	}
	cfg, err := st.State().ClusterConfig()
	if err != nil {
		return err
	}
	cfg.Signup = store.SignupOpen
	if _, err := st.Apply(ctx, &store.ClusterConfigSet{Config: cfg}); err != nil {
		return err
	}
	content := fmt.Sprintf(`# agenthost dev: tokens made on first start. The cluster stores only their
# hashes; this file is the one copy. Use: source %s
AGENTHOST_ADDR=%s
AGENTHOST_TOKEN=%s
AGENTHOST_OPERATOR_TOKEN=%s
`, path, addr, tenantToken, operatorToken)
	return os.WriteFile(path, []byte(content), 0o600)
}

// setPortRange sets the cluster's agent port range from "START-END".
func setPortRange(ctx context.Context, s *store.Store, spec string) error {
	var start, end int
	if _, err := fmt.Sscanf(spec, "%d-%d", &start, &end); err != nil {
		return fmt.Errorf("%q: want START-END", spec)
	}
	cfg, err := s.State().ClusterConfig()
	if err != nil {
		return err
	}
	if cfg.PortRangeStart == start && cfg.PortRangeEnd == end {
		return nil
	}
	cfg.PortRangeStart, cfg.PortRangeEnd = start, end
	_, err = s.Apply(ctx, &store.ClusterConfigSet{Config: cfg})
	return err
}
