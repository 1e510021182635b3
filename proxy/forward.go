package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The forwarder is the handler's quick way to an agent (the fast path,
// fastpath.go, serves plain HTTP/1.1 connections before the handler sees
// them; this serves HTTP/2, TLS and handed-over connections): a body-less
// GET, HEAD or OPTIONS request (an agent's UI assets, its API reads, its
// event stream) is written to a kept-alive connection to the agent and its
// answer read back on the goroutine serving the client. net/http's
// Transport hands every request and answer across two goroutines of its
// own per connection; on a loaded machine those hand-offs cost more than
// the forwarding itself. Everything else — bodies, upgrades — goes through
// httputil.ReverseProxy. The kept-alive connections are shared with the
// fast path.

const (
	// maxIdlePerBackend bounds the kept-alive connections to one agent.
	maxIdlePerBackend = 64
	// backendIdleTimeout closes connections to agents unused this long.
	backendIdleTimeout = 90 * time.Second
	// maxBackendHeaderBytes bounds an agent's response headers: agents are
	// tenants' code and may answer anything.
	maxBackendHeaderBytes = 1 << 20
	dialTimeout           = 5 * time.Second
)

// dialer reaches agents and control servers, on every path.
var dialer = &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}

// forwardable reports whether the handler forwards r itself (forward)
// rather than through ReverseProxy: a method a retry cannot repeat the
// effect of, no body, no upgrade.
func forwardable(r *http.Request) bool {
	return readOnly(r.Method) && r.ContentLength == 0 && len(r.TransferEncoding) == 0 &&
		r.Header.Get("Upgrade") == "" && r.Header.Get("Expect") == ""
}

// backendConn is one kept-alive connection to an agent.
type backendConn struct {
	net.Conn
	pool string // route.poolAddr
	br   *bufio.Reader
	bw   *bufio.Writer
	// readLimit bounds what the next reads may return (the response
	// header limit); math.MaxInt64 when reading a body.
	readLimit int64
}

func (c *backendConn) Read(p []byte) (int, error) {
	if c.readLimit <= 0 {
		return 0, errors.New("proxy: agent's response headers too large")
	}
	if int64(len(p)) > c.readLimit {
		p = p[:c.readLimit]
	}
	n, err := c.Conn.Read(p)
	c.readLimit -= int64(n)
	return n, err
}

// idlePool keeps idle connections to agents, most recently used first, in
// one list per agent (route.poolAddr), each for at most backendIdleTimeout
// and at most maxIdlePerBackend per agent. It does not lock: backendPool
// locks it for the goroutines, a ring loop has its own.
type idlePool[C any] struct {
	lists map[string][]idleConn[C]
	close func(C)
}

type idleConn[C any] struct {
	c     C
	since time.Time
}

func newIdlePool[C any](close func(C)) idlePool[C] {
	return idlePool[C]{lists: map[string][]idleConn[C]{}, close: close}
}

// get returns an idle connection of pool, closing those idle too long.
func (p *idlePool[C]) get(pool string, now time.Time) (C, bool) {
	list := p.lists[pool]
	for len(list) > 0 {
		ic := list[len(list)-1]
		list = list[:len(list)-1]
		if now.Sub(ic.since) < backendIdleTimeout {
			p.lists[pool] = list
			return ic.c, true
		}
		p.close(ic.c)
	}
	delete(p.lists, pool)
	var none C
	return none, false
}

// put keeps c for pool, or closes it when pool has enough.
func (p *idlePool[C]) put(pool string, c C, now time.Time) {
	list := p.lists[pool]
	if len(list) >= maxIdlePerBackend {
		p.close(c)
		return
	}
	p.lists[pool] = append(list, idleConn[C]{c, now})
}

// sweep closes connections idle too long, so that a moved or deleted
// agent's connections do not linger.
func (p *idlePool[C]) sweep(now time.Time) {
	for pool, list := range p.lists {
		kept := list[:0]
		for _, ic := range list {
			if now.Sub(ic.since) < backendIdleTimeout {
				kept = append(kept, ic)
			} else {
				p.close(ic.c)
			}
		}
		clear(list[len(kept):])
		if len(kept) == 0 {
			delete(p.lists, pool)
		} else {
			p.lists[pool] = kept
		}
	}
}

func (p *idlePool[C]) closeAll() {
	for pool, list := range p.lists {
		for _, ic := range list {
			p.close(ic.c)
		}
		delete(p.lists, pool)
	}
}

// backendPool is the goroutines' idlePool of agent connections.
type backendPool struct {
	mu   sync.Mutex
	idle idlePool[*backendConn]
}

func newBackendPool() *backendPool {
	return &backendPool{idle: newIdlePool(func(c *backendConn) { c.Close() })}
}

// get returns an idle connection from pool, or nil.
func (p *backendPool) get(pool string) *backendConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, _ := p.idle.get(pool, time.Now())
	return c
}

func (p *backendPool) put(c *backendConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.idle.put(c.pool, c, time.Now())
}

func (p *backendPool) sweep() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.idle.sweep(time.Now())
}

func (p *backendPool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.idle.closeAll()
}

// dial connects to addr, for the pool named poolAddr: one per agent (see
// route.poolAddr).
func (p *backendPool) dial(ctx context.Context, poolAddr, addr string) (*backendConn, error) {
	c, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	bc := &backendConn{Conn: c, pool: poolAddr}
	bc.br = bufio.NewReaderSize(bc, 8<<10)
	bc.bw = bufio.NewWriterSize(c, 4<<10)
	return bc, nil
}

// copyBuffers are the body copy buffers, shared across requests.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// aLongTimeAgo is a deadline that makes a connection's blocked reads and
// writes return at once.
var aLongTimeAgo = time.Unix(1, 0)

// forward sends r to the agent at rt and copies its answer to w. An error
// is returned only while nothing has been written to w.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, rt *route) error {
	c := p.backends.get(rt.poolAddr)
	reused := c != nil
	for {
		if c == nil {
			var err error
			if c, err = p.backends.dial(r.Context(), rt.poolAddr, rt.backendAddr); err != nil {
				return err
			}
		}
		// The client going away ends the wait for the agent (for an
		// event stream, the wait for its next event).
		conn := c
		stop := context.AfterFunc(r.Context(), func() { conn.SetDeadline(aLongTimeAgo) })
		resp, err := roundTrip(c, r, rt, nil)
		if err != nil {
			stop()
			c.Close()
			if cerr := r.Context().Err(); cerr != nil {
				return cerr // the client left: nobody to answer
			}
			if reused {
				// The agent closed a kept-alive connection as the
				// request went out; the request is a read, so it is
				// sent again on a fresh connection, as Transport does.
				c, reused = nil, false
				continue
			}
			return err
		}
		err = copyResponse(w, r, resp)
		if stop() && err == nil && !resp.Close {
			p.backends.put(c)
		} else {
			c.Close()
		}
		if err != nil {
			// The answer is cut off after its header went out: the
			// client must see it broken (the connection reset, or the
			// HTTP/2 stream), never a clean end of a short body.
			panic(http.ErrAbortHandler)
		}
		return nil
	}
}

// roundTrip writes r to c, with the runtime's credential and forwarding
// headers, and reads the response's header; await, when not nil, is what
// waits for its first byte.
func roundTrip(c *backendConn, r *http.Request, rt *route, await func(*backendConn) error) (*http.Response, error) {
	bw := c.bw
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	if r.ProtoMajor == 1 && r.RequestURI != "" {
		bw.WriteString(r.RequestURI) // as the client sent it; net/http checked the request line
	} else {
		bw.WriteString(r.URL.RequestURI()) // HTTP/2's :path, escaped again
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(rt.backendAddr)
	bw.WriteString("\r\nAuthorization: ")
	bw.WriteString(rt.basicAuth)
	bw.WriteString("\r\n")
	writeForwardedHeaders(bw, r)
	for k, vs := range r.Header {
		if dropRequestHeader(k, r.Header) {
			continue
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
	bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return readResponse(c, r, await)
}

// readResponse reads the header of the final answer to r on c (passing over
// informational ones); await, when not nil, is what waits for its first
// byte.
func readResponse(c *backendConn, r *http.Request, await func(*backendConn) error) (*http.Response, error) {
	for {
		c.readLimit = maxBackendHeaderBytes
		if await != nil {
			if err := await(c); err != nil {
				return nil, err
			}
		}
		resp, err := http.ReadResponse(c.br, r)
		c.readLimit = math.MaxInt64
		switch {
		case err != nil:
			return nil, err
		case resp.StatusCode == http.StatusSwitchingProtocols:
			return nil, errors.New("the agent switched protocols unasked")
		case resp.StatusCode < 200:
			continue // informational (103 Early Hints): the final answer follows
		}
		return resp, nil
	}
}

// writeField writes one header field.
func writeField(bw *bufio.Writer, name, value string) {
	bw.WriteString(name)
	bw.WriteString(": ")
	bw.WriteString(value)
	bw.WriteString("\r\n")
}

// writeForwardedHeaders sets X-Forwarded-For (appending the client to a
// chain it sent), -Host and -Proto, as ReverseProxy's SetXForwarded does.
func writeForwardedHeaders(bw *bufio.Writer, r *http.Request) {
	client, _, err := net.SplitHostPort(r.RemoteAddr)
	if err == nil {
		bw.WriteString("X-Forwarded-For: ")
		if prior := r.Header["X-Forwarded-For"]; len(prior) > 0 {
			bw.WriteString(strings.Join(prior, ", "))
			bw.WriteString(", ")
		}
		bw.WriteString(client)
		bw.WriteString("\r\n")
	}
	bw.WriteString("X-Forwarded-Host: ")
	bw.WriteString(r.Host)
	if r.TLS != nil {
		bw.WriteString("\r\nX-Forwarded-Proto: https\r\n")
	} else {
		bw.WriteString("\r\nX-Forwarded-Proto: http\r\n")
	}
}

// hopHeaders are the hop-by-hop headers (RFC 9110 §7.6.1) and those
// net/http's ReverseProxy drops with them.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func isHopHeader(k string) bool {
	for _, h := range hopHeaders {
		if k == h {
			return true
		}
	}
	return false
}

// dropRequestHeader reports whether header k of a client's request stays
// behind: hop-by-hop headers and those Connection names, the client's own
// credentials and cookies (the platform's stay with the platform; the
// agent gets the runtime's credential instead), and forwarding headers,
// which the proxy sets itself.
func dropRequestHeader(k string, h http.Header) bool {
	switch k {
	case "Authorization", "Cookie", "Host", "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return true
	}
	return isHopHeader(k) || namedByConnection(k, h)
}

// namedByConnection reports whether the Connection header lists k.
func namedByConnection(k string, h http.Header) bool {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(f)) == k {
				return true
			}
		}
	}
	return false
}

// copyResponse writes resp to w, and says what broke the copy, if anything.
// Streams (no length, or server-sent events) are flushed as they come.
func copyResponse(w http.ResponseWriter, r *http.Request, resp *http.Response) error {
	defer resp.Body.Close()
	h := w.Header()
	for k, vs := range resp.Header {
		if isHopHeader(k) || namedByConnection(k, resp.Header) {
			continue
		}
		h[k] = vs
	}
	for k := range resp.Trailer {
		h.Add("Trailer", k)
	}
	stream := resp.ContentLength < 0 || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	if resp.ContentLength >= 0 && r.Method != http.MethodHead {
		h["Content-Length"] = []string{strconv.FormatInt(resp.ContentLength, 10)}
	}
	w.WriteHeader(resp.StatusCode)
	var flush func() error
	if stream {
		rc := http.NewResponseController(w)
		flush = rc.Flush
		flush()
	}
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if flush != nil {
				flush()
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	for k, vs := range resp.Trailer {
		h[k] = vs
	}
	return nil
}
