// Package scheduler places agents on nodes and allocates their ports. It is a
// pure function of a store state snapshot: it reads *store.State and returns a
// plan that the leader commits through the store, whose FSM re-checks it. It
// must not import raft, containerd or net/http.
//
// Built by the "Scheduler" issue; the package exists now so that the layout of
// DESIGN.md holds from the start.
package scheduler
