package clusterrpc

import (
	"context"
	"log/slog"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/agenthost/agenthost/internal/keyring"
	routev1 "github.com/agenthost/agenthost/proto/agenthost/route/v1"
	"github.com/agenthost/agenthost/proto/agenthost/route/v1/routev1connect"
	"github.com/agenthost/agenthost/store"
)

// RouteService streams the routing table to edge proxies: every agent with
// the node that hosts it and its runtime password, opened with the keyring,
// from this server's own state (any server serves it; a proxy watches one
// and moves to another when it goes).
type RouteService struct {
	store   *store.Store
	keyring *keyring.Keyring
	logger  *slog.Logger
}

var _ routev1connect.RouteServiceHandler = (*RouteService)(nil)

// NewRouteService returns the RouteService handler. kr opens agents'
// runtime passwords; with nil, routes carry none.
func NewRouteService(s *store.Store, kr *keyring.Keyring, logger *slog.Logger) *RouteService {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &RouteService{store: s, keyring: kr, logger: logger}
}

// routeTable is the table as of one state.
func routeTable(st *store.State, passwords *runtimePasswords) (map[string]*routev1.Route, error) {
	agents, err := st.Agents()
	if err != nil {
		return nil, err
	}
	nodes, err := st.Nodes()
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*store.Node, len(nodes))
	for _, n := range nodes {
		byID[n.ID] = n
	}
	table := make(map[string]*routev1.Route, len(agents))
	for _, a := range agents {
		r := &routev1.Route{
			AgentId: a.ID, Port: uint32(a.Port), NodeId: a.NodeID, Status: string(a.Status),
			RuntimePassword: passwords.open(a), Autostart: a.Autostart, Desired: string(a.Desired),
		}
		if n := byID[a.NodeID]; n != nil {
			r.NodeAddress = n.Address
			r.NodeDown = n.Status == store.NodeDown
		}
		table[a.ID] = r
	}
	passwords.keepOnly(func(id string) bool { return table[id] != nil })
	return table, nil
}

// WatchRoutes sends the whole table, then the routes that change as the
// state moves on. A watch always starts with a snapshot: the store keeps no
// record of deletions to resume from, and a snapshot replaces all the proxy
// holds, so nothing is missed across a reconnect.
func (r *RouteService) WatchRoutes(ctx context.Context, req *connect.Request[routev1.WatchRoutesRequest], stream *connect.ServerStream[routev1.WatchRoutesResponse]) error {
	var sent map[string]*routev1.Route
	passwords := newRuntimePasswords(r.keyring, r.logger)
	for {
		applied := r.store.AppliedIndex() // before the state: see Store.AppliedIndex
		st := r.store.State()
		table, err := routeTable(st, passwords)
		if err != nil {
			return toConnectError(err)
		}
		resp := &routev1.WatchRoutesResponse{Index: st.Index()}
		if sent == nil {
			resp.Snapshot = true
			for _, route := range table {
				resp.Routes = append(resp.Routes, route)
			}
		} else {
			for id, route := range table {
				if old, ok := sent[id]; !ok || !proto.Equal(old, route) {
					resp.Routes = append(resp.Routes, route)
				}
			}
			for id := range sent {
				if _, ok := table[id]; !ok {
					resp.Routes = append(resp.Routes, &routev1.Route{AgentId: id, Port: sent[id].Port, Deleted: true})
				}
			}
		}
		if resp.Snapshot || len(resp.Routes) > 0 {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		sent = table
		if err := r.store.WaitForIndex(ctx, applied+1); err != nil {
			return nil // the proxy went away
		}
	}
}
