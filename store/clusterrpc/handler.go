package clusterrpc

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	clusterv1 "github.com/agenthost/agenthost/proto/agenthost/cluster/v1"
	"github.com/agenthost/agenthost/proto/agenthost/cluster/v1/clusterv1connect"
	"github.com/agenthost/agenthost/store"
)

// errorCodeKey is the Connect error metadata that carries a store error code,
// so that the caller can rebuild the sentinel (store.ErrorFromCode).
const errorCodeKey = "agenthost-error-code"

// Handler serves ClusterService over a store.
type Handler struct {
	store           *store.Store
	bootstrapExpect int
	gossipAddr      string
}

var _ clusterv1connect.ClusterServiceHandler = (*Handler)(nil)

// NewHandler returns the ClusterService handler for s; bootstrapExpect is
// reported in Status so that peers bootstrap only with servers that agree.
func NewHandler(s *store.Store, bootstrapExpect int, gossipAddr string) *Handler {
	return &Handler{store: s, bootstrapExpect: bootstrapExpect, gossipAddr: gossipAddr}
}

// Apply commits a forwarded command. Outcomes, refusals included, travel in
// the response body; only transport failures are Connect errors.
func (h *Handler) Apply(ctx context.Context, req *connect.Request[clusterv1.ApplyRequest]) (*connect.Response[clusterv1.ApplyResponse], error) {
	index, err := h.store.ApplyLocal(ctx, req.Msg.GetCommand())
	resp := &clusterv1.ApplyResponse{Index: index}
	if err != nil {
		resp.ErrorCode = store.ErrorCode(err)
		resp.ErrorMessage = err.Error()
	}
	return connect.NewResponse(resp), nil
}

// ReadIndex serves the leader's half of a linearizable read.
func (h *Handler) ReadIndex(context.Context, *connect.Request[clusterv1.ReadIndexRequest]) (*connect.Response[clusterv1.ReadIndexResponse], error) {
	index, err := h.store.ReadIndex()
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&clusterv1.ReadIndexResponse{Index: index}), nil
}

// Join adds the calling server to the Raft configuration.
func (h *Handler) Join(_ context.Context, req *connect.Request[clusterv1.JoinRequest]) (*connect.Response[clusterv1.JoinResponse], error) {
	m := req.Msg
	if m.GetServerId() == "" || m.GetAddress() == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("join needs a server id and an address"))
	}
	index, err := h.store.AddServer(store.Server{ID: m.GetServerId(), Address: m.GetAddress(), Voter: m.GetVoter()})
	if err != nil {
		return nil, toConnectError(err)
	}
	return connect.NewResponse(&clusterv1.JoinResponse{Index: index}), nil
}

// Status reports this server's view of the cluster.
func (h *Handler) Status(context.Context, *connect.Request[clusterv1.StatusRequest]) (*connect.Response[clusterv1.StatusResponse], error) {
	st := h.store.Status()
	resp := &clusterv1.StatusResponse{
		ServerId:        st.ServerID,
		Address:         st.Address,
		State:           st.State,
		LeaderId:        st.LeaderID,
		LeaderAddress:   st.LeaderAddress,
		Term:            st.Term,
		LastIndex:       st.LastIndex,
		CommitIndex:     st.CommitIndex,
		AppliedIndex:    st.AppliedIndex,
		HasState:        st.HasState,
		BootstrapExpect: int32(h.bootstrapExpect),
		GossipAddress:   h.gossipAddr,
	}
	for _, srv := range st.Servers {
		resp.Servers = append(resp.Servers, &clusterv1.Server{Id: srv.ID, Address: srv.Address, Voter: srv.Voter})
	}
	return connect.NewResponse(resp), nil
}

func toConnectError(err error) *connect.Error {
	code := connect.CodeInternal
	switch {
	case errors.Is(err, store.ErrNotLeader), errors.Is(err, store.ErrNoLeader):
		code = connect.CodeUnavailable
	case errors.Is(err, store.ErrOutcomeUnknown):
		code = connect.CodeAborted
	case errors.Is(err, store.ErrShutdown):
		code = connect.CodeUnavailable
	case errors.Is(err, store.ErrNotFound):
		code = connect.CodeNotFound // e.g. a heartbeat from a node removed meanwhile: it re-registers
	case errors.Is(err, store.ErrInvalid), errors.Is(err, store.ErrMalformedCommand):
		code = connect.CodeInvalidArgument
	case errors.Is(err, store.ErrStaleNode), errors.Is(err, store.ErrConflict):
		code = connect.CodeFailedPrecondition
	}
	cerr := connect.NewError(code, err)
	cerr.Meta().Set(errorCodeKey, store.ErrorCode(err))
	return cerr
}
