package clusterrpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
)

// TestResealSecretsRotatesTheKey: secrets and agents' runtime passwords
// sealed under k1, a ring with k2 first: everything ends under k2 and still
// opens to the same value, scoped or not; a second run has nothing to do.
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
	if _, err := s.Apply(ctx, &store.NodeRegister{Node: store.Node{ID: "n1", Name: "n1", Address: "10.0.0.7",
		Capacity: store.NodeCapacity{CPUMillis: 1 << 20, MemoryMB: 1 << 20, MaxAgents: 100}, Runtimes: []string{"opencode"}, LastSeen: now}}); err != nil {
		t.Fatal(err)
	}
	passwords := map[string]string{}
	for i := range 20 {
		a := store.Agent{ID: fmt.Sprintf("ag%02d", i), OrgID: "org", Name: "a", Runtime: "opencode",
			Desired: store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: now}
		passwords[a.ID] = store.NewRuntimePassword()
		if err := SealRuntimePassword(old, &a, passwords[a.ID]); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Apply(ctx, &store.AgentCreate{Agent: a}); err != nil {
			t.Fatal(err)
		}
	}
	if inUse, err := SecretKeysInUse(s.State()); err != nil || inUse.Secrets["k1"] != 2 || inUse.RuntimePasswords["k1"] != 20 {
		t.Fatalf("keys in use before: %+v, %v", inUse, err)
	}
	ring, _ := keyring.Parse([]byte(l2 + "\n" + l1))
	n, err := ResealSecrets(ctx, s, ring)
	if err != nil || n != 22 {
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
	for id, want := range passwords {
		a, err := s.State().Agent(id)
		if err != nil || a == nil || a.RuntimePasswordKeyID != "k2" {
			t.Fatalf("agent %s after rotation: %+v %v", id, a, err)
		}
		if got, err := OpenRuntimePassword(newOnly, a); err != nil || got != want {
			t.Fatalf("agent %s's password opens to %q, %v", id, got, err)
		}
	}
	if inUse, err := SecretKeysInUse(s.State()); err != nil || len(inUse.Secrets) != 1 || inUse.Secrets["k2"] != 2 ||
		len(inUse.RuntimePasswords) != 1 || inUse.RuntimePasswords["k2"] != 20 {
		t.Fatalf("keys in use after: %+v, %v", inUse, err)
	}
	if n, err := ResealSecrets(ctx, s, ring); err != nil || n != 0 {
		t.Fatalf("second run resealed %d, %v", n, err)
	}
}

// TestResealRuntimePasswordsLosesNothing re-seals from a stale read: an
// agent deleted since stays deleted, one whose password was re-sealed since
// keeps that, and one sealed under a key the ring lacks is reported and left
// as it is; the rest are re-sealed.
func TestResealRuntimePasswordsLosesNothing(t *testing.T) {
	f := newPasswordFixture(t, 1)
	ctx := context.Background()
	l1, _ := keyring.NewKeyLine("k1")
	l2, _ := keyring.NewKeyLine("k2")
	lx, _ := keyring.NewKeyLine("kx")
	old, _ := keyring.Parse([]byte(l1))
	lost, _ := keyring.Parse([]byte(lx))
	for _, id := range []string{"kept", "deleted", "resealed"} {
		f.agent(old, id, "pw-"+id)
	}
	f.agent(lost, "unopenable", "pw-unopenable")
	stale, err := f.s.State().Agents()
	if err != nil {
		t.Fatal(err)
	}
	ring, _ := keyring.Parse([]byte(l2 + "\n" + l1))
	f.apply(&store.AgentDelete{ID: "deleted"})
	first, _ := f.s.State().Agent("resealed")
	if ok, err := resealRuntimePassword(ctx, f.s, ring, first, "pw-resealed"); err != nil || !ok {
		t.Fatalf("re-seal: %v, %v", ok, err)
	}
	resealedOnce, _ := f.s.State().Agent("resealed")

	n, notOpened, err := resealRuntimePasswords(ctx, f.s, ring, stale)
	if err != nil || n != 1 || len(notOpened) != 1 || !errors.Is(notOpened[0], keyring.ErrUnknownKey) {
		t.Fatalf("re-sealed %d, not opened %v, %v", n, notOpened, err)
	}
	st := f.s.State()
	if a, _ := st.Agent("deleted"); a != nil {
		t.Fatalf("a deleted agent came back: %+v", a)
	}
	if a, _ := st.Agent("resealed"); !bytes.Equal(a.RuntimePasswordSealed, resealedOnce.RuntimePasswordSealed) {
		t.Fatal("a password re-sealed since the read was overwritten")
	}
	if a, _ := st.Agent("unopenable"); a.RuntimePasswordKeyID != "kx" {
		t.Fatalf("an unopenable password was changed: %+v", a)
	}
	for _, id := range []string{"kept", "resealed"} {
		a, _ := st.Agent(id)
		if got, err := OpenRuntimePassword(ring, a); a.RuntimePasswordKeyID != "k2" || err != nil || got != "pw-"+id {
			t.Fatalf("agent %s: under %s, opens to %q, %v", id, a.RuntimePasswordKeyID, got, err)
		}
	}
}

// TestReloadKeyringKeepsKeysThatSealRuntimePasswords: a key file without
// the key an agent's password is sealed under is refused, though no secret
// uses that key.
func TestReloadKeyringKeepsKeysThatSealRuntimePasswords(t *testing.T) {
	f := newPasswordFixture(t, 1)
	l1, _ := keyring.NewKeyLine("k1")
	l2, _ := keyring.NewKeyLine("k2")
	kr, _ := keyring.Parse([]byte(l1))
	f.agent(kr, "a1", "pw")
	path := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(path, []byte(l2+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ReloadKeyring(f.s.State(), kr, path); err == nil || !strings.Contains(err.Error(), "k1") {
		t.Fatalf("reload without k1: %v", err)
	}
	if !kr.Has("k1") || kr.CurrentID() != "k1" {
		t.Fatal("the refused reload changed the keyring")
	}
	if err := os.WriteFile(path, []byte(l2+"\n"+l1+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := ReloadKeyring(f.s.State(), kr, path); err != nil || kr.CurrentID() != "k2" {
		t.Fatalf("reload with both keys: %v", err)
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
