package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// TestProxyStreamsToRealAgent drives the edge proxy of `agenthost dev`
// against a real OpenCode container: server-sent events and a PTY WebSocket
// pass through unbuffered and outlive changes to the routing table (another
// agent created, stopped and deleted meanwhile); a stopped agent without
// autostart is answered with a page saying so and stays stopped; a stopped
// autostart agent is woken by a request, which the proxy holds until the
// agent answers.
func TestProxyStreamsToRealAgent(t *testing.T) {
	begin := time.Now()
	d := startDev(t, "10.213.42.0/24", "32200-32299")
	d.check = openAPIChecker(t)
	t.Logf("dev ready after %s", time.Since(begin).Round(time.Millisecond))

	var a createResponse
	d.must(200, "POST", "/agents", map[string]any{"name": "streams", "autostart": true}, &a)
	var got agentStatus
	d.must(200, "GET", "/agents/"+a.AgentID, nil, &got)
	if got.Status != "RUNNING" || !got.Autostart {
		t.Fatalf("autostart agent after create: %+v", got)
	}
	d.throughProxy(a.URL, "/global/health", `"healthy":true`)
	host := hostOf(t, a.URL)

	// Server-sent events: OpenCode says hello on a new stream at once, so
	// the first event arriving at all means nothing held it back; an event
	// caused afterwards (a new session) arriving means the same of what
	// follows.
	global := d.openEvents(host, "/global/event")
	global.next("server.connected", "")
	events := d.openEvents(host, "/event")
	events.next("server.connected", "")
	session := d.newSession(host)
	events.next("session.created", session)

	// A WebSocket: a shell on a PTY of the agent, over the proxy both ways.
	var pty struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if status := d.agentCall(host, "POST", "/pty", map[string]any{"title": "proxy-e2e"}, &pty); status != 200 || pty.ID == "" || pty.Status != "running" {
		t.Fatalf("POST /pty through the proxy: %d %+v", status, pty)
	}
	shell := d.openPTY(host, pty.ID)
	shell.run("echo hello-$((6*7))", "hello-42")

	// The routing table changes while both streams and the socket are
	// open: another agent is created, runs, is stopped and is deleted.
	var b createResponse
	d.must(200, "POST", "/agents", map[string]string{"name": "route-churn"}, &b)
	bHost := hostOf(t, b.URL)
	d.throughProxy(b.URL, "/global/health", `"healthy":true`)
	// Stopped without autostart: not woken, a page that says it is
	// stopped (once the proxy's table has caught up with the stop).
	d.stop(b.AgentID)
	res, _ := d.proxyAnswers(bHost, "/global/health", http.StatusServiceUnavailable, "This agent is stopped")
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || res.Header.Get("Retry-After") == "" {
		t.Errorf("the stopped page: Content-Type %q, Retry-After %q; want text/html and a Retry-After", ct, res.Header.Get("Retry-After"))
	}
	d.must(200, "GET", "/agents/"+b.AgentID, nil, &got)
	if got.Status != "STOPPED" {
		t.Fatalf("a stopped agent without autostart is %s after a request for it, want STOPPED", got.Status)
	}
	d.must(200, "DELETE", "/agents/"+b.AgentID, nil, nil)
	d.proxyAnswers(bHost, "/global/health", http.StatusNotFound, "No such agent")
	// OpenCode's /global/event sends server.connected before it listens
	// to its event bus (/event listens first), so an event caused right
	// after server.connected can miss it. Its first heartbeat, 10 s in,
	// comes from a stream merged with the listener's: by then it listens.
	global.next("server.heartbeat", "")
	session = d.newSession(host)
	events.next("session.created", session)
	global.next("session.created", session)
	shell.run("echo again-$((7*8))", "again-56")
	shell.close()
	events.close()
	global.close()

	// Wake on request: the stopped autostart agent is started by the first
	// request for it, which the proxy holds until the agent answers: one
	// request, one 200. It is reached by its id's host this time. (The
	// proxy learns desired=stopped when the stop begins, seconds before
	// the container has stopped and the API answers.)
	d.stop(a.AgentID)
	res, body := d.proxyGet(a.AgentID+".localhost", "/global/health", 90*time.Second)
	if res.StatusCode != 200 || !strings.Contains(body, `"healthy":true`) {
		t.Fatalf("GET /global/health of a stopped autostart agent through the proxy: %d %.300s, want 200 from the woken agent", res.StatusCode, body)
	}
	d.must(200, "GET", "/agents/"+a.AgentID, nil, &got)
	if got.Status != "RUNNING" {
		t.Fatalf("the woken agent is %s, want RUNNING", got.Status)
	}
	t.Logf("done after %s", time.Since(begin).Round(time.Millisecond))
}

// stop stops an agent through the API and checks that it says so.
func (d *dev) stop(agentID string) {
	d.t.Helper()
	var lc struct {
		Status  string `json:"status"`
		Stopped *bool  `json:"stopped"`
	}
	d.must(200, "POST", "/agents/"+agentID+"/stop", nil, &lc)
	if lc.Status != "STOPPED" || lc.Stopped == nil || !*lc.Stopped {
		d.t.Fatalf("stop %s = %+v", agentID, lc)
	}
	var a agentStatus
	d.must(200, "GET", "/agents/"+agentID, nil, &a)
	if a.Status != "STOPPED" {
		d.t.Fatalf("agent %s is %s after stop, want STOPPED", agentID, a.Status)
	}
}

// hostOf is the host (with port) of an agent's URL: what the proxy routes by.
func hostOf(t *testing.T, agentURL string) string {
	t.Helper()
	u, err := url.Parse(agentURL)
	if err != nil || u.Host == "" {
		t.Fatalf("agent url %q: %v", agentURL, err)
	}
	return u.Host
}

// proxyGet sends one GET for host to the proxy and returns its answer.
func (d *dev) proxyGet(host, path string, timeout time.Duration) (*http.Response, string) {
	d.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+d.proxyAddr+path, nil)
	req.Host = host
	res, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		d.t.Fatalf("GET %s%s through the proxy: %v", host, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		d.t.Fatalf("GET %s%s through the proxy: %v", host, path, err)
	}
	return res, string(b)
}

// proxyAnswers polls path on host through the proxy until it answers
// status with want in the body (the route table follows the store within
// moments), and returns that answer.
func (d *dev) proxyAnswers(host, path string, status int, want string) (*http.Response, string) {
	d.t.Helper()
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		res, body := d.proxyGet(host, path, 10*time.Second)
		if res.StatusCode == status && strings.Contains(body, want) {
			return res, body
		}
		last = fmt.Sprintf("%d %.300s", res.StatusCode, body)
	}
	d.t.Fatalf("GET %s%s through the proxy: %s, want %d with %q", host, path, last, status, want)
	return nil, ""
}

// agentCall sends a JSON request to the agent at host through the proxy
// (OpenCode's own API) and decodes a 2xx answer into out.
func (d *dev) agentCall(host, method, path string, body, out any) int {
	d.t.Helper()
	req := d.jsonRequest(method, "http://"+d.proxyAddr+path, body)
	req.Host = host
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		d.t.Fatalf("%s %s%s through the proxy: %v", method, host, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		d.t.Fatal(err)
	}
	if res.StatusCode >= 300 {
		d.t.Logf("%s %s%s through the proxy → %d %.300s", method, host, path, res.StatusCode, b)
	} else if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			d.t.Fatalf("%s %s%s: %s: %v", method, host, path, b, err)
		}
	}
	return res.StatusCode
}

// newSession creates an OpenCode session through the proxy and returns its id.
func (d *dev) newSession(host string) string {
	d.t.Helper()
	var s struct {
		ID string `json:"id"`
	}
	if status := d.agentCall(host, "POST", "/session", map[string]any{}, &s); status != 200 || s.ID == "" {
		d.t.Fatalf("POST /session through the proxy: %d %+v", status, s)
	}
	return s.ID
}

// sseEvent is one event of OpenCode's streams: /event sends it as is,
// /global/event wraps it in payload with the directory it concerns.
type sseEvent struct {
	Type       string          `json:"type"`
	Properties json.RawMessage `json:"properties"`
	Payload    *sseEvent       `json:"payload"`
}

// eventStream is an open server-sent event stream through the proxy.
type eventStream struct {
	d      *dev
	path   string
	events chan sseEvent
	err    error // set before events is closed
	cancel context.CancelFunc
}

// openEvents opens an event stream of the agent at host through the proxy
// and reads it in the background.
func (d *dev) openEvents(host, path string) *eventStream {
	d.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+d.proxyAddr+path, nil)
	req.Host = host
	req.Header.Set("Accept", "text/event-stream")
	// The headers must come promptly; the body runs as long as the test.
	headers := time.AfterFunc(30*time.Second, cancel)
	res, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if !headers.Stop() || err != nil {
		cancel()
		d.t.Fatalf("GET %s%s through the proxy: no answer: %v", host, path, err)
	}
	if ct := res.Header.Get("Content-Type"); res.StatusCode != 200 || !strings.HasPrefix(ct, "text/event-stream") {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<10))
		res.Body.Close()
		cancel()
		d.t.Fatalf("GET %s%s through the proxy: %d %s %.300s, want an event stream", host, path, res.StatusCode, ct, b)
	}
	s := &eventStream{d: d, path: path, events: make(chan sseEvent, 256), cancel: cancel}
	go s.read(res.Body)
	d.t.Cleanup(s.close)
	return s
}

func (s *eventStream) read(body io.ReadCloser) {
	defer body.Close()
	defer close(s.events)
	r := bufio.NewReader(body)
	var data []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			s.err = err
			return
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "" && len(data) > 0:
			var e sseEvent
			if err := json.Unmarshal([]byte(strings.Join(data, "\n")), &e); err != nil {
				s.err = fmt.Errorf("event %q: %w", strings.Join(data, "\n"), err)
				return
			}
			if e.Payload != nil {
				e = *e.Payload
			}
			s.events <- e
			data = nil
		case strings.HasPrefix(line, "data:"):
			data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
}

// next waits for an event of type typ (about session sessionID, when not
// empty), skipping others.
func (s *eventStream) next(typ, sessionID string) {
	s.d.t.Helper()
	timeout := time.After(30 * time.Second)
	var seen []string
	for {
		select {
		case e, ok := <-s.events:
			if !ok {
				s.d.t.Fatalf("%s: the stream ended before %s (after %v): %v", s.path, typ, seen, s.err)
			}
			seen = append(seen, e.Type)
			if e.Type != typ {
				continue
			}
			if sessionID != "" {
				var p struct {
					SessionID string `json:"sessionID"`
				}
				if json.Unmarshal(e.Properties, &p); p.SessionID != sessionID {
					continue
				}
			}
			return
		case <-timeout:
			s.d.t.Fatalf("%s: no %s within 30 s (saw %v)", s.path, typ, seen)
		}
	}
}

func (s *eventStream) close() { s.cancel() }

// ptyConn is a WebSocket to an OpenCode PTY through the proxy.
type ptyConn struct {
	d  *dev
	ws *websocket.Conn
}

// openPTY connects to the PTY's WebSocket through the proxy: the socket
// is dialled to the proxy and names the agent's host.
func (d *dev) openPTY(host, ptyID string) *ptyConn {
	d.t.Helper()
	cfg, err := websocket.NewConfig("ws://"+host+"/pty/"+ptyID+"/connect", "http://"+host)
	if err != nil {
		d.t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", d.proxyAddr, 10*time.Second)
	if err != nil {
		d.t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		conn.Close()
		d.t.Fatalf("WebSocket to /pty/%s/connect through the proxy: %v", ptyID, err)
	}
	conn.SetDeadline(time.Time{})
	p := &ptyConn{d: d, ws: ws}
	d.t.Cleanup(p.close)
	return p
}

// run types line into the shell and reads its output until want appears.
func (p *ptyConn) run(line, want string) {
	p.d.t.Helper()
	p.ws.SetDeadline(time.Now().Add(30 * time.Second))
	defer p.ws.SetDeadline(time.Time{})
	if err := websocket.Message.Send(p.ws, line+"\n"); err != nil {
		p.d.t.Fatalf("PTY: send %q: %v", line, err)
	}
	var out strings.Builder
	for !strings.Contains(out.String(), want) {
		var frame []byte
		if err := websocket.Message.Receive(p.ws, &frame); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				p.d.t.Fatalf("PTY: no %q within 30 s of %q; output: %q", want, line, out.String())
			}
			p.d.t.Fatalf("PTY: receive: %v; output: %q", err, out.String())
		}
		out.Write(frame)
	}
}

func (p *ptyConn) close() { p.ws.Close() }
