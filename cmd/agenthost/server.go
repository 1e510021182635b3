package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/agenthost/agenthost/api"
	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// serverOptions are the flags of `agenthost server` (and the settings dev picks).
type serverOptions struct {
	dataDir         string
	name            string
	bind            string
	advertise       string
	httpAddr        string
	bootstrapExpect int
	join            []string
	gossipBind      string
	secretsKeyFile  string
	publicURL       string
	modelsFile      string
	// raftTimeout is Raft's heartbeat and election timeout (the leader
	// lease is half): how soon a dead leader is replaced.
	raftTimeout time.Duration
	// createKeyFile makes the key file when it is missing (dev only: a
	// cluster's servers must share one key file, made once by an operator).
	createKeyFile bool
	// registry, when set, is the one /metrics serves (dev shares it with
	// its node agent and proxy); otherwise the server makes its own.
	registry *prometheus.Registry
}

func newServerCommand() *cobra.Command {
	host, _ := os.Hostname()
	opts := serverOptions{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a control node: Raft member, scheduler, REST API",
		Long: `Run a control node.

A cluster has 3 or 5 servers. Start each with the same --bootstrap-expect and
--join listing the others' cluster addresses; they form the cluster once that
many are reachable. A server restarted with its data directory rejoins on its
own. --bootstrap-expect 1 runs a single-server cluster.`,
		Example: `  agenthost server --data-dir /var/lib/agenthost --name s1 \
    --bind 10.0.0.1:7400 --bootstrap-expect 3 --join 10.0.0.2:7400,10.0.0.3:7400`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServer(cmd.Context(), opts, nil)
		},
	}
	cmd.AddCommand(newBootstrapCommand(), newKeysCommand())
	f := cmd.Flags()
	f.StringVar(&opts.dataDir, "data-dir", "/var/lib/agenthost", "directory for Raft state (created if missing)")
	f.StringVar(&opts.name, "name", host, "this server's id in the cluster; must not change once the data directory exists")
	f.StringVar(&opts.bind, "bind", "127.0.0.1:7400", "cluster address (Raft and internal RPC) to listen on")
	f.StringVar(&opts.advertise, "advertise", "", "cluster address other servers reach this one at (default: --bind)")
	f.StringVar(&opts.httpAddr, "http-addr", "127.0.0.1:7480", "HTTP address for /metrics and /v1/status")
	f.IntVar(&opts.bootstrapExpect, "bootstrap-expect", 1, "servers that form a new cluster: 1, 3 or 5; 0 only joins an existing cluster")
	f.StringSliceVar(&opts.join, "join", nil, "cluster addresses of other servers, comma-separated")
	f.StringVar(&opts.gossipBind, "gossip-bind", "127.0.0.1:7402", "gossip (memberlist) address, TCP and UDP, shared with node agents")
	f.StringVar(&opts.publicURL, "public-url", "", "where users reach agenthost (the edge proxy), e.g. https://agents.example.com; agents get URLs a<port>.<host> (default: http://localhost:<http-addr port>)")
	f.StringVar(&opts.modelsFile, "models-file", "", `JSON file of models added to the catalog: {"models": [{"id": "vllm/qwen", "name": "Qwen", "kind": "openai-compatible", "baseURL": "http://10.0.0.9:8000/v1"}]}`)
	f.DurationVar(&opts.raftTimeout, "raft-timeout", store.DefaultConfig().HeartbeatTimeout,
		"Raft heartbeat and election timeout, the same on every server (the leader lease is half): a dead leader is replaced after 1–2 of these plus an election; shorter fails over sooner but risks needless elections on loaded machines (100ms–10s)")
	f.StringVar(&opts.secretsKeyFile, "secrets-key-file", os.Getenv(keyring.EnvKeyFile),
		"file of the key-encryption keys that seal secrets and agents' runtime passwords (mode 600, the same on every server, never in the data directory's Raft state; env "+keyring.EnvKeyFile+"); without it the server creates no agents and opens nothing sealed")
	return cmd
}

// runServer runs a control node until ctx ends. ready, when not nil, is
// called once the HTTP endpoint is up, with its address.
func runServer(ctx context.Context, opts serverOptions, ready func(httpAddr string, srv *clusterrpc.Server, apiSrv *api.Server)) error {
	logger := slog.Default()
	if t := opts.raftTimeout; t != 0 && (t < 100*time.Millisecond || t > 10*time.Second) {
		return fmt.Errorf("--raft-timeout %s: want 100ms to 10s", t)
	}
	id, err := serverID(opts.dataDir, opts.name)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(hostOf(opts.bind)); ip != nil && ip.IsUnspecified() && opts.advertise == "" {
		return errors.New("--advertise is required when --bind listens on all addresses")
	}
	reg := opts.registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}

	cfg := clusterrpc.DefaultServerConfig()
	cfg.Store.ServerID = id
	if opts.raftTimeout != 0 {
		cfg.Store.HeartbeatTimeout = opts.raftTimeout
		cfg.Store.ElectionTimeout = opts.raftTimeout
		cfg.Store.LeaderLeaseTimeout = opts.raftTimeout / 2
	}
	cfg.Store.DataDir = opts.dataDir
	cfg.Store.AdvertiseAddr = opts.advertise
	cfg.Store.Logger = logger
	cfg.Store.Registerer = reg
	cfg.BindAddr = opts.bind
	cfg.BootstrapExpect = opts.bootstrapExpect
	cfg.Join = opts.join
	if opts.gossipBind != "" {
		cfg.GossipBind = opts.gossipBind
	}
	switch {
	case opts.secretsKeyFile != "" && opts.createKeyFile:
		if cfg.Keyring, err = keyring.LoadOrCreate(opts.secretsKeyFile); err != nil {
			return err
		}
	case opts.secretsKeyFile != "":
		if cfg.Keyring, err = keyring.Load(opts.secretsKeyFile); err != nil {
			return err
		}
	default:
		logger.Warn("no --secrets-key-file: this server creates no agents (it cannot seal their runtime passwords), and opens no secret or runtime password for nodes and proxies")
	}

	srv, err := clusterrpc.StartServer(cfg)
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	if cfg.Keyring != nil {
		go reloadKeyringOnHangup(ctx, srv.Store, cfg.Keyring, opts.secretsKeyFile, logger)
	}

	publicURL, err := resolvePublicURL(opts.publicURL, opts.httpAddr)
	if err != nil {
		return err
	}
	acfg := api.DefaultConfig()
	acfg.Store = srv.Store
	acfg.Keyring = cfg.Keyring
	acfg.PublicURL = publicURL
	acfg.Logger = logger
	acfg.Registerer = reg
	if opts.modelsFile != "" {
		if acfg.Models, err = api.LoadModels(opts.modelsFile); err != nil {
			return err
		}
	}
	apiSrv, err := api.New(acfg)
	if err != nil {
		return err
	}
	go apiSrv.Run(ctx)

	mux := http.NewServeMux()
	mux.Handle("/", apiSrv.Handler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(srv.Store.Status())
	})
	ln, err := net.Listen("tcp", opts.httpAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", opts.httpAddr, err)
	}
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
	go httpSrv.Serve(ln)
	defer httpSrv.Close()

	logger.Info("control node started", "server", id, "cluster_addr", srv.Addr(), "http_addr", ln.Addr().String(), "data_dir", opts.dataDir)
	if ready != nil {
		ready(ln.Addr().String(), srv, apiSrv)
	}
	<-ctx.Done()
	logger.Info("shutting down")
	return nil
}

// reloadKeyringOnHangup re-reads the secrets key file on SIGHUP: the step of
// a key rotation that makes a new first key seal (docs/operations.md).
func reloadKeyringOnHangup(ctx context.Context, s *store.Store, kr *keyring.Keyring, path string, logger *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			// Checked against every acknowledged write: a follower's own
			// state may not have the reseal that made the reload safe yet.
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			st, err := s.ConsistentState(cctx)
			cancel()
			if err != nil {
				logger.Error("secrets key file not reloaded: the state cannot be read up to date (no leader?); send SIGHUP again", "path", path, "error", err)
				continue
			}
			if err := clusterrpc.ReloadKeyring(st, kr, path); err != nil {
				logger.Error("secrets key file not reloaded", "path", path, "error", err)
				continue
			}
			logger.Info("secrets key file reloaded", "path", path, "sealing_key", kr.CurrentID())
		}
	}
}

// serverID returns the id recorded in the data directory, recording name on
// first start. A server's Raft identity must never change under its data.
func serverID(dataDir, name string) (string, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(dataDir, "server-id")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		recorded := strings.TrimSpace(string(b))
		if name != "" && name != recorded {
			return "", fmt.Errorf("data dir %s belongs to server %q, not %q", dataDir, recorded, name)
		}
		return recorded, nil
	case errors.Is(err, os.ErrNotExist):
		if name == "" {
			return "", errors.New("--name is required")
		}
		if err := os.WriteFile(path, []byte(name+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("record server id: %w", err)
		}
		return name, nil
	default:
		return "", fmt.Errorf("read server id: %w", err)
	}
}

// resolvePublicURL parses --public-url, defaulting to localhost on the HTTP
// port: agents are then a<port>.localhost, which browsers resolve without
// any DNS set-up.
func resolvePublicURL(raw, httpAddr string) (*url.URL, error) {
	if raw == "" {
		_, port, err := net.SplitHostPort(httpAddr)
		if err != nil {
			return nil, fmt.Errorf("--http-addr %q: %w", httpAddr, err)
		}
		raw = "http://localhost:" + port
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("--public-url %q: want http(s)://host[:port]", raw)
	}
	return u, nil
}

func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}
