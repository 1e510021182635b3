// Package benchcluster starts the one-server control plane the benchmark
// programs run against: real Raft on disk in dir, loopback addresses, short
// election timeouts, quiet logs, clusterrpc.TestKeyring.
package benchcluster

import (
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/agenthost/agenthost/store/clusterrpc"
)

// Start runs the server and waits until it leads. adjust, when not nil,
// changes the configuration first.
func Start(dir string, adjust func(*clusterrpc.ServerConfig)) (*clusterrpc.Server, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	cfg := clusterrpc.DefaultServerConfig()
	cfg.Store.ServerID = "bench"
	cfg.Store.DataDir = filepath.Join(dir, "control")
	cfg.Store.Logger = slog.New(slog.DiscardHandler)
	cfg.Store.HeartbeatTimeout, cfg.Store.ElectionTimeout, cfg.Store.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	cfg.Listener = ln
	cfg.GossipBind = "127.0.0.1:0"
	// Agents made with clusterrpc.WithTestRuntimePassword open with it.
	cfg.Keyring = clusterrpc.TestKeyring()
	if adjust != nil {
		adjust(cfg)
	}
	srv, err := clusterrpc.StartServer(cfg)
	if err != nil {
		return nil, nil, err
	}
	for !srv.Store.IsLeader() {
		time.Sleep(10 * time.Millisecond)
	}
	return srv, func() { srv.Shutdown() }, nil
}
