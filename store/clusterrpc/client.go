package clusterrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"connectrpc.com/connect"

	"github.com/agenthost/agenthost/internal/h2c"
	clusterv1 "github.com/agenthost/agenthost/proto/agenthost/cluster/v1"
	"github.com/agenthost/agenthost/proto/agenthost/cluster/v1/clusterv1connect"
	"github.com/agenthost/agenthost/store"
)

// Client calls ClusterService on other control nodes. It implements
// store.Forwarder. One HTTP/2 connection per peer carries every concurrent
// call, so forwarding adds no connection set-up per write.
type Client struct {
	httpClient *http.Client
	mu         sync.Mutex
	clients    map[string]clusterv1connect.ClusterServiceClient
}

var _ store.Forwarder = (*Client)(nil)

// NewClient returns a client speaking HTTP/2 without TLS to peers' cluster
// listeners.
func NewClient() *Client {
	return &Client{
		httpClient: h2c.NewClient(),
		clients:    make(map[string]clusterv1connect.ClusterServiceClient),
	}
}

// Close drops idle connections.
func (c *Client) Close() { c.httpClient.CloseIdleConnections() }

func (c *Client) peer(addr string) clusterv1connect.ClusterServiceClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.clients[addr]
	if !ok {
		cl = clusterv1connect.NewClusterServiceClient(c.httpClient, "http://"+addr)
		c.clients[addr] = cl
	}
	return cl
}

// ForwardApply sends an encoded command to the leader at addr.
func (c *Client) ForwardApply(ctx context.Context, addr string, cmd []byte) (uint64, error) {
	resp, err := c.peer(addr).Apply(ctx, connect.NewRequest(&clusterv1.ApplyRequest{Command: cmd}))
	if err != nil {
		if notSent(err) {
			return 0, fmt.Errorf("%w: leader %s unreachable: %v", store.ErrNoLeader, addr, err)
		}
		return 0, fmt.Errorf("%w: forwarding to %s: %v", store.ErrOutcomeUnknown, addr, err)
	}
	m := resp.Msg
	if m.GetErrorCode() != "" {
		return m.GetIndex(), store.ErrorFromCode(m.GetErrorCode(), m.GetErrorMessage())
	}
	return m.GetIndex(), nil
}

// ForwardReadIndex asks the leader at addr for a read index.
func (c *Client) ForwardReadIndex(ctx context.Context, addr string) (uint64, error) {
	resp, err := c.peer(addr).ReadIndex(ctx, connect.NewRequest(&clusterv1.ReadIndexRequest{}))
	if err != nil {
		var cerr *connect.Error
		if errors.As(err, &cerr) && cerr.Meta().Get(errorCodeKey) != "" {
			return 0, fromConnectError(addr, err)
		}
		// A read index changes nothing, so a call lost on the way (the
		// leader killed while answering, say) is retried like one to an
		// unreachable leader instead of failing the read.
		return 0, fmt.Errorf("%w: read index from %s: %v", store.ErrNoLeader, addr, err)
	}
	return resp.Msg.GetIndex(), nil
}

// Join asks the leader at addr to add srv to the cluster.
func (c *Client) Join(ctx context.Context, addr string, srv store.Server) (uint64, error) {
	resp, err := c.peer(addr).Join(ctx, connect.NewRequest(&clusterv1.JoinRequest{
		ServerId: srv.ID, Address: srv.Address, Voter: srv.Voter,
	}))
	if err != nil {
		return 0, fromConnectError(addr, err)
	}
	return resp.Msg.GetIndex(), nil
}

// PeerStatus is a server's Status as seen over ClusterService, with the
// cluster size it was started to bootstrap.
type PeerStatus struct {
	store.Status
	BootstrapExpect int
	GossipAddress   string
}

// Status asks the server at addr for its view of the cluster.
func (c *Client) Status(ctx context.Context, addr string) (PeerStatus, error) {
	resp, err := c.peer(addr).Status(ctx, connect.NewRequest(&clusterv1.StatusRequest{}))
	if err != nil {
		return PeerStatus{}, fromConnectError(addr, err)
	}
	m := resp.Msg
	st := store.Status{
		ServerID: m.GetServerId(), Address: m.GetAddress(), State: m.GetState(),
		LeaderID: m.GetLeaderId(), LeaderAddress: m.GetLeaderAddress(),
		Term: m.GetTerm(), LastIndex: m.GetLastIndex(), CommitIndex: m.GetCommitIndex(),
		AppliedIndex: m.GetAppliedIndex(), HasState: m.GetHasState(),
	}
	for _, srv := range m.GetServers() {
		st.Servers = append(st.Servers, store.Server{ID: srv.GetId(), Address: srv.GetAddress(), Voter: srv.GetVoter()})
	}
	return PeerStatus{Status: st, BootstrapExpect: int(m.GetBootstrapExpect()), GossipAddress: m.GetGossipAddress()}, nil
}

// fromConnectError rebuilds the store sentinel carried in the error's
// metadata; an unreachable peer counts as "no leader" (safe to retry).
func fromConnectError(addr string, err error) error {
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		if code := cerr.Meta().Get(errorCodeKey); code != "" {
			return store.ErrorFromCode(code, cerr.Message())
		}
	}
	if notSent(err) {
		return fmt.Errorf("%w: %s unreachable: %v", store.ErrNoLeader, addr, err)
	}
	return fmt.Errorf("call %s: %w", addr, err)
}

// notSent reports whether err proves the request never reached the peer:
// the connection could not be made at all.
func notSent(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}
