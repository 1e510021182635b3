// Package lag tells whether a control server keeps up with the Raft leader.
// A server that stopped applying the log (a full disk, a partition from the
// leader) goes on answering from the state it has; whoever reads from it —
// a node agent's assignment watch, the edge proxy's route watch and API
// reads — must move to another server instead of waiting for it to recover.
// Node agents and the proxy import it; it imports nothing of agenthost.
package lag

import (
	"sync"
	"time"
)

// Tracker follows one server against the leader: the leader's applied
// indexes as they are learnt (heartbeat answers, status polls) and the
// highest index the server reported. A leader index the server has not
// reached within the bound means it is behind.
//
// Only the oldest unmet leader index counts: the leader's index is learnt
// every second or so, and taking each new one as the target would push the
// deadline forward forever for a server that advances, but too slowly ever
// to catch up. The zero value is ready to use.
type Tracker struct {
	mu      sync.Mutex
	target  uint64    // a leader index the watch has not reached yet (0: none)
	since   time.Time // when the leader named target
	reached uint64    // the highest index the watch's server reported
}

// LeaderAt records the leader's applied index as learnt at now (0, from a
// leader too old to name it, is ignored).
func (l *Tracker) LeaderAt(index uint64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.target == 0 && index > l.reached {
		l.target, l.since = index, now
	}
}

// ServerAt records an index the server reported having applied.
func (l *Tracker) ServerAt(index uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reached = max(l.reached, index)
	if l.target != 0 && l.reached >= l.target {
		l.target = 0
	}
}

// Restart forgets everything, for another server (a watch that moved): it
// gets a whole bound from the next leader index on.
func (l *Tracker) Restart() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.target, l.reached = 0, 0
}

// Behind reports whether the server has trailed a leader index for longer
// than bound at now, and the indexes: the leader's it has not reached, and
// its own.
func (l *Tracker) Behind(now time.Time, bound time.Duration) (target, reached uint64, late bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.target, l.reached, l.target != 0 && now.Sub(l.since) > bound
}
