package clusterrpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/agenthost/agenthost/internal/gossip"
	"github.com/agenthost/agenthost/internal/h2c"
	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/proto/agenthost/cluster/v1/clusterv1connect"
	"github.com/agenthost/agenthost/proto/agenthost/node/v1/nodev1connect"
	"github.com/agenthost/agenthost/proto/agenthost/route/v1/routev1connect"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/placement"
)

// maxMessageBytes bounds one ClusterService request.
const maxMessageBytes = 16 << 20

// ServerConfig configures a control node's store and how it forms or joins
// its cluster.
type ServerConfig struct {
	// Store configures Raft and the state machine. Store.AdvertiseAddr is
	// filled from the listener when empty.
	Store *store.Config
	// BindAddr is the host:port of the cluster listener (Raft and
	// ClusterService). Port 0 picks a free port.
	BindAddr string
	// Listener, when set, is used instead of listening on BindAddr (tests
	// bind every server's port before starting any).
	Listener net.Listener
	// BootstrapExpect is how many servers form a new cluster: 1 bootstraps
	// alone (dev); 3 or 5 wait until that many servers, found through Join,
	// are reachable and then bootstrap together. 0 never bootstraps: the
	// server only joins an existing cluster.
	BootstrapExpect int
	// Join lists other servers' cluster addresses, to find the cluster.
	Join []string
	// JoinRetryInterval is how often cluster forming is retried.
	JoinRetryInterval time.Duration
	// Placement configures the leader's scheduler service.
	Placement placement.Config
	// NodeHeartbeatTTL is how long a node may go without a heartbeat before
	// the leader marks it down.
	NodeHeartbeatTTL time.Duration
	// GossipBind is host:port of this server's memberlist member (port 0
	// picks one); GossipAdvertise, when set, is what others reach it at.
	GossipBind      string
	GossipAdvertise string
	// GossipProbe sets how fast gossip declares a member dead (and the
	// leader marks a dead node down): gossip.DefaultConfig's timings.
	GossipProbe GossipProbe
	// Keyring opens secrets and agents' runtime passwords, to hand nodes
	// their agents' environment and password and proxies the passwords;
	// nil hands out neither.
	Keyring *keyring.Keyring
}

// DefaultServerConfig returns a server configuration with store defaults.
func DefaultServerConfig() *ServerConfig {
	return &ServerConfig{
		Store:             store.DefaultConfig(),
		BindAddr:          "127.0.0.1:7400",
		BootstrapExpect:   1,
		JoinRetryInterval: 250 * time.Millisecond,
		Placement:         placement.DefaultConfig(),
		NodeHeartbeatTTL:  2 * time.Second,
		GossipBind:        "127.0.0.1:7402",
		GossipProbe:       defaultGossipProbe(),
	}
}

// GossipProbe is gossip's failure detection: a probe every Interval,
// answered within Timeout, a suspect declared dead after SuspicionMult
// rounds (internal/gossip).
type GossipProbe struct {
	Interval, Timeout time.Duration
	SuspicionMult     int
}

func defaultGossipProbe() GossipProbe {
	d := gossip.DefaultConfig()
	return GossipProbe{Interval: d.ProbeInterval, Timeout: d.ProbeTimeout, SuspicionMult: d.SuspicionMult}
}

// Validate reports settings that cannot work.
func (c *ServerConfig) Validate() error {
	var errs []error
	if c.Store == nil {
		errs = append(errs, errors.New("store config is required"))
	}
	if c.BindAddr == "" && c.Listener == nil {
		errs = append(errs, errors.New("bind address is required"))
	}
	if c.BootstrapExpect < 0 || c.BootstrapExpect == 2 || c.BootstrapExpect > 7 {
		errs = append(errs, fmt.Errorf("bootstrap-expect %d: use 1 (single server), 3 or 5 (or 0 to only join)", c.BootstrapExpect))
	}
	if c.BootstrapExpect > 1 && len(c.Join) == 0 {
		errs = append(errs, errors.New("bootstrap-expect above 1 needs join addresses to find the other servers"))
	}
	if c.BootstrapExpect == 0 && len(c.Join) == 0 {
		errs = append(errs, errors.New("a server that does not bootstrap needs join addresses"))
	}
	if c.GossipBind == "" {
		errs = append(errs, errors.New("gossip bind address is required"))
	}
	if c.NodeHeartbeatTTL < 100*time.Millisecond {
		errs = append(errs, errors.New("node heartbeat TTL must be at least 100ms"))
	}
	if c.JoinRetryInterval <= 0 {
		errs = append(errs, errors.New("join retry interval must be positive"))
	}
	return errors.Join(errs...)
}

// Server is a running control node: its store, cluster listener and
// ClusterService.
type Server struct {
	cfg      *ServerConfig
	logger   *slog.Logger
	Store    *store.Store
	Client   *Client
	Gossip   *gossip.Member
	listener *store.ClusterListener
	http     *http.Server

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartServer opens the store on a new cluster listener, serves
// ClusterService, and forms or joins the cluster in the background (see
// WaitForLeader).
func StartServer(cfg *ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("server config: %w", err)
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.BindAddr); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", cfg.BindAddr, err)
		}
	}
	if cfg.Store.AdvertiseAddr == "" {
		cfg.Store.AdvertiseAddr = ln.Addr().String()
	}
	cl, err := store.NewClusterListener(ln, cfg.Store.AdvertiseAddr)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("cluster listener: %w", err)
	}
	client := NewClient()
	st, err := store.Open(cfg.Store, cl.RaftLayer(), client)
	if err != nil {
		cl.Close()
		return nil, err
	}
	pcfg := cfg.Placement
	pcfg.Logger = cfg.Store.Logger
	pcfg.Registerer = cfg.Store.Registerer
	if _, err := placement.New(st, pcfg); err != nil {
		st.Shutdown()
		cl.Close()
		return nil, err
	}
	health := NewNodeHealth(st, cfg.NodeHeartbeatTTL, cfg.Store.Logger)
	st.RegisterLeadershipHook(health)
	gcfg := gossip.DefaultConfig()
	gcfg.Name = gossip.ServerPrefix + cfg.Store.ServerID
	gcfg.BindAddr, gcfg.AdvertiseAddr = cfg.GossipBind, cfg.GossipAdvertise
	if p := cfg.GossipProbe; p.Interval > 0 && p.Timeout > 0 && p.SuspicionMult > 0 {
		gcfg.ProbeInterval, gcfg.ProbeTimeout, gcfg.SuspicionMult = p.Interval, p.Timeout, p.SuspicionMult
	}
	gcfg.Logger = cfg.Store.Logger
	gcfg.OnDead = func(name string) {
		if id, ok := strings.CutPrefix(name, gossip.NodePrefix); ok {
			health.GossipDead(id)
		}
	}
	member, err := gossip.Start(gcfg)
	if err != nil {
		st.Shutdown()
		cl.Close()
		return nil, err
	}
	health.ConfirmWith(func(nodeID string) bool { return member.Answers(gossip.NodePrefix + nodeID) })
	mux := http.NewServeMux()
	mux.Handle(routev1connect.NewRouteServiceHandler(NewRouteService(st, cfg.Keyring, cfg.Store.Logger)))
	mux.Handle(nodev1connect.NewNodeServiceHandler(NewNodeService(st, health, member, cfg.Keyring, cfg.Store.Logger), connect.WithReadMaxBytes(maxMessageBytes)))
	// A command is at most a few kilobytes; the bound keeps a bad peer from
	// making the server buffer without limit.
	mux.Handle(clusterv1connect.NewClusterServiceHandler(NewHandler(st, cfg.BootstrapExpect, member.Addr()), connect.WithReadMaxBytes(maxMessageBytes)))
	s := &Server{
		cfg:      cfg,
		logger:   cfg.Store.Logger.With("component", "cluster", "server", cfg.Store.ServerID),
		Store:    st,
		Client:   client,
		Gossip:   member,
		listener: cl,
		http: &http.Server{
			Handler:           mux,
			Protocols:         h2c.ServerProtocols(),
			ReadHeaderTimeout: 10 * time.Second,
		},
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(cl.HTTPListener()); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.logger.Error("cluster service stopped", "error", err)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.formCluster(ctx); err != nil && ctx.Err() == nil {
			s.logger.Error("forming cluster failed", "error", err)
		}
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.gossipJoinLoop(ctx)
	}()
	return s, nil
}

// Addr is the server's advertised cluster address.
func (s *Server) Addr() string { return s.cfg.Store.AdvertiseAddr }

// formCluster makes this server part of a cluster: nothing to do when it has
// Raft state already (a restart); otherwise it bootstraps alone
// (BootstrapExpect 1), joins a cluster that has a leader, or — once
// BootstrapExpect servers without state are reachable — bootstraps with them.
// Every such server computes the same sorted list, so their bootstraps agree.
func (s *Server) formCluster(ctx context.Context) error {
	if s.Store.HasState() {
		s.logger.Info("rejoining cluster from data directory")
		return nil
	}
	if s.cfg.BootstrapExpect == 1 && len(s.cfg.Join) == 0 {
		s.logger.Info("bootstrapping single-server cluster")
		return s.Store.BootstrapSelf()
	}
	self := store.Server{ID: s.cfg.Store.ServerID, Address: s.Addr(), Voter: true}
	ticker := time.NewTicker(s.cfg.JoinRetryInterval)
	defer ticker.Stop()
	for {
		if s.Store.HasState() {
			return nil // a leader added us
		}
		done, err := s.tryFormOnce(ctx, self)
		if done || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

func (s *Server) tryFormOnce(ctx context.Context, self store.Server) (bool, error) {
	peers := []store.Server{self}
	waiting := false
	for _, addr := range s.cfg.Join {
		if addr == self.Address {
			continue
		}
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := s.Client.Status(callCtx, addr)
		cancel()
		if err != nil {
			s.logger.Debug("peer not reachable yet", "peer", addr, "error", err)
			waiting = true
			continue
		}
		if st.ServerID == self.ID {
			continue
		}
		if st.LeaderAddress != "" {
			callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := s.Client.Join(callCtx, st.LeaderAddress, self)
			cancel()
			if err == nil {
				s.logger.Info("joined cluster", "leader", st.LeaderID)
				return true, nil
			}
			s.logger.Warn("join failed; will retry", "leader", st.LeaderAddress, "error", err)
			waiting = true
			continue
		}
		switch {
		case st.HasState:
			waiting = true // a cluster exists but has no leader yet
		case st.BootstrapExpect == 0:
			// A join-only server is not part of the founding set.
		case st.BootstrapExpect != s.cfg.BootstrapExpect:
			s.logger.Error("peer expects a different cluster size; not bootstrapping",
				"peer", addr, "peer_expect", st.BootstrapExpect, "expect", s.cfg.BootstrapExpect)
			waiting = true
		default:
			peers = append(peers, store.Server{ID: st.ServerID, Address: st.Address, Voter: true})
		}
	}
	if waiting || s.cfg.BootstrapExpect == 0 {
		return false, nil
	}
	slices.SortFunc(peers, func(a, b store.Server) int { return strings.Compare(a.ID, b.ID) })
	peers = slices.CompactFunc(peers, func(a, b store.Server) bool { return a.ID == b.ID })
	// Bootstrap only with exactly the expected set, seen whole: every
	// founding server then computes the same list.
	if len(peers) != s.cfg.BootstrapExpect {
		if len(peers) > s.cfg.BootstrapExpect {
			s.logger.Error("more founding servers than bootstrap-expect; not bootstrapping", "found", len(peers), "expect", s.cfg.BootstrapExpect)
		}
		return false, nil
	}
	s.logger.Info("bootstrapping cluster", "servers", len(peers))
	return true, s.Store.Bootstrap(peers)
}

// gossipJoinLoop keeps this server's gossip member joined to the other
// servers': their gossip addresses come from ClusterService.Status of the
// join addresses and of the Raft configuration.
func (s *Server) gossipJoinLoop(ctx context.Context) {
	ticker := time.NewTicker(2 * time.Second)
	defer ticker.Stop()
	for {
		known := map[string]bool{}
		for _, addr := range s.Gossip.Addresses(gossip.ServerPrefix) {
			known[addr] = true
		}
		peers := slices.Clone(s.cfg.Join)
		for _, srv := range s.Store.Status().Servers {
			peers = append(peers, srv.Address)
		}
		var join []string
		for _, addr := range peers {
			if addr == s.Addr() {
				continue
			}
			callCtx, cancel := context.WithTimeout(ctx, time.Second)
			st, err := s.Client.Status(callCtx, addr)
			cancel()
			if err == nil && st.GossipAddress != "" && !known[st.GossipAddress] {
				join = append(join, st.GossipAddress)
			}
		}
		if len(join) > 0 {
			if err := s.Gossip.Join(join); err != nil {
				s.logger.Debug("gossip join failed; will retry", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// Shutdown stops cluster forming, the store and the cluster listener. The
// data directory is left for the next start.
func (s *Server) Shutdown() error {
	s.cancel()
	// Stop serving first, so no forwarded write starts while Raft stops.
	s.http.Close()
	s.Gossip.Leave(time.Second)
	err := s.Store.Shutdown()
	s.listener.Close()
	s.wg.Wait()
	s.Client.Close()
	return err
}
