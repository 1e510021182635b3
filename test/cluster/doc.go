// Package cluster holds the multi-process fault tests (DESIGN.md, Tests,
// item 5): a harness that builds the agenthost binary once and starts real
// processes on loopback — three control servers, two node agents with the
// process driver (stand-in runtimes: the test binary itself), an edge proxy —
// and scenarios that break them on purpose and check that nothing
// acknowledged is lost.
//
// The harness kills (SIGKILL), pauses (SIGSTOP/SIGCONT) and restarts any
// process on its data directory and ports; puts servers' data directories on
// a small tmpfs it can fill (Options.ServerDiskMB); and partitions a server
// from the others (Options.Partitionable: each server runs as a user of its
// own, and nftables rules drop, by that user, its packets to the other
// servers' cluster and gossip ports — on loopback, without network
// namespaces). Tmpfs and partitions need root. It stops only the processes
// it started, by PID.
//
// With Options.ContainerdHosts each node agent runs instead on a Host of its
// own (hosts_test.go): a network namespace the test makes, joined to the
// root one by a veth pair, with its own containerd, the containerd driver
// and CNI networking, so that containers outlive their node agent as in
// production. Host.Crash and Host.Reboot do what a machine's crash and
// reboot do; Host.Cut and Host.Mend take its link down and up. The
// node-death, partitioned-node and whole-cluster-restart scenarios use them.
//
// The linearizability scenarios record every call of eight concurrent
// clients to the agent API while the leader is killed or partitioned, and
// check the history with porcupine against a model of what the API promises
// (linearizability_test.go says how unknown outcomes are kept).
//
// Everything is in _test.go files: nothing imports this package. The short
// scenarios run in `go test ./...`; `make test-faults` runs the longer ones
// (the -faults flag).
package cluster
