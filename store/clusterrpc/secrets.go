package clusterrpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
)

// ResealSecrets re-seals, under the keyring's current key, every secret
// sealed under another one, and reports how many it re-sealed. It is how a
// key is rotated: put a new key first in every server's key file, restart
// the servers one by one (the leader re-seals when it takes office, see
// secretResealer), and once no secret is left under the old key, remove its
// line. A secret whose key the ring lacks is reported, never dropped.
func ResealSecrets(ctx context.Context, s *store.Store, kr *keyring.Keyring) (int, error) {
	secrets, err := allSecrets(s.State())
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, sec := range secrets {
		if sec.KeyID == kr.CurrentID() {
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
		if _, err := s.Apply(ctx, &store.SecretPut{Secret: next}); err != nil {
			return n, err
		}
		n++
	}
	return n, errors.Join(errs...)
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

// secretResealer re-seals secrets under the current key whenever this
// server becomes the leader.
type secretResealer struct {
	store   *store.Store
	keyring *keyring.Keyring
	logger  *slog.Logger
	wg      sync.WaitGroup
}

func (r *secretResealer) EstablishLeadership(ctx context.Context) error {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		n, err := ResealSecrets(ctx, r.store, r.keyring)
		if n > 0 {
			r.logger.Info("secrets re-sealed under the current key", "key", r.keyring.CurrentID(), "count", n)
		}
		if err != nil && ctx.Err() == nil {
			r.logger.Error("re-sealing secrets", "error", err)
		}
	}()
	return nil
}

func (r *secretResealer) RevokeLeadership() {}
