package store

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
)

// Appliers for tenant-owned objects: orgs, tokens, scopes, secrets and
// idempotency records.

func applyOrgCreate(txn *memdb.Txn, index uint64, c *OrgCreate) error {
	o := c.Org
	if err := requireID("org", o.ID); err != nil {
		return err
	}
	if err := validateName("org", o.Name); err != nil {
		return err
	}
	if err := validatePlan(o.Plan); err != nil {
		return err
	}
	if err := validateModel(o.DefaultModel); err != nil {
		return err
	}
	if existing, err := getOrg(txn, o.ID); err != nil {
		return err
	} else if existing != nil {
		return fmt.Errorf("%w: org %q", ErrAlreadyExists, o.ID)
	}
	if taken, err := first[*Org](txn, tableOrgs, "name", o.Name); err != nil {
		return err
	} else if taken != nil {
		return fmt.Errorf("%w: org named %q", ErrAlreadyExists, o.Name)
	}
	o.CreateIndex, o.ModifyIndex = index, index
	return txn.Insert(tableOrgs, &o)
}

func applyOrgUpdate(txn *memdb.Txn, index uint64, c *OrgUpdate) error {
	existing, err := mustGetOrg(txn, c.ID)
	if err != nil {
		return err
	}
	if c.Name == nil && c.Plan == nil && c.DefaultModel == nil {
		return invalidf("org update changes nothing")
	}
	o := *existing
	if c.Name != nil {
		if err := validateName("org", *c.Name); err != nil {
			return err
		}
		if taken, err := first[*Org](txn, tableOrgs, "name", *c.Name); err != nil {
			return err
		} else if taken != nil && taken.ID != o.ID {
			return fmt.Errorf("%w: org named %q", ErrAlreadyExists, *c.Name)
		}
		o.Name = *c.Name
	}
	if c.Plan != nil {
		if err := validatePlan(*c.Plan); err != nil {
			return err
		}
		o.Plan = *c.Plan
	}
	if c.DefaultModel != nil {
		if err := validateModel(*c.DefaultModel); err != nil {
			return err
		}
		o.DefaultModel = *c.DefaultModel
	}
	o.ModifyIndex = index
	return txn.Insert(tableOrgs, &o)
}

func applyOrgDelete(txn *memdb.Txn, c *OrgDelete) error {
	o, err := mustGetOrg(txn, c.ID)
	if err != nil {
		return err
	}
	if a, err := first[*Agent](txn, tableAgents, "org", o.ID); err != nil {
		return err
	} else if a != nil {
		return fmt.Errorf("%w: org %q still owns agents", ErrConflict, o.ID)
	}
	for _, table := range []string{tableTokens, tableScopes, tableSecrets, tableIdempotency} {
		if _, err := txn.DeleteAll(table, "org", o.ID); err != nil {
			return err
		}
	}
	if err := deleteOrgAccounts(txn, o.ID); err != nil {
		return err
	}
	return txn.Delete(tableOrgs, o)
}

func applyTokenCreate(txn *memdb.Txn, index uint64, c *TokenCreate) error {
	t := c.Token
	if err := requireID("token", t.ID); err != nil {
		return err
	}
	switch t.Role {
	case RoleTenant:
		if _, err := mustGetOrg(txn, t.OrgID); err != nil {
			return err
		}
	case RoleOperator:
		if t.OrgID != "" {
			if _, err := mustGetOrg(txn, t.OrgID); err != nil {
				return err
			}
		}
	default:
		return invalidf("token role %q is not tenant or operator", t.Role)
	}
	if len(t.Hash) != 32 {
		return invalidf("token hash must be a SHA-256 digest")
	}
	if c.Bootstrap {
		if t.Role != RoleOperator {
			return invalidf("a bootstrap token must be an operator token")
		}
		op, err := first[*Token](txn, tableTokens, "role", string(RoleOperator))
		if err != nil {
			return err
		}
		if op != nil {
			return fmt.Errorf("%w: the cluster is bootstrapped already", ErrConflict)
		}
	}
	if existing, err := first[*Token](txn, tableTokens, "id", t.ID); err != nil {
		return err
	} else if existing != nil {
		return fmt.Errorf("%w: token %q", ErrAlreadyExists, t.ID)
	}
	if existing, err := first[*Token](txn, tableTokens, "hash", t.Hash); err != nil {
		return err
	} else if existing != nil {
		return fmt.Errorf("%w: token with this hash", ErrAlreadyExists)
	}
	t.CreateIndex, t.ModifyIndex = index, index
	return txn.Insert(tableTokens, &t)
}

func applyTokenRevoke(txn *memdb.Txn, c *TokenRevoke) error {
	t, err := first[*Token](txn, tableTokens, "id", c.ID)
	if err != nil {
		return err
	}
	if t == nil {
		return fmt.Errorf("%w: token %q", ErrNotFound, c.ID)
	}
	return txn.Delete(tableTokens, t)
}

func applyTokenTouch(txn *memdb.Txn, index uint64, c *TokenTouch) error {
	for id, at := range c.LastUsed {
		t, err := first[*Token](txn, tableTokens, "id", id)
		if err != nil {
			return err
		}
		if err := validateTime("token last-used time", at); err != nil {
			return err
		}
		if t == nil || !at.After(t.LastUsedAt) {
			continue
		}
		updated := *t
		updated.LastUsedAt = at.UTC()
		updated.ModifyIndex = index
		if err := txn.Insert(tableTokens, &updated); err != nil {
			return err
		}
	}
	return nil
}

func applyScopeCreate(txn *memdb.Txn, index uint64, c *ScopeCreate) error {
	s := c.Scope
	if err := requireID("scope", s.ID); err != nil {
		return err
	}
	if err := validateName("scope", s.Name); err != nil {
		return err
	}
	if len([]rune(s.Description)) > MaxDescriptionLength {
		return invalidf("scope description longer than %d characters", MaxDescriptionLength)
	}
	if _, err := mustGetOrg(txn, s.OrgID); err != nil {
		return err
	}
	if existing, err := first[*Scope](txn, tableScopes, "id", s.ID); err != nil {
		return err
	} else if existing != nil {
		return fmt.Errorf("%w: scope %q", ErrAlreadyExists, s.ID)
	}
	if taken, err := first[*Scope](txn, tableScopes, "org_name", s.OrgID, s.Name); err != nil {
		return err
	} else if taken != nil {
		return fmt.Errorf("%w: a scope named %q", ErrAlreadyExists, s.Name)
	}
	if s.UpdatedAt.IsZero() {
		s.UpdatedAt = s.CreatedAt
	}
	s.CreateIndex, s.ModifyIndex = index, index
	return txn.Insert(tableScopes, &s)
}

func applyScopeUpdate(txn *memdb.Txn, index uint64, c *ScopeUpdate) error {
	existing, err := mustGetScope(txn, c.OrgID, c.ID)
	if err != nil {
		return err
	}
	if c.Name == nil && c.Description == nil {
		return invalidf("scope update changes nothing")
	}
	s := *existing
	if c.Name != nil {
		if err := validateName("scope", *c.Name); err != nil {
			return err
		}
		if taken, err := first[*Scope](txn, tableScopes, "org_name", s.OrgID, *c.Name); err != nil {
			return err
		} else if taken != nil && taken.ID != s.ID {
			return fmt.Errorf("%w: a scope named %q", ErrAlreadyExists, *c.Name)
		}
		s.Name = *c.Name
	}
	if c.Description != nil {
		if len([]rune(*c.Description)) > MaxDescriptionLength {
			return invalidf("scope description longer than %d characters", MaxDescriptionLength)
		}
		s.Description = *c.Description
	}
	s.UpdatedAt = c.UpdatedAt
	s.ModifyIndex = index
	return txn.Insert(tableScopes, &s)
}

func applyScopeDelete(txn *memdb.Txn, index uint64, c *ScopeDelete) error {
	s, err := mustGetScope(txn, c.OrgID, c.ID)
	if err != nil {
		return err
	}
	agents, err := all[*Agent](txn, tableAgents, "scope", s.ID)
	if err != nil {
		return err
	}
	for _, a := range agents {
		updated := *a
		updated.ScopeID = ""
		updated.ModifyIndex = index
		if err := putAgent(txn, a, &updated); err != nil {
			return err
		}
	}
	secrets, err := all[*Secret](txn, tableSecrets, "scope", s.ID)
	if err != nil {
		return err
	}
	for _, sec := range secrets {
		if err := txn.Delete(tableSecrets, sec); err != nil {
			return err
		}
		orgLevel, err := first[*Secret](txn, tableSecrets, "org_scope_key", sec.OrgID, "", sec.Key)
		if err != nil {
			return err
		}
		if orgLevel != nil {
			continue // the org-level secret wins; see ScopeDelete
		}
		updated := *sec
		updated.ScopeID = ""
		updated.ModifyIndex = index
		if err := txn.Insert(tableSecrets, &updated); err != nil {
			return err
		}
	}
	return txn.Delete(tableScopes, s)
}

func applySecretPut(txn *memdb.Txn, index uint64, c *SecretPut) error {
	s := c.Secret
	if err := requireID("secret", s.ID); err != nil {
		return err
	}
	if !ValidSecretKey(s.Key) {
		return invalidf("secret key %q must match ^[A-Z0-9_]+$", s.Key)
	}
	if len(s.Ciphertext) == 0 || s.KeyID == "" {
		return invalidf("secret needs a ciphertext and a key id")
	}
	if _, err := mustGetOrg(txn, s.OrgID); err != nil {
		return err
	}
	if s.ScopeID != "" {
		if _, err := mustGetScope(txn, s.OrgID, s.ScopeID); err != nil {
			return err
		}
	}
	existing, err := first[*Secret](txn, tableSecrets, "org_scope_key", s.OrgID, s.ScopeID, s.Key)
	if err != nil {
		return err
	}
	if c.IfModifyIndex != 0 {
		switch {
		case existing == nil:
			return fmt.Errorf("%w: secret %s", ErrNotFound, s.Key)
		case existing.ModifyIndex != c.IfModifyIndex:
			return fmt.Errorf("%w: secret %s changed at index %d", ErrConflict, s.Key, existing.ModifyIndex)
		}
	}
	if existing != nil {
		updated := *existing
		updated.Ciphertext, updated.KeyID = s.Ciphertext, s.KeyID
		updated.UpdatedAt = s.UpdatedAt
		updated.ModifyIndex = index
		return txn.Insert(tableSecrets, &updated)
	}
	if other, err := first[*Secret](txn, tableSecrets, "id", s.ID); err != nil {
		return err
	} else if other != nil {
		return fmt.Errorf("%w: secret %q", ErrAlreadyExists, s.ID)
	}
	if s.UpdatedAt.IsZero() {
		s.UpdatedAt = s.CreatedAt
	}
	s.CreateIndex, s.ModifyIndex = index, index
	return txn.Insert(tableSecrets, &s)
}

func applySecretDelete(txn *memdb.Txn, c *SecretDelete) error {
	s, err := first[*Secret](txn, tableSecrets, "org_scope_key", c.OrgID, c.ScopeID, c.Key)
	if err != nil {
		return err
	}
	if s == nil {
		return fmt.Errorf("%w: secret %q", ErrNotFound, c.Key)
	}
	return txn.Delete(tableSecrets, s)
}

func applyIdempotencyPut(txn *memdb.Txn, index uint64, c *IdempotencyPut) error {
	r := c.Record
	if r.OrgID == "" || r.Key == "" {
		return invalidf("idempotency record needs an org and a key")
	}
	existing, err := first[*IdempotencyRecord](txn, tableIdempotency, "id", r.OrgID, r.Key)
	if err != nil {
		return err
	}
	if existing != nil {
		completes := existing.StatusCode == 0 && existing.Owner != "" && existing.Owner == r.Owner && r.StatusCode != 0
		takesOver := existing.StatusCode == 0 && existing.ExpiresAt.Before(r.CreatedAt)
		if !completes && !takesOver {
			return nil // the first answer wins
		}
		if err := txn.Delete(tableIdempotency, existing); err != nil {
			return err
		}
	}
	r.CreateIndex = index
	return txn.Insert(tableIdempotency, &r)
}

func applyIdempotencyDelete(txn *memdb.Txn, c *IdempotencyDelete) error {
	if c.Key != "" {
		r, err := first[*IdempotencyRecord](txn, tableIdempotency, "id", c.OrgID, c.Key)
		if err != nil || r == nil || r.StatusCode != 0 || r.Owner != c.Owner {
			return err // only the claim's owner releases it, and only a claim
		}
		return txn.Delete(tableIdempotency, r)
	}
	records, err := all[*IdempotencyRecord](txn, tableIdempotency, "id")
	if err != nil {
		return err
	}
	for _, r := range records {
		if r.ExpiresAt.Before(c.Before) {
			if err := txn.Delete(tableIdempotency, r); err != nil {
				return err
			}
		}
	}
	return nil
}

// Lookup helpers shared by the appliers and State.

func first[T any](txn *memdb.Txn, table, index string, args ...any) (T, error) {
	var zero T
	raw, err := txn.First(table, index, args...)
	if err != nil {
		return zero, fmt.Errorf("lookup %s by %s: %w", table, index, err)
	}
	if raw == nil {
		return zero, nil
	}
	return raw.(T), nil
}

func all[T any](txn *memdb.Txn, table, index string, args ...any) ([]T, error) {
	it, err := txn.Get(table, index, args...)
	if err != nil {
		return nil, fmt.Errorf("list %s by %s: %w", table, index, err)
	}
	var out []T
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(T))
	}
	return out, nil
}

func getOrg(txn *memdb.Txn, id string) (*Org, error) {
	return first[*Org](txn, tableOrgs, "id", id)
}

func mustGetOrg(txn *memdb.Txn, id string) (*Org, error) {
	o, err := getOrg(txn, id)
	if err != nil {
		return nil, err
	}
	if o == nil {
		return nil, fmt.Errorf("%w: org %q", ErrNotFound, id)
	}
	return o, nil
}

// mustGetScope finds a scope of the given org; another org's scope is "not
// found", exactly as a missing one.
func mustGetScope(txn *memdb.Txn, orgID, id string) (*Scope, error) {
	s, err := first[*Scope](txn, tableScopes, "id", id)
	if err != nil {
		return nil, err
	}
	if s == nil || s.OrgID != orgID {
		return nil, fmt.Errorf("%w: scope %q", ErrNotFound, id)
	}
	return s, nil
}
