package proxy

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agenthost/agenthost/internal/uring"
	routev1 "github.com/agenthost/agenthost/proto/agenthost/route/v1"
	"pgregory.net/rapid"
)

// ringProxy is forwardingProxy's pathRing, with the listener at hand.
func ringProxy(t *testing.T, port int) (*Proxy, *httptest.Server, *fastListener) {
	t.Helper()
	p, srv := agentProxy(t, port, Config{Rings: 2}, true)
	wantRings(t, srv.Listener)
	return p, srv, srv.Listener.(*fastListener)
}

// wantLoopsStopped closes srv and fails t unless its loops stop and the
// proxy counts no connection open.
func wantLoopsStopped(t *testing.T, p *Proxy, srv *httptest.Server) {
	t.Helper()
	srv.Close()
	for _, lp := range srv.Listener.(*fastListener).rings.loops {
		select {
		case <-lp.done:
		case <-time.After(5 * time.Second):
			t.Fatal("a loop did not stop with its listener")
		}
	}
	if n := gaugeValue(p.metrics.connections); n != 0 {
		t.Errorf("open connections after close: %v", n)
	}
	p.backends.closeAll()
}

// wantFilesClosed fails t unless the descriptors open are, within 5 s, no
// more than before and those the test holds (they close as the kernel and
// the test's agent are done with them).
func wantFilesClosed(t *testing.T, before, held int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		after := openFiles(t)
		if after <= before+held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open before, %d after (%d held by the test)", before, after, held)
		}
	}
}

// TestRingPathServesWholeExchanges: answers the ring parses itself — small
// and big bodies (bigger than its buffer, passed on as they come), HEAD, an
// empty body — are served on the ring from start to end, pipelined on one client
// connection and one kept-alive connection to the agent.
func TestRingPathServesWholeExchanges(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 20<<10) // 320 KiB
	agent := startRawAgent(t, func(n int, head string) (string, bool) {
		path := strings.Fields(head)[1]
		switch {
		case strings.HasPrefix(head, "HEAD"):
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", len(big)), false
		case path == "/big":
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(big), big), false
		case path == "/empty":
			return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n", false
		}
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(path), path), false
	})
	p, srv, _ := ringProxy(t, agent.port)
	host := fmt.Sprintf("a%d.example.test", agent.port)
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	exchanges := []struct {
		method, path string
		status       int
		body         string
		length       int64
	}{
		{"GET", "/a", 200, "/a", 2},
		{"GET", "/big", 200, big, int64(len(big))},
		{"HEAD", "/big", 200, "", int64(len(big))},
		{"GET", "/empty", 200, "", 0},
		{"GET", "/b", 200, "/b", 2},
	}
	for _, e := range exchanges { // pipelined
		fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\n\r\n", e.method, e.path, host)
	}
	br := bufio.NewReader(conn)
	for i, e := range exchanges {
		resp, err := http.ReadResponse(br, &http.Request{Method: e.method})
		if err != nil {
			t.Fatalf("answer %d: %v", i+1, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("answer %d: %v", i+1, err)
		}
		if resp.StatusCode != e.status || string(body) != e.body || resp.ContentLength != e.length {
			t.Errorf("answer %d: %d, %d bytes (length %d), want %d, %d bytes (length %d)", i+1, resp.StatusCode,
				len(body), resp.ContentLength, e.status, len(e.body), e.length)
		}
	}
	waitCounter(t, "requests served on io_uring", p.metrics.ringPath, 5)
	waitCounter(t, "requests on the fast path", p.metrics.fastPath, 5)
	if n := agent.conns.Load(); n != 1 {
		t.Errorf("%d connections to the agent for 5 requests on one client connection", n)
	}
}

// TestRingPathLeavesNothingBehind: the loops stop with the listener,
// closing the connections they held — idle, mid-head, waiting on an agent —
// and every descriptor they opened.
func TestRingPathLeavesNothingBehind(t *testing.T) {
	release := make(chan struct{})
	agent := startRawAgent(t, func(n int, head string) (string, bool) {
		if strings.Contains(head, "/hang") {
			<-release
		}
		return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok", false
	})
	defer close(release)
	fdsBefore := openFiles(t)
	p, srv, _ := ringProxy(t, agent.port)
	host := fmt.Sprintf("a%d.example.test", agent.port)
	var clients []net.Conn
	for i, request := range []string{
		"GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n",     // answered, then idle
		"GET / HTTP/1.1\r\nHost: " + host + "\r\nX-Half: ", // mid-head
		"GET /hang HTTP/1.1\r\nHost: " + host + "\r\n\r\n", // waiting on the agent
	} {
		c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(c, request)
		if i == 0 {
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
				t.Fatalf("%v %v", resp, err)
			}
		}
		clients = append(clients, c)
	}
	for deadline := time.Now().Add(5 * time.Second); gaugeValue(p.metrics.connections) != 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("open connections: %v, want 3", gaugeValue(p.metrics.connections))
		}
	}
	wantLoopsStopped(t, p, srv)
	for _, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("a client connection stayed open: %v", err)
		}
		c.Close()
	}
	// The agent closes its end of a connection the proxy closed when it
	// reads the end, but for the one it hangs on: one descriptor more.
	wantFilesClosed(t, fdsBefore, 1)
}

func openFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// ringTrafficAgent answers by path: /len/N a body of N bytes the ring
// passes itself, /chunk/N the same chunked (the goroutine path passes it),
// /close/N with Connection: close, /slow/N after 250 ms (the ring watches
// the client meanwhile), /garbage an answer nobody can read (a 502).
func ringTrafficAgent(t *testing.T) *rawAgent {
	return startRawAgent(t, func(_ int, head string) (string, bool) {
		path := strings.Fields(head)[1]
		kind, n := path, 0
		if i := strings.LastIndexByte(path, '/'); i > 0 {
			kind = path[:i]
			fmt.Sscan(path[i+1:], &n)
		}
		body := ringTrafficBody(path, n)
		switch kind {
		case "/chunk":
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body), false
		case "/close":
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body), true
		case "/slow":
			time.Sleep(250 * time.Millisecond)
		case "/garbage":
			return "HTTP/1.1 2x0 OK\r\n\r\n", true
		}
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body), false
	})
}

func ringTrafficBody(path string, n int) string { return path + ":" + strings.Repeat(".", n) }

// TestRingPathUnderRandomTraffic: clients on a few connections at once
// send random sequences of requests — pipelined or one by one, answered in
// every way the ring passes or hands over, some abandoned before their
// answers — and each answer read is the right one; when the clients are
// gone, so are their connections, and at close the loops leave nothing.
func TestRingPathUnderRandomTraffic(t *testing.T) {
	agent := ringTrafficAgent(t)
	fdsBefore := openFiles(t)
	p, srv, _ := ringProxy(t, agent.port)
	host := fmt.Sprintf("a%d.example.test", agent.port)
	addr := strings.TrimPrefix(srv.URL, "http://")
	type request struct {
		path   string
		status int
		body   string
	}
	rapid.Check(t, func(rt *rapid.T) {
		conns := rapid.IntRange(1, 4).Draw(rt, "connections")
		errs := make(chan error, conns)
		for c := range conns {
			var reqs []request
			for i := range rapid.IntRange(1, 5).Draw(rt, fmt.Sprint("requests on ", c)) {
				kind := rapid.SampledFrom([]string{"/len", "/len", "/len", "/chunk", "/close", "/slow", "/garbage"}).Draw(rt, fmt.Sprint("kind ", c, i))
				n := rapid.SampledFrom([]int{0, 1, 100, 20 << 10, 100 << 10}).Draw(rt, fmt.Sprint("size ", c, i))
				if kind == "/slow" {
					n = 10
				}
				path := fmt.Sprintf("%s/%d", kind, n)
				r := request{path, 200, ringTrafficBody(path, n)}
				if kind == "/garbage" {
					r = request{"/garbage", http.StatusBadGateway, ""}
				}
				reqs = append(reqs, r)
			}
			pipelined := rapid.Bool().Draw(rt, fmt.Sprint("pipelined ", c))
			abandonAt := rapid.IntRange(0, len(reqs)).Draw(rt, fmt.Sprint("abandoned after ", c)) // len: never
			go func() {
				errs <- func() error {
					conn, err := net.Dial("tcp", addr)
					if err != nil {
						return err
					}
					defer conn.Close()
					conn.SetDeadline(time.Now().Add(20 * time.Second))
					send := func(r request) {
						fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", r.path, host)
					}
					if pipelined {
						for _, r := range reqs {
							send(r)
						}
					}
					br := bufio.NewReader(conn)
					for i, r := range reqs {
						if i == abandonAt {
							return nil // gone before its answer
						}
						if !pipelined {
							send(r)
						}
						resp, err := http.ReadResponse(br, nil)
						if err != nil {
							return fmt.Errorf("%s: %v", r.path, err)
						}
						body, err := io.ReadAll(resp.Body)
						if err != nil {
							return fmt.Errorf("%s: %v", r.path, err)
						}
						if resp.StatusCode != r.status || r.status == 200 && string(body) != r.body {
							return fmt.Errorf("%s: %d, %d bytes %.40q", r.path, resp.StatusCode, len(body), body)
						}
					}
					return nil
				}()
			}()
		}
		for range conns {
			if err := <-errs; err != nil {
				rt.Fatal(err)
			}
		}
	})
	if counterValue(p.metrics.ringPath) == 0 {
		t.Fatal("no request was served on io_uring")
	}
	for deadline := time.Now().Add(10 * time.Second); gaugeValue(p.metrics.connections) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("open connections once the clients left: %v", gaugeValue(p.metrics.connections))
		}
	}
	wantLoopsStopped(t, p, srv)
	wantFilesClosed(t, fdsBefore, 0)
}

// TestRingPathFallsBackToGoroutines: where the kernel refuses io_uring
// (a container engine's seccomp profile, say), the fast path serves with a
// goroutine per connection, and says so in the log.
func TestRingPathFallsBackToGoroutines(t *testing.T) {
	defer func(f func(uint32) (*uring.Ring, error)) { newRing = f }(newRing)
	newRing = func(uint32) (*uring.Ring, error) { return nil, fmt.Errorf("%w: test double", uring.ErrUnavailable) }
	agent := startRawAgent(t, func(int, string) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok", false
	})
	var logs strings.Builder
	var mu sync.Mutex
	p, err := New(Config{Domain: "example.test", ControlAddrs: []string{"127.0.0.1:1"}, APIAddrs: []string{"127.0.0.1:1"}, Rings: 2,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	p.table.apply(&routev1.WatchRoutesResponse{Snapshot: true, Routes: []*routev1.Route{{AgentId: "agaaaaaaaaaaaaaaaaaaaa", Port: uint32(agent.port),
		NodeAddress: "127.0.0.1", Status: "RUNNING", Desired: "running", RuntimePassword: "pw"}}})
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = p.NewServer()
	srv.Listener = p.FastListener(srv.Listener, srv.Config)
	srv.Start()
	defer srv.Close()
	resp, body := proxyGet(t, srv.URL+"/", agent.port)
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	wantPath(t, p, pathGoroutines)
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "fast path without io_uring") || !strings.Contains(logs.String(), "test double") {
		t.Errorf("log: %s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
