package store

import (
	"errors"
	"fmt"
)

// Sentinel errors of the store. Appliers wrap them with context (%w), callers
// test with errors.Is, and the REST layer maps them to status codes in one
// place. Each has a stable code (errorCodes) so that an error produced on the
// leader survives forwarding to a follower intact.
var (
	// ErrNotFound: the object the command refers to does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: an object with this id or unique name already exists.
	ErrAlreadyExists = errors.New("already exists")
	// ErrInvalid: the command's fields break a rule (empty name, bad key, ...).
	ErrInvalid = errors.New("invalid")
	// ErrConflict: the object is in a state that forbids the change (for
	// example an org that still owns agents cannot be deleted).
	ErrConflict = errors.New("conflict")
	// ErrAgentLimit: the org's plan allows no more agents (maxAgents).
	ErrAgentLimit = errors.New("agent limit reached for plan")
	// ErrRunningCap: the org's plan allows no more running agents (maxRunning).
	ErrRunningCap = errors.New("concurrent agent cap reached")
	// ErrPortInUse: the port is already held by another agent.
	ErrPortInUse = errors.New("port already in use")
	// ErrPortOutOfRange: the port lies outside the cluster's port range.
	ErrPortOutOfRange = errors.New("port outside the configured range")
	// ErrNodeNotEligible: the node is draining, down or unknown, so it may not
	// receive a placement.
	ErrNodeNotEligible = errors.New("node not eligible for placement")
	// ErrNoCapacity: placing the agent would overcommit the node.
	ErrNoCapacity = errors.New("node capacity exceeded")
	// ErrNoPorts: every port of the cluster's range is held.
	ErrNoPorts = errors.New("no available ports")
	// ErrNoNodeFits: no eligible node has room for the agent.
	ErrNoNodeFits = errors.New("no node has room")
	// ErrStaleNode: a status report came from a node that no longer hosts
	// the agent; it is ignored so that an old copy can never overwrite the
	// live one.
	ErrStaleNode = errors.New("report from a node that does not host the agent")
	// ErrUnknownCommand: the command type is not known to this server.
	ErrUnknownCommand = errors.New("unknown command type")
	// ErrMalformedCommand: the command could not be decoded.
	ErrMalformedCommand = errors.New("malformed command")
	// ErrNoLeader: no leader is known; the cluster is electing or has lost
	// quorum. Retry later.
	ErrNoLeader = errors.New("no cluster leader")
	// ErrNotLeader: this server is not the leader. Returned only by the
	// leader-only entry points that do not forward (see NotLeaderError).
	ErrNotLeader = errors.New("not the leader")
	// ErrOutcomeUnknown: leadership was lost while a write was in flight; it
	// may or may not have been committed. Retry only with an idempotency key.
	ErrOutcomeUnknown = errors.New("write outcome unknown: leadership lost")
	// ErrBehind: this server has not applied, within ApplyTimeout, a write
	// the leader committed: its log does not advance (a full disk, say),
	// so it cannot show a write's result. The error's text says whether the
	// write was committed anyway or refused before anything was written.
	ErrBehind = errors.New("this server is behind the cluster")
	// ErrSnapshotInvalid: a snapshot is truncated, corrupted, foreign or of
	// an unknown format version.
	ErrSnapshotInvalid = errors.New("invalid snapshot")
)

// errorCodes gives each sentinel the stable code used on the wire.
var errorCodes = []struct {
	code string
	err  error
}{
	{"not_found", ErrNotFound},
	{"already_exists", ErrAlreadyExists},
	{"invalid", ErrInvalid},
	{"conflict", ErrConflict},
	{"agent_limit", ErrAgentLimit},
	{"running_cap", ErrRunningCap},
	{"port_in_use", ErrPortInUse},
	{"port_out_of_range", ErrPortOutOfRange},
	{"node_not_eligible", ErrNodeNotEligible},
	{"no_capacity", ErrNoCapacity},
	{"no_ports", ErrNoPorts},
	{"no_node_fits", ErrNoNodeFits},
	{"stale_node", ErrStaleNode},
	{"unknown_command", ErrUnknownCommand},
	{"malformed_command", ErrMalformedCommand},
	{"no_leader", ErrNoLeader},
	{"not_leader", ErrNotLeader},
	{"outcome_unknown", ErrOutcomeUnknown},
	{"snapshot_invalid", ErrSnapshotInvalid},
}

// ErrorCode returns the wire code of err's store sentinel, or "internal" when
// err wraps none.
func ErrorCode(err error) string {
	for _, c := range errorCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "internal"
}

// ErrorFromCode rebuilds an error received over the wire, so that errors.Is
// works on the receiving side exactly as on the leader.
func ErrorFromCode(code, message string) error {
	for _, c := range errorCodes {
		if c.code == code {
			return &remoteError{sentinel: c.err, message: message}
		}
	}
	return errors.New(message)
}

type remoteError struct {
	sentinel error
	message  string
}

func (e *remoteError) Error() string { return e.message }
func (e *remoteError) Unwrap() error { return e.sentinel }

// NotLeaderError tells the caller which server leads, when known, so that it
// can retry there.
type NotLeaderError struct {
	LeaderID      string
	LeaderAddress string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderAddress == "" {
		return "not the leader; no leader known"
	}
	return fmt.Sprintf("not the leader; leader is %s at %s", e.LeaderID, e.LeaderAddress)
}

func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }
