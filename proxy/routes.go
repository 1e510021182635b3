package proxy

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/agenthost/agenthost/internal/uring"
	routev1 "github.com/agenthost/agenthost/proto/agenthost/route/v1"
	"github.com/agenthost/agenthost/proto/agenthost/route/v1/routev1connect"
)

// route is where one agent is served, as the proxy holds it. Routes are
// replaced, never changed in place, so a request may keep the one it
// looked up while the table moves on.
type route struct {
	agentID     string
	port        int
	nodeAddress string
	status      string
	desired     string
	password    string
	autostart   bool
	nodeDown    bool
	// backendAddr (node address and port) and basicAuth (the runtime's
	// credential as an Authorization value) are made once here rather
	// than on every request.
	backendAddr string
	basicAuth   string
	// poolAddr names the agent's own pool of kept-alive connections
	// (agent ID and port): a connection to an address never serves
	// another agent that comes to have it.
	poolAddr string
	// backendSockaddr is backendAddr for io_uring's connect, nil when the
	// node's address is a name (the goroutine path resolves it then).
	backendSockaddr *uring.Sockaddr
}

func (r *route) running() bool { return r.status == "RUNNING" && r.desired == "running" }

// table is the routing table, held in memory: a request never waits on the
// control plane for it.
type table struct {
	// username is the runtime's basic-auth user.
	username string
	mu       sync.RWMutex
	byPort   map[int]*route
	byID     map[string]*route
	synced   bool
	// changed is closed and replaced on every update, for requests that
	// wait for an agent to start.
	changed chan struct{}
}

func newTable(username string) *table {
	return &table{username: username, byPort: map[int]*route{}, byID: map[string]*route{}, changed: make(chan struct{})}
}

// lookupPort and lookupID are the hot path: a read lock and a map read.
func (t *table) lookupPort(port int) *route {
	t.mu.RLock()
	r := t.byPort[port]
	t.mu.RUnlock()
	return r
}

func (t *table) lookupID(id string) *route {
	t.mu.RLock()
	r := t.byID[id]
	t.mu.RUnlock()
	return r
}

// changes returns a channel closed at the next update.
func (t *table) changes() <-chan struct{} {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.changed
}

// apply takes one message of the route stream.
func (t *table) apply(m *routev1.WatchRoutesResponse) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if m.GetSnapshot() {
		t.byPort, t.byID = map[int]*route{}, map[string]*route{}
		t.synced = true
	}
	for _, r := range m.GetRoutes() {
		if old := t.byID[r.GetAgentId()]; old != nil {
			delete(t.byPort, old.port)
			delete(t.byID, old.agentID)
		}
		if r.GetDeleted() {
			continue
		}
		nr := &route{
			agentID: r.GetAgentId(), port: int(r.GetPort()), nodeAddress: r.GetNodeAddress(), status: r.GetStatus(),
			desired: r.GetDesired(), password: r.GetRuntimePassword(), autostart: r.GetAutostart(), nodeDown: r.GetNodeDown(),
		}
		nr.backendAddr = net.JoinHostPort(nr.nodeAddress, strconv.Itoa(nr.port))
		nr.poolAddr = net.JoinHostPort(nr.agentID, strconv.Itoa(nr.port))
		if ap, err := netip.ParseAddrPort(nr.backendAddr); err == nil {
			nr.backendSockaddr = uring.NewSockaddr(ap)
		}
		nr.basicAuth = "Basic " + base64.StdEncoding.EncodeToString([]byte(t.username+":"+nr.password))
		t.byID[nr.agentID] = nr
		if nr.port != 0 {
			t.byPort[nr.port] = nr
		}
	}
	close(t.changed)
	t.changed = make(chan struct{})
}

func (t *table) size() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byID)
}

func (t *table) isSynced() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.synced
}

// watch keeps the table in step with the control plane: it watches one
// control server and moves to the next when the stream breaks, or when
// behind says the server has fallen behind the leader (its stream would
// send no new routes). Every watch starts with a snapshot, so nothing is
// missed across a reconnect.
func (t *table) watch(ctx context.Context, client *http.Client, controlAddrs []string, behind func(addr string) bool, logger *slog.Logger) {
	backoff := 100 * time.Millisecond
	for i := 0; ctx.Err() == nil; i++ {
		addr := controlAddrs[i%len(controlAddrs)]
		for skip := 0; skip < len(controlAddrs) && behind(addr); skip++ {
			i++
			addr = controlAddrs[i%len(controlAddrs)]
		}
		streamCtx, cancel := context.WithCancelCause(ctx)
		go func() {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-streamCtx.Done():
					return
				case <-tick.C:
				}
				if behind(addr) {
					cancel(errServerBehind)
					return
				}
			}
		}()
		rc := routev1connect.NewRouteServiceClient(client, "http://"+addr)
		stream, err := rc.WatchRoutes(streamCtx, connect.NewRequest(&routev1.WatchRoutesRequest{}))
		if err == nil {
			received := false
			for stream.Receive() {
				if !received {
					logger.Info("watching routes", "control", addr, "routes", len(stream.Msg().GetRoutes()))
					received, backoff = true, 100*time.Millisecond
				}
				t.apply(stream.Msg())
			}
			err = stream.Err()
			stream.Close()
		}
		if cause := context.Cause(streamCtx); errors.Is(cause, errServerBehind) {
			err = cause
		}
		cancel(nil)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("stream ended")
		}
		logger.Warn("route watch broke; trying the next control server", "control", addr, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// errServerBehind ends a route watch on a server behind the leader.
var errServerBehind = errors.New("the control server is behind the leader")
