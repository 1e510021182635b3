package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
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

// eachFastPath runs test on the fast path's two ways: a goroutine per
// connection, and io_uring loops.
func eachFastPath(t *testing.T, test func(t *testing.T, path agentPath)) {
	for _, path := range []agentPath{pathGoroutines, pathRing} {
		t.Run(path.String(), func(t *testing.T) { test(t, path) })
	}
}

// TestFastPathHandsOverWhatItDoesNotServe: on one connection, pipelined,
// the fast path answers the reads, and the first request it does not serve
// (a POST) hands the connection to net/http's server with that request
// unread — which answers it and everything after it, in order.
func TestFastPathHandsOverWhatItDoesNotServe(t *testing.T) {
	eachFastPath(t, func(t *testing.T, path agentPath) {
		agent := startRawAgent(t, func(n int, head string) (string, bool) {
			line, _, _ := strings.Cut(head, "\r\n")
			body := fmt.Sprintf("%d %s", n, line)
			if strings.HasPrefix(head, "POST") {
				body = "posted " + line
			}
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body), false
		})
		p, url := forwardingProxy(t, agent.port, path)
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
	})
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
		for _, path := range agentPaths {
			_, url := forwardingProxy(t, agent.port, path)
			if got := rawExchange(t, url, c.request, 1)[0]; got.StatusCode != c.status {
				t.Errorf("%s (%v path): %d, want %d", c.name, path, got.StatusCode, c.status)
			}
		}
	}
}

// TestFastPathTimeoutsAndClose: the fast path keeps net/http's server's
// header and idle timeouts, closes its connections with the listener, and
// counts them open and closed.
func TestFastPathTimeoutsAndClose(t *testing.T) {
	eachFastPath(t, func(t *testing.T, path agentPath) {
		agent := startRawAgent(t, func(int, string) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok", false
		})
		p, _ := forwardingProxy(t, agent.port, path)
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

		// The second head of two sent at once, never finished: bounded by
		// the header timeout too, though it was read with the first.
		piped, pipedR := dial()
		io.WriteString(piped, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\nGET / HTTP/1.1\r\nHo")
		if resp, err := http.ReadResponse(pipedR, nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%v %v", resp, err)
		}
		io.ReadAll(io.LimitReader(pipedR, 2))
		closedWithin("a pipelined header never finished", pipedR, 5*time.Second)

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
		// The timed-out connections are counted closed just after their
		// clients see them closed.
		for deadline := time.Now().Add(5 * time.Second); gaugeValue(p.metrics.connections) != 1; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("open connections: %v, want 1", gaugeValue(p.metrics.connections))
			}
		}
		srv.Close()
		closedWithin("a kept-alive connection when the server closed", openR, 5*time.Second)
		for deadline := time.Now().Add(5 * time.Second); gaugeValue(p.metrics.connections) != 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("open connections after close: %v", gaugeValue(p.metrics.connections))
			}
		}
		if path == pathRing {
			waitCounter(t, "requests served on io_uring", p.metrics.ringPath, 3)
		}
	})
}

// TestFastPathStopsWaitingForASlowAgentWhenTheClientLeaves: an agent that
// stops answering — before its answer, midway through its head, midway
// through its body — holds no connection once its client has gone.
func TestFastPathStopsWaitingForASlowAgentWhenTheClientLeaves(t *testing.T) {
	eachFastPath(t, func(t *testing.T, path agentPath) {
		for _, c := range []struct{ name, sent, status string }{
			{"before the answer", "", "499"},
			{"midway through the head", "HTTP/1.1 200 OK\r\nContent-Le", "499"},
			{"midway through the body", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nhello", "200"},
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
				p, url := forwardingProxy(t, port, path)
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
				if path == pathRing {
					waitCounter(t, "requests served on io_uring", p.metrics.ringPath, 1)
				}
			})
		}
	})
}

// TestFastPathAnswersWhenTheAgentDoesNot: an agent that cannot be reached,
// or whose answer cannot be read, gets the handler's 502 page from the
// fast path — and was sent the request once, not again through the
// handler.
func TestFastPathAnswersWhenTheAgentDoesNot(t *testing.T) {
	eachFastPath(t, func(t *testing.T, path agentPath) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		gone := ln.Addr().(*net.TCPAddr).Port
		ln.Close() // nothing listens there now
		garbled := startRawAgent(t, func(int, string) (string, bool) {
			return "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", true
		})
		for _, port := range []int{gone, garbled.port} {
			p, url := forwardingProxy(t, port, path)
			host := fmt.Sprintf("a%d.example.test", port)
			answers := rawExchange(t, url, "GET /gone HTTP/1.1\r\nHost: "+host+"\r\n\r\nGET /again HTTP/1.1\r\nHost: "+host+"\r\n\r\n", 2)
			for i, a := range answers {
				if a.StatusCode != http.StatusBadGateway || !strings.Contains(a.Header.Get("X-Test-Body"), "did not answer") {
					t.Errorf("answer %d: %d %q", i+1, a.StatusCode, a.Header.Get("X-Test-Body"))
				}
			}
			waitCounter(t, "requests the fast path answered", p.metrics.fastPath, 2)
			waitCounter(t, "connections handed over", p.metrics.handOffs, 0)
		}
		if n := len(garbled.requests); n != 2 {
			t.Fatalf("the garbling agent got %d requests for 2", n)
		}
	})
}

// TestFastPathAnswersAsNetHTTPDoes: for the same answer from an agent, a
// client gets the same answer through the fast path as through net/http's
// server and the handler — status, fields (but Date), body, trailers.
func TestFastPathAnswersAsNetHTTPDoes(t *testing.T) {
	for _, c := range []struct{ name, method, answer string }{
		{"typed", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/css\r\nContent-Length: 6\r\nX-A: 1\r\n\r\nb{c:d}"},
		{"untyped, sniffed", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n<html>hi</html>"},
		{"untyped, encoded", "GET", "HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc"},
		{"not modified", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Type: text/css\r\nETag: \"x\"\r\n\r\n"},
		{"no content", "GET", "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"},
		{"not found", "GET", "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nnope"},
		{"unknown status", "GET", "HTTP/1.1 299 Odd\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"},
		{"HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n"},
		{"pragma", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nPragma: no-cache\r\nContent-Length: 2\r\n\r\nok"},
		{"agent closes", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"},
		{"hop-by-hop", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok"},
		{"early hints", "GET", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"},
		{"chunked, trailers", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			"5\r\nhello\r\n0\r\nX-Sum: 5\r\nSet-Cookie: undeclared=1\r\n\r\n"},
		{"chunked, untyped", "GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"event stream", "GET", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 11\r\n\r\ndata: x\n\n\n\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			agent := startRawAgent(t, func(int, string) (string, bool) { return c.answer, strings.Contains(c.answer, "close") })
			got := make([]string, len(agentPaths))
			for i, path := range agentPaths {
				_, url := forwardingProxy(t, agent.port, path)
				req, _ := http.NewRequest(c.method, url+"/", nil)
				req.Host = fmt.Sprintf("a%d.example.test", agent.port)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				resp.Header.Del("Date")
				got[i] = fmt.Sprintf("%s %d %q %v length %d te %v trailer %v", resp.Proto, resp.StatusCode, resp.Status, resp.Header,
					resp.ContentLength, resp.TransferEncoding, resp.Trailer) + " body " + strconv.Quote(string(body))
			}
			for i, path := range agentPaths[:len(agentPaths)-1] {
				if got[i] != got[len(got)-1] {
					t.Fatalf("answers differ:\n%v path: %s\nnet/http:  %s", path, got[i], got[len(got)-1])
				}
			}
		})
	}
}

// failingOnceListener is a test double for a listener out of file
// descriptors once: its first Accept fails as accept(2) does with EMFILE.
type failingOnceListener struct {
	net.Listener
	failed bool
}

func (l *failingOnceListener) Accept() (net.Conn, error) {
	if !l.failed {
		l.failed = true
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestFastPathOutlivesRunningOutOfFiles: a client can make accept fail by
// opening connections until the process has no file descriptor left; the
// fast path waits and goes on serving, as net/http's server does.
func TestFastPathOutlivesRunningOutOfFiles(t *testing.T) {
	eachFastPath(t, func(t *testing.T, path agentPath) {
		agent := startRawAgent(t, func(int, string) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok", false
		})
		p, _ := forwardingProxy(t, agent.port, path)
		raw, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := p.NewServer()
		go srv.Serve(p.FastListener(&failingOnceListener{Listener: raw}, srv))
		t.Cleanup(func() { srv.Close() })
		answers := rawExchange(t, "http://"+raw.Addr().String(), fmt.Sprintf("GET / HTTP/1.1\r\nHost: a%d.example.test\r\n\r\n", agent.port), 1)
		if answers[0].StatusCode != 200 {
			t.Fatalf("after a failed accept: %d", answers[0].StatusCode)
		}
	})
}
