package keyring

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSealOpenAndRotation(t *testing.T) {
	old, _ := NewKeyLine("k1")
	k1, err := Parse([]byte(old + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	aad := SecretAAD("org", "", "ANTHROPIC_API_KEY")
	sealed, id, err := k1.Seal([]byte("sk-secret"), aad)
	if err != nil || id != "k1" || bytes.Contains(sealed, []byte("sk-secret")) {
		t.Fatalf("seal: %q %s %v", sealed, id, err)
	}
	if got, err := k1.Open(id, sealed, aad); err != nil || string(got) != "sk-secret" {
		t.Fatalf("open: %q %v", got, err)
	}
	// Moved to another record, tampered with, or under an unknown key: refused.
	if _, err := k1.Open(id, sealed, SecretAAD("other-org", "", "ANTHROPIC_API_KEY")); err == nil {
		t.Fatal("a value opened under another record's aad")
	}
	bad := bytes.Clone(sealed)
	bad[len(bad)-1] ^= 1
	if _, err := k1.Open(id, bad, aad); err == nil {
		t.Fatal("a tampered value opened")
	}
	if _, err := k1.Open("k9", sealed, aad); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
	// A new key first: it seals, the old one still opens.
	newer, _ := NewKeyLine("k2")
	k2, err := Parse([]byte(newer + "\n" + old + "\n"))
	if err != nil || k2.CurrentID() != "k2" {
		t.Fatalf("parse: %v", err)
	}
	if got, err := k2.Open("k1", sealed, aad); err != nil || string(got) != "sk-secret" {
		t.Fatalf("old value under the new ring: %q %v", got, err)
	}
	if _, id, _ := k2.Seal([]byte("x"), aad); id != "k2" {
		t.Fatalf("sealed under %s", id)
	}
}

// TestRuntimePasswordIsBoundToItsAgent: a sealed runtime password opens
// for its agent only, and never as a secret (nor a secret as a password).
func TestRuntimePasswordIsBoundToItsAgent(t *testing.T) {
	line, _ := NewKeyLine("k1")
	k, err := Parse([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	sealed, id, err := k.Seal([]byte("pw"), RuntimePasswordAAD("ag1"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := k.Open(id, sealed, RuntimePasswordAAD("ag1")); err != nil || string(got) != "pw" {
		t.Fatalf("open: %q %v", got, err)
	}
	for name, aad := range map[string]string{
		"another agent":          RuntimePasswordAAD("ag2"),
		"a secret with its name": SecretAAD("ag1", "", ""),
	} {
		if _, err := k.Open(id, sealed, aad); err == nil {
			t.Errorf("opened as %s", name)
		}
	}
	secret, _, _ := k.Seal([]byte("v"), SecretAAD("org", "", "K"))
	if _, err := k.Open(id, secret, RuntimePasswordAAD("org")); err == nil {
		t.Error("a secret opened as a runtime password")
	}
}

func TestParseRefusals(t *testing.T) {
	line, _ := NewKeyLine("k1")
	for name, in := range map[string]string{
		"empty":     "",
		"no colon":  "k1",
		"bad id":    "k 1:" + line[3:],
		"short key": "k1:AAAA",
		"duplicate": line + "\n" + line,
	} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFilePermissions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	k, err := LoadOrCreate(path)
	if err != nil || k.CurrentID() != "k1" {
		t.Fatalf("create: %v", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
	if err := Create(path, "k2"); err == nil {
		t.Fatal("Create overwrote a key file")
	}
	os.Chmod(path, 0o644)
	if _, err := Load(path); err == nil {
		t.Fatal("a world-readable key file was loaded")
	}
}
