package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
	"golang.org/x/time/rate"

	"github.com/agenthost/agenthost/store"
)

// Dashboard accounts: a person signs up and in with an email and a password
// and gets a session cookie; with it the dashboard's pages call this same
// REST API, acting in the account's org as a tenant token would. The
// decisions, in one place (also in docs/api.md, "Accounts"):
//
//   - Passwords are hashed with argon2id at OWASP's parameters (19 MiB, 2
//     passes, 1 lane); at most 4 hashes run at once per server, so a flood
//     of sign-ins cannot take the server's memory.
//   - Sessions last 7 days. The cookie (HttpOnly, SameSite=Lax, Secure when
//     the request came over TLS) holds 32 random bytes; the store keeps only
//     their SHA-256, so any server checks it and sign-out ends it on all.
//   - Requests that change something and ride on the cookie must carry
//     X-CSRF-Token, a value derived from the cookie that a page of another
//     site cannot read, and, when the browser sends Origin, come from this
//     host: SameSite stops most cross-site requests, the token the rest.
//   - Sign-in is rate limited per email (5 a minute, bursts of 10) and per
//     client address (30 a minute): guessing is slow, and a wrong password
//     and an unknown email take as long and answer the same.
//   - Sign-up follows the cluster's mode: open (an org of one's own, with
//     the self-serve plan), invite (an invitation code) or closed.

const (
	sessionCookie = "agenthost_session"
	sessionTTL    = 7 * 24 * time.Hour
	csrfHeader    = "X-CSRF-Token"
	minPassword   = 10
	maxPassword   = 256
)

// selfServePlan is the plan of an org made by open sign-up: enough to try
// the platform, not enough for one person to take a pool's capacity.
// Operators raise it per org (PATCH /api/v1/orgs/{orgId}).
var selfServePlan = store.Plan{MaxAgents: 10, MaxRunning: 2}

// argon2id parameters (OWASP Password Storage Cheat Sheet, first option).
const (
	argonMemoryKiB = 19 * 1024
	argonPasses    = 2
	argonLanes     = 1
	argonKeyLen    = 32
)

// hashSlots bounds concurrent password hashing (19 MiB each).
var hashSlots = make(chan struct{}, 4)

func hashPassword(password string) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	hashSlots <- struct{}{}
	key := argon2.IDKey([]byte(password), salt, argonPasses, argonMemoryKiB, argonLanes, argonKeyLen)
	<-hashSlots
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemoryKiB, argonPasses, argonLanes, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// checkPassword reports whether password matches the PHC string, with the
// parameters the string records (so that raising them later keeps old
// hashes valid).
func checkPassword(phc, password string) bool {
	var version, memory, passes int
	var lanes uint8
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &memory, &passes, &lanes); err != nil || memory < 1 || memory > 1<<20 || passes < 1 || passes > 10 || lanes < 1 {
		return false
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return false
	}
	want, err := base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return false
	}
	hashSlots <- struct{}{}
	got := argon2.IDKey([]byte(password), salt, uint32(passes), uint32(memory), lanes, uint32(len(want)))
	<-hashSlots
	return subtle.ConstantTimeCompare(got, want) == 1
}

// decoyHash is checked when no account has the email, so that an unknown
// email takes as long as a wrong password.
var decoyHash = sync.OnceValue(func() string { return hashPassword("decoy password, never anyone's") })

func hexSHA256(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// csrfToken is what a page sends back in X-CSRF-Token: derived from the
// session cookie, which scripts of other sites cannot read.
func csrfToken(cookie string) string { return hexSHA256("agenthost-csrf\x00" + cookie)[:32] }

// newSecret returns prefix and 32 random bytes, base64url.
func newSecret(prefix string) string {
	b := make([]byte, 32)
	rand.Read(b)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// normalizeEmail lower-cases and trims an email as it is stored.
func normalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// signInLimiter limits sign-in attempts per email and per client address.
type signInLimiter struct {
	mu      sync.Mutex
	byEmail map[string]*rate.Limiter
	byAddr  map[string]*rate.Limiter
	swept   time.Time
}

func newSignInLimiter() *signInLimiter {
	return &signInLimiter{byEmail: map[string]*rate.Limiter{}, byAddr: map[string]*rate.Limiter{}, swept: time.Now()}
}

// allow takes one attempt for email from addr; false means wait.
func (l *signInLimiter) allow(email, addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.swept) > 10*time.Minute {
		// Limiters idle for this long are full again: forget them.
		clear(l.byEmail)
		clear(l.byAddr)
		l.swept = now
	}
	e, ok := l.byEmail[email]
	if !ok {
		e = rate.NewLimiter(rate.Every(12*time.Second), 10)
		l.byEmail[email] = e
	}
	a, ok := l.byAddr[addr]
	if !ok {
		a = rate.NewLimiter(rate.Every(2*time.Second), 30)
		l.byAddr[addr] = a
	}
	// Both or neither: a refused attempt does not use the other's budget.
	if e.TokensAt(now) < 1 || a.TokensAt(now) < 1 {
		return false
	}
	e.AllowN(now, 1)
	a.AllowN(now, 1)
	return true
}

// clientAddr is the address sign-in attempts are counted by: the proxy's
// X-Forwarded-For entry for its client when the request came through a
// proxy on a private or loopback address, else the peer's address.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if ip := net.ParseIP(host); ip != nil && (ip.IsLoopback() || ip.IsPrivate()) {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			parts := strings.Split(xff, ",")
			return strings.TrimSpace(parts[len(parts)-1])
		}
	}
	return host
}

type signUpRequest struct {
	Email      string `json:"email"`
	Password   string `json:"password"`
	OrgName    string `json:"orgName"`
	Invitation string `json:"invitation"`
}

type signInRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// signedInView is what GET /api/v1/auth/session and sign-up and sign-in
// answer: who is signed in, in which org, and the CSRF token for writes.
type signedInView struct {
	Account   accountView `json:"account"`
	Org       orgBrief    `json:"org"`
	CSRFToken string      `json:"csrfToken"`
	ExpiresAt string      `json:"expiresAt"`
}

type accountView struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	// Operator accounts may also use the operator API (and pages).
	Operator  bool   `json:"operator"`
	CreatedAt string `json:"createdAt"`
}

type orgBrief struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func checkPasswordRules(password string) error {
	n := utf8.RuneCountInString(password)
	if n < minPassword || len(password) > maxPassword {
		return badRequest("the password must have at least %d characters (at most %d bytes)", minPassword, maxPassword)
	}
	return nil
}

// crossSiteForm refuses a sign-up, sign-in or sign-out posted by a page of
// another site (login CSRF: signing the victim into the attacker's account,
// or out of their own). Browsers send Origin on such posts; clients that
// send none (curl, the CLI) are not browsers.
func crossSiteForm(r *http.Request) error {
	if origin := r.Header.Get("Origin"); origin != "" && !sameHost(origin, r) {
		return apiError(http.StatusForbidden, CodeForbidden, "this form was posted from another site")
	}
	return nil
}

func (s *Server) signUp(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if err := crossSiteForm(r); err != nil {
		return err
	}
	var req signUpRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	email := normalizeEmail(req.Email)
	if err := store.ValidateEmail(email); err != nil {
		return badRequest("%q is not an email address", req.Email)
	}
	if err := checkPasswordRules(req.Password); err != nil {
		return err
	}
	st, cfg, err := s.consistentConfig(r.Context())
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	acc := store.Account{ID: newID(prefixAccount), Email: email, CreatedAt: now}
	cmd := &store.AccountCreate{Now: now}
	var inv *store.Invitation
	if req.Invitation != "" {
		if inv, err = st.InvitationByHash(hexSHA256(strings.TrimSpace(req.Invitation))); err != nil {
			return err
		}
		if inv == nil || !now.Before(inv.ExpiresAt) {
			return apiError(http.StatusForbidden, CodeForbidden, "this invitation is not valid (used, withdrawn or expired)")
		}
		if inv.Email != "" && inv.Email != email {
			return apiError(http.StatusForbidden, CodeForbidden, "this invitation is for another email address")
		}
		cmd.InvitationID = inv.ID
		acc.Operator = inv.Operator
	}
	switch mode := cfg.SignupMode(); {
	case mode == store.SignupClosed:
		return apiError(http.StatusForbidden, CodeSignupClosed, "sign-up is closed on this cluster; ask its operator for an account")
	case mode == store.SignupInvite && inv == nil:
		return apiError(http.StatusForbidden, CodeSignupClosed, "sign-up on this cluster needs an invitation")
	}
	if inv != nil && inv.OrgID != "" {
		acc.OrgID = inv.OrgID
	} else {
		name := strings.TrimSpace(req.OrgName)
		if name == "" {
			name = email
		}
		org := store.Org{ID: newID(prefixOrg), Name: name, Plan: selfServePlan, CreatedAt: now}
		acc.OrgID, cmd.Org = org.ID, &org
	}
	acc.PasswordHash = hashPassword(req.Password)
	cmd.Account = acc
	if _, err := s.store.Apply(r.Context(), cmd); err != nil {
		switch {
		case errors.Is(err, store.ErrAlreadyExists) && cmd.Org != nil && strings.Contains(err.Error(), "org named"):
			return apiError(http.StatusConflict, CodeConflict, "an org named %q exists; choose another name", cmd.Org.Name)
		case errors.Is(err, store.ErrAlreadyExists):
			return apiError(http.StatusConflict, CodeConflict, "an account with this email exists; sign in instead")
		case errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict):
			return apiError(http.StatusForbidden, CodeForbidden, "this invitation is not valid (used, withdrawn or expired)")
		}
		return err
	}
	return s.startSession(w, r, acc, http.StatusCreated)
}

func (s *Server) signIn(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if err := crossSiteForm(r); err != nil {
		return err
	}
	var req signInRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	email := normalizeEmail(req.Email)
	if !s.signIns.allow(email, clientAddr(r)) {
		w.Header().Set("Retry-After", "15")
		return apiError(http.StatusTooManyRequests, CodeRateLimited, "too many sign-in attempts; wait a minute and try again")
	}
	acc, err := s.accountByEmail(r.Context(), email)
	if err != nil {
		return err
	}
	hash := decoyHash()
	if acc != nil {
		hash = acc.PasswordHash
	}
	if !checkPassword(hash, req.Password) || acc == nil {
		return apiError(http.StatusUnauthorized, CodeUnauthenticated, "wrong email or password")
	}
	return s.startSession(w, r, *acc, http.StatusOK)
}

// accountByEmail finds the account signing in (findCaughtUp: one made a
// moment ago through another server too).
func (s *Server) accountByEmail(ctx context.Context, email string) (*store.Account, error) {
	return findCaughtUp(ctx, s.store, func(st *store.State) (*store.Account, error) { return st.AccountByEmail(email) })
}

// startSession records a new session for acc and sets its cookie.
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, acc store.Account, status int) error {
	cookie := newSecret("ahs_")
	now := time.Now().UTC()
	ws := store.WebSession{ID: newID(prefixSession), AccountID: acc.ID, Hash: hexSHA256(cookie), CreatedAt: now, ExpiresAt: now.Add(sessionTTL)}
	index, err := s.store.Apply(r.Context(), &store.WebSessionCreate{Session: ws})
	if err != nil {
		return err
	}
	if err := s.store.WaitForIndex(r.Context(), index); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: cookie, Path: "/", Expires: ws.ExpiresAt, MaxAge: int(sessionTTL.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: overTLS(r)})
	view, err := s.viewSession(s.store.State(), acc, cookie, ws)
	if err != nil {
		return err
	}
	return writeJSON(w, status, view)
}

// overTLS reports whether the browser's request came over TLS, to this
// server or to the edge proxy in front of it.
func overTLS(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func (s *Server) viewSession(st *store.State, acc store.Account, cookie string, ws store.WebSession) (signedInView, error) {
	org, err := st.Org(acc.OrgID)
	if err != nil {
		return signedInView{}, err
	}
	if org == nil {
		return signedInView{}, apiError(http.StatusUnauthorized, CodeUnauthenticated, "not signed in")
	}
	return signedInView{
		Account:   accountView{ID: acc.ID, Email: acc.Email, Operator: acc.Operator, CreatedAt: timestamp(acc.CreatedAt)},
		Org:       orgBrief{ID: org.ID, Name: org.Name},
		CSRFToken: csrfToken(cookie),
		ExpiresAt: timestamp(ws.ExpiresAt),
	}, nil
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request, p Principal) error {
	if p.SessionID == "" {
		return apiError(http.StatusUnauthorized, CodeUnauthenticated, "not signed in (this endpoint is for the dashboard's session cookie)")
	}
	st := s.store.State()
	acc, err := st.Account(p.AccountID)
	if err != nil {
		return err
	}
	c, _ := r.Cookie(sessionCookie)
	ws, err := st.WebSessionByHash(hexSHA256(c.Value))
	if err != nil {
		return err
	}
	if acc == nil || ws == nil {
		return apiError(http.StatusUnauthorized, CodeUnauthenticated, "not signed in")
	}
	view, err := s.viewSession(st, *acc, c.Value, *ws)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, view)
}

// signOut ends the cookie's session, if any, and clears the cookie. It
// needs no CSRF token: ending a session is never harmful to its owner.
func (s *Server) signOut(w http.ResponseWriter, r *http.Request, _ Principal) error {
	if err := crossSiteForm(r); err != nil {
		return err
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		if ws, err := s.store.State().WebSessionByHash(hexSHA256(c.Value)); err != nil {
			return err
		} else if ws != nil {
			if _, err := s.store.Apply(r.Context(), &store.WebSessionDelete{ID: ws.ID}); err != nil {
				return err
			}
		}
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: overTLS(r)})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ErrCSRF refuses a cookie-authenticated write without the page's token.
var ErrCSRF = errors.New("this request rides on a session cookie and needs the X-CSRF-Token header from GET /api/v1/auth/session")

// authenticateSession returns the principal of the request's session
// cookie: the account's org, as a tenant.
func (a *Authenticator) authenticateSession(r *http.Request, cookie string) (Principal, error) {
	hash := hexSHA256(cookie)
	ws, err := findCaughtUp(r.Context(), a.store, func(st *store.State) (*store.WebSession, error) { return st.WebSessionByHash(hash) })
	if err != nil {
		return Principal{}, err
	}
	if ws == nil || !time.Now().Before(ws.ExpiresAt) {
		return Principal{}, ErrUnauthenticated
	}
	acc, err := a.store.State().Account(ws.AccountID)
	if err != nil {
		return Principal{}, err
	}
	if acc == nil {
		return Principal{}, ErrUnauthenticated
	}
	if !safeMethod(r.Method) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get(csrfHeader)), []byte(csrfToken(cookie))) != 1 {
			return Principal{}, ErrCSRF
		}
		if origin := r.Header.Get("Origin"); origin != "" && !sameHost(origin, r) {
			return Principal{}, ErrCSRF
		}
	}
	return Principal{OrgID: acc.OrgID, Role: store.RoleTenant, AccountID: acc.ID, SessionID: ws.ID, ClusterOperator: acc.Operator}, nil
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// sameHost reports whether an Origin header names the host the request was
// sent to (the proxy forwards the browser's Host as X-Forwarded-Host).
func sameHost(origin string, r *http.Request) bool {
	_, host, ok := strings.Cut(origin, "://")
	if !ok {
		return false
	}
	want := r.Header.Get("X-Forwarded-Host")
	if want == "" {
		want = r.Host
	}
	return strings.EqualFold(host, want)
}
