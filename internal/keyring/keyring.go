// Package keyring seals secrets and agents' runtime passwords with
// AES-256-GCM under a key-encryption key that lives outside Raft: in a file
// on each control node (or named by an environment variable), never in the
// replicated state or its snapshots.
//
// The key file holds one key per line, "ID:BASE64", the first being the one
// that seals; the others only open what they sealed before, until a rotation
// has re-sealed everything under the first. Sealed values carry their key ID
// beside them (store.Secret.KeyID, store.Agent.RuntimePasswordKeyID).
package keyring

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"sync"
)

// EnvKeyFile names the key file when no flag does.
const EnvKeyFile = "AGENTHOST_SECRETS_KEY_FILE"

// ErrUnknownKey is returned for a value sealed under a key the ring lacks.
var ErrUnknownKey = errors.New("keyring: sealed under a key this keyring does not hold")

var keyID = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Keyring holds the key that seals and the keys that may still open.
// It is safe for concurrent use; Replace swaps in a reloaded key file for
// everyone holding it.
type Keyring struct {
	mu      sync.RWMutex
	current string
	aeads   map[string]cipher.AEAD
}

// Load reads a key file. It refuses a file others can read.
func Load(path string) (*Keyring, error) {
	k, _, err := readKeyFile(path)
	return k, err
}

// readKeyFile is Load that also returns the file's bytes, for the
// commands that rewrite it.
func readKeyFile(path string) (*Keyring, []byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("keyring: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, nil, fmt.Errorf("keyring: %s is readable by others (mode %v); chmod 600 it", path, info.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("keyring: %w", err)
	}
	k, err := Parse(b)
	return k, b, err
}

// Parse reads keys in the key file's format.
func Parse(b []byte) (*Keyring, error) {
	k := &Keyring{aeads: map[string]cipher.AEAD{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, enc, ok := strings.Cut(line, ":")
		if !ok || !keyID.MatchString(id) {
			return nil, fmt.Errorf("keyring: line %d: want ID:BASE64 with an ID of letters, digits, '.', '_' or '-'", n)
		}
		raw, err := base64.StdEncoding.DecodeString(enc)
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("keyring: line %d: key %s is not 32 bytes of base64", n, id)
		}
		if _, dup := k.aeads[id]; dup {
			return nil, fmt.Errorf("keyring: line %d: key %s appears twice", n, id)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		k.aeads[id] = aead
		if k.current == "" {
			k.current = id
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	if k.current == "" {
		return nil, errors.New("keyring: no key")
	}
	return k, nil
}

// NewKeyLine returns a fresh key in the file's format.
func NewKeyLine(id string) (string, error) {
	if !keyID.MatchString(id) {
		return "", fmt.Errorf("keyring: bad key id %q", id)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	return id + ":" + base64.StdEncoding.EncodeToString(raw), nil
}

// Create writes a key file with one fresh key, readable by its owner only;
// it fails when the file exists.
func Create(path, id string) error {
	line, err := NewKeyLine(id)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// LoadOrCreate loads path, creating it with one key first when missing
// (for `agenthost dev`).
func LoadOrCreate(path string) (*Keyring, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if err := Create(path, "k1"); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
	}
	return Load(path)
}

// CurrentID names the key that seals.
func (k *Keyring) CurrentID() string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.current
}

// Has reports whether the ring holds key id.
func (k *Keyring) Has(id string) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	_, ok := k.aeads[id]
	return ok
}

// Replace makes k hold next's keys, for a key file reloaded in place.
func (k *Keyring) Replace(next *Keyring) {
	next.mu.RLock()
	current, aeads := next.current, next.aeads
	next.mu.RUnlock()
	k.mu.Lock()
	k.current, k.aeads = current, aeads
	k.mu.Unlock()
}

// Rotate puts a fresh key, named id, first in the key file at path, so that
// it seals from the next load on; the other keys stay to open what they
// sealed. The file is replaced atomically and stays readable by its owner
// only.
func Rotate(path, id string) error {
	old, b, err := readKeyFile(path)
	if err != nil {
		return err
	}
	if old.Has(id) {
		return fmt.Errorf("keyring: %s already holds a key %s", path, id)
	}
	line, err := NewKeyLine(id)
	if err != nil {
		return err
	}
	return writeKeyFile(path, append([]byte(line+"\n"), b...))
}

// Retire removes key id from the key file at path. The sealing key cannot be
// retired; nor should a key that still seals a secret (see the reseal
// command), which the caller checks.
func Retire(path, id string) error {
	k, b, err := readKeyFile(path)
	if err != nil {
		return err
	}
	if !k.Has(id) {
		return fmt.Errorf("keyring: %s holds no key %s", path, id)
	}
	if k.CurrentID() == id {
		return fmt.Errorf("keyring: %s is the key that seals; rotate first", id)
	}
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if kid, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && kid == id {
			continue
		}
		out.WriteString(line)
	}
	return writeKeyFile(path, out.Bytes())
}

// writeKeyFile replaces path with b, mode 0600, checking that b parses.
func writeKeyFile(path string, b []byte) error {
	if _, err := Parse(b); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("keyring: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("keyring: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("keyring: %w", err)
	}
	return os.Rename(tmp, path)
}

// Seal encrypts plaintext under the current key. aad binds the value to where
// it belongs (see SecretAAD): a sealed value moved to another secret's record
// does not open.
func (k *Keyring) Seal(plaintext []byte, aad string) (sealed []byte, id string, err error) {
	k.mu.RLock()
	current := k.current
	aead := k.aeads[current]
	k.mu.RUnlock()
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, "", err
	}
	return aead.Seal(nonce, nonce, plaintext, []byte(aad)), current, nil
}

// Open decrypts a value sealed under key id with the same aad.
func (k *Keyring) Open(id string, sealed []byte, aad string) ([]byte, error) {
	k.mu.RLock()
	aead, ok := k.aeads[id]
	k.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKey, id)
	}
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("keyring: sealed value too short")
	}
	nonce, body := sealed[:aead.NonceSize()], sealed[aead.NonceSize():]
	out, err := aead.Open(nil, nonce, body, []byte(aad))
	if err != nil {
		return nil, errors.New("keyring: sealed value does not open (tampered, or moved from another record)")
	}
	return out, nil
}

// SecretAAD is the associated data of a secret's value: its org, scope and key.
func SecretAAD(orgID, scopeID, key string) string {
	return "agenthost-secret\x00" + orgID + "\x00" + scopeID + "\x00" + key
}

// RuntimePasswordAAD is the associated data of an agent's runtime password:
// the agent's ID, so that a password moved to another agent's record does
// not open (and no secret's sealed value passes for a password).
func RuntimePasswordAAD(agentID string) string {
	return "agenthost-runtime-password\x00" + agentID
}
