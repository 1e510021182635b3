package store

import (
	"encoding/json"
	"fmt"
	"time"
)

// CommandType numbers a Raft command. The numbers are part of the on-disk log
// format: never renumber or reuse one; add new types at the end.
type CommandType uint8

const (
	CmdOrgCreate               CommandType = 1
	CmdOrgUpdate               CommandType = 2
	CmdOrgDelete               CommandType = 3
	CmdTokenCreate             CommandType = 4
	CmdTokenRevoke             CommandType = 5
	CmdTokenTouch              CommandType = 6
	CmdAgentCreate             CommandType = 7
	CmdAgentSetDesired         CommandType = 8
	CmdAgentSetStatus          CommandType = 9
	CmdAgentDelete             CommandType = 10
	CmdNodeRegister            CommandType = 11
	CmdNodeSetStatus           CommandType = 12
	CmdNodeDelete              CommandType = 13
	CmdScopeCreate             CommandType = 14
	CmdScopeUpdate             CommandType = 15
	CmdScopeDelete             CommandType = 16
	CmdSecretPut               CommandType = 17
	CmdSecretDelete            CommandType = 18
	CmdIdempotencyPut          CommandType = 19
	CmdIdempotencyDelete       CommandType = 20
	CmdClusterConfigSet        CommandType = 21
	CmdPlanApply               CommandType = 22
	CmdAgentSetRuntimePassword CommandType = 23
	// CmdNoop changes nothing; it only moves every server's applied index
	// on (after a restore). Older servers may skip it.
	CmdNoop CommandType = 24 | IgnoreUnknownFlag

	CmdAccountCreate      CommandType = 25
	CmdAccountDelete      CommandType = 26
	CmdWebSessionCreate   CommandType = 27
	CmdWebSessionDelete   CommandType = 28
	CmdInvitationCreate   CommandType = 29
	CmdInvitationDelete   CommandType = 30
	CmdWebSessionsExpire  CommandType = 31
	CmdAccountSetOperator CommandType = 32
)

// IgnoreUnknownFlag may be set on a command type that older servers can safely
// skip. An unknown type without the flag is refused with ErrUnknownCommand
// (and logged): servers must be upgraded before a new command is proposed.
const IgnoreUnknownFlag CommandType = 0x80

var commandNames = map[CommandType]string{
	CmdOrgCreate: "org_create", CmdOrgUpdate: "org_update", CmdOrgDelete: "org_delete",
	CmdTokenCreate: "token_create", CmdTokenRevoke: "token_revoke", CmdTokenTouch: "token_touch",
	CmdAgentCreate: "agent_create", CmdAgentSetDesired: "agent_set_desired",
	CmdAgentSetStatus: "agent_set_status", CmdAgentDelete: "agent_delete",
	CmdNodeRegister: "node_register", CmdNodeSetStatus: "node_set_status", CmdNodeDelete: "node_delete",
	CmdScopeCreate: "scope_create", CmdScopeUpdate: "scope_update", CmdScopeDelete: "scope_delete",
	CmdSecretPut: "secret_put", CmdSecretDelete: "secret_delete",
	CmdIdempotencyPut: "idempotency_put", CmdIdempotencyDelete: "idempotency_delete",
	CmdClusterConfigSet: "cluster_config_set", CmdPlanApply: "plan_apply",
	CmdAgentSetRuntimePassword: "agent_set_runtime_password",
	CmdNoop:                    "noop",
	CmdAccountCreate:           "account_create", CmdAccountDelete: "account_delete",
	CmdWebSessionCreate: "web_session_create", CmdWebSessionDelete: "web_session_delete",
	CmdWebSessionsExpire: "web_sessions_expire",
	CmdInvitationCreate:  "invitation_create", CmdInvitationDelete: "invitation_delete",
	CmdAccountSetOperator: "account_set_operator",
}

func (t CommandType) String() string {
	if n, ok := commandNames[t]; ok {
		return n
	}
	return fmt.Sprintf("unknown(%d)", uint8(t))
}

// Command is a typed store write.
type Command interface {
	CommandType() CommandType
}

// Encode turns a command into its log form: the type byte, then JSON.
func Encode(c Command) ([]byte, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", c.CommandType(), err)
	}
	buf := make([]byte, 0, len(payload)+1)
	buf = append(buf, byte(c.CommandType()))
	return append(buf, payload...), nil
}

// newCommand returns an empty command of type t, or nil when t is unknown.
func newCommand(t CommandType) Command {
	switch t {
	case CmdOrgCreate:
		return &OrgCreate{}
	case CmdOrgUpdate:
		return &OrgUpdate{}
	case CmdOrgDelete:
		return &OrgDelete{}
	case CmdTokenCreate:
		return &TokenCreate{}
	case CmdTokenRevoke:
		return &TokenRevoke{}
	case CmdTokenTouch:
		return &TokenTouch{}
	case CmdAgentCreate:
		return &AgentCreate{}
	case CmdAgentSetDesired:
		return &AgentSetDesired{}
	case CmdAgentSetStatus:
		return &AgentSetStatus{}
	case CmdAgentDelete:
		return &AgentDelete{}
	case CmdNodeRegister:
		return &NodeRegister{}
	case CmdNodeSetStatus:
		return &NodeSetStatus{}
	case CmdNodeDelete:
		return &NodeDelete{}
	case CmdScopeCreate:
		return &ScopeCreate{}
	case CmdScopeUpdate:
		return &ScopeUpdate{}
	case CmdScopeDelete:
		return &ScopeDelete{}
	case CmdSecretPut:
		return &SecretPut{}
	case CmdSecretDelete:
		return &SecretDelete{}
	case CmdIdempotencyPut:
		return &IdempotencyPut{}
	case CmdIdempotencyDelete:
		return &IdempotencyDelete{}
	case CmdClusterConfigSet:
		return &ClusterConfigSet{}
	case CmdPlanApply:
		return &PlanApply{}
	case CmdNoop:
		return &Noop{}
	case CmdAgentSetRuntimePassword:
		return &AgentSetRuntimePassword{}
	case CmdAccountCreate:
		return &AccountCreate{}
	case CmdAccountDelete:
		return &AccountDelete{}
	case CmdWebSessionCreate:
		return &WebSessionCreate{}
	case CmdWebSessionDelete:
		return &WebSessionDelete{}
	case CmdWebSessionsExpire:
		return &WebSessionsExpire{}
	case CmdInvitationCreate:
		return &InvitationCreate{}
	case CmdInvitationDelete:
		return &InvitationDelete{}
	case CmdAccountSetOperator:
		return &AccountSetOperator{}
	}
	return nil
}

// Decode parses a command in log form. It never panics: an empty buffer, an
// unknown type or a payload that is not valid JSON for the type is an error.
func Decode(buf []byte) (Command, error) {
	if len(buf) == 0 {
		return nil, fmt.Errorf("%w: empty command", ErrMalformedCommand)
	}
	t := CommandType(buf[0])
	c := newCommand(t)
	if c == nil {
		return nil, fmt.Errorf("%w: %d", ErrUnknownCommand, buf[0])
	}
	if err := json.Unmarshal(buf[1:], c); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformedCommand, t, err)
	}
	return c, nil
}

// OrgCreate creates an org with its plan.
type OrgCreate struct {
	Org Org `json:"org"`
}

// OrgUpdate renames an org or changes its plan. Lowering a cap below current
// use is allowed: existing agents stay, new ones are refused.
type OrgUpdate struct {
	ID           string  `json:"id"`
	Name         *string `json:"name,omitempty"`
	Plan         *Plan   `json:"plan,omitempty"`
	DefaultModel *string `json:"defaultModel,omitempty"`
}

// OrgDelete deletes an org with its tokens, scopes, secrets and idempotency
// records. It is refused while the org owns agents.
type OrgDelete struct {
	ID string `json:"id"`
}

// TokenCreate stores a new token (its hash, never the token).
type TokenCreate struct {
	Token Token `json:"token"`
	// Bootstrap makes the command a cluster's first operator token: it is
	// refused with ErrConflict when any operator token exists, so that of
	// two racing bootstraps exactly one wins.
	Bootstrap bool `json:"bootstrap,omitempty"`
}

// TokenRevoke deletes a token; requests bearing it are refused from then on.
type TokenRevoke struct {
	ID string `json:"id"`
}

// TokenTouch records when tokens were last used. Proposers batch many tokens
// into one command; unknown ids are skipped (the token may have been revoked
// since), and a time earlier than the stored one is ignored.
type TokenTouch struct {
	LastUsed map[string]time.Time `json:"lastUsed"`
}

// AgentCreate creates an agent already placed on a node with a port, as the
// scheduler decided. The FSM re-checks the plan caps, the port and the node's
// capacity.
type AgentCreate struct {
	Agent Agent `json:"agent"`
}

// AgentSetDesired starts or stops an agent. Starting re-checks the org's
// running cap and the node's capacity.
type AgentSetDesired struct {
	ID      string       `json:"id"`
	Desired DesiredState `json:"desired"`
	// Status, when set, replaces the observed status in the same step
	// (e.g. PROVISIONING on start), so readers never see a stale RUNNING.
	Status AgentStatus `json:"status,omitempty"`
}

// AgentSetStatus records the status a node agent observed. A report from a
// node other than the agent's is refused with ErrStaleNode, unless FromNode is
// empty (the leader reporting on a lost node's behalf).
type AgentSetStatus struct {
	ID       string      `json:"id"`
	FromNode string      `json:"fromNode,omitempty"`
	Status   AgentStatus `json:"status"`
	ErrorMsg string      `json:"errorMsg,omitempty"`
}

// AgentDelete deletes an agent and frees its port.
type AgentDelete struct {
	ID string `json:"id"`
}

// AgentSetRuntimePassword replaces an agent's sealed runtime password with
// Sealed, sealed under KeyID: the same password re-sealed under another key,
// during a key rotation. It applies only to the agent as it was read: if the
// agent is gone it is refused with ErrNotFound (it is never made again), and
// if its sealed password is no longer IfSealed under IfKeyID, with
// ErrConflict.
type AgentSetRuntimePassword struct {
	ID       string `json:"id"`
	Sealed   []byte `json:"sealed"`
	KeyID    string `json:"keyId"`
	IfSealed []byte `json:"ifSealed,omitempty"`
	IfKeyID  string `json:"ifKeyId,omitempty"`
}

// NodeRegister adds a node or updates its address, capacity, labels and
// runtimes. A draining node stays draining; a down node comes back ready.
type NodeRegister struct {
	Node Node `json:"node"`
}

// NodeSetStatus changes a node's status (drain, undrain, down).
type NodeSetStatus struct {
	ID       string     `json:"id"`
	Status   NodeStatus `json:"status"`
	LastSeen time.Time  `json:"lastSeen,omitempty"`
	// Drain, with Status NodeDraining, says what happens to the node's
	// agents (nil: they stay). Any other status clears it.
	Drain *NodeDrain `json:"drain,omitempty"`
}

// NodeDelete removes a node for good. It is refused while agents are placed on it.
type NodeDelete struct {
	ID string `json:"id"`
}

// ScopeCreate creates a scope; names are unique within an org.
type ScopeCreate struct {
	Scope Scope `json:"scope"`
}

// ScopeUpdate renames a scope or changes its description.
type ScopeUpdate struct {
	ID          string    `json:"id"`
	OrgID       string    `json:"orgId"`
	Name        *string   `json:"name,omitempty"`
	Description *string   `json:"description,omitempty"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// ScopeDelete deletes a scope. Its agents and secrets become org-level. When
// an org-level secret with the same key already exists, the org-level secret
// is kept and the scope's copy is dropped, so that no unscoped agent's
// environment changes as a side effect.
type ScopeDelete struct {
	ID    string `json:"id"`
	OrgID string `json:"orgId"`
}

// SecretPut creates or replaces the secret with this org, scope and key. When
// one exists, its id and CreatedAt are kept and the ciphertext replaced.
type SecretPut struct {
	Secret Secret `json:"secret"`
	// IfModifyIndex, when set, applies the put only to the secret as it was
	// at that index (ErrConflict if it changed since, ErrNotFound if it is
	// gone): re-sealing must never put back a value a tenant replaced.
	IfModifyIndex uint64 `json:"ifModifyIndex,omitempty"`
}

// SecretDelete deletes the secret with this org, scope and key.
type SecretDelete struct {
	OrgID   string `json:"orgId"`
	ScopeID string `json:"scopeId,omitempty"`
	Key     string `json:"key"`
}

// IdempotencyPut stores the response to a mutating request, or claims the
// key for a request about to run (StatusCode 0). A record that already exists
// for the key is kept — the first answer wins — except that the claim's owner
// may complete it, and a claim that expired may be taken over.
type IdempotencyPut struct {
	Record IdempotencyRecord `json:"record"`
}

// IdempotencyDelete removes records that expired before Before; or, with
// Key set, releases the claim that Owner holds on OrgID's Key (its request
// failed in a way a retry should run again).
type IdempotencyDelete struct {
	Before time.Time `json:"before"`
	OrgID  string    `json:"orgId,omitempty"`
	Key    string    `json:"key,omitempty"`
	Owner  string    `json:"owner,omitempty"`
}

// ClusterConfigSet replaces the cluster configuration. A non-zero
// ExpectedModifyIndex makes it conditional on the configuration being the
// one read (ErrConflict otherwise), so that two operators changing
// different settings at once do not undo each other.
type ClusterConfigSet struct {
	Config              ClusterConfig `json:"config"`
	ExpectedModifyIndex uint64        `json:"expectedModifyIndex,omitempty"`
}

// PlanOp is what one plan item does.
type PlanOp string

const (
	// PlanCreate creates Agent, placed by the scheduler.
	PlanCreate PlanOp = "create"
	// PlanStart starts AgentID on NodeID (its own node, or another one when
	// its own cannot run it), keeping its port.
	PlanStart PlanOp = "start"
	// PlanMove re-places AgentID, which should be running, onto NodeID,
	// keeping its port (its old node was lost).
	PlanMove PlanOp = "move"
)

// PlanItem is one decision of a plan.
type PlanItem struct {
	Op      PlanOp `json:"op"`
	Agent   *Agent `json:"agent,omitempty"`
	AgentID string `json:"agentId,omitempty"`
	NodeID  string `json:"nodeId,omitempty"`
}

// PlanApply commits a batch of scheduler decisions in one Raft entry. Each
// item is checked and applied on its own, seeing the items before it: a
// refused item changes nothing and does not stop the others. Apply returns a
// *PlanResult.
type PlanApply struct {
	Items []PlanItem `json:"items"`
}

// PlanResult holds one outcome per plan item: nil when applied, else the
// refusing error.
type PlanResult struct {
	Errors []error
}

func (*OrgCreate) CommandType() CommandType               { return CmdOrgCreate }
func (*OrgUpdate) CommandType() CommandType               { return CmdOrgUpdate }
func (*OrgDelete) CommandType() CommandType               { return CmdOrgDelete }
func (*TokenCreate) CommandType() CommandType             { return CmdTokenCreate }
func (*TokenRevoke) CommandType() CommandType             { return CmdTokenRevoke }
func (*TokenTouch) CommandType() CommandType              { return CmdTokenTouch }
func (*AgentCreate) CommandType() CommandType             { return CmdAgentCreate }
func (*AgentSetDesired) CommandType() CommandType         { return CmdAgentSetDesired }
func (*AgentSetStatus) CommandType() CommandType          { return CmdAgentSetStatus }
func (*AgentDelete) CommandType() CommandType             { return CmdAgentDelete }
func (*NodeRegister) CommandType() CommandType            { return CmdNodeRegister }
func (*NodeSetStatus) CommandType() CommandType           { return CmdNodeSetStatus }
func (*NodeDelete) CommandType() CommandType              { return CmdNodeDelete }
func (*ScopeCreate) CommandType() CommandType             { return CmdScopeCreate }
func (*ScopeUpdate) CommandType() CommandType             { return CmdScopeUpdate }
func (*ScopeDelete) CommandType() CommandType             { return CmdScopeDelete }
func (*SecretPut) CommandType() CommandType               { return CmdSecretPut }
func (*SecretDelete) CommandType() CommandType            { return CmdSecretDelete }
func (*IdempotencyPut) CommandType() CommandType          { return CmdIdempotencyPut }
func (*IdempotencyDelete) CommandType() CommandType       { return CmdIdempotencyDelete }
func (*ClusterConfigSet) CommandType() CommandType        { return CmdClusterConfigSet }
func (*PlanApply) CommandType() CommandType               { return CmdPlanApply }
func (*AgentSetRuntimePassword) CommandType() CommandType { return CmdAgentSetRuntimePassword }

// Noop is committed through Raft and changes nothing (see CmdNoop).
type Noop struct{}

func (*Noop) CommandType() CommandType { return CmdNoop }

// AccountCreate signs a person up. With Org set, the org is created in the
// same transaction (sign-up with an org of one's own); otherwise the
// account joins Account.OrgID, which must exist. With InvitationID set, the
// invitation is checked (unexpired at Now, for this email if it names one,
// into this org if it names one) and consumed in the same transaction, so
// an invitation admits exactly one account however many race for it.
// Whether sign-up is open at all is the API's check, against the cluster
// config it reads.
type AccountCreate struct {
	Account      Account   `json:"account"`
	Org          *Org      `json:"org,omitempty"`
	InvitationID string    `json:"invitationId,omitempty"`
	Now          time.Time `json:"now"`
}

// AccountDelete removes an account and signs it out everywhere.
type AccountDelete struct {
	ID string `json:"id"`
}

// WebSessionCreate records a sign-in.
type WebSessionCreate struct {
	Session WebSession `json:"session"`
}

// WebSessionDelete signs one browser out; an unknown id is not an error
// (signing out twice is signing out).
type WebSessionDelete struct {
	ID string `json:"id"`
}

// WebSessionsExpire deletes the sessions that expired before Before (the
// leader proposes it now and then; reads ignore expired sessions anyway).
type WebSessionsExpire struct {
	Before time.Time `json:"before"`
}

// InvitationCreate stores an invitation (its code's hash, never the code).
type InvitationCreate struct {
	Invitation Invitation `json:"invitation"`
}

// InvitationDelete withdraws an invitation.
type InvitationDelete struct {
	ID string `json:"id"`
}

// AccountSetOperator makes an account an operator account, or an ordinary
// one again; its sessions carry the change at once (they look the account
// up on every request).
type AccountSetOperator struct {
	AccountID string `json:"accountId"`
	Operator  bool   `json:"operator"`
}

func (*AccountCreate) CommandType() CommandType      { return CmdAccountCreate }
func (*AccountDelete) CommandType() CommandType      { return CmdAccountDelete }
func (*WebSessionCreate) CommandType() CommandType   { return CmdWebSessionCreate }
func (*WebSessionDelete) CommandType() CommandType   { return CmdWebSessionDelete }
func (*WebSessionsExpire) CommandType() CommandType  { return CmdWebSessionsExpire }
func (*InvitationCreate) CommandType() CommandType   { return CmdInvitationCreate }
func (*InvitationDelete) CommandType() CommandType   { return CmdInvitationDelete }
func (*AccountSetOperator) CommandType() CommandType { return CmdAccountSetOperator }
