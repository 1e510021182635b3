package store

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
)

// Table names.
const (
	tableOrgs        = "orgs"
	tableTokens      = "tokens"
	tableAgents      = "agents"
	tableNodes       = "nodes"
	tableScopes      = "scopes"
	tableSecrets     = "secrets"
	tableIdempotency = "idempotency"
	tableConfig      = "config"
	tableIndex       = "index"
	tableOrgUsage    = "org_usage"
	tableNodeUsage   = "node_usage"
	tableAccounts    = "accounts"
	tableWebSessions = "web_sessions"
	tableInvitations = "invitations"
)

// tableOrder fixes the order in which snapshots and state hashes visit tables.
// New tables are appended, never inserted.
var tableOrder = []string{
	tableOrgs, tableTokens, tableAgents, tableNodes,
	tableScopes, tableSecrets, tableIdempotency, tableConfig, tableIndex,
	tableOrgUsage, tableNodeUsage,
	tableAccounts, tableWebSessions, tableInvitations,
}

// configSingletonID is the id of the one ClusterConfig row.
const configSingletonID = "cluster"

// indexRowID is the id of the one indexRow.
const indexRowID = "applied"

// indexRow records, inside the database, the index of the last command that
// changed it, so that a read transaction and its index always agree.
type indexRow struct {
	ID    string `json:"id"`
	Index uint64 `json:"index"`
}

// usageRow sums the agents of one org (Agents, Running) or the reservations
// on one node (Running, CPUMillis, MemoryMB). Derived from the agents table
// by putAgent in the same transaction, so cap and capacity checks are O(1).
type usageRow struct {
	ID        string `json:"id"`
	Agents    int    `json:"agents,omitempty"`
	Running   int    `json:"running,omitempty"`
	CPUMillis int64  `json:"cpuMillis,omitempty"`
	MemoryMB  int64  `json:"memoryMB,omitempty"`
}

// configRow wraps ClusterConfig with the id memdb needs.
type configRow struct {
	ID     string        `json:"id"`
	Config ClusterConfig `json:"config"`
}

func schema() *memdb.DBSchema {
	id := func(field string) *memdb.IndexSchema {
		return &memdb.IndexSchema{Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: field}}
	}
	str := func(name, field string, unique bool) *memdb.IndexSchema {
		return &memdb.IndexSchema{Name: name, Unique: unique, Indexer: &memdb.StringFieldIndex{Field: field}}
	}
	compound := func(name string, unique, allowMissing bool, fields ...string) *memdb.IndexSchema {
		idx := &memdb.CompoundIndex{AllowMissing: allowMissing}
		for _, f := range fields {
			idx.Indexes = append(idx.Indexes, &memdb.StringFieldIndex{Field: f})
		}
		return &memdb.IndexSchema{Name: name, Unique: unique, AllowMissing: allowMissing, Indexer: idx}
	}
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableOrgs: {Name: tableOrgs, Indexes: map[string]*memdb.IndexSchema{
			"id":   id("ID"),
			"name": str("name", "Name", true),
		}},
		tableTokens: {Name: tableTokens, Indexes: map[string]*memdb.IndexSchema{
			"id":   id("ID"),
			"hash": {Name: "hash", Unique: true, Indexer: &bytesFieldIndex{field: "Hash"}},
			// Operator tokens may belong to no org.
			"org":  {Name: "org", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "OrgID"}},
			"role": str("role", "Role", false),
		}},
		tableAgents: {Name: tableAgents, Indexes: map[string]*memdb.IndexSchema{
			"id":       id("ID"),
			"org":      str("org", "OrgID", false),
			"org_name": compound("org_name", false, false, "OrgID", "Name"),
			// org_id lets a list page start at its cursor without reading
			// the org's agents before it.
			"org_id": compound("org_id", true, false, "OrgID", "ID"),
			"node":   str("node", "NodeID", false),
			"port":   {Name: "port", Unique: true, Indexer: &memdb.IntFieldIndex{Field: "Port"}},
			"scope":  {Name: "scope", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "ScopeID"}},
		}},
		tableNodes: {Name: tableNodes, Indexes: map[string]*memdb.IndexSchema{
			"id":   id("ID"),
			"name": str("name", "Name", true),
		}},
		tableScopes: {Name: tableScopes, Indexes: map[string]*memdb.IndexSchema{
			"id":       id("ID"),
			"org":      str("org", "OrgID", false),
			"org_name": compound("org_name", true, false, "OrgID", "Name"),
		}},
		tableSecrets: {Name: tableSecrets, Indexes: map[string]*memdb.IndexSchema{
			"id":  id("ID"),
			"org": str("org", "OrgID", false),
			// ScopeID is empty for org-level secrets; the compound index
			// treats an empty string as a value, so org-level keys are unique too.
			"org_scope_key": {Name: "org_scope_key", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
				&memdb.StringFieldIndex{Field: "OrgID"},
				&emptyOKStringIndex{field: "ScopeID"},
				&memdb.StringFieldIndex{Field: "Key"},
			}}},
			"scope": {Name: "scope", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "ScopeID"}},
		}},
		tableIdempotency: {Name: tableIdempotency, Indexes: map[string]*memdb.IndexSchema{
			"id":  compound("id", true, false, "OrgID", "Key"),
			"org": str("org", "OrgID", false),
		}},
		tableConfig: {Name: tableConfig, Indexes: map[string]*memdb.IndexSchema{
			"id": id("ID"),
		}},
		tableIndex: {Name: tableIndex, Indexes: map[string]*memdb.IndexSchema{
			"id": id("ID"),
		}},
		tableOrgUsage: {Name: tableOrgUsage, Indexes: map[string]*memdb.IndexSchema{
			"id": id("ID"),
		}},
		tableNodeUsage: {Name: tableNodeUsage, Indexes: map[string]*memdb.IndexSchema{
			"id": id("ID"),
		}},
		tableAccounts: {Name: tableAccounts, Indexes: map[string]*memdb.IndexSchema{
			"id":    id("ID"),
			"email": str("email", "Email", true),
			"org":   str("org", "OrgID", false),
		}},
		tableWebSessions: {Name: tableWebSessions, Indexes: map[string]*memdb.IndexSchema{
			"id":      id("ID"),
			"hash":    str("hash", "Hash", true),
			"account": str("account", "AccountID", false),
		}},
		tableInvitations: {Name: tableInvitations, Indexes: map[string]*memdb.IndexSchema{
			"id":   id("ID"),
			"hash": str("hash", "Hash", true),
			// Invitations to an org of one's own belong to none.
			"org": {Name: "org", AllowMissing: true, Indexer: &memdb.StringFieldIndex{Field: "OrgID"}},
		}},
	}}
}

// bytesFieldIndex indexes a []byte field by its raw bytes.
type bytesFieldIndex struct{ field string }

func (b *bytesFieldIndex) FromObject(obj interface{}) (bool, []byte, error) {
	t, ok := obj.(*Token)
	if !ok || b.field != "Hash" {
		return false, nil, fmt.Errorf("bytesFieldIndex: unsupported object %T", obj)
	}
	if len(t.Hash) == 0 {
		return false, nil, nil
	}
	return true, append(append([]byte{}, t.Hash...), 0), nil
}

func (b *bytesFieldIndex) FromArgs(args ...interface{}) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("bytesFieldIndex: want one argument, got %d", len(args))
	}
	v, ok := args[0].([]byte)
	if !ok {
		return nil, fmt.Errorf("bytesFieldIndex: argument must be []byte, got %T", args[0])
	}
	return append(append([]byte{}, v...), 0), nil
}

// emptyOKStringIndex is a string field index that indexes the empty string
// instead of treating it as missing (memdb's StringFieldIndex does the latter),
// so that compound indexes work for org-level secrets whose ScopeID is "".
type emptyOKStringIndex struct{ field string }

func (e *emptyOKStringIndex) FromObject(obj interface{}) (bool, []byte, error) {
	s, ok := obj.(*Secret)
	if !ok || e.field != "ScopeID" {
		return false, nil, fmt.Errorf("emptyOKStringIndex: unsupported object %T", obj)
	}
	return true, append([]byte(s.ScopeID), 0), nil
}

func (e *emptyOKStringIndex) FromArgs(args ...interface{}) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("emptyOKStringIndex: want one argument, got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("emptyOKStringIndex: argument must be a string, got %T", args[0])
	}
	return append([]byte(s), 0), nil
}

// PrefixFromArgs makes the index usable as the last field of a compound
// prefix query; the terminator keeps it an exact match on the scope.
func (e *emptyOKStringIndex) PrefixFromArgs(args ...interface{}) ([]byte, error) {
	return e.FromArgs(args...)
}
