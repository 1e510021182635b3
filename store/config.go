package store

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures one control node's store. Tests tighten the timings
// through it (see TestConfig in testing.go).
type Config struct {
	// ServerID is this server's stable Raft identity. It must stay the same
	// across restarts; it defaults to the host name in cmd/agenthost.
	ServerID string
	// DataDir holds the Raft log, stable store and snapshots (see package doc).
	DataDir string
	// AdvertiseAddr is the host:port other servers use to reach this one's
	// cluster listener (Raft and ClusterService share it).
	AdvertiseAddr string

	// HeartbeatTimeout is how long a follower waits without hearing from
	// the leader before it starts an election.
	HeartbeatTimeout time.Duration
	// ElectionTimeout is how long a candidate waits before a new election.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout is how long a leader stays leader without reaching
	// a quorum; past it, it steps down, so a minority leader stops
	// acknowledging writes.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout bounds how long an idle leader waits before sending
	// heartbeats that carry the commit index.
	CommitTimeout time.Duration
	// SnapshotInterval is how often Raft checks whether to snapshot.
	SnapshotInterval time.Duration
	// SnapshotThreshold is how many log entries trigger a snapshot.
	SnapshotThreshold uint64
	// TrailingLogs is how many entries are kept in the log after a snapshot,
	// so that slightly lagging followers catch up without a snapshot.
	TrailingLogs uint64
	// SnapshotRetain is how many snapshots are kept on disk.
	SnapshotRetain int
	// MaxAppendEntries bounds the entries sent in one append and applied in
	// one batch.
	MaxAppendEntries int

	// ApplyTimeout bounds one write: waiting for a leader, forwarding and
	// commit. A caller's context can shorten it.
	ApplyTimeout time.Duration

	// Logger receives the store's and Raft's logs.
	Logger *slog.Logger
	// Registerer receives the store's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// DefaultConfig returns production settings: Raft's recommended timings for a
// LAN, snapshots every 8192 entries.
func DefaultConfig() *Config {
	return &Config{
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		SnapshotInterval:   120 * time.Second,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
		SnapshotRetain:     3,
		MaxAppendEntries:   64,
		ApplyTimeout:       10 * time.Second,
		Logger:             slog.Default(),
	}
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if c.ServerID == "" {
		errs = append(errs, errors.New("server id is required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if c.AdvertiseAddr == "" {
		errs = append(errs, errors.New("advertise address is required"))
	}
	if c.HeartbeatTimeout < 5*time.Millisecond || c.ElectionTimeout < 5*time.Millisecond {
		errs = append(errs, errors.New("heartbeat and election timeouts must be at least 5ms"))
	}
	if c.LeaderLeaseTimeout <= 0 || c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("leader lease timeout %s must be positive and at most the heartbeat timeout %s", c.LeaderLeaseTimeout, c.HeartbeatTimeout))
	}
	if c.CommitTimeout <= 0 || c.SnapshotInterval <= 0 || c.ApplyTimeout <= 0 {
		errs = append(errs, errors.New("commit timeout, snapshot interval and apply timeout must be positive"))
	}
	if c.SnapshotThreshold == 0 || c.SnapshotRetain < 1 || c.MaxAppendEntries < 1 || c.MaxAppendEntries > 1024 {
		errs = append(errs, errors.New("snapshot threshold and retain must be positive, max append entries 1-1024"))
	}
	if c.Logger == nil {
		errs = append(errs, errors.New("logger is required"))
	}
	return errors.Join(errs...)
}
