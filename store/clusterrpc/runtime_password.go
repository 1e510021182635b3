package clusterrpc

import (
	"bytes"
	"errors"
	"log/slog"

	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
)

// errNoKeyring is why a server without a key file opens no runtime password.
var errNoKeyring = errors.New("this server has no secrets key file")

// SealRuntimePassword seals password into a's record under kr's current key,
// bound to a's ID: the API does it for the password it makes at create, so
// that only the sealed value reaches Raft.
func SealRuntimePassword(kr *keyring.Keyring, a *store.Agent, password string) error {
	if kr == nil {
		return errNoKeyring
	}
	sealed, id, err := kr.Seal([]byte(password), keyring.RuntimePasswordAAD(a.ID))
	if err != nil {
		return err
	}
	a.RuntimePasswordSealed, a.RuntimePasswordKeyID = sealed, id
	return nil
}

// OpenRuntimePassword opens a's runtime password; "" for an agent without
// one.
func OpenRuntimePassword(kr *keyring.Keyring, a *store.Agent) (string, error) {
	if len(a.RuntimePasswordSealed) == 0 {
		return "", nil
	}
	if kr == nil {
		return "", errNoKeyring
	}
	b, err := kr.Open(a.RuntimePasswordKeyID, a.RuntimePasswordSealed, keyring.RuntimePasswordAAD(a.ID))
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// runtimePasswords opens agents' runtime passwords for one watch (a node's
// assignments, a proxy's routes). The watch recomputes what it sends on
// every state change; remembering what each agent's sealed value opened to
// keeps it from opening every password again, and from logging a password
// that does not open on every change. Not safe for concurrent use: each
// watch has its own.
type runtimePasswords struct {
	keyring *keyring.Keyring
	logger  *slog.Logger
	opened  map[string]openedPassword
}

type openedPassword struct {
	keyID    string
	sealed   []byte
	password string
	err      error
}

func newRuntimePasswords(kr *keyring.Keyring, logger *slog.Logger) *runtimePasswords {
	return &runtimePasswords{keyring: kr, logger: logger, opened: map[string]openedPassword{}}
}

// open returns a's runtime password. One that does not open (sealed under
// a key this server's key file lacks, or damaged) is logged and given out as
// "": that agent's node then refuses to start it and its runtime refuses the
// proxy, a failure of that one agent that its status and the log explain,
// where failing the whole watch would take every agent of the node, or
// every route of the proxy, down with it. It is tried again once the
// keyring holds its key (a reloaded key file).
func (p *runtimePasswords) open(a *store.Agent) string {
	o, ok := p.opened[a.ID]
	if ok && o.keyID == a.RuntimePasswordKeyID && bytes.Equal(o.sealed, a.RuntimePasswordSealed) &&
		(o.err == nil || !errors.Is(o.err, keyring.ErrUnknownKey) || !p.keyring.Has(o.keyID)) {
		return o.password
	}
	password, err := OpenRuntimePassword(p.keyring, a)
	if err != nil {
		p.logger.Error("an agent's runtime password does not open; the agent goes without it", "agent", a.ID, "key", a.RuntimePasswordKeyID, "error", err)
	}
	p.opened[a.ID] = openedPassword{keyID: a.RuntimePasswordKeyID, sealed: a.RuntimePasswordSealed, password: password, err: err}
	return password
}

// keepOnly forgets the agents that keep does not hold (deleted, or moved
// to another node).
func (p *runtimePasswords) keepOnly(keep func(agentID string) bool) {
	for id := range p.opened {
		if !keep(id) {
			delete(p.opened, id)
		}
	}
}
