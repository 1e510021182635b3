package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// The fast path serves plain HTTP/1.1 connections itself, without
// net/http's server, for as long as their requests are an agent's
// body-less reads (GET, HEAD, OPTIONS) and the agent runs: what a browser
// showing an agent's UI sends, and what the benchmark measures. Per
// request, net/http's server starts a goroutine that reads the client
// connection ahead (to notice a client leaving) and stops it again, and
// hands the request to the handler through a context, a response writer
// and its buffers: on a loaded machine these cost more than forwarding
// itself. Here one goroutine reads the request, writes it to a kept-alive
// connection to the agent, reads the answer and writes it back.
//
// Anything else — a request the fast path does not take, an agent not
// running, an agent that cannot be reached, anything unusual in the
// request — hands the connection, with the request as the client sent it,
// to net/http's server and the proxy's handler, for good: they answer it as
// they answer every request. The fast path therefore only ever serves
// requests that the handler would have served the same way; its parsers
// (fasthead.go) accept a plain subset of what net/http's accept, and are
// fuzzed against them.

const (
	// fastHeadBytes is the most of a request's head the fast path reads;
	// bigger heads (up to NewServer's MaxHeaderBytes) go to net/http.
	fastHeadBytes = 8 << 10
	// slowAnswer is how long the fast path waits for an agent's answer
	// before it also watches the client, to stop waiting when the client
	// leaves (net/http's server watches every request; this keeps that
	// cost to the slow ones).
	slowAnswer = 200 * time.Millisecond
)

// clientWriters are the fast path's write buffers to clients.
var clientWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

// errClientLeft ends a forward whose client went away.
var errClientLeft = errors.New("proxy: the client left")

// statusClientClosed is what metrics and the access log say of a request
// whose client left before the agent answered (nginx's 499): nothing was
// sent.
const statusClientClosed = 499

// FastListener wraps ln, a plain-TCP listener for srv (from NewServer):
// the connections it accepts are served by the fast path, and handed to
// srv — returned by Accept — when a request needs net/http's server. Serve
// srv on the returned listener; closing it closes the fast path's
// connections too. srv's ReadHeaderTimeout and IdleTimeout apply.
func (p *Proxy) FastListener(ln net.Listener, srv *http.Server) net.Listener {
	return &fastListener{Listener: ln, p: p, srv: srv, handoff: make(chan net.Conn),
		closed: make(chan struct{}), conns: map[*fastConn]struct{}{}}
}

type fastListener struct {
	net.Listener
	p       *Proxy
	srv     *http.Server
	handoff chan net.Conn
	start   sync.Once
	closed  chan struct{}
	close   sync.Once

	mu        sync.Mutex
	conns     map[*fastConn]struct{}
	acceptErr error

	// rings serve the connections when io_uring is at hand (ringpath.go),
	// else nil: a goroutine serves each. ringsFailed says why not, when
	// Config.Rings asked for them.
	rings       *ringPath
	ringsFailed error
}

// Accept returns the next connection handed to net/http's server.
func (l *fastListener) Accept() (net.Conn, error) {
	l.start.Do(func() {
		if n := l.p.cfg.Rings; n > 0 {
			rings, err := startRingPath(l, n)
			if err != nil {
				l.p.logger.Warn("fast path without io_uring: a goroutine serves each connection", "error", err)
			}
			l.mu.Lock()
			l.rings, l.ringsFailed = rings, err
			closed := l.isClosed()
			l.mu.Unlock()
			if closed && rings != nil {
				rings.close() // closed before the first Accept
			}
		}
		go l.acceptLoop()
	})
	select {
	case c := <-l.handoff:
		return c, nil
	case <-l.closed:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.acceptErr != nil {
			return nil, l.acceptErr
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the connections the fast path holds;
// those already handed over are the server's to close.
func (l *fastListener) Close() error {
	err := l.Listener.Close()
	l.shut(nil)
	return err
}

func (l *fastListener) shut(acceptErr error) {
	l.close.Do(func() {
		if acceptErr != nil {
			l.Listener.Close() // broken: nobody is to wait in its queue
		}
		// Closed under l.mu, which accepting and handing back from a
		// ring take to look at it: no connection starts being served
		// once the walk below has passed.
		l.mu.Lock()
		l.acceptErr = acceptErr
		close(l.closed)
		for fc := range l.conns {
			if !fc.onRing { // a ring closes its own
				fc.c.Close()
			}
		}
		rings := l.rings
		l.mu.Unlock()
		if rings != nil {
			rings.close()
		}
	})
}

func (l *fastListener) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			// Out of file descriptors and the like (a client can cause
			// it by opening enough connections): wait and go on, as
			// net/http's server does, rather than spin or stop.
			if ne, ok := err.(net.Error); ok && ne.Temporary() { //nolint:staticcheck // net/http's own test
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(backoff):
					continue
				case <-l.closed:
					return
				}
			}
			l.shut(err)
			return
		}
		backoff = 0
		fc := &fastConn{l: l, c: c, remote: c.RemoteAddr().String()}
		fc.clientIP, _, _ = net.SplitHostPort(fc.remote)
		l.mu.Lock()
		if l.isClosed() {
			l.mu.Unlock()
			c.Close()
			return
		}
		fd := -1
		if l.rings != nil {
			fd = ringSocket(c)
		}
		if fc.onRing = fd >= 0; fc.onRing {
			fc.c = nil // the ring's alone, as fd, until it hands it back
		}
		l.conns[fc] = struct{}{}
		l.mu.Unlock()
		l.p.metrics.connections.Inc()
		if fc.onRing {
			l.rings.adopt(fc, fd)
		} else {
			go fc.serve(true)
		}
	}
}

// ringSocket takes c's socket out of Go's poller for a ring, and returns
// it (or -1, with c untouched, for a connection that is no TCP socket).
// Left in the poller, every packet the client sends would wake a thread
// blocked in epoll for nothing: the copy made here is in no epoll set, and
// closing c takes the original out of Go's.
func ringSocket(c net.Conn) int {
	sc, ok := c.(*net.TCPConn)
	if !ok {
		return -1
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	raw.Control(func(s uintptr) {
		r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		if errno == 0 {
			fd = int(r)
		}
	})
	if fd >= 0 {
		c.Close()
	}
	return fd
}

// socketConn makes a ring's socket fd a net.Conn again, in Go's poller;
// fd is closed.
func socketConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "")
	defer f.Close()
	return net.FileConn(f)
}

// forget drops fc, closed or handed to net/http's server, from the
// listener's connections.
func (l *fastListener) forget(fc *fastConn) {
	l.mu.Lock()
	delete(l.conns, fc)
	l.mu.Unlock()
	l.p.metrics.connections.Dec()
}

// isClosed reports whether the listener was closed; l.mu is held.
func (l *fastListener) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

// unring marks fc as served by a goroutine from now on, and reports
// whether it is to be served: not when the listener closed while a ring
// held it (fc is closed and forgotten then).
func (l *fastListener) unring(fc *fastConn) bool {
	l.mu.Lock()
	fc.onRing = false
	closed := l.isClosed()
	l.mu.Unlock()
	if closed {
		fc.c.Close()
		l.forget(fc)
	}
	return !closed
}

// fastConn is one client connection on the fast path.
type fastConn struct {
	l      *fastListener
	c      net.Conn
	remote string
	// clientIP is the client's address for X-Forwarded-For.
	clientIP string
	br       *bufio.Reader
	bw       *bufio.Writer // while answering a request; from clientWriters
	// readDeadline is the client connection's read deadline (see
	// readHead).
	readDeadline time.Time
	// head is a copy of the request head being served, which req's
	// slices point into.
	head []byte
	req  fastRequestHead
	ans  fastAnswer
	// onRing is set while a ring serves the connection (under l.mu).
	onRing bool
}

// handedOffConn is a connection handed to net/http's server: its reads
// start with what the fast path read and did not serve.
type handedOffConn struct {
	net.Conn
	r io.Reader
}

func (c *handedOffConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// CloseWrite half-closes the connection, as net/http's server and
// ReverseProxy's upgrades do to a TCP connection.
func (c *handedOffConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("proxy: the connection cannot half-close")
}

// serve serves the connection from its first request, or from a later
// one: fc.br, when set, holds what was read of it already.
func (fc *fastConn) serve(first bool) {
	handedOff := false
	defer func() {
		fc.l.forget(fc)
		if !handedOff {
			fc.c.Close()
		}
	}()
	if fc.br == nil {
		fc.br = bufio.NewReaderSize(fc.c, fastHeadBytes)
	}
	for ; ; first = false {
		head, err := fc.readHead(first)
		if err != nil {
			return // the client left, or timed out
		}
		if head != nil {
			served, err := fc.serveRequest(head)
			if err != nil {
				return // the answer broke off (the client must see it broken), or the client left
			}
			if served {
				continue
			}
		}
		// Handed over as the client sent it: the request is still
		// buffered, unread.
		handedOff = fc.handOff(&handedOffConn{Conn: fc.c, r: fc.br})
		if handedOff {
			fc.l.p.metrics.handOffs.Inc()
		}
		return
	}
}

// resumeAnswer passes on the agent's answer on bc to the request in
// fc.req, which a ring sent and could not pass on itself, and serves the
// connection on.
func (fc *fastConn) resumeAnswer(bc *backendConn, kind RouteKind, start time.Time) {
	p := fc.l.p
	fc.takeWriter()
	status, n, err := fc.passOn(bc)
	fc.dropWriter()
	p.metrics.byKind[kind].active.Dec()
	fc.record(kind, status, n, start)
	if err != nil {
		fc.l.forget(fc)
		fc.c.Close()
		return
	}
	fc.serve(false)
}

// handOff gives c to net/http's server, and reports whether it took it.
func (fc *fastConn) handOff(c net.Conn) bool {
	select {
	case fc.l.handoff <- c:
		return true
	case <-fc.l.closed:
		return false
	}
}

// readHead waits for the next request's head, the idle timeout for its
// first byte and the header timeout for the rest (the first request's for
// all of it, as net/http's server does). It returns the head, still
// buffered (unread), or nil when the head is one the fast path leaves to
// net/http: too big, or with bare LF line ends.
//
// The idle deadline is moved only when less than half of it is left, not
// on every request (a deadline costs a timer update): a kept-alive
// connection closes between one and two halves of IdleTimeout after its
// last request.
func (fc *fastConn) readHead(first bool) ([]byte, error) {
	srv := fc.l.srv
	now := time.Now()
	headerDeadline := false
	switch idle := srv.IdleTimeout; {
	case first || idle <= 0:
		if srv.ReadHeaderTimeout > 0 {
			fc.setReadDeadline(now.Add(srv.ReadHeaderTimeout))
			headerDeadline = true
		}
	case fc.readDeadline.IsZero() || fc.readDeadline.Sub(now) < idle/2:
		fc.setReadDeadline(now.Add(idle))
	}
	if _, err := fc.br.Peek(1); err != nil {
		return nil, err
	}
	for {
		buf, _ := fc.br.Peek(fc.br.Buffered())
		if end := headEnd(buf); end > 0 {
			// The deadline stays while the request is served: nothing
			// reads the connection meanwhile but a client watch, which
			// sets its own.
			return buf[:end], nil
		} else if end < 0 || len(buf) == fc.br.Size() {
			fc.setReadDeadline(time.Time{})
			return nil, nil // for net/http: unusual, or bigger than the fast path reads
		}
		if !headerDeadline && srv.ReadHeaderTimeout > 0 {
			fc.setReadDeadline(time.Now().Add(srv.ReadHeaderTimeout))
			headerDeadline = true
		}
		if _, err := fc.br.Peek(len(buf) + 1); err != nil {
			return nil, err
		}
	}
}

// setReadDeadline sets the client connection's read deadline, and
// remembers it.
func (fc *fastConn) setReadDeadline(t time.Time) {
	fc.readDeadline = t
	fc.c.SetReadDeadline(t)
}

// headEnd returns the length of the request head at the start of buf (up
// to and including the blank line that ends it), 0 when buf holds no
// complete head yet, and -1 when the fast path leaves the head to
// net/http: a line ending in a bare LF, or a blank line first.
func headEnd(buf []byte) int {
	for i := 0; i < len(buf); {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			return 0
		}
		if j == 0 || buf[i+j-1] != '\r' {
			return -1
		}
		if j == 1 {
			if i == 0 {
				return -1
			}
			return i + 2
		}
		i += j + 1
	}
	return 0
}

// serveRequest serves the request whose head is head (buffered, unread,
// in fc.br), and reports whether it did; when it did not, the request is
// still unread. An error means the answer broke off after it began, or the
// client left.
func (fc *fastConn) serveRequest(head []byte) (served bool, err error) {
	start := time.Now()
	p := fc.l.p
	// Parsed from a copy: fc.req holds slices of it, and a client watch
	// (watchClient) reads on in fc.br.
	fc.head = append(fc.head[:0], head...)
	rt, kind := fc.route(fc.head)
	if rt == nil {
		return false, nil
	}
	fc.br.Discard(len(head))
	k := &p.metrics.byKind[kind]
	k.active.Inc()
	defer k.active.Dec()
	fc.takeWriter()
	status, n, err := fc.forward(rt)
	fc.dropWriter()
	fc.record(kind, status, n, start)
	return true, err
}

// takeWriter gives fc a write buffer to answer with, and dropWriter takes
// it back: the writer is the connection's only while it answers, and an
// idle connection holds just its read buffer.
func (fc *fastConn) takeWriter() {
	fc.bw = clientWriters.Get().(*bufio.Writer)
	fc.bw.Reset(fc.c)
}

func (fc *fastConn) dropWriter() {
	fc.bw.Reset(nil)
	clientWriters.Put(fc.bw)
	fc.bw = nil
}

// route parses head into fc.req and returns the route of the agent it is
// for, or nil when the fast path does not serve it: an unusual request, or
// one for an agent not running on an up node.
func (fc *fastConn) route(head []byte) (*route, RouteKind) {
	p := fc.l.p
	h := &fc.req
	if !parseRequestHead(head, h) {
		return nil, 0
	}
	host := string(h.host)
	if !httpguts.ValidHostHeader(host) {
		return nil, 0
	}
	t := p.domain.Match(host)
	var rt *route
	switch t.Kind {
	case RouteAgentPort:
		rt = p.table.lookupPort(t.Port)
	case RouteAgentID:
		rt = p.table.lookupID(t.AgentID)
	}
	if rt == nil || rt.nodeDown || !rt.running() {
		return nil, 0
	}
	return rt, t.Kind
}

// record counts and logs the request in fc.req, answered with status and
// n body bytes.
func (fc *fastConn) record(kind RouteKind, status int, n int64, start time.Time) {
	p := fc.l.p
	p.metrics.observe(kind, status, time.Since(start))
	p.metrics.fastPath.Inc()
	if p.cfg.AccessLog {
		h := &fc.req
		path, _, _ := strings.Cut(string(h.uri), "?")
		if unescaped, err := url.PathUnescape(path); err == nil {
			path = unescaped
		}
		p.logRequest(kind, string(h.method), string(h.host), path, fc.remote, status, n, start)
	}
}

// forward sends the request to the agent at rt and writes its answer to
// the client — or the handler's 502 page when the agent cannot be reached
// or its answer cannot be read (a request is never sent to the agent
// twice, but for a kept connection found closed). An error means the
// answer broke off or the client left.
func (fc *fastConn) forward(rt *route) (status int, n int64, err error) {
	p := fc.l.p
	bc := p.backends.get(rt.poolAddr)
	reused := bc != nil
	for {
		if bc == nil {
			if bc, err = p.backends.dial(context.Background(), rt.poolAddr, rt.backendAddr); err != nil {
				return fc.agentUnreachable(err)
			}
		}
		fc.writeRequest(bc.bw, rt)
		err = bc.bw.Flush()
		if err == nil {
			bc.readLimit = maxBackendHeaderBytes
			err = fc.awaitAgent(bc, 1)
		}
		if err != nil {
			bc.Close()
			if err == errClientLeft {
				return statusClientClosed, 0, err
			}
			if reused {
				// A kept-alive connection the agent closed as the
				// request went out: sent again on a fresh one (a read).
				bc, reused = nil, false
				continue
			}
			return fc.agentUnreachable(err)
		}
		return fc.passOn(bc)
	}
}

// passOn writes the agent's answer on bc to the client (or the 502 page
// when it cannot be read), and keeps bc for another request if it can.
func (fc *fastConn) passOn(bc *backendConn) (status int, n int64, err error) {
	status, n, keep, err := fc.passAnswer(bc)
	if err == nil && keep {
		fc.l.p.backends.put(bc)
	} else {
		bc.Close()
	}
	if status == 0 {
		return fc.agentUnreachable(err)
	}
	return status, n, err
}

// agentUnreachable logs why the agent did not answer and answers the
// client with the page net/http's path answers with (agentError).
func (fc *fastConn) agentUnreachable(cause error) (status int, n int64, err error) {
	fc.l.p.logger.Warn("agent unreachable", "host", string(fc.req.host), "error", cause)
	body := pageHTML(agentUnreachableTitle, agentUnreachableText)
	bw := fc.bw
	writeStatusLine(bw, http.StatusBadGateway)
	bw.WriteString("Cache-Control: no-store\r\nContent-Type: text/html; charset=utf-8\r\nDate: ")
	bw.WriteString(httpDate())
	bw.WriteString("\r\nContent-Length: ")
	writeInt(bw, int64(len(body)))
	bw.WriteString("\r\n\r\n")
	bw.WriteString(body)
	return http.StatusBadGateway, int64(len(body)), bw.Flush()
}

// writeRequest writes the request in fc.req to an agent, with the
// runtime's credential and the forwarding headers (as roundTrip does on
// net/http's path).
func (fc *fastConn) writeRequest(bw *bufio.Writer, rt *route) {
	h := &fc.req
	bw.Write(h.method)
	bw.WriteByte(' ')
	bw.Write(h.uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(rt.backendAddr)
	bw.WriteString("\r\nAuthorization: ")
	bw.WriteString(rt.basicAuth)
	bw.WriteString("\r\n")
	if fc.clientIP != "" {
		bw.WriteString("X-Forwarded-For: ")
		for _, v := range h.forwardedFor {
			bw.Write(v)
			bw.WriteString(", ")
		}
		bw.WriteString(fc.clientIP)
		bw.WriteString("\r\n")
	}
	bw.WriteString("X-Forwarded-Host: ")
	bw.Write(h.host)
	bw.WriteString("\r\nX-Forwarded-Proto: http\r\n")
	for _, line := range h.lines {
		bw.Write(line)
		bw.WriteString("\r\n")
	}
	if h.noCache {
		bw.WriteString("Cache-Control: no-cache\r\n")
	}
	bw.WriteString("\r\n")
}

// awaitAgent waits until bc.br holds n bytes (the agent's answer begins,
// or goes on); if the agent is slow, it watches the client meanwhile, and
// gives up when the client leaves.
func (fc *fastConn) awaitAgent(bc *backendConn, n int) error {
	bc.SetReadDeadline(time.Now().Add(slowAnswer))
	_, err := bc.br.Peek(n)
	bc.SetReadDeadline(time.Time{})
	if err == nil || !isTimeout(err) {
		return err
	}
	stop := fc.watchClient(bc)
	_, err = bc.br.Peek(n)
	if stop() {
		return errClientLeft
	}
	return err
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// watchClient reads the client connection ahead while the agent is slow
// or streams, and cuts the agent's connection off when the client leaves.
// stop ends the watch and reports whether the client left. A request the
// client sends meanwhile (pipelining) stays buffered for the next turn.
func (fc *fastConn) watchClient(bc *backendConn) (stop func() (left bool)) {
	var stopping, left atomic.Bool
	done := make(chan struct{})
	fc.setReadDeadline(time.Time{})
	go func() {
		defer close(done)
		if _, err := fc.br.Peek(1); err != nil && !stopping.Load() {
			left.Store(true)
			bc.SetDeadline(aLongTimeAgo)
		}
	}()
	return func() bool {
		stopping.Store(true)
		fc.c.SetReadDeadline(aLongTimeAgo)
		<-done
		fc.setReadDeadline(time.Time{})
		return left.Load()
	}
}

// passAnswer writes the agent's answer on bc to the client: itself when
// parseAnswerHead takes its head, else through http.ReadResponse and
// writeResponse. keep says whether bc may serve another request. A zero
// status means nothing was written: the answer could not be read (err
// says why).
func (fc *fastConn) passAnswer(bc *backendConn) (status int, n int64, keep bool, err error) {
	isHEAD := string(fc.req.method) == http.MethodHead
	head, err := fc.answerHead(bc)
	if err == errClientLeft {
		return statusClientClosed, 0, false, err
	} else if err != nil {
		return 0, 0, false, err
	}
	a := &fc.ans
	if head == nil || !parseAnswerHead(head, isHEAD, a) {
		resp, err := readResponse(bc, &http.Request{Method: string(fc.req.method)}, nil)
		if err != nil {
			return 0, 0, false, err
		}
		n, err := fc.writeResponse(isHEAD, resp, bc)
		return resp.StatusCode, n, !resp.Close, err
	}
	bw := fc.bw
	writeAnswerHead(bw, a)
	bc.br.Discard(len(head)) // its lines are copied to bw: the buffer may be reused
	if !isHEAD {
		bc.readLimit = math.MaxInt64
		for left := a.length; left > 0; {
			if bc.br.Buffered() == 0 {
				if err := fc.awaitAgent(bc, 1); err != nil {
					return a.status, n, false, err
				}
			}
			b, _ := bc.br.Peek(int(min(left, int64(bc.br.Buffered()))))
			if _, err := bw.Write(b); err != nil {
				return a.status, n, false, err
			}
			bc.br.Discard(len(b))
			left -= int64(len(b))
			n += int64(len(b))
		}
	}
	return a.status, n, !a.close, bw.Flush()
}

// writeAnswerHead writes the head of an answer parseAnswerHead took.
func writeAnswerHead(bw *bufio.Writer, a *fastAnswer) {
	writeStatusLine(bw, a.status)
	for _, line := range a.lines {
		bw.Write(line)
		bw.WriteString("\r\n")
	}
	if a.noCache {
		bw.WriteString("Cache-Control: no-cache\r\n")
	}
	if !a.date {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	if a.length >= 0 {
		bw.WriteString("Content-Length: ")
		writeInt(bw, a.length)
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
}

// answerHead waits for an agent's answer head on bc and returns it, still
// buffered; nil when it is one for net/http's parser (bigger than the
// buffer, or with unusual line ends).
func (fc *fastConn) answerHead(bc *backendConn) ([]byte, error) {
	br := bc.br
	for {
		buf, _ := br.Peek(br.Buffered())
		if end := headEnd(buf); end > 0 {
			return buf[:end], nil
		} else if end < 0 || len(buf) == br.Size() {
			return nil, nil
		}
		if err := fc.awaitAgent(bc, len(buf)+1); err != nil {
			return nil, err
		}
	}
}

// writeResponse writes the agent's answer to the client as net/http's
// server writes the handler's (see copyResponse): hop-by-hop headers
// dropped, a Date added when the agent gave none, a Content-Type sniffed
// for a body of known length that has none, the length kept or the body
// chunked, streams flushed as they come, only declared trailers. The client
// is watched meanwhile. It returns the body bytes written.
func (fc *fastConn) writeResponse(isHEAD bool, resp *http.Response, bc *backendConn) (int64, error) {
	defer resp.Body.Close()
	bodyAllowed := resp.StatusCode >= 200 && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified
	chunked := bodyAllowed && !isHEAD && resp.ContentLength < 0
	stream := chunked || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	stop := fc.watchClient(bc)
	n, err := fc.writeAnswer(isHEAD, bodyAllowed, chunked, stream, resp)
	if stop() && err == nil {
		err = errClientLeft
	}
	return n, err
}

func (fc *fastConn) writeAnswer(isHEAD, bodyAllowed, chunked, stream bool, resp *http.Response) (int64, error) {
	bw := fc.bw
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	// net/http's server sniffs the type of a body written at once (a
	// stream is flushed before its body: it sniffs nothing).
	var first []byte
	_, typed := resp.Header["Content-Type"]
	if bodyAllowed && !isHEAD && !stream && !typed && resp.Header.Get("Content-Encoding") == "" {
		n, err := io.ReadAtLeast(resp.Body, buf, 1)
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return 0, err
		}
		first = buf[:n]
	}
	writeStatusLine(bw, resp.StatusCode)
	for k, vs := range resp.Header {
		if k == "Content-Length" || isHopHeader(k) || namedByConnection(k, resp.Header) ||
			k == "Content-Type" && resp.StatusCode == http.StatusNotModified { // as net/http drops it
			continue
		}
		for _, v := range vs {
			writeField(bw, k, v)
		}
	}
	if len(first) > 0 {
		writeField(bw, "Content-Type", http.DetectContentType(first))
	}
	if _, ok := resp.Header["Date"]; !ok {
		writeField(bw, "Date", httpDate())
	}
	// The trailers the agent declared: net/http's server sends no others.
	var declared []string
	switch {
	case !bodyAllowed:
	case resp.ContentLength >= 0:
		writeField(bw, "Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	case chunked:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		for k := range resp.Trailer {
			declared = append(declared, k)
			writeField(bw, "Trailer", k)
		}
	}
	bw.WriteString("\r\n")
	if !bodyAllowed || isHEAD {
		return 0, bw.Flush()
	}
	if stream {
		if err := bw.Flush(); err != nil {
			return 0, err
		}
	}
	written := int64(len(first))
	bw.Write(first)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if chunked {
				bw.WriteString(strconv.FormatInt(int64(n), 16))
				bw.WriteString("\r\n")
			}
			bw.Write(buf[:n])
			if chunked {
				bw.WriteString("\r\n")
			}
			if stream {
				if ferr := bw.Flush(); ferr != nil {
					return written, ferr
				}
			}
			written += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return written, err
		}
	}
	if chunked {
		bw.WriteString("0\r\n")
		for _, k := range declared {
			for _, v := range resp.Trailer[k] {
				writeField(bw, k, v)
			}
		}
		bw.WriteString("\r\n")
	}
	return written, bw.Flush()
}

// writeStatusLine writes the status line as net/http's server does.
func writeStatusLine(bw *bufio.Writer, code int) {
	bw.WriteString("HTTP/1.1 ")
	writeInt(bw, int64(code))
	bw.WriteByte(' ')
	if text := http.StatusText(code); text != "" {
		bw.WriteString(text)
	} else {
		bw.WriteString("status code ")
		writeInt(bw, int64(code))
	}
	bw.WriteString("\r\n")
}

// writeInt writes n in decimal, without allocating.
func writeInt(bw *bufio.Writer, n int64) {
	if n >= 10 {
		writeInt(bw, n/10)
	}
	bw.WriteByte(byte('0' + n%10))
}

// dateCache holds the Date header's value for the current second.
var dateCache atomic.Pointer[cachedDate]

type cachedDate struct {
	unix  int64
	value string
}

func httpDate() string {
	now := time.Now()
	if d := dateCache.Load(); d != nil && d.unix == now.Unix() {
		return d.value
	}
	d := &cachedDate{unix: now.Unix(), value: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.value
}
