package clusterrpc

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
)

// ResealSecrets re-seals, under the keyring's current key, every secret
// sealed under another one, and reports how many it re-sealed. It is the
// last step of a key rotation (docs/operations.md): a new key first in every
// server's key file, every server reloaded, then this, run once on any
// server; when no secret is left under the old key, its line goes. It is
// never run by itself: a server that had the new key before the others
// would seal secrets the others could not open. A secret whose key the ring
// lacks is reported, never dropped; one a tenant replaced meanwhile is left
// as the tenant wrote it.
func ResealSecrets(ctx context.Context, s *store.Store, kr *keyring.Keyring) (int, error) {
	st, err := s.ConsistentState(ctx)
	if err != nil {
		return 0, err
	}
	secrets, err := allSecrets(st)
	if err != nil {
		return 0, err
	}
	current := kr.CurrentID()
	n := 0
	var errs []error
	for _, sec := range secrets {
		if sec.KeyID == current {
			continue
		}
		aad := keyring.SecretAAD(sec.OrgID, sec.ScopeID, sec.Key)
		plain, err := kr.Open(sec.KeyID, sec.Ciphertext, aad)
		if err != nil {
			errs = append(errs, fmt.Errorf("secret %s of org %s (scope %q): %w", sec.Key, sec.OrgID, sec.ScopeID, err))
			continue
		}
		sealed, id, err := kr.Seal(plain, aad)
		if err != nil {
			return n, err
		}
		next := *sec
		next.Ciphertext, next.KeyID = sealed, id
		_, err = s.Apply(ctx, &store.SecretPut{Secret: next, IfModifyIndex: sec.ModifyIndex})
		switch {
		case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound):
			// Replaced or deleted by a tenant since it was read: that
			// write stands.
			continue
		case err != nil:
			return n, err
		}
		n++
	}
	return n, errors.Join(errs...)
}

// SecretKeysInUse counts the secrets sealed under each key ID: a key may
// leave the key file once no secret is sealed under it.
func SecretKeysInUse(st *store.State) (map[string]int, error) {
	secrets, err := allSecrets(st)
	if err != nil {
		return nil, err
	}
	inUse := map[string]int{}
	for _, sec := range secrets {
		inUse[sec.KeyID]++
	}
	return inUse, nil
}

// allSecrets lists every org's secrets, org-level and in each scope.
func allSecrets(st *store.State) ([]*store.Secret, error) {
	orgs, err := st.Orgs()
	if err != nil {
		return nil, err
	}
	var all []*store.Secret
	for _, org := range orgs {
		scopes, err := st.ScopesByOrg(org.ID)
		if err != nil {
			return nil, err
		}
		ids := []string{""} // org-level
		for _, sc := range scopes {
			ids = append(ids, sc.ID)
		}
		for _, id := range ids {
			secrets, err := st.Secrets(org.ID, id)
			if err != nil {
				return nil, err
			}
			all = append(all, secrets...)
		}
	}
	return all, nil
}

// ReloadKeyring re-reads the key file at path into kr, as a server does on
// SIGHUP during a rotation. A file that lacks a key some stored secret is
// sealed under is refused, and kr keeps its keys: losing one would make
// those secrets unopenable.
func ReloadKeyring(st *store.State, kr *keyring.Keyring, path string) error {
	next, err := keyring.Load(path)
	if err != nil {
		return err
	}
	inUse, err := SecretKeysInUse(st)
	if err != nil {
		return err
	}
	var missing []string
	for id := range inUse {
		if !next.Has(id) {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("key file %s lacks keys %v that secrets are sealed under; keeping the keys loaded before", path, missing)
	}
	kr.Replace(next)
	return nil
}
