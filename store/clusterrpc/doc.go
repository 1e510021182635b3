// Package clusterrpc serves and calls the ClusterService (Connect, package
// proto/agenthost/cluster/v1) that control nodes use among themselves: writes
// forwarded from followers to the leader, read indexes for linearizable reads,
// joins and status. It also assembles a control node's store with its cluster
// listener (Server) and forms or joins the Raft cluster from flags.
//
// It is a thin adapter: the behaviour lives in package store, which never
// imports proto. Imported by cmd/agenthost and by tests that need a cluster.
package clusterrpc
