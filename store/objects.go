package store

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// Objects held in the state tables. Objects returned by State are shared with
// other readers and must be treated as immutable; appliers copy before they
// change one.
//
// CreateIndex and ModifyIndex are the Raft indexes of the commands that created
// and last changed the object; they are set by the FSM, never by proposers.
// Timestamps are set by the proposer (so that every server applies the same
// value) and stored in UTC.

// Plan holds an org's caps. Zero means unlimited.
type Plan struct {
	// MaxAgents caps the agents that exist, in any state.
	MaxAgents int `json:"maxAgents"`
	// MaxRunning caps the agents that should be running at once.
	MaxRunning int `json:"maxRunning"`
}

// Org is a tenant organisation.
type Org struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Plan Plan   `json:"plan"`
	// DefaultModel ("provider/model") is the model of the org's agents
	// created without one; empty leaves it to the node's default.
	DefaultModel string    `json:"defaultModel,omitempty"`
	CreatedAt    time.Time `json:"createdAt"`
	CreateIndex  uint64    `json:"createIndex"`
	ModifyIndex  uint64    `json:"modifyIndex"`
}

// TokenRole says what a token may do.
type TokenRole string

const (
	// RoleTenant tokens act within their org.
	RoleTenant TokenRole = "tenant"
	// RoleOperator tokens administer the cluster.
	RoleOperator TokenRole = "operator"
)

// Token is an API token. Only a hash of the secret is stored; the secret is
// shown once, when the token is created.
type Token struct {
	ID    string    `json:"id"`
	OrgID string    `json:"orgId"`
	Label string    `json:"label"`
	Role  TokenRole `json:"role"`
	// Hash is the SHA-256 of the full token string.
	Hash []byte `json:"hash"`
	// Last4 are the token's last four characters, to help users tell tokens apart.
	Last4       string    `json:"last4"`
	CreatedAt   time.Time `json:"createdAt"`
	LastUsedAt  time.Time `json:"lastUsedAt"`
	CreateIndex uint64    `json:"createIndex"`
	ModifyIndex uint64    `json:"modifyIndex"`
}

// DesiredState is what the user asked an agent to be.
type DesiredState string

const (
	DesiredRunning DesiredState = "running"
	DesiredStopped DesiredState = "stopped"
)

// AgentStatus is an agent's observed state, as reported by its node agent (or
// by the leader when the node is lost). The values are the ones of the tenant API.
type AgentStatus string

const (
	StatusProvisioning AgentStatus = "PROVISIONING"
	StatusRunning      AgentStatus = "RUNNING"
	StatusStopped      AgentStatus = "STOPPED"
	StatusError        AgentStatus = "ERROR"
)

// ModelProvider is a model server from the operator's catalog.
type ModelProvider struct {
	// Kind is "openai-compatible".
	Kind string `json:"kind"`
	// BaseURL is where the server answers (…/v1).
	BaseURL string `json:"baseURL"`
	// APIKeyEnv names the environment variable (a secret) holding the key.
	APIKeyEnv string `json:"apiKeyEnv,omitempty"`
	// Name is the model's display name.
	Name string `json:"name,omitempty"`
}

// Resources an agent reserves on its node while it should be running.
type Resources struct {
	CPUMillis int64 `json:"cpuMillis"`
	MemoryMB  int64 `json:"memoryMB"`
}

// Agent is one coding agent: a container on one node, reachable on one port.
type Agent struct {
	ID      string `json:"id"`
	OrgID   string `json:"orgId"`
	Name    string `json:"name"`
	ScopeID string `json:"scopeId,omitempty"`
	Model   string `json:"model,omitempty"`
	// ModelProvider is how to reach Model when the runtime does not know
	// its provider (an operator's openai-compatible server), copied from
	// the catalog when the agent is created; nil for built-in providers.
	ModelProvider *ModelProvider `json:"modelProvider,omitempty"`
	Runtime       string         `json:"runtime"`
	Resources     Resources      `json:"resources"`
	// Constraints are node labels the agent needs; every one must match.
	Constraints  map[string]string `json:"constraints,omitempty"`
	Tags         []string          `json:"tags,omitempty"`
	HiddenPrompt string            `json:"hiddenPrompt,omitempty"`
	// RuntimePasswordSealed is the password that guards the runtime's
	// server inside the container (OPENCODE_SERVER_PASSWORD), sealed with
	// the secrets keyring (keyring.RuntimePasswordAAD binds it to the
	// agent's ID); RuntimePasswordKeyID names the key that sealed it. The
	// password itself never enters Raft: the API makes it
	// (NewRuntimePassword) and seals it at create, and only the control
	// servers open it, for the node that hosts the agent and for proxies.
	// Both are empty for an agent without a password, which no node runs.
	RuntimePasswordSealed []byte       `json:"runtimePasswordSealed,omitempty"`
	RuntimePasswordKeyID  string       `json:"runtimePasswordKeyId,omitempty"`
	Autostart             bool         `json:"autostart,omitempty"`
	Desired               DesiredState `json:"desired"`
	Status                AgentStatus  `json:"status"`
	NodeID                string       `json:"nodeId"`
	// Port is unique across the cluster and kept until the agent is deleted;
	// it names the agent's URL (a<port>.<domain>).
	Port        int       `json:"port"`
	ErrorMsg    string    `json:"errorMsg,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	CreateIndex uint64    `json:"createIndex"`
	ModifyIndex uint64    `json:"modifyIndex"`
}

// HoldsResources reports whether the agent counts against its node's capacity
// and its org's running cap: it does while it should be running.
func (a *Agent) HoldsResources() bool { return a.Desired == DesiredRunning }

// NodeStatus is a node's place in the pool.
type NodeStatus string

const (
	// NodeReady nodes take new placements.
	NodeReady NodeStatus = "ready"
	// NodeDraining nodes take no new placements; their agents stay, or are
	// stopped or moved at the drain's deadline (Node.Drain).
	NodeDraining NodeStatus = "draining"
	// NodeDown nodes have been declared dead.
	NodeDown NodeStatus = "down"
)

// DrainAgents is what a drain does with the node's agents.
type DrainAgents string

const (
	// DrainKeep leaves them running: the node only takes no new agents
	// (what other schedulers call making a node ineligible).
	DrainKeep DrainAgents = "keep"
	// DrainStop stops them at the deadline (they can be started again,
	// elsewhere).
	DrainStop DrainAgents = "stop"
	// DrainMove re-places them on other nodes at the deadline, with their
	// ports, so their URLs stay the same.
	DrainMove DrainAgents = "move"
)

// NodeDrain is how a draining node is emptied.
type NodeDrain struct {
	Agents DrainAgents `json:"agents"`
	// Deadline is when agents are stopped or moved; zero is at once.
	Deadline time.Time `json:"deadline,omitzero"`
}

// Due reports whether the drain stops or moves agents now.
func (d *NodeDrain) Due(now time.Time) bool {
	return d != nil && d.Agents != DrainKeep && !now.Before(d.Deadline)
}

// NodeCapacity is what a node offers to agents.
type NodeCapacity struct {
	CPUMillis int64 `json:"cpuMillis"`
	MemoryMB  int64 `json:"memoryMB"`
	MaxAgents int   `json:"maxAgents"`
}

// Node is a host that runs agents.
type Node struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Address string `json:"address"`
	// RuntimeServiceAddress is host:port of the node agent's
	// AgentRuntimeService.
	RuntimeServiceAddress string            `json:"runtimeServiceAddress,omitempty"`
	Capacity              NodeCapacity      `json:"capacity"`
	Labels                map[string]string `json:"labels,omitempty"`
	// Runtimes are the agent runtimes the node offers (e.g. "opencode").
	Runtimes []string   `json:"runtimes,omitempty"`
	Status   NodeStatus `json:"status"`
	// Drain is set while the node drains (Status NodeDraining).
	Drain       *NodeDrain `json:"drain,omitempty"`
	LastSeen    time.Time  `json:"lastSeen"`
	CreateIndex uint64     `json:"createIndex"`
	ModifyIndex uint64     `json:"modifyIndex"`
}

// Eligible reports whether the node may receive new placements.
func (n *Node) Eligible() bool { return n.Status == NodeReady }

// Scope groups agents and secrets within an org.
type Scope struct {
	ID          string    `json:"id"`
	OrgID       string    `json:"orgId"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
	CreateIndex uint64    `json:"createIndex"`
	ModifyIndex uint64    `json:"modifyIndex"`
}

// Secret is an encrypted environment variable, org-level when ScopeID is empty.
type Secret struct {
	ID      string `json:"id"`
	OrgID   string `json:"orgId"`
	ScopeID string `json:"scopeId,omitempty"`
	Key     string `json:"key"`
	// Ciphertext is the AES-256-GCM sealed value; KeyID names the key that
	// sealed it. The key itself never enters Raft.
	Ciphertext  []byte    `json:"ciphertext"`
	KeyID       string    `json:"keyId"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
	CreateIndex uint64    `json:"createIndex"`
	ModifyIndex uint64    `json:"modifyIndex"`
}

// IdempotencyRecord remembers the response to a mutating call made with an
// Idempotency-Key, so that a retry gets the same answer instead of a second effect.
type IdempotencyRecord struct {
	OrgID string `json:"orgId"`
	Key   string `json:"key"`
	// RequestHash identifies the request body; a retry with the same key but
	// a different body is an error rather than a replay.
	RequestHash []byte `json:"requestHash"`
	// StatusCode 0 marks a claim: the request is being executed by the
	// request with this Owner, and no response is known yet.
	StatusCode int    `json:"statusCode"`
	Owner      string `json:"owner,omitempty"`
	Body       []byte `json:"body"`
	// BodyKeyID, when set, names the keyring key that sealed Body (a
	// response that holds a secret, such as a new token).
	BodyKeyID   string    `json:"bodyKeyId,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	ExpiresAt   time.Time `json:"expiresAt"`
	CreateIndex uint64    `json:"createIndex"`
}

// Scheduling algorithms and reschedule policies of ClusterConfig.
const (
	AlgorithmBinpack = "binpack"
	AlgorithmSpread  = "spread"

	RescheduleReschedule = "reschedule"
	RescheduleFail       = "fail"
)

// ClusterConfig is cluster-wide configuration, changed only through Raft.
type ClusterConfig struct {
	// PortRangeStart and PortRangeEnd bound agent ports, inclusive.
	PortRangeStart int `json:"portRangeStart"`
	PortRangeEnd   int `json:"portRangeEnd"`
	// SchedulerAlgorithm is AlgorithmBinpack or AlgorithmSpread.
	SchedulerAlgorithm string `json:"schedulerAlgorithm"`
	// ReschedulePolicy says what happens to a lost node's agents:
	// RescheduleReschedule or RescheduleFail.
	ReschedulePolicy string `json:"reschedulePolicy"`
	// Signup says who may create a dashboard account: SignupOpen,
	// SignupInvite or SignupClosed. Empty (a state from before accounts)
	// reads as SignupInvite.
	Signup      string `json:"signup,omitempty"`
	ModifyIndex uint64 `json:"modifyIndex"`
}

// DefaultClusterConfig is in force until an operator sets another.
func DefaultClusterConfig() ClusterConfig {
	return ClusterConfig{
		PortRangeStart:     10000,
		PortRangeEnd:       59999,
		SchedulerAlgorithm: AlgorithmBinpack,
		ReschedulePolicy:   RescheduleReschedule,
		Signup:             SignupInvite,
	}
}

// SignupMode is c.Signup, SignupInvite when unset.
func (c ClusterConfig) SignupMode() string {
	if c.Signup == "" {
		return SignupInvite
	}
	return c.Signup
}

// NewRuntimePassword returns a fresh runtime password: 32 random bytes,
// hex-encoded. It is stored only sealed (Agent.RuntimePasswordSealed).
func NewRuntimePassword() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}

// Account is a person who signs in to the web dashboard with an email and a
// password; it belongs to one org and acts in it as the org's tenant tokens
// do. Only a password hash is stored (argon2id, PHC string form).
type Account struct {
	ID    string `json:"id"`
	OrgID string `json:"orgId"`
	// Email is the sign-in name, lower-cased; unique in the cluster.
	Email        string `json:"email"`
	PasswordHash string `json:"passwordHash"`
	// Operator accounts also administer the cluster from the dashboard, as
	// an operator token does; they get it from an operator invitation or
	// from another operator (AccountSetOperator).
	Operator    bool      `json:"operator,omitempty"`
	CreatedAt   time.Time `json:"createdAt"`
	CreateIndex uint64    `json:"createIndex"`
	ModifyIndex uint64    `json:"modifyIndex"`
}

// WebSession is a signed-in browser. Only the SHA-256 of the session cookie's
// value is stored (hex), so a copy of the state signs no one in; any server
// can check a cookie, and signing out on one ends the session on all.
type WebSession struct {
	ID        string    `json:"id"`
	AccountID string    `json:"accountId"`
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// Invitation lets one person sign up while sign-up is by invitation only:
// into an existing org (OrgID set) or with an org of their own. Only the
// SHA-256 of the invitation code is stored (hex); it is used once.
type Invitation struct {
	ID    string `json:"id"`
	OrgID string `json:"orgId,omitempty"`
	// Email, when set, is the only address the invitation admits.
	Email string `json:"email,omitempty"`
	// Operator makes the account signed up with it an operator account.
	Operator  bool      `json:"operator,omitempty"`
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"createdAt"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// Sign-up modes (ClusterConfig.Signup).
const (
	// SignupOpen lets anyone create an account and an org of their own.
	SignupOpen = "open"
	// SignupInvite admits only holders of an invitation.
	SignupInvite = "invite"
	// SignupClosed admits no one; operators create orgs and tokens.
	SignupClosed = "closed"
)
