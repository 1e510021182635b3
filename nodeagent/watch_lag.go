package nodeagent

import (
	"sync"
	"time"
)

// watchLag tells whether the assignment watch keeps up with the leader. Any
// control node may serve the watch, and one that stopped applying the log (a
// full disk, a partition from the leader) goes on serving the state it has,
// so agents placed on this node would not start until it recovers. The leader
// names its applied index in every heartbeat answer; the watch's server
// names its own in progress messages. A leader index the watch has not
// reached within the bound means the watch's server is behind.
//
// Only the oldest unmet leader index counts: heartbeats arrive every half
// second, and taking each new one as the target would push the deadline
// forward forever on a watch that advances, but too slowly ever to catch up.
type watchLag struct {
	mu      sync.Mutex
	target  uint64    // a leader index the watch has not reached yet (0: none)
	since   time.Time // when the leader named target
	reached uint64    // the highest index the watch's server reported
}

// leaderAt records the leader's applied index, as a heartbeat answer at now
// named it.
func (l *watchLag) leaderAt(index uint64, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.target == 0 && index > l.reached {
		l.target, l.since = index, now
	}
}

// watchAt records an index the watch's server reported.
func (l *watchLag) watchAt(index uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reached = max(l.reached, index)
	if l.target != 0 && l.reached >= l.target {
		l.target = 0
	}
}

// restart forgets the old watch when a new one opens: its server gets a
// whole bound from the next heartbeat on.
func (l *watchLag) restart() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.target, l.reached = 0, 0
}

// behind reports whether the watch has trailed a leader index for longer
// than bound at now, and which.
func (l *watchLag) behind(now time.Time, bound time.Duration) (target, reached uint64, late bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.target, l.reached, l.target != 0 && now.Sub(l.since) > bound
}
