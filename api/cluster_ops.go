package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/agenthost/agenthost/store"
)

// The operator's control-plane endpoints: the Raft membership and backups.
// Membership changes and restores are the leader's to make; the edge proxy
// sends writes to it, and a follower asked directly answers 421 naming it.

// raftView is GET /api/v1/operator/raft.
type raftView struct {
	// ServerID is the server that answered, LeaderID the leader it knows.
	ServerID string           `json:"serverId"`
	LeaderID string           `json:"leaderId"`
	Servers  []raftServerView `json:"servers"`
	// State is the answering server's own state, by index and hash: servers
	// at the same index agree exactly when their hashes do.
	State store.StateDigest `json:"state"`
	// Restored is the snapshot the answering server last installed, as
	// installed (null: none since it started). After a restore, every
	// server's equals the backup's `snapshot inspect`.
	Restored *store.StateDigest `json:"restored"`
}

type raftServerView struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
	Leader  bool   `json:"leader"`
}

func (s *Server) getRaft(w http.ResponseWriter, _ *http.Request, _ Principal) error {
	st := s.store.Status()
	digest, err := s.store.State().Digest()
	if err != nil {
		return err
	}
	v := raftView{ServerID: st.ServerID, LeaderID: st.LeaderID, Servers: []raftServerView{}, State: digest, Restored: s.store.Restored()}
	for _, srv := range st.Servers {
		v.Servers = append(v.Servers, raftServerView{ID: srv.ID, Address: srv.Address, Voter: srv.Voter, Leader: srv.ID == st.LeaderID})
	}
	return writeJSON(w, http.StatusOK, v)
}

// leaderOnly refuses, with the leader's name, what only the leader does.
func (s *Server) leaderOnly() error {
	if s.store.IsLeader() {
		return nil
	}
	id, _ := s.store.Leader()
	if id == "" {
		return apiError(http.StatusServiceUnavailable, CodeUnavailable, "the cluster has no leader right now; retry shortly")
	}
	return apiError(http.StatusMisdirectedRequest, CodeNotLeader,
		"only the leader (server %s) does this; send it through the edge proxy or to the leader's API address", id)
}

type addRaftServerRequest struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// Voter defaults to true: a server added by an operator is a voter
	// unless asked otherwise.
	Voter *bool `json:"voter"`
}

func (s *Server) addRaftServer(w http.ResponseWriter, r *http.Request, _ Principal) error {
	var req addRaftServerRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.ID == "" || req.Address == "" {
		return apiError(http.StatusBadRequest, CodeInvalidRequest, "id and address (the server's cluster address, host:port) are required")
	}
	if err := s.leaderOnly(); err != nil {
		return err
	}
	voter := req.Voter == nil || *req.Voter
	if _, err := s.store.AddServer(store.Server{ID: req.ID, Address: req.Address, Voter: voter}); err != nil {
		return err
	}
	return s.getRaft(w, r, Principal{})
}

func (s *Server) removeRaftServer(w http.ResponseWriter, r *http.Request, _ Principal) error {
	id := r.PathValue("serverId")
	st := s.store.Status()
	known := false
	for _, srv := range st.Servers {
		known = known || srv.ID == id
	}
	if !known {
		return notFound("server %q is not in the cluster", id)
	}
	if err := s.leaderOnly(); err != nil {
		return err
	}
	if id == st.ServerID {
		// Raft would let the leader remove itself and step down; an
		// operator who means it transfers leadership first.
		return apiError(http.StatusConflict, CodeConflict, "server %s is the leader; stop it (another is elected) or remove it from another leader", id)
	}
	if _, err := s.store.RemoveServer(id); err != nil {
		return err
	}
	return s.getRaft(w, r, Principal{})
}

// saveSnapshot streams a consistent backup of the whole state (store's
// snapshot format, checksummed). Any server answers.
func (s *Server) saveSnapshot(w http.ResponseWriter, r *http.Request, _ Principal) error {
	st, err := s.store.ConsistentState(r.Context())
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="agenthost-%d.snap"`, st.Index()))
	w.Header().Set("X-Agenthost-Index", strconv.FormatUint(st.Index(), 10))
	// Once the first byte is out, a failure can only cut the stream; the
	// checksum at its end makes a cut-off backup fail its restore.
	if err := store.WriteSnapshot(w, st); err != nil {
		s.logger.Warn("snapshot stream broken", "error", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

// snapshotPath saves (GET) and restores (POST) backups.
const snapshotPath = "/api/v1/operator/snapshot"

// maxRestoreBytes bounds a restore's body.
const maxRestoreBytes = 4 << 30

func (s *Server) restoreSnapshot(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if err := s.leaderOnly(); err != nil {
		return err
	}
	info, err := s.store.RestoreSnapshot(r.Context(), http.MaxBytesReader(w, r.Body, maxRestoreBytes))
	if err != nil {
		if errors.Is(err, store.ErrSnapshotInvalid) {
			return apiError(http.StatusBadRequest, CodeInvalidRequest, "not a whole agenthost snapshot: %v", err)
		}
		return err
	}
	return writeJSON(w, http.StatusOK, info)
}
