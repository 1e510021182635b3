// Package scheduler places agents on nodes and allocates their ports.
//
// It is pure: Place reads a Cluster (the scheduler's model of nodes, orgs,
// agents and ports) and a batch of requests and returns one Decision per
// request, changing nothing. The leader keeps the Cluster in step with the
// store (package store/placement), commits the decisions as one Raft entry,
// and the store's state machine re-checks every invariant, so a decision made
// on a stale model is refused there and retried.
//
// Node choice visits nodes from a seeded random offset and keeps the best of
// the first SampleSize feasible ones (binpack or spread), so one decision costs
// O(SampleSize) on a cluster with room, whatever its size. Ports come from a
// bitmap with a moving cursor: amortised O(1).
//
// It imports neither raft, containerd nor net/http (deps_test.go), and not
// package store: the caller translates store objects into the types here.
package scheduler
