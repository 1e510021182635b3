package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// rawExchange writes request to a new connection to the proxy at url and
// reads n answers from it.
func rawExchange(t *testing.T, url, request string, n int) []*http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	var out []*http.Response
	for i := range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("answer %d of %d: %v", i+1, n, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("answer %d body: %v", i+1, err)
		}
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		resp.Header.Set("X-Test-Body", string(body))
		out = append(out, resp)
	}
	return out
}

// waitCounter waits for c to reach want, and fails t if it does not in 5 s
// or goes past it: counts follow the answers the client reads.
func waitCounter(t *testing.T, what string, c interface{ Write(*dto.Metric) error }, want float64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got := counterValue(c)
		if got == want {
			return
		}
		if got > want || time.Now().After(deadline) {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
	}
}

// TestFastPathHandsOverWhatItDoesNotServe: on one connection, pipelined,
// the fast path answers the reads, and the first request it does not serve
// (a POST) hands the connection to net/http's server with that request
// unread — which answers it and everything after it, in order.
func TestFastPathHandsOverWhatItDoesNotServe(t *testing.T) {
	agent := startRawAgent(t, func(n int, head string) (string, bool) {
		line, _, _ := strings.Cut(head, "\r\n")
		body := fmt.Sprintf("%d %s", n, line)
		if strings.HasPrefix(head, "POST") {
			body = "posted " + line
		}
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body), false
	})
	p, url := forwardingProxy(t, agent.port, true)
	host := fmt.Sprintf("a%d.example.test", agent.port)
	get := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n" }
	// The POST's body is read by the raw agent only as far as its head;
	// an empty body keeps the exchange in step.
	post := "POST /p HTTP/1.1\r\nHost: " + host + "\r\nContent-Length: 0\r\n\r\n"
	answers := rawExchange(t, url, get("/1")+get("/2")+post+get("/3"), 4)
	for i, want := range []string{"GET /1 HTTP/1.1", "GET /2 HTTP/1.1", "posted POST /p HTTP/1.1", "GET /3 HTTP/1.1"} {
		if got := answers[i].Header.Get("X-Test-Body"); answers[i].StatusCode != 200 || !strings.HasSuffix(got, want) {
			t.Errorf("answer %d: %d %q, want …%q", i+1, answers[i].StatusCode, got, want)
		}
	}
	waitCounter(t, "requests the fast path served", p.metrics.fastPath, 2)
	waitCounter(t, "connections handed over", p.metrics.handOffs, 1)
}

// TestFastPathLeavesTheUnusualToNetHTTP: requests the fast path does not
// parse itself get net/http's answer, the same as without it — served or
// refused.
func TestFastPathLeavesTheUnusualToNetHTTP(t *testing.T) {
	agent := startRawAgent(t, func(int, string) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	host := fmt.Sprintf("a%d.example.test", agent.port)
	for _, c := range []struct {
		name, request string
		status        int
	}{
		{"head bigger than the fast path reads", "GET / HTTP/1.1\r\nHost: " + host + "\r\nX-Big: " + strings.Repeat("b", 10<<10) + "\r\n\r\n", 200},
		{"bare LF line ends", "GET / HTTP/1.1\nHost: " + host + "\n\n", 200},
		{"HTTP/1.0", "GET / HTTP/1.0\r\nHost: " + host + "\r\n\r\n", 200},
		{"Connection: close", "GET / HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n", 200},
		{"a %-escape net/http refuses", "GET /%zz HTTP/1.1\r\nHost: " + host + "\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: " + host + "\r\nHost: " + host + "\r\n\r\n", 400},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"absolute form", "GET http://" + host + "/ HTTP/1.1\r\nHost: " + host + "\r\n\r\n", 400},
		{"a space before the colon", "GET / HTTP/1.1\r\nHost : " + host + "\r\n\r\n", 400},
		{"a control byte in a value", "GET / HTTP/1.1\r\nHost: " + host + "\r\nX-A: a\x01b\r\n\r\n", 400},
		{"an unknown host", "GET / HTTP/1.1\r\nHost: nowhere.example.test\r\n\r\n", 404},
	} {
		for _, fast := range []bool{true, false} {
			_, url := forwardingProxy(t, agent.port, fast)
			if got := rawExchange(t, url, c.request, 1)[0]; got.StatusCode != c.status {
				t.Errorf("%s (fast path %v): %d, want %d", c.name, fast, got.StatusCode, c.status)
			}
		}
	}
}

// TestFastPathTimeoutsAndClose: the fast path keeps net/http's server's
// header and idle timeouts, closes its connections with the listener, and
// counts them open and closed.
func TestFastPathTimeoutsAndClose(t *testing.T) {
	agent := startRawAgent(t, func(int, string) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	p, _ := forwardingProxy(t, agent.port, true)
	srv := p.NewServer()
	srv.ReadHeaderTimeout, srv.IdleTimeout = 300*time.Millisecond, 600*time.Millisecond
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := p.FastListener(raw, srv)
	go srv.Serve(ln)
	dial := func() (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}
	closedWithin := func(what string, br *bufio.Reader, d time.Duration) {
		t.Helper()
		start := time.Now()
		if _, err := br.ReadByte(); err == nil {
			t.Fatalf("%s: the connection sent more", what)
		} else if took := time.Since(start); took > d {
			t.Fatalf("%s: closed after %s (or not at all: %v)", what, took, err)
		}
	}
	host := fmt.Sprintf("a%d.example.test", agent.port)

	slow, slowR := dial()
	io.WriteString(slow, "GET / HTTP/1.1\r\nHost: "+host+"\r\nX-Slow: ")
	closedWithin("a header never finished", slowR, 5*time.Second)

	idle, idleR := dial()
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
	if resp, err := http.ReadResponse(idleR, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	io.ReadAll(io.LimitReader(idleR, 2))
	closedWithin("an idle connection", idleR, 5*time.Second)

	open, openR := dial()
	io.WriteString(open, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
	if resp, err := http.ReadResponse(openR, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	io.ReadAll(io.LimitReader(openR, 2))
	if n := gaugeValue(p.metrics.connections); n != 1 {
		t.Fatalf("open connections: %v, want 1", n)
	}
	srv.Close()
	closedWithin("a kept-alive connection when the server closed", openR, 5*time.Second)
	for deadline := time.Now().Add(5 * time.Second); gaugeValue(p.metrics.connections) != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("open connections after close: %v", gaugeValue(p.metrics.connections))
		}
	}
}

// TestFastPathStopsWaitingForASlowAgentWhenTheClientLeaves: an agent that
// stops answering — before its answer, midway through its head, midway
// through its body — holds no connection once its client has gone.
func TestFastPathStopsWaitingForASlowAgentWhenTheClientLeaves(t *testing.T) {
	for _, c := range []struct{ name, sent, status string }{
		{"before the answer", "", "499"},
		{"midway through the head", "HTTP/1.1 200 OK\r\nContent-Le", "499"},
		{"midway through the body", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhello", "200"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			agentGone := make(chan struct{})
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				br := bufio.NewReader(conn)
				for line := ""; line != "\r\n"; {
					if line, err = br.ReadString('\n'); err != nil {
						return
					}
				}
				io.WriteString(conn, c.sent)
				io.Copy(io.Discard, br) // then nothing more, until the proxy closes
				close(agentGone)
			}()
			port := ln.Addr().(*net.TCPAddr).Port
			p, url := forwardingProxy(t, port, true)
			conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "GET /slow HTTP/1.1\r\nHost: a%d.example.test\r\n\r\n", port)
			time.Sleep(2 * slowAnswer) // past the point where the fast path watches the client
			conn.Close()
			select {
			case <-agentGone:
			case <-time.After(10 * time.Second):
				t.Fatal("the proxy kept waiting on the agent after the client left")
			}
			waitCounter(t, "requests with status "+c.status, p.metrics.requests.WithLabelValues("agent_port", c.status), 1)
		})
	}
}

// TestFastPathGivesBackARequestItCouldNotForward: when the agent cannot be
// reached, the request the fast path read is handed to net/http's server as
// it came, and the handler answers it (502, its page).
func TestFastPathGivesBackARequestItCouldNotForward(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now
	p, url := forwardingProxy(t, port, true)
	host := fmt.Sprintf("a%d.example.test", port)
	answers := rawExchange(t, url, "GET /gone HTTP/1.1\r\nHost: "+host+"\r\n\r\nGET /again HTTP/1.1\r\nHost: "+host+"\r\n\r\n", 2)
	for i, a := range answers {
		if a.StatusCode != http.StatusBadGateway || !strings.Contains(a.Header.Get("X-Test-Body"), "did not answer") {
			t.Errorf("answer %d: %d %q", i+1, a.StatusCode, a.Header.Get("X-Test-Body"))
		}
	}
	waitCounter(t, "connections handed over", p.metrics.handOffs, 1)
}
