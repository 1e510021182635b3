package api

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agenthost/agenthost/store"
)

// setSignup sets the cluster's sign-up mode.
func (h *htHarness) setSignup(mode string) {
	h.t.Helper()
	cfg, err := h.st.State().ClusterConfig()
	if err != nil {
		h.t.Fatal(err)
	}
	cfg.Signup = mode
	h.htApply(&store.ClusterConfigSet{Config: cfg})
}

// sessionCookieOf returns the session cookie a response sets, or "".
func sessionCookieOf(r *htResp) (value string, c *http.Cookie) {
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == sessionCookie {
			return c.Value, c
		}
	}
	return "", nil
}

// TestAccountsSignUpSignInAndUseTheAPI: with open sign-up a person signs up
// (an org of their own with the self-serve plan) and gets a session cookie
// (HttpOnly, SameSite=Lax, not Secure over plain HTTP); with it the tenant
// API answers for their org alone, reads without a CSRF token, writes only
// with it (and not from another origin); sign-out ends the session on the
// server, so the old cookie no longer works; sign-in gives a new one;
// passwords are stored only as argon2id hashes.
func TestAccountsSignUpSignInAndUseTheAPI(t *testing.T) {
	h := htNew(t, htOptions{})
	h.setSignup(store.SignupOpen)
	other := h.org("other", store.Plan{})
	otherTok, _ := h.token(other.ID, store.RoleTenant, "other")
	otherAgent := h.createAgent(otherTok, map[string]any{"name": "theirs"})

	r := h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", map[string]any{"email": " Ada@Example.com ", "password": "correct horse battery", "orgName": "Ada's lab"}), 201)
	cookie, c := sessionCookieOf(r)
	if cookie == "" || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure || c.Path != "/" || c.MaxAge <= 0 {
		t.Fatalf("session cookie %+v", c)
	}
	var view signedInView
	r.decode(t, &view)
	if view.Account.Email != "ada@example.com" || view.Org.Name != "Ada's lab" || view.CSRFToken == "" {
		t.Fatalf("sign-up answer %+v", view)
	}
	acc, _ := h.st.State().AccountByEmail("ada@example.com")
	if acc == nil || !strings.HasPrefix(acc.PasswordHash, "$argon2id$") || strings.Contains(acc.PasswordHash, "correct horse") {
		t.Fatalf("stored account %+v", acc)
	}
	if org, _ := h.st.State().Org(acc.OrgID); org == nil || org.Plan != selfServePlan {
		t.Fatalf("self-serve org %+v", org)
	}
	withCookie := func(extra ...string) []string {
		return append([]string{"Cookie", sessionCookie + "=" + cookie}, extra...)
	}

	// Reads ride on the cookie; the session says who is signed in.
	h.mustStatus(h.do(nil, "GET", "/api/v1/auth/session", "", nil, withCookie()...), 200)
	h.mustStatus(h.do(nil, "GET", "/api/v1/agents", "", nil, withCookie()...), 200)
	// Another org's agent is as absent as a missing one.
	h.mustStatus(h.do(nil, "GET", "/api/v1/agents/"+otherAgent, "", nil, withCookie()...), 404)
	// Writes need the CSRF token, and not from another site.
	noToken := h.mustStatus(h.do(nil, "POST", "/api/v1/scopes", "", map[string]any{"name": "dev"}, withCookie()...), 403)
	if err := htErrorShape(noToken, CodeForbidden); err != nil {
		t.Error(err)
	}
	h.mustStatus(h.do(nil, "POST", "/api/v1/scopes", "", map[string]any{"name": "dev"}, withCookie(csrfHeader, "0123456789abcdef0123456789abcdef")...), 403)
	h.mustStatus(h.do(nil, "POST", "/api/v1/scopes", "", map[string]any{"name": "dev"}, withCookie(csrfHeader, view.CSRFToken, "Origin", "https://evil.example")...), 403)
	host := strings.TrimPrefix(h.ts.URL, "http://")
	h.mustStatus(h.do(nil, "POST", "/api/v1/scopes", "", map[string]any{"name": "dev"}, withCookie(csrfHeader, view.CSRFToken, "Origin", "http://"+host)...), 201)
	if scopes, _ := h.st.State().ScopesByOrg(acc.OrgID); len(scopes) != 1 {
		t.Fatalf("scopes of the account's org: %+v", scopes)
	}

	// Signing up again with the same email is a conflict.
	h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", map[string]any{"email": "ada@example.com", "password": "another long one"}), 409)
	// Short passwords and non-addresses are refused.
	h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", map[string]any{"email": "bob@example.com", "password": "short"}), 400)
	h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", map[string]any{"email": "Bob <bob@example.com>", "password": "long enough password"}), 400)

	// Sign-out ends the session everywhere: the cookie no longer works.
	out := h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signout", "", nil, withCookie()...), 204)
	if v, c := sessionCookieOf(out); v != "" || c == nil || c.MaxAge >= 0 {
		t.Errorf("sign-out's cookie %+v, want it cleared", c)
	}
	h.mustStatus(h.do(nil, "GET", "/api/v1/agents", "", nil, withCookie()...), 401)

	// Sign-in: a wrong password and an unknown email answer alike.
	wrong := h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signin", "", map[string]any{"email": "ada@example.com", "password": "wrong password!"}), 401)
	unknown := h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signin", "", map[string]any{"email": "nobody@example.com", "password": "wrong password!"}), 401)
	if strings.Split(string(wrong.body), `"requestId"`)[0] != strings.Split(string(unknown.body), `"requestId"`)[0] {
		t.Errorf("wrong password %s, unknown email %s: they should read the same", wrong.body, unknown.body)
	}
	in := h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signin", "", map[string]any{"email": "ADA@example.com", "password": "correct horse battery"}), 200)
	again, _ := sessionCookieOf(in)
	if again == "" || again == cookie {
		t.Fatalf("sign-in cookie %q", again)
	}
	h.mustStatus(h.do(nil, "GET", "/api/v1/agents", "", nil, "Cookie", sessionCookie+"="+again), 200)
	// A bearer token wins over a cookie: an operator token is not a tenant.
	h.mustStatus(h.do(nil, "GET", "/api/v1/agents", h.opToken, nil, "Cookie", sessionCookie+"="+again), 403)
}

// TestAccountsSignUpModes: closed refuses everyone; invite admits only
// holders of a valid invitation — into its org, for its email, once.
func TestAccountsSignUpModes(t *testing.T) {
	h := htNew(t, htOptions{})
	body := func(email, inv string) map[string]any {
		return map[string]any{"email": email, "password": "long enough password", "invitation": inv}
	}
	// The default is invitation only.
	closed := h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", body("ada@example.com", "")), 403)
	if err := htErrorShape(closed, CodeSignupClosed); err != nil {
		t.Error(err)
	}
	h.setSignup(store.SignupClosed)
	h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", body("ada@example.com", "")), 403)

	h.setSignup(store.SignupInvite)
	team := h.org("team", store.Plan{})
	now := time.Now().UTC()
	h.htApply(&store.InvitationCreate{Invitation: store.Invitation{ID: "inv-team", OrgID: team.ID, Email: "bob@example.com", Hash: hexSHA256("code-team"), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}})
	h.htApply(&store.InvitationCreate{Invitation: store.Invitation{ID: "inv-own", Hash: hexSHA256("code-own"), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}})
	h.htApply(&store.InvitationCreate{Invitation: store.Invitation{ID: "inv-old", Hash: hexSHA256("code-old"), CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)}})

	h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", body("carol@example.com", "code-team")), 403) // another email
	h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", body("bob@example.com", "not-a-code")), 403)
	h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", body("dave@example.com", "code-old")), 403) // expired
	r := h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", body("bob@example.com", "code-team")), 201)
	var view signedInView
	r.decode(t, &view)
	if view.Org.ID != team.ID {
		t.Fatalf("invited into %+v, want %s", view.Org, team.ID)
	}
	h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", body("eve@example.com", "code-own")), 201)
	h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", body("frank@example.com", "code-own")), 403) // used
}

// TestAccountsSignInIsRateLimited: the eleventh quick attempt for one email
// is refused with 429 and Retry-After, even with the right password; another
// email from elsewhere is not held up.
func TestAccountsSignInIsRateLimited(t *testing.T) {
	h := htNew(t, htOptions{})
	h.setSignup(store.SignupOpen)
	h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", map[string]any{"email": "ada@example.com", "password": "correct horse battery"}), 201)
	for i := range 10 {
		if r := h.do(nil, "POST", "/api/v1/auth/signin", "", map[string]any{"email": "ada@example.com", "password": "guess number " + string(rune('a'+i))}); r.status != 401 {
			t.Fatalf("attempt %d: %s", i+1, r)
		}
	}
	r := h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signin", "", map[string]any{"email": "ada@example.com", "password": "correct horse battery"}), 429)
	if r.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	if err := htErrorShape(r, CodeRateLimited); err != nil {
		t.Error(err)
	}
	h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signin", "", map[string]any{"email": "bob@example.com", "password": "anything at all"}, "X-Forwarded-For", "192.0.2.7"), 401)
}

// TestPasswordHashRoundTrip: a hash checks its password only, and a
// tampered hash checks nothing.
func TestPasswordHashRoundTrip(t *testing.T) {
	h := hashPassword("correct horse battery")
	if !checkPassword(h, "correct horse battery") || checkPassword(h, "correct horse batterY") {
		t.Fatal("hash does not check its password alone")
	}
	for _, bad := range []string{"", "$argon2id$", strings.Replace(h, "m=19456", "m=0", 1), strings.Replace(h, "$argon2id$", "$argon2i$", 1), h[:len(h)-4]} {
		if checkPassword(bad, "correct horse battery") {
			t.Errorf("tampered hash %q checks", bad)
		}
	}
}

// TestAccountsExpiredSessions: an expired session's cookie is refused at
// once, and the leader's sweep deletes it while keeping live ones.
func TestAccountsExpiredSessions(t *testing.T) {
	h := htNew(t, htOptions{})
	h.setSignup(store.SignupOpen)
	r := h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", map[string]any{"email": "ada@example.com", "password": "correct horse battery"}), 201)
	live, _ := sessionCookieOf(r)
	acc, _ := h.st.State().AccountByEmail("ada@example.com")
	now := time.Now().UTC()
	h.htApply(&store.WebSessionCreate{Session: store.WebSession{ID: "ws-old", AccountID: acc.ID, Hash: hexSHA256("ahs_old"), CreatedAt: now.Add(-8 * 24 * time.Hour), ExpiresAt: now.Add(-time.Hour)}})

	h.mustStatus(h.do(nil, "GET", "/api/v1/agents", "", nil, "Cookie", sessionCookie+"=ahs_old"), 401)
	h.srv.expireWebSessions(context.Background())
	if ws, _ := h.st.State().WebSessionByHash(hexSHA256("ahs_old")); ws != nil {
		t.Error("expired session kept after the sweep")
	}
	h.mustStatus(h.do(nil, "GET", "/api/v1/agents", "", nil, "Cookie", sessionCookie+"="+live), 200)
}

// TestAccountsFormsFromAnotherSiteAreRefused: a sign-up, sign-in or
// sign-out posted by another site's page (its Origin) is 403 and changes
// nothing; from the dashboard's own origin, or with no Origin (not a
// browser), they work.
func TestAccountsFormsFromAnotherSiteAreRefused(t *testing.T) {
	h := htNew(t, htOptions{})
	h.setSignup(store.SignupOpen)
	creds := map[string]any{"email": "ada@example.com", "password": "correct horse battery"}
	evil := []string{"Origin", "https://evil.example"}
	before := h.stateHash()
	if err := htErrorShape(h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", creds, evil...), 403), CodeForbidden); err != nil {
		t.Error(err)
	}
	if h.stateHash() != before {
		t.Fatal("a refused sign-up changed the state")
	}
	own := []string{"Origin", "http://" + strings.TrimPrefix(h.ts.URL, "http://")}
	r := h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signup", "", creds, own...), 201)
	cookie, _ := sessionCookieOf(r)
	h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signin", "", creds, evil...), 403)
	h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signout", "", nil, append([]string{"Cookie", sessionCookie + "=" + cookie}, evil...)...), 403)
	h.mustStatus(h.do(nil, "GET", "/api/v1/auth/session", "", nil, "Cookie", sessionCookie+"="+cookie), 200) // still signed in
	h.mustStatus(h.do(nil, "POST", "/api/v1/auth/signin", "", creds), 200)
}
