// Package store is agenthost's Raft-replicated state: orgs, tokens, agents,
// nodes, port assignments, scopes, secrets, idempotency records and cluster
// configuration.
//
// Writes are typed commands (command.go): one type byte followed by a JSON
// payload. Every command is applied by one switch in the FSM (fsm.go), which
// re-checks every invariant at apply time — a port is never held twice, a plan
// cap is never exceeded, a node's capacity is never overcommitted — so a
// decision made on stale state is refused rather than committed. A refused
// command changes nothing.
//
// Readers get immutable snapshots (State) of a go-memdb database; they never
// block writers and never see a half-applied command. Reads are local; a
// linearizable read (Store.ConsistentState) first has the leader confirm its
// leadership with a heartbeat round to a quorum (Store.ReadIndex).
//
// A Store on a follower forwards writes to the leader through a Forwarder (the
// Connect ClusterService, implemented by package store/clusterrpc), so callers
// never need to know which server leads.
//
// # Data directory
//
//	<data-dir>/
//	  server-id              this server's Raft ID, written on first start
//	  raft/raft.db           Raft log and stable store (raft-boltdb/v2)
//	  raft/snapshots/        Raft snapshots (file snapshot store; format in snapshot.go)
//
// Other components add their own entries beside raft/ (keys, TLS material);
// nothing secret is ever written to the Raft log or to snapshots: secrets and
// agents' runtime passwords are stored as ciphertext whose key lives outside
// Raft.
//
// Who may import it: control-plane packages (api, scheduler's caller,
// cmd/agenthost). The scheduler reads *State but must not import raft; the node
// agent and proxy talk to control nodes over RPC and never import store.
package store
