package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/websocket"

	"github.com/agenthost/agenthost/store"
	"github.com/agenthost/agenthost/store/clusterrpc"
)

// agentBackend stands in for an agent's runtime on its node port: it
// demands the runtime credential, like OpenCode with
// OPENCODE_SERVER_PASSWORD, and serves a page, a server-sent event stream
// released step by step, and a WebSocket echo.
type agentBackend struct {
	port     int
	password atomic.Pointer[string]
	release  chan struct{}
	seen     chan *http.Request
}

func startAgentBackend(t testing.TB, password string) *agentBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &agentBackend{port: ln.Addr().(*net.TCPAddr).Port, release: make(chan struct{}), seen: make(chan *http.Request, 100)}
	b.password.Store(&password)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello from the agent at %s", r.URL.Path) })
	mux.HandleFunc("/event", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-b.release:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: second\n\n")
	})
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case b.seen <- r:
		default:
		}
		if u, p, ok := r.BasicAuth(); !ok || u != "opencode" || p != *b.password.Load() {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

type proxyHarness struct {
	t      testing.TB
	st     *store.Store
	proxy  *Proxy
	url    string // the proxy's listener
	client *http.Client
	// controlAddr is the control server's cluster address.
	controlAddr string
}

func (h *proxyHarness) apply(cmd store.Command) {
	h.t.Helper()
	if _, err := h.st.Apply(context.Background(), cmd); err != nil {
		h.t.Fatalf("%s: %v", cmd.CommandType(), err)
	}
}

// get asks the proxy for path on host.
func (h *proxyHarness) get(host, path string, header ...string) (int, string) {
	h.t.Helper()
	req, _ := http.NewRequest("GET", h.url+path, nil)
	req.Host = host
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitRoute waits until the proxy's table agrees with ok.
func (h *proxyHarness) waitRoute(id string, ok func(*route) bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r := h.proxy.table.lookupID(id); r == nil || !ok(r); r = h.proxy.table.lookupID(id) {
		if time.Now().After(deadline) {
			h.t.Fatalf("route of %s never got there: %+v", id, r)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newProxyHarness starts a one-server cluster with a node at 127.0.0.1 whose
// agent ports are the backends' ports, an API stand-in, and the proxy.
func newProxyHarness(t testing.TB, ports []int) *proxyHarness {
	t.Helper()
	tc := clusterrpc.NewTestCluster(t, 1)
	return newProxyHarnessOn(t, tc, ports, []int{0})
}

// newProxyHarnessOn is newProxyHarness on a cluster of any size: the proxy
// watches routes from the servers watched, in that order.
func newProxyHarnessOn(t testing.TB, tc *clusterrpc.TestCluster, ports []int, watched []int) *proxyHarness {
	t.Helper()
	st := tc.Servers[tc.WaitForLeader()].Store
	h := &proxyHarness{t: t, st: st, client: &http.Client{Timeout: 30 * time.Second}}
	cfg, err := st.State().ClusterConfig()
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := ports[0], ports[0]
	for _, p := range ports {
		lo, hi = min(lo, p), max(hi, p)
	}
	cfg.PortRangeStart, cfg.PortRangeEnd = lo, hi
	h.apply(&store.ClusterConfigSet{Config: cfg})
	h.apply(&store.OrgCreate{Org: store.Org{ID: "org", Name: "org", CreatedAt: time.Now().UTC()}})
	h.apply(&store.NodeRegister{Node: store.Node{ID: "n1", Name: "n1", Address: "127.0.0.1",
		Capacity: store.NodeCapacity{CPUMillis: 1 << 20, MemoryMB: 1 << 20, MaxAgents: 1000}, Runtimes: []string{"opencode"}, LastSeen: time.Now().UTC()}})

	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "api %s %s forwarded-host=%s", r.Method, r.URL.Path, r.Header.Get("X-Forwarded-Host"))
	}))
	t.Cleanup(api.Close)
	pc := DefaultConfig()
	pc.Domain = "Example.Test"
	for _, i := range watched {
		pc.ControlAddrs = append(pc.ControlAddrs, tc.Servers[i].Addr())
	}
	h.controlAddr = pc.ControlAddrs[0]
	pc.APIAddrs = []string{strings.TrimPrefix(api.URL, "http://")}
	pc.WakeTimeout = 10 * time.Second
	if h.proxy, err = New(pc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.proxy.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = h.proxy.NewServer()
	srv.Listener = h.proxy.FastListener(srv.Listener, srv.Config)
	srv.Start()
	t.Cleanup(srv.Close)
	h.url = srv.URL
	for deadline := time.Now().Add(10 * time.Second); !h.proxy.Synced(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the proxy never got a routing table")
		}
	}
	return h
}

// runningAgent creates an agent and reports it RUNNING, as its node would.
func (h *proxyHarness) runningAgent(id, password string, autostart bool) {
	h.t.Helper()
	h.apply(&store.AgentCreate{Agent: clusterrpc.WithTestRuntimePassword(store.Agent{ID: id, OrgID: "org", Name: id, Runtime: "opencode",
		Autostart: autostart, Desired: store.DesiredRunning, Status: store.StatusProvisioning, CreatedAt: time.Now().UTC()}, password)})
	h.apply(&store.AgentSetStatus{ID: id, FromNode: "n1", Status: store.StatusRunning})
	h.waitRoute(id, func(r *route) bool { return r.running() })
}

func TestProxyRoutesAgentsAndTheAPI(t *testing.T) {
	b := startAgentBackend(t, "pw-one")
	h := newProxyHarness(t, []int{b.port})
	const id = "agaaaaaaaaaaaaaaaaaaaa"
	h.runningAgent(id, "pw-one", false)

	// By port and by ID, case and trailing dot as a browser may send them;
	// the proxy presents the runtime credential, replacing the client's.
	for _, host := range []string{fmt.Sprintf("a%d.example.test", b.port), fmt.Sprintf("A%d.EXAMPLE.TEST.", b.port), id + ".example.test:8080"} {
		if code, body := h.get(host, "/some/page", "Authorization", "Basic bm9wZTpub3Bl"); code != 200 || body != "hello from the agent at /some/page" {
			t.Fatalf("%s: %d %q", host, code, body)
		}
	}
	seen := <-b.seen
	if seen.Header.Get("X-Forwarded-Host") == "" || seen.Header.Get("X-Forwarded-Proto") != "http" || seen.Header.Get("X-Forwarded-For") == "" {
		t.Fatalf("forwarded headers: %v", seen.Header)
	}

	// The API, on the apex and on api.<domain>; nothing else on the apex.
	for _, host := range []string{"example.test", "api.example.test"} {
		if code, body := h.get(host, "/api/v1/agents"); code != 200 || !strings.HasPrefix(body, "api GET /api/v1/agents forwarded-host="+host) {
			t.Fatalf("API on %s: %d %q", host, code, body)
		}
	}
	// The API's docs page and the web dashboard too.
	for _, path := range []string{"/docs", "/", "/app/", "/app/tokens", "/app/assets/app.js"} {
		if code, body := h.get("example.test", path); code != 200 || !strings.HasPrefix(body, "api GET "+path) {
			t.Fatalf("%s: %d %q", path, code, body)
		}
	}
	for _, c := range []struct{ host, path string }{
		{"example.test", "/metrics"}, {"example.test", "/v1/status"}, {"example.test", "/apps"}, {"example.test", "/favicon.ico"}, {"other.example.test", "/"}, {"a1.example.test", "/"},
		{"agbbbbbbbbbbbbbbbbbbbb.example.test", "/"}, {"example.com", "/api/v1/agents"}, {fmt.Sprintf("x.a%d.example.test", b.port), "/"},
	} {
		if code, _ := h.get(c.host, c.path); code != 404 {
			t.Errorf("%s%s: %d, want 404", c.host, c.path, code)
		}
	}
}

func TestProxyStreamsEventsAndWebSockets(t *testing.T) {
	b := startAgentBackend(t, "pw-two")
	other := startAgentBackend(t, "pw-other")
	h := newProxyHarness(t, []int{b.port, other.port})
	const id = "agcccccccccccccccccccc"
	h.runningAgent(id, "pw-two", false)
	host := id + ".example.test"
	// The agent got one of the two ports; the other backend is for a
	// second agent.
	backend, spare := b, other
	if h.proxy.table.lookupID(id).port == other.port {
		backend, spare = other, b
	}
	pw, spw := "pw-two", "pw-spare"
	backend.password.Store(&pw)
	spare.password.Store(&spw)

	// Server-sent events arrive as they are sent: the first before the
	// backend has been allowed to send the second.
	req, _ := http.NewRequest("GET", h.url+"/event", nil)
	req.Host = host
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	if line, err := rd.ReadString('\n'); err != nil || line != "data: first\n" {
		t.Fatalf("first event: %q %v", line, err)
	}
	if n := gaugeValue(h.proxy.metrics.connections); n < 1 {
		t.Errorf("open connections gauge with a stream open: %v", n)
	}
	// The table changes while the stream is open (another agent comes):
	// the stream carries on.
	h.runningAgent("agdddddddddddddddddddd", "pw-spare", false)
	close(backend.release)
	rd.ReadString('\n')
	if line, err := rd.ReadString('\n'); err != nil || line != "data: second\n" {
		t.Fatalf("second event: %q %v", line, err)
	}

	// A WebSocket upgrade passes through both ways.
	cfg, err := websocket.NewConfig("ws://"+host+"/ws", "http://"+host)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("websocket through the proxy: %v", err)
	}
	defer ws.Close()
	for _, msg := range []string{"ping", "a longer message through the proxy"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		ws.SetDeadline(time.Now().Add(10 * time.Second))
		if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
			t.Fatalf("echo: %q %v", got, err)
		}
	}
	if n := gaugeValue(h.proxy.metrics.sockets.WithLabelValues("agent_id")); n != 1 {
		t.Errorf("websockets gauge while one is open: %v", n)
	}
	ws.Close()
	for deadline := time.Now().Add(10 * time.Second); gaugeValue(h.proxy.metrics.sockets.WithLabelValues("agent_id")) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("websockets gauge never went back to 0 after the socket closed")
		}
	}
	// Every connection closed (the upgraded one left the count when it
	// was handed over): the gauge is back to 0.
	resp.Body.Close()
	h.client.CloseIdleConnections()
	for deadline := time.Now().Add(10 * time.Second); gaugeValue(h.proxy.metrics.connections) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("open connections gauge never went back to 0: %v", gaugeValue(h.proxy.metrics.connections))
		}
	}
	// The upgrade is counted as what it was: a 101.
	for deadline := time.Now().Add(10 * time.Second); counterValue(h.proxy.metrics.requests.WithLabelValues("agent_id", "101")) != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the WebSocket was not counted as a 101")
		}
	}
}

func counterValue(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

// TestProxyRouteWatchMovesOn: the control server the proxy watches goes
// away; the proxy watches the next one, starting from a snapshot, so that
// an agent deleted and one created while it was cut off come out right.
func TestProxyRouteWatchMovesOn(t *testing.T) {
	first, second := startAgentBackend(t, "pw-1"), startAgentBackend(t, "pw-2")
	tc := clusterrpc.NewTestCluster(t, 3)
	leader := tc.WaitForLeader()
	follower := tc.Follower()
	other := 3 - leader - follower
	h := newProxyHarnessOn(t, tc, []int{first.port, second.port}, []int{follower, other, leader})
	const gone, comes = "agffffffffffffffffffff", "aggggggggggggggggggggg"
	h.runningAgent(gone, "pw-1", false)
	if code, _ := h.get(gone+".example.test", "/"); code == http.StatusNotFound {
		t.Fatal("the first agent is not routed")
	}

	tc.Kill(follower)
	h.apply(&store.AgentDelete{ID: gone})
	pw := "pw-1"
	first.password.Store(&pw)
	second.password.Store(&pw)
	h.runningAgent(comes, "pw-1", false)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		goneCode, _ := h.get(gone+".example.test", "/")
		comesCode, body := h.get(comes+".example.test", "/x")
		if goneCode == http.StatusNotFound && comesCode == http.StatusOK && body == "hello from the agent at /x" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the watched server went: deleted agent %d, new agent %d %q", goneCode, comesCode, body)
		}
	}
}

func TestProxyStoppedDownAndWakeOnRequest(t *testing.T) {
	b := startAgentBackend(t, "pw-wake")
	h := newProxyHarness(t, []int{b.port})
	const id = "ageeeeeeeeeeeeeeeeeeee"
	h.runningAgent(id, "pw-wake", false)
	host := id + ".example.test"

	// Stopped, without autostart: a page that says so, at once.
	h.apply(&store.AgentSetDesired{ID: id, Desired: store.DesiredStopped})
	h.apply(&store.AgentSetStatus{ID: id, FromNode: "n1", Status: store.StatusStopped})
	h.waitRoute(id, func(r *route) bool { return r.desired == "stopped" })
	if code, body := h.get(host, "/"); code != 503 || !strings.Contains(body, "stopped") {
		t.Fatalf("stopped agent: %d %q", code, body)
	}

	// The node down: 502 at once, never a hang.
	h.apply(&store.AgentSetDesired{ID: id, Desired: store.DesiredRunning, Status: store.StatusProvisioning})
	h.apply(&store.AgentSetStatus{ID: id, FromNode: "n1", Status: store.StatusRunning})
	h.apply(&store.NodeSetStatus{ID: "n1", Status: store.NodeDown})
	h.waitRoute(id, func(r *route) bool { return r.nodeDown })
	start := time.Now()
	if code, body := h.get(host, "/"); code != 502 || !strings.Contains(body, "down") {
		t.Fatalf("agent on a down node: %d %q", code, body)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("the 502 took %s", time.Since(start))
	}
	h.apply(&store.NodeSetStatus{ID: "n1", Status: store.NodeReady})

	// An autostart agent, stopped: the request starts it, waits, and is
	// answered by the agent. The test plays the node: when the agent
	// should run again, it reports RUNNING.
	const wake = "agffffffffffffffffffff"
	h.apply(&store.AgentDelete{ID: id})
	h.runningAgent(wake, "pw-wake", true)
	h.apply(&store.AgentSetDesired{ID: wake, Desired: store.DesiredStopped})
	h.apply(&store.AgentSetStatus{ID: wake, FromNode: "n1", Status: store.StatusStopped})
	h.waitRoute(wake, func(r *route) bool { return r.status == "STOPPED" })
	go func() {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if a, _ := h.st.State().Agent(wake); a != nil && a.Desired == store.DesiredRunning {
				time.Sleep(200 * time.Millisecond) // a container takes a moment
				h.st.Apply(context.Background(), &store.AgentSetStatus{ID: wake, FromNode: "n1", Status: store.StatusRunning})
				return
			}
		}
	}()
	if code, body := h.get(wake+".example.test", "/woken"); code != 200 || body != "hello from the agent at /woken" {
		t.Fatalf("wake on request: %d %q", code, body)
	}
}

// TestProxyHardening sends what a hostile or broken client might, byte for
// byte, and wants the documented answer for each; and shows that the
// control plane's own ports are not agents.
func TestProxyHardening(t *testing.T) {
	b := startAgentBackend(t, "pw-h")
	h := newProxyHarness(t, []int{b.port})
	h.runningAgent("agaaaaaaaaaaaaaaaaaaaa", "pw-h", false)
	addr := strings.TrimPrefix(h.url, "http://")
	raw := func(request string) string {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, request)
		line, _ := bufio.NewReader(conn).ReadString('\n')
		return strings.TrimSpace(line)
	}
	agentHost := fmt.Sprintf("a%d.example.test", b.port)
	controlPort := h.controlAddr[strings.LastIndexByte(h.controlAddr, ':')+1:]
	for _, c := range []struct{ name, request, status string }{
		{"two Host headers", "GET / HTTP/1.1\r\nHost: example.test\r\nHost: " + agentHost + "\r\n\r\n", "400"},
		{"absolute URI, other host", "GET http://evil.test/api/v1/agents HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n", "400"},
		{"absolute URI, agent host", "GET http://" + agentHost + "/ HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n", "400"},
		{"no Host", "GET / HTTP/1.1\r\nConnection: close\r\n\r\n", "400"},
		{"header over the size cap", "GET / HTTP/1.1\r\nHost: " + agentHost + "\r\nX-Big: " + strings.Repeat("x", 128<<10) + "\r\n\r\n", "431"},
		{"API body over the cap", "POST /api/v1/agents HTTP/1.1\r\nHost: example.test\r\nContent-Length: 67108865\r\nConnection: close\r\n\r\n", "413"},
		{"the agent, for contrast", "GET / HTTP/1.1\r\nHost: " + agentHost + "\r\nConnection: close\r\n\r\n", "200"},
		{"HTTP/1.0 to the agent", "GET / HTTP/1.0\r\nHost: " + agentHost + "\r\n\r\n", "200"},
		// The control server's cluster port and the API's are no agent's
		// port: the proxy routes only ports in its table.
		{"the control plane's port as an agent", "GET / HTTP/1.1\r\nHost: a" + controlPort + ".example.test\r\nConnection: close\r\n\r\n", "404"},
		{"the API's internal status on the apex", "GET /v1/status HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n", "404"},
		{"metrics on the apex", "GET /metrics HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n", "404"},
	} {
		if line := raw(c.request); !strings.HasPrefix(line, "HTTP/1.") || strings.Fields(line)[1] != c.status {
			t.Errorf("%s: %q, want %s", c.name, line, c.status)
		}
	}

	// A client that never finishes its header is cut off: NewServer's
	// header timeout (10 s) is what does it; here it is shortened.
	if NewServer(nil).ReadHeaderTimeout <= 0 {
		t.Fatal("NewServer sets no header timeout")
	}
	srv := NewServer(h.proxy.Handler())
	srv.ReadHeaderTimeout = 200 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: "+agentHost+"\r\nX-Slow: ")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("a slow header was not cut off: %v", err)
	}
}

func gaugeValue(g interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	g.Write(&m)
	return m.GetGauge().GetValue()
}

// TestProxySendsWritesToTheLeader: with two API servers, of which the
// second says it leads (GET /v1/status), every write goes to it, while
// reads are spread over both.
func TestProxySendsWritesToTheLeader(t *testing.T) {
	tc := clusterrpc.NewTestCluster(t, 1)
	tc.WaitForLeader()
	var addrs []string
	for i, state := range []string{"Follower", "Leader"} {
		name := fmt.Sprint(i)
		api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/v1/status" {
				fmt.Fprintf(w, `{"state":%q}`, state)
				return
			}
			fmt.Fprint(w, name)
		}))
		t.Cleanup(api.Close)
		addrs = append(addrs, strings.TrimPrefix(api.URL, "http://"))
	}
	pc := DefaultConfig()
	pc.Domain, pc.ControlAddrs, pc.APIAddrs = "example.test", []string{tc.Servers[0].Addr()}, addrs
	p, err := New(pc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(10 * time.Second); p.leaderAPI.Load() != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the proxy never learnt the leader")
		}
	}
	srv := httptest.NewServer(p.Handler())
	t.Cleanup(srv.Close)
	got := map[string]map[string]int{"GET": {}, "POST": {}}
	for range 10 {
		for method := range got {
			req, _ := http.NewRequest(method, srv.URL+"/api/v1/scopes", strings.NewReader("{}"))
			req.Host = "example.test"
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got[method][string(b)]++
		}
	}
	if got["POST"]["1"] != 10 || got["GET"]["0"] == 0 || got["GET"]["1"] == 0 {
		t.Fatalf("answered by: %v", got)
	}
}
