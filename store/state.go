package store

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"

	"github.com/hashicorp/go-memdb"
)

// State is an immutable, consistent view of the store at one index. It is
// cheap to take (a memdb read transaction) and safe to use from any goroutine
// for as long as needed. Objects it returns are shared: do not modify them.
//
// Lookups that find nothing return nil (or an empty slice) and no error;
// errors mean the lookup itself failed.
type State struct {
	txn   *memdb.Txn
	index uint64
}

// Index is the Raft index of the last command reflected in this state.
func (s *State) Index() uint64 { return s.index }

// Org returns the org with this id.
func (s *State) Org(id string) (*Org, error) { return getOrg(s.txn, id) }

// OrgByName returns the org with this name.
func (s *State) OrgByName(name string) (*Org, error) {
	return first[*Org](s.txn, tableOrgs, "name", name)
}

// Orgs returns every org, ordered by id.
func (s *State) Orgs() ([]*Org, error) { return all[*Org](s.txn, tableOrgs, "id") }

// Token returns the token with this id.
func (s *State) Token(id string) (*Token, error) {
	return first[*Token](s.txn, tableTokens, "id", id)
}

// TokenByHash returns the token whose SHA-256 hash is hash.
func (s *State) TokenByHash(hash []byte) (*Token, error) {
	return first[*Token](s.txn, tableTokens, "hash", hash)
}

// TokensByOrg returns an org's tokens, ordered by id.
func (s *State) TokensByOrg(orgID string) ([]*Token, error) {
	return all[*Token](s.txn, tableTokens, "org", orgID)
}

// TokensByRole returns every token of a role, ordered by id.
func (s *State) TokensByRole(role TokenRole) ([]*Token, error) {
	return all[*Token](s.txn, tableTokens, "role", string(role))
}

// Agent returns the agent with this id.
func (s *State) Agent(id string) (*Agent, error) {
	return first[*Agent](s.txn, tableAgents, "id", id)
}

// OrgAgent returns the agent with this id if it belongs to the org; another
// org's agent is reported as absent, exactly like a missing one.
func (s *State) OrgAgent(orgID, id string) (*Agent, error) {
	a, err := s.Agent(id)
	if err != nil || a == nil || a.OrgID != orgID {
		return nil, err
	}
	return a, nil
}

// Agents returns every agent, ordered by id.
func (s *State) Agents() ([]*Agent, error) { return all[*Agent](s.txn, tableAgents, "id") }

// AgentsByOrg returns an org's agents, ordered by id.
func (s *State) AgentsByOrg(orgID string) ([]*Agent, error) {
	return all[*Agent](s.txn, tableAgents, "org", orgID)
}

// EachOrgAgentAfter calls fn with an org's agents whose IDs sort after
// after ("" for all), in ID order, until fn returns false.
func (s *State) EachOrgAgentAfter(orgID, after string, fn func(*Agent) bool) error {
	it, err := s.txn.LowerBound(tableAgents, "org_id", orgID, after)
	if err != nil {
		return fmt.Errorf("list agents by org: %w", err)
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		a := raw.(*Agent)
		if a.OrgID != orgID {
			return nil
		}
		if a.ID == after {
			continue
		}
		if !fn(a) {
			return nil
		}
	}
	return nil
}

// AgentsByOrgName returns an org's agents with this name (names need not be unique).
func (s *State) AgentsByOrgName(orgID, name string) ([]*Agent, error) {
	return all[*Agent](s.txn, tableAgents, "org_name", orgID, name)
}

// AgentsByNode returns the agents placed on a node, ordered by id.
func (s *State) AgentsByNode(nodeID string) ([]*Agent, error) {
	return all[*Agent](s.txn, tableAgents, "node", nodeID)
}

// AgentsByScope returns the agents in a scope, ordered by id.
func (s *State) AgentsByScope(scopeID string) ([]*Agent, error) {
	return all[*Agent](s.txn, tableAgents, "scope", scopeID)
}

// AgentByPort returns the agent holding a port.
func (s *State) AgentByPort(port int) (*Agent, error) {
	return first[*Agent](s.txn, tableAgents, "port", port)
}

// Node returns the node with this id.
func (s *State) Node(id string) (*Node, error) { return first[*Node](s.txn, tableNodes, "id", id) }

// NodeByName returns the node with this name.
func (s *State) NodeByName(name string) (*Node, error) {
	return first[*Node](s.txn, tableNodes, "name", name)
}

// Nodes returns every node, ordered by id.
func (s *State) Nodes() ([]*Node, error) { return all[*Node](s.txn, tableNodes, "id") }

// NodeAllocation sums what the agents holding resources on a node reserve.
func (s *State) NodeAllocation(nodeID string) (NodeAllocation, error) {
	return nodeAllocation(s.txn, nodeID, "")
}

// Scope returns the org's scope with this id (another org's scope is absent).
func (s *State) Scope(orgID, id string) (*Scope, error) {
	sc, err := first[*Scope](s.txn, tableScopes, "id", id)
	if err != nil || sc == nil || sc.OrgID != orgID {
		return nil, err
	}
	return sc, nil
}

// ScopeByName returns the org's scope with this name.
func (s *State) ScopeByName(orgID, name string) (*Scope, error) {
	return first[*Scope](s.txn, tableScopes, "org_name", orgID, name)
}

// ScopesByOrg returns an org's scopes, ordered by id.
func (s *State) ScopesByOrg(orgID string) ([]*Scope, error) {
	return all[*Scope](s.txn, tableScopes, "org", orgID)
}

// Secret returns the secret with this org, scope ("" for org-level) and key.
func (s *State) Secret(orgID, scopeID, key string) (*Secret, error) {
	return first[*Secret](s.txn, tableSecrets, "org_scope_key", orgID, scopeID, key)
}

// Secrets returns the secrets of one scope of an org, or the org-level
// secrets when scopeID is "", ordered by key.
func (s *State) Secrets(orgID, scopeID string) ([]*Secret, error) {
	return all[*Secret](s.txn, tableSecrets, "org_scope_key_prefix", orgID, scopeID)
}

// Idempotency returns the record stored for an org's idempotency key.
func (s *State) Idempotency(orgID, key string) (*IdempotencyRecord, error) {
	return first[*IdempotencyRecord](s.txn, tableIdempotency, "id", orgID, key)
}

// ClusterConfig returns the cluster configuration in force.
func (s *State) ClusterConfig() (ClusterConfig, error) { return clusterConfig(s.txn) }

// StateDigest names a state by its index and hash, as operators compare
// them: servers at the same index hold the same state exactly when their
// hashes are equal, and a backup's hash (InspectSnapshot) is the restored
// state's (FSM.Restored).
type StateDigest struct {
	// Index is the last command that changed the state.
	Index uint64 `json:"index"`
	// Hash is State.Hash, in hex.
	Hash string `json:"hash"`
}

// Digest is the state's index and hash.
func (s *State) Digest() (StateDigest, error) {
	h, err := s.Hash()
	if err != nil {
		return StateDigest{}, err
	}
	return StateDigest{Index: s.index, Hash: fmt.Sprintf("%x", h)}, nil
}

// Hash is a digest of the whole state: every row of every table, the
// index row (the last command that changed it) included, so two states
// hash alike only at the same index. Nothing is left out — not when a token
// was last used nor when a node was last seen, which change as soon as a
// restored cluster serves requests: a restore is checked against the state
// as installed (FSM.Restored), before anything could change it, and a hash
// that skipped fields would call states equal that are not.
func (s *State) Hash() ([32]byte, error) {
	h := sha256.New()
	err := s.each(func(table string, obj any) error {
		b, err := json.Marshal(obj)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", table, len(b))
		h.Write(b)
		return nil
	})
	var sum [32]byte
	if err != nil {
		return sum, fmt.Errorf("hash state: %w", err)
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// each visits every object of every table, in tableOrder and id order.
func (s *State) each(fn func(table string, obj any) error) error {
	for _, table := range tableOrder {
		it, err := s.txn.Get(table, "id")
		if err != nil {
			return fmt.Errorf("iterate %s: %w", table, err)
		}
		for obj := it.Next(); obj != nil; obj = it.Next() {
			if err := fn(table, obj); err != nil {
				return err
			}
		}
	}
	return nil
}

// Account returns the account with this id.
func (s *State) Account(id string) (*Account, error) {
	return first[*Account](s.txn, tableAccounts, "id", id)
}

// AccountByEmail returns the account signed in with email (lower-case).
func (s *State) AccountByEmail(email string) (*Account, error) {
	return first[*Account](s.txn, tableAccounts, "email", email)
}

// Accounts returns every account, ordered by id.
func (s *State) Accounts() ([]*Account, error) {
	return all[*Account](s.txn, tableAccounts, "id")
}

// Invitations returns every invitation, ordered by id.
func (s *State) Invitations() ([]*Invitation, error) {
	return all[*Invitation](s.txn, tableInvitations, "id")
}

// Invitation returns the invitation with this id.
func (s *State) Invitation(id string) (*Invitation, error) {
	return first[*Invitation](s.txn, tableInvitations, "id", id)
}

// AccountsByOrg returns an org's accounts, ordered by id.
func (s *State) AccountsByOrg(orgID string) ([]*Account, error) {
	return all[*Account](s.txn, tableAccounts, "org", orgID)
}

// WebSessionByHash returns the session whose cookie hashes to hash (hex
// SHA-256), expired or not: the caller compares ExpiresAt with its clock.
func (s *State) WebSessionByHash(hash string) (*WebSession, error) {
	return first[*WebSession](s.txn, tableWebSessions, "hash", hash)
}

// InvitationByHash returns the invitation whose code hashes to hash.
func (s *State) InvitationByHash(hash string) (*Invitation, error) {
	return first[*Invitation](s.txn, tableInvitations, "hash", hash)
}

// InvitationsByOrg returns the invitations into an org, ordered by id.
func (s *State) InvitationsByOrg(orgID string) ([]*Invitation, error) {
	return all[*Invitation](s.txn, tableInvitations, "org", orgID)
}

// WebSessions returns every session, ordered by id.
func (s *State) WebSessions() ([]*WebSession, error) {
	return all[*WebSession](s.txn, tableWebSessions, "id")
}
