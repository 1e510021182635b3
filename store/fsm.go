package store

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
)

// FSM is the Raft state machine. Apply is deterministic: the outcome depends
// only on the state and the log entry, never on the clock or on map order.
//
// Concurrency: raft calls Apply, Restore and Snapshot from one goroutine. The
// database pointer is swapped atomically by Restore, so readers holding a
// State keep reading the old, still consistent, database.
type FSM struct {
	logger  *slog.Logger
	metrics *Metrics

	db atomic.Pointer[memdb.MemDB]
	// applied is the index of the last command applied (or restored).
	applied atomic.Uint64

	// appliedCh is closed and replaced after every apply, to wake WaitForIndex.
	appliedMu sync.Mutex
	appliedCh chan struct{}
}

// NewFSM returns an empty state machine. metrics may be nil.
func NewFSM(logger *slog.Logger, metrics *Metrics) *FSM {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &FSM{logger: logger, metrics: metrics, appliedCh: make(chan struct{})}
	f.db.Store(newDB())
	return f
}

func newDB() *memdb.MemDB {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		// The schema is a constant; an error here is a programming error
		// caught by every test.
		panic(fmt.Sprintf("store: invalid memdb schema: %v", err))
	}
	return db
}

// State returns an immutable snapshot of the current state.
func (f *FSM) State() *State {
	return &State{txn: f.db.Load().Txn(false), index: f.applied.Load()}
}

// AppliedIndex is the Raft index of the last command applied to the state.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// WaitForIndex blocks until a command at index or later has been applied, or
// done is closed. It returns false when done closed first.
func (f *FSM) WaitForIndex(index uint64, done <-chan struct{}) bool {
	for {
		f.appliedMu.Lock()
		ch := f.appliedCh
		f.appliedMu.Unlock()
		if f.applied.Load() >= index {
			return true
		}
		select {
		case <-ch:
		case <-done:
			return false
		}
	}
}

func (f *FSM) setApplied(index uint64) {
	f.applied.Store(index)
	f.appliedMu.Lock()
	close(f.appliedCh)
	f.appliedCh = make(chan struct{})
	f.appliedMu.Unlock()
}

// Apply applies one committed log entry. It returns nil on success or the
// error that refused the command; a refused command leaves the state as it was.
func (f *FSM) Apply(l *raft.Log) interface{} {
	err := f.applyCommand(l.Index, l.Data)
	f.setApplied(l.Index)
	if err != nil {
		return err
	}
	return nil
}

func (f *FSM) applyCommand(index uint64, data []byte) error {
	start := time.Now()
	cmd, err := Decode(data)
	if err != nil {
		if errors.Is(err, ErrUnknownCommand) && CommandType(data[0])&IgnoreUnknownFlag != 0 {
			f.logger.Warn("skipping unknown command marked ignorable", "type", data[0], "index", index)
			return nil
		}
		f.logger.Error("refusing command", "index", index, "error", err)
		return err
	}
	txn := f.db.Load().Txn(true)
	err = applyToTxn(txn, index, cmd)
	if err != nil {
		txn.Abort()
	} else {
		txn.Commit()
	}
	f.metrics.observeApply(cmd.CommandType(), err, time.Since(start))
	return err
}

// applyToTxn is the one switch over command types. Each applier validates its
// command against the state in txn and either writes all its changes or
// returns an error (the caller then aborts the transaction).
func applyToTxn(txn *memdb.Txn, index uint64, cmd Command) error {
	switch c := cmd.(type) {
	case *OrgCreate:
		return applyOrgCreate(txn, index, c)
	case *OrgUpdate:
		return applyOrgUpdate(txn, index, c)
	case *OrgDelete:
		return applyOrgDelete(txn, c)
	case *TokenCreate:
		return applyTokenCreate(txn, index, c)
	case *TokenRevoke:
		return applyTokenRevoke(txn, c)
	case *TokenTouch:
		return applyTokenTouch(txn, index, c)
	case *AgentCreate:
		return applyAgentCreate(txn, index, c)
	case *AgentSetDesired:
		return applyAgentSetDesired(txn, index, c)
	case *AgentSetStatus:
		return applyAgentSetStatus(txn, index, c)
	case *AgentDelete:
		return applyAgentDelete(txn, c)
	case *NodeRegister:
		return applyNodeRegister(txn, index, c)
	case *NodeSetStatus:
		return applyNodeSetStatus(txn, index, c)
	case *NodeDelete:
		return applyNodeDelete(txn, c)
	case *ScopeCreate:
		return applyScopeCreate(txn, index, c)
	case *ScopeUpdate:
		return applyScopeUpdate(txn, index, c)
	case *ScopeDelete:
		return applyScopeDelete(txn, index, c)
	case *SecretPut:
		return applySecretPut(txn, index, c)
	case *SecretDelete:
		return applySecretDelete(txn, c)
	case *IdempotencyPut:
		return applyIdempotencyPut(txn, index, c)
	case *IdempotencyDelete:
		return applyIdempotencyDelete(txn, c)
	case *ClusterConfigSet:
		return applyClusterConfigSet(txn, index, c)
	}
	return fmt.Errorf("%w: %s has no applier", ErrUnknownCommand, cmd.CommandType())
}

// Snapshot captures the current database; memdb transactions are immutable,
// so this is a pointer capture, not a copy, and Apply may go on meanwhile.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.metrics.countSnapshot("create")
	return &fsmSnapshot{state: f.State(), metrics: f.metrics}, nil
}

// Restore replaces the state with a snapshot. The snapshot is read completely
// and its checksum verified into a new database before the swap, so a bad
// snapshot leaves the current state untouched.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	db, index, err := readSnapshot(rc)
	if err != nil {
		f.metrics.countSnapshot("restore_failed")
		return err
	}
	f.db.Store(db)
	f.setApplied(index)
	f.metrics.countSnapshot("restore")
	return nil
}

type fsmSnapshot struct {
	state   *State
	metrics *Metrics
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.state); err != nil {
		s.metrics.countSnapshot("persist_failed")
		sink.Cancel()
		return err
	}
	s.metrics.countSnapshot("persist")
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
