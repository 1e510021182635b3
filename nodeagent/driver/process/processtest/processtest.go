// Package processtest runs node agents whose agents are stand-in runtimes:
// the test binary itself, started again by the process driver, answering
// HTTP on the agent's port. Tests that need real node agents and real
// processes, but no containerd and no OpenCode, use it (deploy, test/load,
// test/cluster).
package processtest

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"testing"

	"github.com/agenthost/agenthost/nodeagent"
	"github.com/agenthost/agenthost/nodeagent/driver/process"
	"github.com/prometheus/client_golang/prometheus"
)

// StandInEnv, when set, makes the test binary a stand-in runtime listening
// on 127.0.0.1 at the port it holds.
const StandInEnv = "AGENTHOST_STANDIN_RUNTIME_PORT"

// ServeStandInIfAsked is the first thing of a TestMain: in a process the
// driver started as a stand-in runtime it serves, answering 200 to anything
// (the node agent's health check, requests through the proxy), and never
// returns; otherwise it returns at once.
func ServeStandInIfAsked() {
	port := os.Getenv(StandInEnv)
	if port == "" {
		return
	}
	http.ListenAndServe("127.0.0.1:"+port, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "stand-in runtime: %s", r.URL.Path)
	}))
	os.Exit(1)
}

// StandInCommand is the process driver's command for stand-in runtimes.
func StandInCommand(t testing.TB) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{"env", StandInEnv + "={port}", exe}
}

// NodeConfig is what differs between the node agents tests start.
type NodeConfig struct {
	Name         string
	ControlAddrs []string
	CPUMillis    int64
	MemoryMB     int64
	MaxAgents    int
	// Registerer receives the node agent's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// StartNode runs a node agent with the process driver and stand-in
// runtimes until ctx ends; t's cleanup waits for it and closes the driver.
// The caller's TestMain must call ServeStandInIfAsked.
func StartNode(ctx context.Context, t testing.TB, cfg NodeConfig) *process.Driver {
	t.Helper()
	drv, err := process.New(process.Config{
		Command: StandInCommand(t),
		DataDir: t.TempDir(), LogMaxBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ncfg := nodeagent.DefaultConfig()
	ncfg.ControlAddrs = cfg.ControlAddrs
	ncfg.Name, ncfg.AdvertiseAddr = cfg.Name, "127.0.0.1"
	ncfg.CPUMillis, ncfg.MemoryMB, ncfg.MaxAgents = cfg.CPUMillis, cfg.MemoryMB, cfg.MaxAgents
	ncfg.GossipBind, ncfg.RuntimeServiceBind = "127.0.0.1:0", "127.0.0.1:0"
	ncfg.Runtimes = map[string]nodeagent.Runtime{"opencode": {Image: "stand-in", Port: 4096, HealthPath: "/global/health"}}
	ncfg.Logger = slog.New(slog.DiscardHandler)
	if cfg.Registerer != nil {
		ncfg.Registerer = cfg.Registerer
	}
	node, err := nodeagent.New(ncfg, drv)
	if err != nil {
		drv.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); node.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; drv.Close() })
	return drv
}
