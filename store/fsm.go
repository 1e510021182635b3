package store

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
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

	changes atomic.Pointer[changeHandlerBox]

	// restored is the last snapshot Restore installed (nil: none since
	// this server started).
	restored atomic.Pointer[StateDigest]
}

type changeHandlerBox struct{ h ChangeHandler }

// Change is one object a command created, changed or deleted: Before is nil
// for a creation, After is nil for a deletion. Both are the store's shared,
// immutable objects: *Org, *Token, *Agent, *Node, *Scope, *Secret,
// *IdempotencyRecord or *ClusterConfig.
type Change struct {
	Before, After any
}

// ChangeHandler follows the state as it changes, to keep a derived model
// (the scheduler's) in step without rebuilding it. It is called on the FSM's
// goroutine, in log order, after each command commits: it must be quick and
// must not call back into the store's write path.
type ChangeHandler interface {
	// StateChanged reports the changes of the command at index.
	StateChanged(index uint64, changes []Change)
	// StateReset reports that the whole state was replaced (a snapshot was
	// restored); the handler must rebuild from State.
	StateReset()
}

// SetChangeHandler installs h (nil removes it).
func (f *FSM) SetChangeHandler(h ChangeHandler) {
	if h == nil {
		f.changes.Store(nil)
		return
	}
	f.changes.Store(&changeHandlerBox{h: h})
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
	txn := f.db.Load().Txn(false)
	st := &State{txn: txn}
	if row, err := first[*indexRow](txn, tableIndex, "id", indexRowID); err == nil && row != nil {
		st.index = row.Index
	}
	return st
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
// PlanApply commands return a *PlanResult instead, with one outcome per item.
func (f *FSM) Apply(l *raft.Log) interface{} {
	result, err := f.applyCommand(l.Index, l.Data)
	f.setApplied(l.Index)
	if err != nil {
		return err
	}
	return result
}

func (f *FSM) applyCommand(index uint64, data []byte) (any, error) {
	start := time.Now()
	cmd, err := Decode(data)
	if err != nil {
		if errors.Is(err, ErrUnknownCommand) && CommandType(data[0])&IgnoreUnknownFlag != 0 {
			f.logger.Warn("skipping unknown command marked ignorable", "type", data[0], "index", index)
			return nil, nil
		}
		f.logger.Error("refusing command", "index", index, "error", err)
		return nil, err
	}
	txn := f.db.Load().Txn(true)
	txn.TrackChanges()
	result, err := applyToTxn(txn, index, cmd)
	var changes memdb.Changes
	if err == nil {
		// A command that changed nothing leaves the index alone too, so
		// that a no-op is invisible to readers and to State.Hash.
		if changes = txn.Changes(); len(changes) > 0 {
			err = txn.Insert(tableIndex, &indexRow{ID: indexRowID, Index: index})
		}
	}
	if err != nil {
		txn.Abort()
		f.metrics.observeApply(cmd.CommandType(), err, time.Since(start))
		return nil, err
	}
	txn.Commit()
	f.metrics.observeApply(cmd.CommandType(), nil, time.Since(start))
	f.notifyChanges(index, changes)
	return result, nil
}

func (f *FSM) notifyChanges(index uint64, raw memdb.Changes) {
	box := f.changes.Load()
	if box == nil {
		return
	}
	changes := make([]Change, 0, len(raw))
	for _, c := range raw {
		switch c.Table {
		case tableIndex, tableOrgUsage, tableNodeUsage:
			continue // internal rows
		}
		changes = append(changes, Change{Before: publicObject(c.Before), After: publicObject(c.After)})
	}
	// The change is committed whatever the handler does. A handler that
	// panics (a bug in the scheduler's model, say) must not take the
	// server down with it: every server would then crash on the same entry
	// and again on replay. It is told to start over instead.
	defer func() {
		if v := recover(); v != nil {
			f.logger.Error("change handler panicked; it starts over from the state", "index", index, "panic", v, "stack", string(debug.Stack()))
			box.h.StateReset()
		}
	}()
	box.h.StateChanged(index, changes)
}

// publicObject hides the store's internal row types from change handlers.
func publicObject(obj any) any {
	if row, ok := obj.(*configRow); ok {
		cfg := row.Config
		return &cfg
	}
	return obj
}

// applyToTxn is the one switch over command types. Each applier validates its
// command against the state in txn and either writes all its changes or
// returns an error (the caller then aborts the transaction).
func applyToTxn(txn *memdb.Txn, index uint64, cmd Command) (any, error) {
	switch c := cmd.(type) {
	case *PlanApply:
		return applyPlan(txn, index, c)
	case *OrgCreate:
		return nil, applyOrgCreate(txn, index, c)
	case *OrgUpdate:
		return nil, applyOrgUpdate(txn, index, c)
	case *OrgDelete:
		return nil, applyOrgDelete(txn, c)
	case *TokenCreate:
		return nil, applyTokenCreate(txn, index, c)
	case *TokenRevoke:
		return nil, applyTokenRevoke(txn, c)
	case *TokenTouch:
		return nil, applyTokenTouch(txn, index, c)
	case *AgentCreate:
		return nil, applyAgentCreate(txn, index, c)
	case *AgentSetDesired:
		return nil, applyAgentSetDesired(txn, index, c)
	case *AgentSetStatus:
		return nil, applyAgentSetStatus(txn, index, c)
	case *AgentDelete:
		return nil, applyAgentDelete(txn, c)
	case *AgentSetRuntimePassword:
		return nil, applyAgentSetRuntimePassword(txn, index, c)
	case *NodeRegister:
		return nil, applyNodeRegister(txn, index, c)
	case *NodeSetStatus:
		return nil, applyNodeSetStatus(txn, index, c)
	case *NodeDelete:
		return nil, applyNodeDelete(txn, c)
	case *ScopeCreate:
		return nil, applyScopeCreate(txn, index, c)
	case *ScopeUpdate:
		return nil, applyScopeUpdate(txn, index, c)
	case *ScopeDelete:
		return nil, applyScopeDelete(txn, index, c)
	case *SecretPut:
		return nil, applySecretPut(txn, index, c)
	case *SecretDelete:
		return nil, applySecretDelete(txn, c)
	case *IdempotencyPut:
		return nil, applyIdempotencyPut(txn, index, c)
	case *IdempotencyDelete:
		return nil, applyIdempotencyDelete(txn, c)
	case *ClusterConfigSet:
		return nil, applyClusterConfigSet(txn, index, c)
	case *AccountCreate:
		return nil, applyAccountCreate(txn, index, c)
	case *AccountDelete:
		return nil, applyAccountDelete(txn, c)
	case *WebSessionCreate:
		return nil, applyWebSessionCreate(txn, c)
	case *WebSessionDelete:
		return nil, applyWebSessionDelete(txn, c)
	case *WebSessionsExpire:
		return nil, applyWebSessionsExpire(txn, c)
	case *InvitationCreate:
		return nil, applyInvitationCreate(txn, c)
	case *InvitationDelete:
		return nil, applyInvitationDelete(txn, c)
	case *AccountSetOperator:
		return nil, applyAccountSetOperator(txn, index, c)
	case *Noop:
		return nil, nil
	}
	return nil, fmt.Errorf("%w: %s has no applier", ErrUnknownCommand, cmd.CommandType())
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
	// Hashed now, before any command can change it: a restore's check is
	// that every server installed exactly the backup (see Restored).
	h, err := (&State{txn: db.Txn(false), index: index}).Hash()
	if err != nil {
		f.metrics.countSnapshot("restore_failed")
		return err
	}
	f.restored.Store(&StateDigest{Index: index, Hash: fmt.Sprintf("%x", h)})
	f.db.Store(db)
	f.setApplied(index)
	f.metrics.countSnapshot("restore")
	if box := f.changes.Load(); box != nil {
		box.h.StateReset()
	}
	return nil
}

// Restored is the state this server last installed from a snapshot — a
// restored backup, the leader's snapshot sent to a lagging follower, or its
// own at start — as it was before any command changed it; nil when it has
// installed none since it started.
func (f *FSM) Restored() *StateDigest { return f.restored.Load() }

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
