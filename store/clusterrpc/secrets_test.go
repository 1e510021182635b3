package clusterrpc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
)

// TestResealSecretsRotatesTheKey: secrets sealed under k1, a ring with k2
// first: everything ends under k2 and still opens to the same value, scoped
// or not; a second run has nothing to do.
func TestResealSecretsRotatesTheKey(t *testing.T) {
	tc := NewTestCluster(t, 1)
	s := tc.Servers[0].Store
	ctx := context.Background()
	l1, _ := keyring.NewKeyLine("k1")
	l2, _ := keyring.NewKeyLine("k2")
	old, _ := keyring.Parse([]byte(l1))
	now := time.Now().UTC()
	if _, err := s.Apply(ctx, &store.OrgCreate{Org: store.Org{ID: "org", Name: "org", CreatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, &store.ScopeCreate{Scope: store.Scope{ID: "sc", OrgID: "org", Name: "sc", CreatedAt: now, UpdatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	values := map[[2]string]string{{"", "A_KEY"}: "alpha", {"sc", "B_KEY"}: "beta"}
	for where, v := range values {
		sealed, id, _ := old.Seal([]byte(v), keyring.SecretAAD("org", where[0], where[1]))
		if _, err := s.Apply(ctx, &store.SecretPut{Secret: store.Secret{ID: where[1], OrgID: "org", ScopeID: where[0], Key: where[1],
			Ciphertext: sealed, KeyID: id, CreatedAt: now, UpdatedAt: now}}); err != nil {
			t.Fatal(err)
		}
	}
	ring, _ := keyring.Parse([]byte(l2 + "\n" + l1))
	n, err := ResealSecrets(ctx, s, ring)
	if err != nil || n != 2 {
		t.Fatalf("resealed %d, %v", n, err)
	}
	newOnly, _ := keyring.Parse([]byte(l2))
	for where, v := range values {
		sec, err := s.State().Secret("org", where[0], where[1])
		if err != nil || sec == nil || sec.KeyID != "k2" {
			t.Fatalf("secret %v after rotation: %+v %v", where, sec, err)
		}
		got, err := newOnly.Open(sec.KeyID, sec.Ciphertext, keyring.SecretAAD("org", where[0], where[1]))
		if err != nil || string(got) != v {
			t.Fatalf("secret %v opens to %q, %v", where, got, err)
		}
	}
	if n, err := ResealSecrets(ctx, s, ring); err != nil || n != 0 {
		t.Fatalf("second run resealed %d, %v", n, err)
	}
}

// TestResealNeverPutsBackAReplacedValue: the re-sealing put is conditional
// on the secret not having changed since it was read.
func TestResealNeverPutsBackAReplacedValue(t *testing.T) {
	tc := NewTestCluster(t, 1)
	s := tc.Servers[0].Store
	ctx := context.Background()
	now := time.Now().UTC()
	if _, err := s.Apply(ctx, &store.OrgCreate{Org: store.Org{ID: "org", Name: "org", CreatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	put := func(value string, ifIndex uint64) error {
		_, err := s.Apply(ctx, &store.SecretPut{Secret: store.Secret{ID: "K", OrgID: "org", Key: "K", Ciphertext: []byte(value), KeyID: "k1",
			CreatedAt: now, UpdatedAt: now}, IfModifyIndex: ifIndex})
		return err
	}
	if err := put("old", 0); err != nil {
		t.Fatal(err)
	}
	read, _ := s.State().Secret("org", "", "K")
	if err := put("tenant's new value", 0); err != nil {
		t.Fatal(err)
	}
	if err := put("old, re-sealed", read.ModifyIndex); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale conditional put: %v", err)
	}
	if got, _ := s.State().Secret("org", "", "K"); string(got.Ciphertext) != "tenant's new value" {
		t.Fatalf("value now %q", got.Ciphertext)
	}
	if _, err := s.Apply(ctx, &store.SecretDelete{OrgID: "org", Key: "K"}); err != nil {
		t.Fatal(err)
	}
	if err := put("old, re-sealed", read.ModifyIndex); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("conditional put of a deleted secret: %v", err)
	}
}
