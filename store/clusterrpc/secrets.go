package clusterrpc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
)

// ResealSecrets re-seals, under the keyring's current key, every secret and
// every agent's runtime password sealed under another one, and reports how
// many it re-sealed. It is the last step of a key rotation
// (docs/operations.md): a new key first in every server's key file, every
// server reloaded, then this, run once on any server; when nothing is left
// under the old key, its line goes. It is never run by itself: a server that
// had the new key before the others would seal values the others could not
// open. A value whose key the ring lacks is reported, never dropped; a
// secret a tenant replaced meanwhile is left as the tenant wrote it, and an
// agent deleted meanwhile stays deleted.
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
	agents, err := st.Agents()
	if err != nil {
		return n, err
	}
	resealed, notOpened, err := resealRuntimePasswords(ctx, s, kr, agents)
	n += resealed
	if err != nil {
		return n, err
	}
	return n, errors.Join(append(errs, notOpened...)...)
}

// resealWorkers bounds the runtime passwords re-sealed at once. There may be
// thousands, one per agent; Raft commits concurrent writes together (one
// disk sync for several), so a few at a time go faster than one by one.
const resealWorkers = 8

// resealRuntimePasswords re-seals the runtime passwords of agents that are
// sealed under a key other than kr's current one, and reports how many it
// re-sealed. Each write applies only to the agent as it was read
// (store.AgentSetRuntimePassword): an agent deleted since stays deleted, one
// re-sealed since keeps that. Passwords that do not open are left as they
// are and returned in notOpened; a failed write stops the re-seal (err).
func resealRuntimePasswords(ctx context.Context, s *store.Store, kr *keyring.Keyring, agents []*store.Agent) (n int, notOpened []error, err error) {
	type job struct {
		agent    *store.Agent
		password string
	}
	var (
		mu     sync.Mutex
		failed error
		wg     sync.WaitGroup
	)
	jobs := make(chan job)
	for range resealWorkers {
		wg.Go(func() {
			for j := range jobs {
				ok, err := resealRuntimePassword(ctx, s, kr, j.agent, j.password)
				mu.Lock()
				if ok {
					n++
				}
				if err != nil && failed == nil {
					failed = err
				}
				mu.Unlock()
			}
		})
	}
	stopped := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return failed != nil
	}
	current := kr.CurrentID()
	for _, a := range agents {
		if len(a.RuntimePasswordSealed) == 0 || a.RuntimePasswordKeyID == current {
			continue
		}
		if stopped() {
			break
		}
		password, err := OpenRuntimePassword(kr, a)
		if err != nil {
			notOpened = append(notOpened, fmt.Errorf("runtime password of agent %s: %w", a.ID, err))
			continue
		}
		jobs <- job{a, password}
	}
	close(jobs)
	wg.Wait()
	return n, notOpened, failed
}

// resealRuntimePassword seals password, a's runtime password, under kr's
// current key in place of what a holds. It reports false, without an error,
// for an agent deleted or re-sealed since it was read.
func resealRuntimePassword(ctx context.Context, s *store.Store, kr *keyring.Keyring, a *store.Agent, password string) (bool, error) {
	next := *a
	if err := SealRuntimePassword(kr, &next, password); err != nil {
		return false, err
	}
	_, err := s.Apply(ctx, &store.AgentSetRuntimePassword{ID: a.ID, Sealed: next.RuntimePasswordSealed, KeyID: next.RuntimePasswordKeyID,
		IfSealed: a.RuntimePasswordSealed, IfKeyID: a.RuntimePasswordKeyID})
	if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// SealedKeys counts, per key ID, the values stored sealed under it.
type SealedKeys struct {
	// Secrets counts tenants' secrets.
	Secrets map[string]int
	// RuntimePasswords counts agents' runtime passwords.
	RuntimePasswords map[string]int
}

// SecretKeysInUse counts the secrets and the agents' runtime passwords
// sealed under each key ID: a key may leave the key file once it seals
// neither.
func SecretKeysInUse(st *store.State) (SealedKeys, error) {
	secrets, err := allSecrets(st)
	if err != nil {
		return SealedKeys{}, err
	}
	agents, err := st.Agents()
	if err != nil {
		return SealedKeys{}, err
	}
	inUse := SealedKeys{Secrets: map[string]int{}, RuntimePasswords: map[string]int{}}
	for _, sec := range secrets {
		inUse.Secrets[sec.KeyID]++
	}
	for _, a := range agents {
		if len(a.RuntimePasswordSealed) > 0 {
			inUse.RuntimePasswords[a.RuntimePasswordKeyID]++
		}
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
// SIGHUP during a rotation. A file that lacks a key some stored secret or
// runtime password is sealed under is refused, and kr keeps its keys: losing
// one would make those values unopenable.
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
	for _, counts := range []map[string]int{inUse.Secrets, inUse.RuntimePasswords} {
		for id := range counts {
			if !next.Has(id) && !slices.Contains(missing, id) {
				missing = append(missing, id)
			}
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("key file %s lacks keys %v that secrets or agents' runtime passwords are sealed under; keeping the keys loaded before", path, missing)
	}
	kr.Replace(next)
	return nil
}
