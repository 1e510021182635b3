package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	routev1 "github.com/agenthost/agenthost/proto/agenthost/route/v1"
)

// rawAgent is a test double for an agent's runtime speaking raw HTTP/1.1,
// so that a test controls exactly what goes on the wire: it records each
// request's head and answers with answer(n, head) for the nth request on
// any connection (from 0), closing the connection after it when close
// says so.
type rawAgent struct {
	port     int
	conns    atomic.Int32
	requests chan string
}

func startRawAgent(t *testing.T, answer func(n int, head string) (resp string, close bool)) *rawAgent {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	a := &rawAgent{port: ln.Addr().(*net.TCPAddr).Port, requests: make(chan string, 100)}
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					var head strings.Builder
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						head.WriteString(line)
						if line == "\r\n" {
							break
						}
					}
					select {
					case a.requests <- head.String():
					default:
					}
					resp, closeAfter := answer(int(n.Add(1)-1), head.String())
					if _, err := io.WriteString(c, resp); err != nil || closeAfter {
						return
					}
				}
			}()
		}
	}()
	return a
}

// agentPath is one of the ways the proxy serves an agent's requests.
type agentPath int

const (
	// pathNetHTTP is net/http's server and the proxy's handler: the path
	// of HTTP/2 and TLS clients, and of connections handed over.
	pathNetHTTP agentPath = iota
	// pathGoroutines is the fast path (FastListener), a goroutine per
	// connection.
	pathGoroutines
	// pathRing is the fast path on io_uring loops (Config.Rings).
	pathRing
)

var agentPaths = []agentPath{pathGoroutines, pathRing, pathNetHTTP}

func (a agentPath) fast() bool { return a != pathNetHTTP }

func (a agentPath) String() string {
	return [...]string{"net-http", "fast", "ring"}[a]
}

// forwardingProxy serves every request as one for the agent on port, with
// runtime password "pw", through the proxy's agent path given.
func forwardingProxy(t *testing.T, port int, path agentPath) (*Proxy, string) {
	t.Helper()
	cfg := Config{}
	if path == pathRing {
		cfg.Rings = 2
	}
	p, srv := agentProxy(t, port, cfg, path.fast())
	if path == pathRing {
		wantRings(t, srv.Listener)
	}
	return p, srv.URL
}

// agentProxy starts a proxy of cfg (its domain and addresses filled in)
// whose table has one agent, RUNNING on port at 127.0.0.1 with runtime
// password "pw"; its listener is FastListener's when fast. It is closed
// when tb ends.
func agentProxy(tb testing.TB, port int, cfg Config, fast bool) (*Proxy, *httptest.Server) {
	tb.Helper()
	cfg.Domain, cfg.ControlAddrs, cfg.APIAddrs = "example.test", []string{"127.0.0.1:1"}, []string{"127.0.0.1:1"}
	p, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	p.table.apply(&routev1.WatchRoutesResponse{Snapshot: true, Routes: []*routev1.Route{{AgentId: "agaaaaaaaaaaaaaaaaaaaa", Port: uint32(port),
		NodeAddress: "127.0.0.1", Status: "RUNNING", Desired: "running", RuntimePassword: "pw"}}})
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = p.NewServer()
	if fast {
		srv.Listener = p.FastListener(srv.Listener, srv.Config)
	}
	srv.Start()
	tb.Cleanup(func() { srv.Close(); p.backends.closeAll() })
	return p, srv
}

// wantRings fails t unless ln, from FastListener, serves on io_uring
// loops. Where the kernel refuses io_uring the test is skipped, except in
// CI, whose machines have it: there it fails.
func wantRings(t *testing.T, ln net.Listener) {
	t.Helper()
	fl := ln.(*fastListener)
	// The rings start with the first Accept, which srv.Start runs.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		fl.mu.Lock()
		started := fl.rings != nil || fl.ringsFailed != nil
		fl.mu.Unlock()
		if started {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the fast path's rings never started")
		}
	}
	if err := fl.ringsFailed; err != nil {
		if os.Getenv("CI") == "" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
}

// wantPath fails t unless the requests took the path given: on the fast
// path, answered there (and no connection handed over to net/http), on
// connections io_uring loops took for pathRing (which hand answers they
// do not parse to the goroutine path); on net/http's, none on the fast
// path.
func wantPath(t *testing.T, p *Proxy, path agentPath) {
	t.Helper()
	// A request is counted just after its answer is written: the client
	// may get there first.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		served, handedOff, ring := counterValue(p.metrics.fastPath), counterValue(p.metrics.handOffs), counterValue(p.metrics.ringConns)
		switch {
		case path == pathRing && ring > 0 && served > 0 && handedOff == 0,
			path == pathGoroutines && served > 0 && ring == 0 && handedOff == 0,
			path == pathNetHTTP && served == 0:
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("fast path: %v requests, %v connections on io_uring, %v handed over; wanted the %v path", served, ring, handedOff, path)
		}
	}
}

// eachForwardPath runs test on each agent path.
func eachForwardPath(t *testing.T, test func(t *testing.T, path agentPath)) {
	for _, path := range agentPaths {
		t.Run(path.String(), func(t *testing.T) { test(t, path) })
	}
}

func proxyGet(t *testing.T, url string, port int, header ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Host = fmt.Sprintf("a%d.example.test", port)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestForwardRewritesHeadersBothWays(t *testing.T) {
	eachForwardPath(t, func(t *testing.T, path agentPath) {
		agent := startRawAgent(t, func(int, string) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n\r\nok", false
		})
		p, url := forwardingProxy(t, agent.port, path)
		header := []string{"Authorization", "Bearer the-platforms-token", "Cookie", "session=platform", "Te", "trailers",
			"X-Forwarded-For", "192.0.2.9", "Forwarded", "for=evil", "X-Forwarded-Host", "evil.test", "X-Kept", "yes"}
		if !path.fast() {
			// A Connection field naming more than keep-alive takes a
			// request off the fast path.
			header = append(header, "Connection", "X-Client-Hop", "X-Client-Hop", "1")
		}
		resp, body := proxyGet(t, url+"/a%2Fb/c?q=1&r=%20", agent.port, header...)
		wantPath(t, p, path)
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		if resp.Header.Get("X-Secret-Hop") != "" || resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-Kept") != "yes" {
			t.Fatalf("response headers: %v", resp.Header)
		}
		head := <-agent.requests
		for _, want := range []string{
			"GET /a%2Fb/c?q=1&r=%20 HTTP/1.1\r\n",
			fmt.Sprintf("\r\nHost: 127.0.0.1:%d\r\n", agent.port),
			"\r\nAuthorization: Basic b3BlbmNvZGU6cHc=\r\n", // opencode:pw
			"\r\nX-Forwarded-For: 192.0.2.9, 127.0.0.1\r\n",
			fmt.Sprintf("\r\nX-Forwarded-Host: a%d.example.test\r\n", agent.port),
			"\r\nX-Forwarded-Proto: http\r\n",
			"\r\nX-Kept: yes\r\n",
		} {
			if !strings.Contains(head, want) {
				t.Errorf("the agent's request lacks %q:\n%s", want, head)
			}
		}
		for _, gone := range []string{"Bearer", "Cookie", "X-Client-Hop", "Te:", "Forwarded: for=evil", "evil.test", "Connection"} {
			if strings.Contains(head, gone) {
				t.Errorf("the agent's request has %q:\n%s", gone, head)
			}
		}
	})
}

func TestForwardKeepsConnectionsAndRetriesAClosedOne(t *testing.T) {
	eachForwardPath(t, func(t *testing.T, path agentPath) {
		// Every second answer closes its connection without saying so, as an
		// agent whose idle timeout struck between requests does: the next
		// request on the kept connection finds it closed and must be sent
		// again on a fresh one, unseen by the client.
		agent := startRawAgent(t, func(n int, _ string) (string, bool) {
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d", len(fmt.Sprint(n)), n), n%2 == 1
		})
		p, url := forwardingProxy(t, agent.port, path)
		for i := range 6 {
			resp, body := proxyGet(t, url+"/", agent.port)
			if resp.StatusCode != 200 {
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
			}
		}
		wantPath(t, p, path)
		// Six requests, a fresh connection after each close: three, and a
		// retry costs none of its own as long as the close came first.
		if got := agent.conns.Load(); got < 3 || got > 6 {
			t.Fatalf("%d connections to the agent for 6 requests, two per connection", got)
		}

		// Keep-alive: sequential requests share one connection.
		steady := startRawAgent(t, func(int, string) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
		})
		_, url2 := forwardingProxy(t, steady.port, path)
		for range 20 {
			if resp, _ := proxyGet(t, url2+"/", steady.port); resp.StatusCode != 200 {
				t.Fatal(resp.Status)
			}
		}
		if got := steady.conns.Load(); got != 1 {
			t.Fatalf("20 sequential requests used %d connections to the agent, want 1", got)
		}
	})
}

func TestForwardStreamsChunkedTrailersAndEarlyHints(t *testing.T) {
	eachForwardPath(t, func(t *testing.T, path agentPath) {
		agent := startRawAgent(t, func(int, string) (string, bool) {
			return "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" +
				"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
				"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n", false
		})
		p, url := forwardingProxy(t, agent.port, path)
		resp, body := proxyGet(t, url+"/", agent.port)
		if resp.StatusCode != 200 || body != "hello world" || resp.Trailer.Get("X-Sum") != "11" {
			t.Fatalf("%d %q trailer %v", resp.StatusCode, body, resp.Trailer)
		}
		wantPath(t, p, path)
	})
}

func TestForwardRefusesHugeAgentHeaders(t *testing.T) {
	eachForwardPath(t, func(t *testing.T, path agentPath) {
		// An agent is a tenant's code: an endless header must not be held in
		// memory.
		agent := startRawAgent(t, func(int, string) (string, bool) {
			return "HTTP/1.1 200 OK\r\nX-Huge: " + strings.Repeat("x", 2<<20) + "\r\n\r\n", true
		})
		_, url := forwardingProxy(t, agent.port, path)
		if resp, body := proxyGet(t, url+"/", agent.port); resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "did not answer") {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
	})
}

func TestForwardStopsWaitingWhenTheClientLeaves(t *testing.T) {
	eachForwardPath(t, func(t *testing.T, path agentPath) {
		// An event stream that sends one event and then nothing: when the
		// client goes, the proxy must drop its connection to the agent
		// rather than wait for an event that never comes.
		agentGone := make(chan struct{})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				line, err := br.ReadString('\n')
				if err != nil || line == "\r\n" {
					break
				}
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"+
				"d\r\ndata: first\n\n\r\n")
			io.Copy(io.Discard, c) // until the proxy closes
			close(agentGone)
		}()
		port := ln.Addr().(*net.TCPAddr).Port
		p, url := forwardingProxy(t, port, path)
		req, _ := http.NewRequest("GET", url+"/event", nil)
		req.Host = fmt.Sprintf("a%d.example.test", port)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || line != "data: first\n" {
			t.Fatalf("first event: %q %v", line, err)
		}
		resp.Body.Close()
		select {
		case <-agentGone:
		case <-time.After(10 * time.Second):
			t.Fatal("the proxy kept its connection to the agent after the client left")
		}
		wantPath(t, p, path)
	})
}

// BenchmarkForward measures the fast path (FastListener) in-process, client and agent
// included: its allocations and CPU profile, not a rate to compare (make
// bench does that with wrk against nginx).
func BenchmarkForward(b *testing.B) {
	body := strings.Repeat("x", 128)
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, body)
	}))
	defer agent.Close()
	port := agent.Listener.Addr().(*net.TCPAddr).Port
	_, srv := agentProxy(b, port, Config{}, true)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	host := fmt.Sprintf("a%d.example.test", port)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest("GET", srv.URL+"/", nil)
			req.Host = host
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

func TestForwardCutOffAnswerIsBrokenForTheClient(t *testing.T) {
	eachForwardPath(t, func(t *testing.T, path agentPath) {
		// The agent dies halfway through an answer: the client must see an
		// error, never a short body that ends cleanly.
		for name, answer := range map[string]string{
			"chunked":        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
			"content-length": "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello",
		} {
			t.Run(name, func(t *testing.T) {
				agent := startRawAgent(t, func(int, string) (string, bool) { return answer, true })
				_, url := forwardingProxy(t, agent.port, path)
				req, _ := http.NewRequest("GET", url+"/", nil)
				req.Host = fmt.Sprintf("a%d.example.test", agent.port)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return // broken before the header came: as good
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err == nil {
					t.Fatalf("a cut-off answer read cleanly: %d %q", resp.StatusCode, b)
				}
			})
		}
	})
}

func TestKeptConnectionsServeOneAgentOnly(t *testing.T) {
	eachForwardPath(t, func(t *testing.T, path agentPath) {
		// Agent A's port passes to agent B (A deleted, B placed on the same
		// node and port): B's requests, carrying B's credential, must not go
		// out on a connection kept from A — on the fast path or on
		// ReverseProxy's.
		agent := startRawAgent(t, func(_ int, head string) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
		})
		p, url := forwardingProxy(t, agent.port, path)
		route := func(id string) {
			p.table.apply(&routev1.WatchRoutesResponse{Snapshot: true, Routes: []*routev1.Route{{AgentId: id, Port: uint32(agent.port),
				NodeAddress: "127.0.0.1", Status: "RUNNING", Desired: "running", RuntimePassword: "pw-" + id}}})
		}
		post := func() {
			t.Helper()
			req, _ := http.NewRequest("POST", url+"/session", strings.NewReader("{}"))
			req.Host = fmt.Sprintf("a%d.example.test", agent.port)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatal(resp.Status)
			}
		}
		route("agaaaaaaaaaaaaaaaaaaaa")
		proxyGet(t, url+"/", agent.port)
		post()
		proxyGet(t, url+"/", agent.port)
		post()
		if got := agent.conns.Load(); got != 2 {
			t.Fatalf("agent A: %d connections, want 2 (one per path, each kept)", got)
		}
		route("agbbbbbbbbbbbbbbbbbbbb")
		proxyGet(t, url+"/", agent.port)
		post()
		if got := agent.conns.Load(); got != 4 {
			t.Fatalf("after the port passed to agent B: %d connections, want 4 (B's own)", got)
		}
	})
}
