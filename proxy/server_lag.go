package proxy

import (
	"sync"
	"time"

	"github.com/agenthost/agenthost/internal/lag"
)

// serverLag is which control servers have fallen behind the leader, from
// the proxy's status polls (watchLeader): a server that stopped applying the
// log (a full disk) answers reads from a state that no longer moves — new
// tokens unknown, new agents missing — and its route stream sends no new
// routes. The proxy sends such a server no reads and watches no routes
// through it, until it catches up.
type serverLag struct {
	bound time.Duration

	mu       sync.Mutex
	trackers []lag.Tracker  // by index in Config.APIAddrs
	behind   []bool         // by index in Config.APIAddrs
	cluster  map[string]int // a server's cluster address → its index
}

func newServerLag(servers int, bound time.Duration) *serverLag {
	return &serverLag{bound: bound, trackers: make([]lag.Tracker, servers), behind: make([]bool, servers), cluster: map[string]int{}}
}

// serverStatus is what one poll learnt of a server (GET /v1/status).
type serverStatus struct {
	ok           bool
	leader       bool
	appliedIndex uint64
	address      string // its cluster address
}

// observe takes one round of polls, one status per API server.
func (l *serverLag) observe(statuses []serverStatus, now time.Time) {
	var leaderIndex uint64
	for _, st := range statuses {
		if st.ok && st.leader {
			leaderIndex = st.appliedIndex
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, st := range statuses {
		if !st.ok {
			continue // unreachable: the API retry finds another
		}
		if st.address != "" {
			l.cluster[st.address] = i
		}
		l.trackers[i].ServerAt(st.appliedIndex)
		l.trackers[i].LeaderAt(leaderIndex, now)
		_, _, l.behind[i] = l.trackers[i].Behind(now, l.bound)
	}
}

// apiBehind reports whether the server at index i of Config.APIAddrs is
// behind.
func (l *serverLag) apiBehind(i int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.behind[i]
}

// clusterBehind reports whether the server at cluster address addr is
// behind (false while its address is not known yet).
func (l *serverLag) clusterBehind(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	i, ok := l.cluster[addr]
	return ok && l.behind[i]
}
