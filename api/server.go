package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agenthost/agenthost/internal/h2c"
	"github.com/agenthost/agenthost/internal/keyring"
	"github.com/agenthost/agenthost/store"
)

// Config configures the REST API of one control node.
type Config struct {
	Store *store.Store
	// Keyring seals and opens secrets; nil makes the secrets endpoints
	// answer 503 (the server was started without a key file).
	Keyring *keyring.Keyring
	// Models is the catalog agents may use; nil means DefaultModels.
	Models *Models
	// PublicURL is where users reach agenthost, e.g. https://example.com
	// or http://localhost:7480: an agent's URL is its scheme with the
	// host a<port>.<host> (and the same port).
	PublicURL *url.URL
	// Runtime defaults for new agents.
	AgentRuntime   string
	AgentResources store.Resources
	// CreateTimeout bounds how long create waits for an agent to be ready
	// (60 s, then 504); StartTimeout the same for start and restart (30 s);
	// StopTimeout how long stop waits for the container to be gone.
	CreateTimeout time.Duration
	StartTimeout  time.Duration
	StopTimeout   time.Duration
	// RuntimeClient reaches node agents' AgentRuntimeService; nil makes one.
	RuntimeClient *http.Client
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
}

// DefaultConfig returns the settings of the reference: 60 s to create,
// 30 s to start.
func DefaultConfig() Config {
	return Config{
		AgentRuntime:   "opencode",
		AgentResources: store.Resources{CPUMillis: 500, MemoryMB: 1024},
		CreateTimeout:  60 * time.Second,
		StartTimeout:   30 * time.Second,
		StopTimeout:    15 * time.Second,
	}
}

// Server is the REST API of one control node.
type Server struct {
	cfg     Config
	store   *store.Store
	logger  *slog.Logger
	auth    *Authenticator
	models  *Models
	rtc     *http.Client
	keyring atomic.Pointer[keyring.Keyring]
	metrics *metrics
	mux     *http.ServeMux
	signIns *signInLimiter
}

// New returns the API over cfg.Store.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("api: a store is required")
	}
	if cfg.PublicURL == nil || cfg.PublicURL.Host == "" || (cfg.PublicURL.Scheme != "http" && cfg.PublicURL.Scheme != "https") {
		return nil, errors.New("api: the public URL must be http:// or https:// with a host")
	}
	d := DefaultConfig()
	if cfg.AgentRuntime == "" {
		cfg.AgentRuntime = d.AgentRuntime
	}
	if cfg.AgentResources == (store.Resources{}) {
		cfg.AgentResources = d.AgentResources
	}
	if cfg.CreateTimeout <= 0 {
		cfg.CreateTimeout = d.CreateTimeout
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = d.StartTimeout
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = d.StopTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Models == nil {
		cfg.Models = DefaultModels()
	}
	if cfg.RuntimeClient == nil {
		cfg.RuntimeClient = h2c.NewClient()
	}
	s := &Server{
		cfg:     cfg,
		store:   cfg.Store,
		logger:  cfg.Logger.With("component", "api"),
		auth:    NewAuthenticator(cfg.Store, cfg.Logger),
		models:  cfg.Models,
		rtc:     cfg.RuntimeClient,
		metrics: newMetrics(cfg.Registerer),
		mux:     http.NewServeMux(),
		signIns: newSignInLimiter(),
	}
	s.keyring.Store(cfg.Keyring)
	s.routes()
	// The dashboard's pages are not API operations: served beside them.
	s.mux.HandleFunc("/{$}", s.serveDashboard)
	s.mux.HandleFunc("/app", s.serveDashboard)
	s.mux.HandleFunc("/app/", s.serveDashboard)
	return s, nil
}

// Run does the API's background work until ctx ends: recording when tokens
// were last used, and expiring idempotency records.
func (s *Server) Run(ctx context.Context) {
	go s.auth.RecordUse(ctx, 5*time.Second)
	s.expireIdempotency(ctx, time.Minute)
}

// Handler serves /api/v1/… and the documentation pages.
func (s *Server) Handler() http.Handler { return s.mux }

// access says who may call a route.
type access int

const (
	public   access = iota // no token (documents, bootstrap)
	tenant                 // a tenant token, acting in its org
	operator               // an operator token
)

// handlerFunc is a route's handler. It writes its success itself (writeJSON)
// and returns any failure, which the wrapper writes as the JSON error.
type handlerFunc func(w http.ResponseWriter, r *http.Request, p Principal) error

type route struct {
	method  string
	access  access
	handler handlerFunc
}

// handle registers a path with its methods. The path answers any other
// method with a JSON 405 that lists the allowed ones.
func (s *Server) handle(path string, routes ...route) {
	var allowed []string
	for _, rt := range routes {
		allowed = append(allowed, rt.method)
		s.mux.Handle(rt.method+" "+path, s.wrap(path, rt))
	}
	allow := strings.Join(allowed, ", ")
	s.mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = withRequestID(w, r)
		w.Header().Set("Allow", allow)
		s.writeError(w, r, apiError(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "%s is not allowed here; use %s", r.Method, allow))
	}))
}

// wrap adds to a handler what every route has: a request ID, panics turned
// into 500s, authentication and role checks, idempotency for POST, metrics.
func (s *Server) wrap(path string, rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		w = sw
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.logger.Error("handler panicked", "method", r.Method, "path", r.URL.Path, "request_id", requestID(r), "panic", v)
				if !sw.wroteHeader {
					s.writeError(w, r, apiError(http.StatusInternalServerError, CodeInternal, "internal error"))
				}
			}
			s.metrics.observe(rt.method, path, sw.status(), time.Since(start))
		}()
		r = withRequestID(w, r)
		var p Principal
		if rt.access != public {
			var err error
			p, err = s.auth.Authenticate(r)
			if errors.Is(err, ErrCSRF) {
				s.writeError(w, r, apiError(http.StatusForbidden, CodeForbidden, "%v", err))
				return
			}
			if errors.Is(err, store.ErrNoLeader) {
				// Whether the credential exists cannot be known now.
				s.writeError(w, r, s.report(r, err))
				return
			}
			if err != nil {
				if !errors.Is(err, ErrUnauthenticated) {
					s.logger.Error("authenticate", "error", err)
				}
				s.writeError(w, r, apiError(http.StatusUnauthorized, CodeUnauthenticated, "invalid or missing API token"))
				return
			}
			if rt.access == operator && p.ClusterOperator {
				p = p.asOperator()
			}
			if rt.access == operator && p.Role != store.RoleOperator {
				s.writeError(w, r, apiError(http.StatusForbidden, CodeForbidden, "this needs an operator token"))
				return
			}
			if rt.access == tenant && p.Role != store.RoleTenant {
				s.writeError(w, r, apiError(http.StatusForbidden, CodeForbidden, "this needs a tenant token; operator tokens administer the cluster"))
				return
			}
		}
		var err error
		// A restore is exempt: its body is a whole backup, not to be
		// held in memory, and restoring it twice changes nothing more.
		if r.Method == http.MethodPost && r.Header.Get("Idempotency-Key") != "" && rt.access != public && path != snapshotPath {
			err = s.idempotent(w, r, p, rt.handler, path == "/api/v1/tokens" || strings.HasSuffix(path, "/tokens") || strings.HasSuffix(path, "/invitations"))
		} else {
			err = rt.handler(w, r, p)
		}
		if err != nil {
			s.writeError(w, r, s.report(r, err))
		}
	})
}

// report maps err to its API error and logs what the client cannot be told.
func (s *Server) report(r *http.Request, err error) *Error {
	e := toAPIError(err)
	if e.Status >= 500 && e.Code == CodeInternal {
		s.logger.Error("request failed", "method", r.Method, "path", r.URL.Path, "request_id", requestID(r), "error", err)
	}
	return e
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, e *Error) {
	if e.Status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.Status, errorBody{Error: errorDetail{Code: e.Code, Message: e.Message, RequestID: requestID(r)}})
}

// writeJSON writes v as the response.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// maxJSONBody bounds a JSON request body. The largest legitimate ones are
// prompts; a megabyte is far above any of them.
const maxJSONBody = 1 << 20

// decodeJSON reads a JSON object body into v. An empty body is allowed only
// when optional is set (then v keeps its zero value). Unknown fields are
// ignored, as clients of a growing API expect.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	body := http.MaxBytesReader(w, r.Body, maxJSONBody)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &tooBig):
			return badRequest("request body is larger than %d bytes", maxJSONBody)
		case errors.Is(err, io.EOF) && optional:
			return nil
		case errors.Is(err, io.EOF):
			return badRequest("request body is required (JSON)")
		case errors.As(err, &typeErr) && typeErr.Field != "":
			return badRequest("invalid JSON body: %s must be %s", typeErr.Field, jsonKind(typeErr.Type.Kind()))
		case errors.As(err, &typeErr):
			return badRequest("invalid JSON body: want a JSON object")
		}
		return badRequest("invalid JSON body: %v", err)
	}
	if dec.More() {
		return badRequest("invalid JSON body: more than one value")
	}
	return nil
}

// requestIDKey holds the request ID in a request's context.
type requestIDKey struct{}

// withRequestID gives the request an ID — the client's X-Request-Id when it
// is a sensible one, else a new one — and sets it on the response.
func withRequestID(w http.ResponseWriter, r *http.Request) *http.Request {
	id := r.Header.Get("X-Request-Id")
	if !validRequestID(id) {
		b := make([]byte, 12)
		rand.Read(b)
		id = "req_" + hex.EncodeToString(b)
	}
	w.Header().Set("X-Request-Id", id)
	return r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
}

func requestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return id
}

func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// statusWriter remembers the status written, for metrics and for knowing
// whether a panic can still be answered.
type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) status() int {
	if !w.wroteHeader {
		return http.StatusOK
	}
	return w.code
}

// Unwrap lets http.ResponseController reach Flush on the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// timestamp formats times as the reference does: UTC with milliseconds.
func timestamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only the API's own types are passed
	}
	return append(b, '\n')
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// notFoundHandler answers every unknown path under /api/ with a JSON 404.
func (s *Server) notFoundHandler(w http.ResponseWriter, r *http.Request) {
	r = withRequestID(w, r)
	s.writeError(w, r, notFound("no such endpoint: %s %s", r.Method, r.URL.Path))
}

func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Float64:
		return "a number"
	}
	return "of another type"
}

// catchUp is called when a lookup found nothing. On a follower the object
// may have been made through another server a moment ago: the follower
// catches up with every write acknowledged so far, and reports that the
// lookup is worth repeating. On the leader, whose state already holds every
// acknowledged write, and when no leader answers, it reports false. Only
// misses pay for this; hits are served from the local state.
func (s *Server) catchUp(ctx context.Context) bool {
	if s.store.IsLeader() {
		return false
	}
	_, err := s.store.ConsistentState(ctx)
	return err == nil
}
