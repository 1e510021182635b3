package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/agenthost/agenthost/internal/h2c"
	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// Config configures an edge proxy.
type Config struct {
	// Domain is the base domain: agents are a<port>.<Domain> and
	// <agentId>.<Domain>, the API is <Domain>/api/ and api.<Domain>/api/.
	Domain string
	// ControlAddrs are control servers' cluster addresses, for the route
	// stream and for waking agents.
	ControlAddrs []string
	// APIAddrs are control servers' HTTP addresses, for /api/.
	APIAddrs []string
	// WakeTimeout bounds how long a request to a stopped autostart agent
	// waits for it to run (30 s).
	WakeTimeout time.Duration
	// MaxAPIBodyBytes bounds request bodies to the API (uploads are 50 MB).
	MaxAPIBodyBytes int64
	// RuntimeUsername is the user the runtime's basic auth expects.
	RuntimeUsername string
	// LagBound is how long a control server may trail the leader's applied
	// index before the proxy sends it no reads and watches no routes
	// through it (5 s).
	LagBound time.Duration
	// Rings is how many io_uring loops serve the fast path's connections
	// (FastListener); 0: a goroutine serves each. Where the kernel refuses
	// io_uring (a container engine's seccomp profile, the
	// kernel.io_uring_disabled sysctl), goroutines serve, and the proxy
	// logs why.
	Rings int
	// AccessLog logs a line per request (at Info).
	AccessLog  bool
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultConfig returns the defaults for a proxy of domain.
func DefaultConfig() Config {
	return Config{
		Domain:          "localhost",
		WakeTimeout:     30 * time.Second,
		MaxAPIBodyBytes: 64 << 20,
		RuntimeUsername: "opencode",
		LagBound:        5 * time.Second,
		AccessLog:       true,
		Rings:           runtime.GOMAXPROCS(0),
	}
}

// Proxy is the edge proxy: it routes agent subdomains to the node hosting
// the agent and /api/ to control servers.
type Proxy struct {
	cfg     Config
	domain  Domain
	table   *table
	logger  *slog.Logger
	metrics *metrics
	cluster *clusterrpc.Client
	control *http.Client

	// backends and agentProxy forward to agents: the first body-less
	// reads (forward.go, and the fast path, fastpath.go), the second
	// everything else.
	backends   *backendPool
	agentProxy *httputil.ReverseProxy
	apiProxy   *httputil.ReverseProxy
	nextAPI    atomic.Uint64
	// leaderAPI is the index in APIAddrs of the leader, -1 when unknown.
	leaderAPI atomic.Int64
	lag       *serverLag
}

// New returns a proxy; Run keeps its routing table up to date.
func New(cfg Config) (*Proxy, error) {
	d, err := NewDomain(cfg.Domain)
	if err != nil {
		return nil, err
	}
	if len(cfg.ControlAddrs) == 0 || len(cfg.APIAddrs) == 0 {
		return nil, errors.New("proxy: needs control servers' cluster and HTTP addresses")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	def := DefaultConfig()
	if cfg.WakeTimeout <= 0 {
		cfg.WakeTimeout = def.WakeTimeout
	}
	if cfg.MaxAPIBodyBytes <= 0 {
		cfg.MaxAPIBodyBytes = def.MaxAPIBodyBytes
	}
	if cfg.RuntimeUsername == "" {
		cfg.RuntimeUsername = def.RuntimeUsername
	}
	if cfg.LagBound <= 0 {
		cfg.LagBound = def.LagBound
	}
	p := &Proxy{
		cfg: cfg, domain: d, table: newTable(cfg.RuntimeUsername), backends: newBackendPool(), logger: cfg.Logger.With("component", "proxy"),
		cluster: clusterrpc.NewClient(), control: h2c.NewClient(),
		lag: newServerLag(len(cfg.APIAddrs), cfg.LagBound),
	}
	p.leaderAPI.Store(-1)
	p.metrics, err = newMetrics(cfg.Registerer, p.table)
	if err != nil {
		return nil, err
	}
	newTransport := func() *http.Transport {
		return &http.Transport{
			Proxy:                 nil, // never an environment proxy: nodes are internal
			DialContext:           dialer.DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   maxIdlePerBackend,
			IdleConnTimeout:       backendIdleTimeout,
			ResponseHeaderTimeout: 0, // agents stream; the client decides how long to wait
			ForceAttemptHTTP2:     false,
		}
	}
	agentTransport := newTransport()
	// Kept-alive connections to agents are pooled per agent, never per
	// node address alone: a port freed by a deleted agent may be another
	// tenant's agent's a moment later, and a connection kept from before
	// must not carry the new agent's credential to the old one. The
	// request's URL names the agent (rewriteAgent); the dial finds its
	// node.
	agentTransport.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		id, _, _ := net.SplitHostPort(addr)
		rt := p.table.lookupID(id)
		if rt == nil {
			return nil, fmt.Errorf("agent %s is no longer routed", id)
		}
		return dialer.DialContext(ctx, network, rt.backendAddr)
	}
	p.agentProxy = &httputil.ReverseProxy{
		Rewrite:   p.rewriteAgent,
		Transport: agentTransport,
		// Streams (text/event-stream, or no Content-Length) are flushed
		// on every write by ReverseProxy itself; other answers go out in
		// one write, headers and body together.
		FlushInterval: 0,
		ErrorHandler:  p.agentError,
	}
	transport := newTransport()
	p.apiProxy = &httputil.ReverseProxy{
		Rewrite:       p.rewriteAPI,
		Transport:     &retryTransport{next: transport, proxy: p},
		FlushInterval: 0, // the event stream is flushed as a stream (see above)
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.logger.Warn("no control server answered", "path", r.URL.Path, "error", err)
			writeJSONError(w, http.StatusBadGateway, "unavailable", "no control server answered; retry")
		},
	}
	return p, nil
}

// Run watches the routing table until ctx ends.
func (p *Proxy) Run(ctx context.Context) {
	go p.watchLeader(ctx)
	go func() {
		t := time.NewTicker(backendIdleTimeout / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				p.backends.closeAll()
				return
			case <-t.C:
				p.backends.sweep()
			}
		}
	}()
	p.table.watch(ctx, p.control, p.cfg.ControlAddrs, p.lag.clusterBehind, p.logger)
}

// leaderPollInterval is how often the proxy asks the API servers which of
// them leads.
const leaderPollInterval = time.Second

// watchLeader keeps track of which API server is the Raft leader (each
// answers GET /v1/status), so that writes go straight to it instead of
// being forwarded by a follower, and of which have fallen behind it
// (serverLag).
func (p *Proxy) watchLeader(ctx context.Context) {
	client := &http.Client{Timeout: leaderPollInterval}
	t := time.NewTicker(leaderPollInterval)
	defer t.Stop()
	for {
		leader := int64(-1)
		statuses := make([]serverStatus, len(p.cfg.APIAddrs))
		for i, addr := range p.cfg.APIAddrs {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/status", nil)
			resp, err := client.Do(req)
			if err != nil {
				continue
			}
			var st struct {
				State        string `json:"state"`
				AppliedIndex uint64 `json:"appliedIndex"`
				Address      string `json:"address"`
			}
			err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st)
			resp.Body.Close()
			if err != nil {
				continue
			}
			statuses[i] = serverStatus{ok: true, leader: st.State == "Leader", appliedIndex: st.AppliedIndex, address: st.Address}
			if st.State == "Leader" && leader < 0 {
				leader = int64(i)
			}
		}
		p.leaderAPI.Store(leader)
		p.lag.observe(statuses, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Synced reports whether the proxy has received a routing table.
func (p *Proxy) Synced() bool { return p.table.isSynced() }

// Handler is the proxy's HTTP handler.
func (p *Proxy) Handler() http.Handler { return p }

type ctxKey int

const routeKey ctxKey = 0

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w}
	t := p.domain.Match(r.Host)
	kind := t.Kind
	// Deferred, so that an answer cut off (http.ErrAbortHandler) is
	// counted and logged too.
	defer func() {
		status := rec.status()
		if rec.code == 0 && r.Context().Err() != nil {
			status = statusClientClosed // nothing sent: the client left first
		}
		p.record(kind, r, status, rec.bytes, start)
	}()
	kind = p.serve(rec, r, t)
}

// record counts a request answered and logs it (the access log): bytes is
// the body's length as sent.
func (p *Proxy) record(kind RouteKind, r *http.Request, status int, bytes int64, start time.Time) {
	p.metrics.observe(kind, status, time.Since(start))
	if p.cfg.AccessLog {
		p.logRequest(kind, r.Method, r.Host, r.URL.Path, r.RemoteAddr, status, bytes, start)
	}
}

// logRequest writes the access log's line for a request.
func (p *Proxy) logRequest(kind RouteKind, method, host, path, remote string, status int, bytes int64, start time.Time) {
	p.logger.Info("request", "kind", kind.String(), "method", method, "host", host, "path", path,
		"status", status, "bytes", bytes, "duration_ms", time.Since(start).Milliseconds(), "remote", remote)
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request, t Target) RouteKind {
	k := &p.metrics.byKind[t.Kind]
	k.active.Inc()
	defer k.active.Dec()
	if r.Header.Get("Upgrade") != "" {
		k.sockets.Inc()
		defer k.sockets.Dec()
	}
	if r.URL.IsAbs() {
		// An absolute-form target (GET http://host/ HTTP/1.1) is what a
		// client sends to a forward proxy, never to an origin; Go routes it
		// by the URL's host and drops the Host header, so the two cannot be
		// compared. Refused: no browser or API client sends it here.
		writeJSONError(w, http.StatusBadRequest, "invalid_request", "absolute-form request targets are not accepted")
		return RouteNone
	}
	// Duplicate Host headers never get here: net/http refuses them (400).
	switch t.Kind {
	case RouteAPI:
		if !controlPath(r.URL.Path) {
			writeJSONError(w, http.StatusNotFound, "not_found", "no such endpoint")
			return t.Kind
		}
		p.serveAPI(w, r)
	case RouteAgentPort:
		p.serveAgent(w, r, p.table.lookupPort(t.Port))
	case RouteAgentID:
		p.serveAgent(w, r, p.table.lookupID(t.AgentID))
	default:
		writeJSONError(w, http.StatusNotFound, "not_found", "no such host")
	}
	return t.Kind
}

func (p *Proxy) serveAgent(w http.ResponseWriter, r *http.Request, rt *route) {
	if rt == nil {
		p.page(w, http.StatusNotFound, "No such agent", "There is no agent at this address.")
		return
	}
	if rt.nodeDown {
		p.page(w, http.StatusBadGateway, "Agent unreachable", "The machine that hosts this agent is down. It will be moved or restarted; try again shortly.")
		return
	}
	if !rt.running() {
		if rt.desired == "stopped" && !rt.autostart {
			p.page(w, http.StatusServiceUnavailable, "Agent stopped", "This agent is stopped. Start it with POST /api/v1/agents/"+rt.agentID+"/start.")
			return
		}
		if rt.status == "ERROR" && rt.desired == "running" {
			p.page(w, http.StatusServiceUnavailable, "Agent failed", "This agent failed to start. See GET /api/v1/agents/"+rt.agentID+" for why.")
			return
		}
		woken, err := p.wake(r.Context(), rt)
		if err != nil {
			p.page(w, http.StatusServiceUnavailable, "Agent not running", err.Error())
			return
		}
		rt = woken
	}
	if forwardable(r) {
		if err := p.forward(w, r, rt); err != nil {
			p.agentError(w, r, err)
		}
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), routeKey, rt))
	p.agentProxy.ServeHTTP(w, r)
}

// rewriteAgent points the request at the agent's port on its node and
// presents the runtime's credential: the user never sees it, and the
// runtime refuses whoever comes without it.
func (p *Proxy) rewriteAgent(pr *httputil.ProxyRequest) {
	rt := pr.In.Context().Value(routeKey).(*route)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = rt.poolAddr
	pr.Out.Host = rt.backendAddr
	pr.Out.Header.Del("Cookie") // the platform's own cookies stay with the platform
	pr.Out.Header.Set("Authorization", rt.basicAuth)
	pr.SetXForwarded()
}

func (p *Proxy) agentError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	p.logger.Warn("agent unreachable", "host", r.Host, "error", err)
	p.page(w, http.StatusBadGateway, agentUnreachableTitle, agentUnreachableText)
}

// The page for an agent that could not be reached or did not answer.
const (
	agentUnreachableTitle = "Agent unreachable"
	agentUnreachableText  = "The agent did not answer. Try again shortly."
)

// wake starts a stopped autostart agent (or waits for one already starting)
// and waits, up to WakeTimeout, until it runs.
func (p *Proxy) wake(ctx context.Context, rt *route) (*route, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.WakeTimeout)
	defer cancel()
	if rt.desired == "stopped" {
		if err := p.start(ctx, rt.agentID); err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("The agent could not be started: %v", err)
		}
		p.metrics.wakes.Inc()
	}
	for {
		changed := p.table.changes()
		cur := p.table.lookupID(rt.agentID)
		switch {
		case cur == nil:
			return nil, errors.New("The agent was deleted.")
		case cur.running() && !cur.nodeDown:
			return cur, nil
		case cur.status == "ERROR" && cur.desired == "running":
			return nil, errors.New("The agent failed to start.")
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("The agent did not start within %s; it may still be starting.", p.cfg.WakeTimeout)
		}
	}
}

// start asks the leader to run the agent, trying each control server until
// the leader answers.
func (p *Proxy) start(ctx context.Context, agentID string) error {
	cmd, err := store.Encode(&store.AgentSetDesired{ID: agentID, Desired: store.DesiredRunning, Status: store.StatusProvisioning})
	if err != nil {
		return err
	}
	var last error
	for _, addr := range p.cfg.ControlAddrs {
		_, err := p.cluster.ForwardApply(ctx, addr, cmd)
		if err == nil || !errors.Is(err, store.ErrNoLeader) && !errors.Is(err, store.ErrNotLeader) {
			return err
		}
		last = err
	}
	return last
}

func (p *Proxy) serveAPI(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > p.cfg.MaxAPIBodyBytes {
		writeJSONError(w, http.StatusRequestEntityTooLarge, "invalid_request", "request body too large")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, p.cfg.MaxAPIBodyBytes)
	p.apiProxy.ServeHTTP(w, r)
}

func (p *Proxy) rewriteAPI(pr *httputil.ProxyRequest) {
	pr.Out.URL.Scheme = "http"
	if i := p.leaderAPI.Load(); !readOnly(pr.In.Method) && i >= 0 && int(i) < len(p.cfg.APIAddrs) && !p.lag.apiBehind(int(i)) {
		// Writes go to the leader when the proxy knows it: a follower
		// would forward them there anyway, a hop later. Not to one the
		// proxy sees behind: that is an old leader (its disk full, say)
		// whose successor the proxy has not heard of yet, and it would
		// answer 503 server_behind; any other server forwards the write.
		pr.Out.URL.Host = p.cfg.APIAddrs[i]
	} else {
		pr.Out.URL.Host = p.nextAPIAddr()
	}
	pr.SetXForwarded()
}

// nextAPIAddr is the next API server, round robin, passing over servers
// that are behind the leader (all of them, when every one is).
func (p *Proxy) nextAPIAddr() string {
	n := uint64(len(p.cfg.APIAddrs))
	for range n {
		i := int(p.nextAPI.Add(1) % n)
		if !p.lag.apiBehind(i) {
			return p.cfg.APIAddrs[i]
		}
	}
	return p.cfg.APIAddrs[int(p.nextAPI.Add(1)%n)]
}

func readOnly(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// retryTransport sends an API request to the next control server when the
// one it tried could not be reached — only for requests a retry cannot
// repeat the effect of: reads, and writes with an Idempotency-Key.
type retryTransport struct {
	next  http.RoundTripper
	proxy *Proxy
}

func (t *retryTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	// ReverseProxy's outgoing requests cannot be rewound, so only those
	// without a body are sent again.
	retriable := readOnly(r.Method) || r.Header.Get("Idempotency-Key") != "" && (r.Body == nil || r.Body == http.NoBody)
	for i := 1; err != nil && retriable && notConnected(err) && i < len(t.proxy.cfg.APIAddrs); i++ {
		r2 := r.Clone(r.Context())
		r2.URL.Host = t.proxy.nextAPIAddr()
		resp, err = t.next.RoundTrip(r2)
	}
	return resp, err
}

// notConnected reports whether err means the request never reached a
// server (so repeating it elsewhere cannot do anything twice).
func notConnected(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// page answers a browser (the embedded UI) with a short HTML page, and
// says the same in the status line for scripts.
func (p *Proxy) page(w http.ResponseWriter, status int, title, text string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	w.WriteHeader(status)
	io.WriteString(w, pageHTML(title, text))
}

// pageHTML is the body of the proxy's own pages (page, and the fast path's
// writePage).
func pageHTML(title, text string) string {
	return fmt.Sprintf(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>%s</title></head>`+
		`<body style="font-family:system-ui,sans-serif;margin:3rem auto;max-width:36rem"><h1>%s</h1><p>%s</p></body></html>`+"\n",
		html.EscapeString(title), html.EscapeString(title), html.EscapeString(text))
}

func writeJSONError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`+"\n", code, message)
}

// statusRecorder remembers the status and size of a response, and passes
// through what streaming and upgrades need.
type statusRecorder struct {
	http.ResponseWriter
	code  int
	bytes int64
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusRecorder) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}

// Hijack hands the connection over for a WebSocket: ReverseProxy writes
// the agent's 101 on it itself, so it is recorded here.
func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(s.ResponseWriter).Hijack()
	if err == nil && s.code == 0 {
		s.code = http.StatusSwitchingProtocols
	}
	return c, brw, err
}

// Unwrap lets http.ResponseController reach flushing (SSE).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// controlPath reports whether an apex path is the control nodes': the API
// under /api/, its /docs page, and the web dashboard at / and under /app/
// (api/dashboard.go). Anything else on the apex — /metrics, /v1/status —
// is never forwarded.
func controlPath(p string) bool {
	return p == "/" || p == "/docs" || p == "/app" || strings.HasPrefix(p, "/app/") || strings.HasPrefix(p, "/api/")
}
