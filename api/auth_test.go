package api

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

func TestAuthenticate(t *testing.T) {
	tc := clusterrpc.NewTestCluster(t, 1)
	s := tc.Servers[0].Store
	ctx := context.Background()
	now := time.Now().UTC()
	if _, err := s.Apply(ctx, &store.OrgCreate{Org: store.Org{ID: "org", Name: "org", CreatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	tok, hash, last4, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, &store.TokenCreate{Token: store.Token{ID: "t1", OrgID: "org", Label: "ci", Role: store.RoleTenant,
		Hash: hash, Last4: last4, CreatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	a := NewAuthenticator(s, nil)
	req := func(header string) (Principal, error) {
		r := httptest.NewRequest("GET", "/api/v1/agents", nil)
		if header != "" {
			r.Header.Set("Authorization", header)
		}
		return a.Authenticate(r)
	}
	for _, h := range []string{"Bearer " + tok, "bearer " + tok, "BEARER  " + tok} {
		p, err := req(h)
		if err != nil || p != (Principal{TokenID: "t1", OrgID: "org", Role: store.RoleTenant}) {
			t.Fatalf("%q: %+v, %v", h, p, err)
		}
	}
	other, _, _, _ := NewToken()
	for _, h := range []string{"", "Bearer", "Bearer ", "Basic " + tok, tok, "Bearer " + tok[:len(tok)-1] + "x", "Bearer " + other} {
		if _, err := req(h); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%q: %v, want ErrUnauthenticated", h, err)
		}
	}

	// Uses are recorded in one batch.
	a.flush(ctx)
	if got, _ := s.State().Token("t1"); got == nil || got.LastUsedAt.IsZero() {
		t.Fatalf("last use not recorded: %+v", got)
	}

	// Revoked: refused from then on.
	if _, err := s.Apply(ctx, &store.TokenRevoke{ID: "t1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := req("Bearer " + tok); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("revoked token: %v", err)
	}
	a.flush(ctx) // the revoked token's pending use is skipped, not an error
}

// TestAuthenticateWithoutLeaderIsUnavailable: a follower that does not hold
// a token and cannot ask a leader does not know whether the token exists:
// it says so (store.ErrNoLeader: 503), never "invalid token" (401), while a
// token it holds still authenticates.
func TestAuthenticateWithoutLeaderIsUnavailable(t *testing.T) {
	tc := clusterrpc.NewTestCluster(t, 3)
	leader := tc.WaitForLeader()
	s := tc.Servers[leader].Store
	ctx := context.Background()
	now := time.Now().UTC()
	if _, err := s.Apply(ctx, &store.OrgCreate{Org: store.Org{ID: "org", Name: "org", CreatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	known, hash, last4, _ := NewToken()
	index, err := s.Apply(ctx, &store.TokenCreate{Token: store.Token{ID: "t1", OrgID: "org", Label: "ci", Role: store.RoleTenant, Hash: hash, Last4: last4, CreatedAt: now}})
	if err != nil {
		t.Fatal(err)
	}
	tc.WaitForIndex(index)
	follower := tc.Follower()
	for i := range tc.Servers {
		if i != follower {
			tc.Kill(i)
		}
	}
	a := NewAuthenticator(tc.Servers[follower].Store, nil)
	req := func(token string) (Principal, error) {
		r := httptest.NewRequest("GET", "/api/v1/agents", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		return a.Authenticate(r)
	}
	if p, err := req(known); err != nil || p.TokenID != "t1" {
		t.Fatalf("a token the follower holds: %+v %v", p, err)
	}
	unknown, _, _, _ := NewToken()
	if _, err := req(unknown); !errors.Is(err, store.ErrNoLeader) {
		t.Fatalf("an unknown token without a leader: %v, want ErrNoLeader", err)
	}
}
