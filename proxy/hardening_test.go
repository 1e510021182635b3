package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestProxyServesHTTP2OverTLS: browsers speak HTTP/2 to the proxy over TLS
// (a wildcard certificate); agents and the API answer the same.
func TestProxyServesHTTP2OverTLS(t *testing.T) {
	b := startAgentBackend(t, "pw-h2")
	h := newProxyHarness(t, []int{b.port})
	const id = "aghhhhhhhhhhhhhhhhhhhh"
	h.runningAgent(id, "pw-h2", false)

	srv := httptest.NewUnstartedServer(nil)
	srv.Config = NewServer(h.proxy.Handler())
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.Timeout = 30 * time.Second
	for host, want := range map[string]string{
		id + ".example.test":                    "hello from the agent at /h2",
		fmt.Sprintf("a%d.example.test", b.port): "hello from the agent at /h2",
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/h2", nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 || string(body) != want {
			t.Fatalf("%s over TLS: %s %d %q", host, resp.Proto, resp.StatusCode, body)
		}
		if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
			t.Fatalf("%s: TLS %+v", host, resp.TLS)
		}
	}
	// The agent sees the original scheme.
	for len(b.seen) > 1 {
		<-b.seen
	}
	if r := <-b.seen; r.Header.Get("X-Forwarded-Proto") != "https" {
		t.Fatalf("X-Forwarded-Proto = %q", r.Header.Get("X-Forwarded-Proto"))
	}
}

// FuzzProxyRequest sends raw bytes to the proxy's listener, as a client
// would: whatever arrives, the proxy answers with a status of its own
// documented set (or the agent's 200), and forwards to the agent only a
// request whose Host names it. A panic in the handler would show as a
// connection closed with no answer to a request net/http can parse.
func FuzzProxyRequest(f *testing.F) {
	b := startAgentBackend(f, "pw-fuzz")
	h := newProxyHarness(f, []int{b.port})
	const id = "agfuzzfuzzfuzzfuzzfuzz"
	h.runningAgent(id, "pw-fuzz", false)
	d, _ := NewDomain("example.test")
	addr := strings.TrimPrefix(h.url, "http://")
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: " + id + ".example.test\r\n\r\n",
		fmt.Sprintf("GET /x?y=1 HTTP/1.1\r\nHost: A%d.EXAMPLE.TEST.:80\r\n\r\n", b.port),
		"GET /api/v1/agents HTTP/1.1\r\nHost: example.test\r\n\r\n",
		"POST /api/v1/agents HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: 2\r\n\r\n{}",
		"GET http://evil.test/ HTTP/1.1\r\nHost: example.test\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\x00.example.test\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: " + id + ".example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: example.test\r\n\r\n",
		"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
		"GET /%zz HTTP/1.1\r\nHost: " + id + ".example.test\r\n\r\n",
		"BREW / HTCPCP/1.0\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	// 301, 307 and 308 are the test agent's: its ServeMux redirects paths
	// that are not clean ("/."), and the proxy passes agents' answers on.
	allowed := map[int]bool{200: true, 301: true, 307: true, 308: true, 400: true, 404: true, 405: true, 413: true, 414: true, 417: true, 431: true, 501: true, 502: true, 503: true, 505: true}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for len(b.seen) > 0 {
			<-b.seen
		}
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		conn.Write(raw)
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite() // no more is coming: a request waiting for its body ends
		}
		line, _ := bufio.NewReader(conn).ReadString('\n')
		req, perr := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		var code int
		if _, err := fmt.Sscanf(line, "HTTP/1.1 %d", &code); err == nil && !allowed[code] {
			t.Fatalf("status %d for %q", code, raw)
		}
		if line == "" && perr == nil && req.Method == "GET" && req.ContentLength <= 0 && req.Header.Get("Upgrade") == "" {
			t.Fatalf("no answer to a request net/http parses: %q", raw)
		}
		select {
		case seen := <-b.seen:
			if m := d.Match(seen.Header.Get("X-Forwarded-Host")); m.Kind != RouteAgentID && m.Kind != RouteAgentPort {
				t.Fatalf("the agent got a request for host %q: %q", seen.Header.Get("X-Forwarded-Host"), raw)
			}
		default:
		}
	})
}
