package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/agenthost/agenthost/store"
)

// Principal is who a request acts as: a token, or a dashboard account's
// session (AccountID and SessionID set, TokenID empty; a tenant of its org).
type Principal struct {
	TokenID   string
	OrgID     string
	Role      store.TokenRole
	AccountID string
	SessionID string
	// ClusterOperator is set for an operator account's session: it may
	// also call the operator endpoints, acting as an operator (asOperator).
	ClusterOperator bool
}

// asOperator is p on an operator endpoint: an operator of no org, as an
// operator token is.
func (p Principal) asOperator() Principal {
	return Principal{Role: store.RoleOperator, AccountID: p.AccountID, SessionID: p.SessionID, ClusterOperator: true}
}

// ErrUnauthenticated is the one answer to a missing, malformed, unknown or
// revoked token: which of them it was is not the caller's business.
var ErrUnauthenticated = errors.New("invalid or missing API token")

// Authenticator checks bearer tokens against the store's token hashes and
// records, in batches, when each token was last used.
type Authenticator struct {
	store  *store.Store
	logger *slog.Logger

	mu       sync.Mutex
	lastUsed map[string]time.Time // token id → last use, not yet written
}

// NewAuthenticator returns an authenticator over s.
func NewAuthenticator(s *store.Store, logger *slog.Logger) *Authenticator {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Authenticator{store: s, logger: logger, lastUsed: map[string]time.Time{}}
}

// Authenticate returns the principal of a request's bearer token. It reads
// the local state: a token revoked a moment ago on the leader may still pass
// on a follower for the time replication takes (milliseconds); a token made
// a moment ago is looked up again in a consistent state before it is refused.
//
// A request without an Authorization header may carry the dashboard's
// session cookie instead (accounts.go); a request with both is judged by
// its token alone.
func (a *Authenticator) Authenticate(r *http.Request) (Principal, error) {
	if r.Header.Get("Authorization") == "" {
		if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
			return a.authenticateSession(r, c.Value)
		}
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return Principal{}, ErrUnauthenticated
	}
	hash, ok := ParseToken(strings.TrimSpace(token))
	if !ok {
		return Principal{}, ErrUnauthenticated
	}
	// Only well-formed tokens with a valid checksum get this far.
	t, err := findCaughtUp(r.Context(), a.store, func(st *store.State) (*store.Token, error) { return st.TokenByHash(hash) })
	if err != nil {
		return Principal{}, err
	}
	if t == nil {
		return Principal{}, ErrUnauthenticated
	}
	a.mu.Lock()
	a.lastUsed[t.ID] = time.Now().UTC()
	a.mu.Unlock()
	return Principal{TokenID: t.ID, OrgID: t.OrgID, Role: t.Role}, nil
}

// RecordUse writes the pending last-used times every interval until ctx
// ends: one Raft command for many requests, not one per request.
func (a *Authenticator) RecordUse(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.flush(ctx)
		}
	}
}

func (a *Authenticator) flush(ctx context.Context) {
	a.mu.Lock()
	pending := a.lastUsed
	a.lastUsed = map[string]time.Time{}
	a.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	if _, err := a.store.Apply(ctx, &store.TokenTouch{LastUsed: pending}); err != nil {
		a.logger.Warn("could not record when tokens were last used", "tokens", len(pending), "error", err)
	}
}

// findCaughtUp looks a record up in the local state and, when a follower
// does not have it, once more in a state that has every acknowledged write:
// a token, session or account made a moment ago through another server may
// not have reached this one yet. When that second look cannot be made (no
// leader within 2 s), the error says so: the record's absence is not known,
// and the caller answers 503, not 401.
func findCaughtUp[T any](ctx context.Context, s *store.Store, find func(*store.State) (*T, error)) (*T, error) {
	v, err := find(s.State())
	if err != nil || v != nil || s.IsLeader() {
		return v, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := s.ConsistentState(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot check the credential against the leader: %v", store.ErrNoLeader, err)
	}
	return find(st)
}
