package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agenthost/agenthost/internal/uring"
)

// The ring path serves the fast path's connections on io_uring loops, one
// per core, each on an OS thread of its own: a loop queues the socket
// operations of all its connections and hands them to the kernel, and
// collects their results, in one system call per turn. Per request the
// goroutine path costs four socket calls, each a kernel entry, and a
// goroutine parked and woken twice; on a virtual machine, where a kernel
// entry is dear, the ring path takes half the CPU time per request (make
// bench).
//
// It serves what the goroutine path serves, with the same parsers and the
// same writers, and no more: a request it does not take (parseRequestHead,
// route) is handed with the connection to the goroutine path, which hands
// it to net/http's server in turn; an agent's answer it does not take
// (parseAnswerHead) is handed, with the agent's connection, to the
// goroutine path too, which reads it with http.ReadResponse. So only the
// plainest exchanges stay here: a body-less read, and an answer with a
// Content-Length.
//
// A connection belongs to one loop, which alone issues operations on its
// sockets; the loop closes a socket only once no operation of its is in
// flight (a pending operation holds the socket open in the kernel), and
// ends pending operations by shutting the socket down. Timeouts (the
// header and idle ones, the slow answer after which the client is watched)
// are checked on a tick, every tickInterval.

const (
	// tickInterval is how often a loop checks its connections' deadlines.
	tickInterval = 50 * time.Millisecond
	// ringEntries is a loop's io_uring queue size: operations queued
	// between two system calls (more are submitted as the queue fills).
	ringEntries = 4096
	// ringBackendBytes is a ring's read buffer for an agent's answer: its
	// head must fit, its body passes through it.
	ringBackendBytes = 16 << 10
)

// What an operation is for, in the low bits of its user data; the rest is
// the connection's slot.
const (
	opClientRecv = iota
	opClientSend
	opBackendConnect
	opBackendConnectTimeout
	opBackendSend
	opBackendRecv
	opTick
	opWake
	opCancel
	opBits = 4
)

// What a connection does once the watch on its client is cancelled.
const (
	afterWatchNothing = iota
	afterWatchHandOff
	afterWatchHandOffAnswer
)

// newRing sets up a loop's ring (a variable for a test to make it fail as
// a kernel that refuses io_uring does).
var newRing = uring.New

// ringPath is the fast path's io_uring loops.
type ringPath struct {
	loops []*ringLoop
	next  atomic.Uint32
}

// startRingPath starts n loops serving l's connections. It fails when the
// kernel refuses io_uring; the goroutine path serves then.
func startRingPath(l *fastListener, n int) (*ringPath, error) {
	rp := &ringPath{}
	for range n {
		lp := &ringLoop{l: l, idle: newIdlePool(func(be *ringBackend) { syscall.Close(be.fd) }), done: make(chan struct{})}
		ready := make(chan error)
		go lp.run(ready)
		if err := <-ready; err != nil {
			rp.close()
			return nil, err
		}
		rp.loops = append(rp.loops, lp)
	}
	return rp, nil
}

// adopt gives fc, whose socket is fd, to a loop; a loop closing closes it.
func (rp *ringPath) adopt(fc *fastConn, fd int) {
	lp := rp.loops[int(rp.next.Add(1))%len(rp.loops)]
	fc.l.p.metrics.ringConns.Inc()
	lp.mu.Lock()
	if lp.closing || lp.stopped {
		lp.mu.Unlock()
		fc.l.forget(fc)
		syscall.Close(fd)
		return
	}
	lp.inbox = append(lp.inbox, ringAdoption{fc, fd})
	lp.wake()
	lp.mu.Unlock()
}

// close stops the loops: they close their connections.
func (rp *ringPath) close() {
	for _, lp := range rp.loops {
		lp.mu.Lock()
		lp.closing = true
		lp.wake()
		lp.mu.Unlock()
	}
}

type ringAdoption struct {
	fc *fastConn
	fd int
}

// ringLoop is one io_uring loop and the connections it serves.
type ringLoop struct {
	l      *fastListener
	done   chan struct{} // closed when the loop has stopped
	ring   *uring.Ring
	wakeFD int // an eventfd: written to wake the loop
	wakeIn [8]byte
	tick   uring.Timespec

	// mu guards the inbox and the flags, and the eventfd's life: it is
	// written to under mu, and closed under mu once stopped.
	mu      sync.Mutex
	inbox   []ringAdoption
	closing bool
	stopped bool

	// What follows is the loop's alone.
	conns []*ringConn // by slot
	free  []int
	idle  idlePool[*ringBackend] // kept-alive agent connections
	// buffers reused across exchanges: an idle connection holds only its
	// client buffer.
	backendBufs [][]byte
	outBufs     [][]byte
	// w composes heads and pages (the goroutine path's writers write to
	// a bufio.Writer) into the connection's out buffer.
	w    *bufio.Writer
	sink sliceWriter
	shut bool // closing: every connection shut down
	// now is the time at the last return from the kernel: close enough,
	// for timeouts of 200 ms and more, and read once per turn.
	now time.Time
}

// sliceWriter appends what is written to it to a slice.
type sliceWriter struct{ b *[]byte }

func (w sliceWriter) Write(p []byte) (int, error) {
	*w.b = append(*w.b, p...)
	return len(p), nil
}

// wake makes the loop look at its inbox and flags; lp.mu is held.
func (lp *ringLoop) wake() {
	if !lp.stopped {
		syscall.Write(lp.wakeFD, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
}

// ringConn is a client connection on a loop, and the exchange it is in.
type ringConn struct {
	fc   *fastConn
	fd   int
	slot int
	// in holds what the client sent that is not yet served, from off.
	in  []byte
	off int
	// clientOps and backendOps count the operations in flight on each
	// socket; the sockets are closed, and the slot freed, only when both
	// are 0.
	clientOps, backendOps int
	// deadline bounds the wait for a request head (header or idle
	// timeout), while one is awaited.
	deadline time.Time
	first    bool // no request served yet
	closing  bool

	// The exchange in progress.
	exchanging bool
	rt         *route
	kind       RouteKind
	headLen    int
	start      time.Time
	be         *ringBackend
	reused     bool   // be came from the idle pool
	beFailed   error  // an operation on be failed
	answered   bool   // the agent's answer head was read
	out        []byte // being sent to the client
	bodyLeft   int64  // answer body bytes still to come from the agent
	keep       bool   // be may serve another request
	status     int
	n          int64 // answer body bytes passed
	watching   bool  // a receive on the client watches for it leaving
	// sending is the length of the send to the client in flight.
	sending int
	// waitingSince is when the last read from the agent was queued.
	waitingSince time.Time
	clientGone   bool
	// afterWatch is what to do when the watch's receive, being
	// cancelled, completes.
	afterWatch int
}

// ringBackend is a connection to an agent, on a loop.
type ringBackend struct {
	fd   int
	pool string
	buf  []byte // the answer read so far (from the exchange's start)
}

func (lp *ringLoop) run(ready chan<- error) {
	defer close(lp.done)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ring, err := newRing(ringEntries)
	if err != nil {
		ready <- err
		return
	}
	efd, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC, 0)
	if errno != 0 {
		ring.Close()
		ready <- fmt.Errorf("eventfd: %w", errno)
		return
	}
	lp.ring, lp.wakeFD = ring, int(efd)
	var out []byte
	lp.sink = sliceWriter{&out}
	lp.w = bufio.NewWriterSize(nil, 4<<10)
	lp.tick = uring.Timespec{Nsec: int64(tickInterval)}
	ready <- nil
	defer lp.stop()
	lp.queue(lp.ring.Read(lp.wakeFD, lp.wakeIn[:], opWake))
	lp.queue(lp.ring.Timeout(&lp.tick, opTick))
	for {
		if err := lp.ring.Enter(1); err != nil {
			// Nothing a loop can go on from (never seen): its
			// connections are closed with it, loudly.
			lp.l.p.logger.Error("io_uring loop stopped", "error", err)
			return
		}
		lp.now = time.Now()
		lp.ring.Completions(lp.complete)
		if lp.shut && len(lp.free) == len(lp.conns) {
			return
		}
	}
}

// stop ends a loop that has returned: it closes the ring (the kernel
// cancels what is in flight), the eventfd, and whatever connections it
// still holds — none, but when the ring failed — or were given it since.
func (lp *ringLoop) stop() {
	lp.ring.Close()
	lp.mu.Lock()
	lp.stopped = true
	inbox := lp.inbox
	lp.inbox = nil
	syscall.Close(lp.wakeFD)
	lp.mu.Unlock()
	for _, a := range inbox {
		lp.l.forget(a.fc)
		syscall.Close(a.fd)
	}
	for _, rc := range lp.conns {
		if rc != nil {
			if rc.be != nil {
				syscall.Close(rc.be.fd)
			}
			lp.release(rc)
			lp.l.forget(rc.fc)
			syscall.Close(rc.fd)
		}
	}
	lp.idle.closeAll()
}

// queue handles an error queuing an operation: the queue is full and the
// kernel takes no more, which a loop sized as this one is never in.
func (lp *ringLoop) queue(err error) {
	if err != nil {
		panic(fmt.Sprintf("proxy: io_uring: %v", err))
	}
}

func (lp *ringLoop) complete(c uring.Completion) {
	slot, op := int(c.UserData>>opBits), c.UserData&(1<<opBits-1)
	switch op {
	case opCancel:
		return // the cancelled operation's completion says what happened
	case opWake:
		lp.adoptInbox()
		if !lp.shut {
			lp.queue(lp.ring.Read(lp.wakeFD, lp.wakeIn[:], opWake))
		}
		return
	case opTick:
		lp.checkDeadlines(lp.now)
		lp.queue(lp.ring.Timeout(&lp.tick, opTick))
		return
	}
	rc := lp.conns[slot]
	if rc == nil {
		return
	}
	switch op {
	case opClientRecv:
		rc.clientOps--
		lp.clientReceived(rc, c.Res)
	case opClientSend:
		rc.clientOps--
		if c.Res >= 0 && int(c.Res) != rc.sending {
			c.Res = -int32(syscall.EIO) // short: never, as Send goes on until all is sent
		}
		lp.clientSent(rc, c.Res)
	case opBackendConnect:
		rc.backendOps--
		if c.Res < 0 && rc.beFailed == nil {
			rc.beFailed = c.Err()
		}
		lp.backendProgress(rc)
	case opBackendConnectTimeout:
		rc.backendOps--
		if c.Res == -int32(syscall.ETIME) && rc.beFailed == nil {
			rc.beFailed = errors.New("dial: timed out")
		}
		lp.backendProgress(rc)
	case opBackendSend:
		rc.backendOps--
		if c.Res >= 0 && int(c.Res) != len(rc.out) {
			c.Res = -int32(syscall.EIO) // short: as above
		}
		if c.Res < 0 && rc.beFailed == nil {
			rc.beFailed = c.Err()
		}
		lp.backendProgress(rc)
	case opBackendRecv:
		rc.backendOps--
		lp.backendReceived(rc, c.Res)
	}
	lp.settle(rc)
}

func (lp *ringLoop) adoptInbox() {
	lp.mu.Lock()
	inbox, closing := lp.inbox, lp.closing
	lp.inbox = nil
	lp.mu.Unlock()
	for _, a := range inbox {
		if lp.shut {
			lp.l.forget(a.fc)
			syscall.Close(a.fd)
			continue
		}
		rc := &ringConn{fc: a.fc, fd: a.fd, first: true, in: make([]byte, 0, fastHeadBytes)}
		if n := len(lp.free); n > 0 {
			rc.slot, lp.free = lp.free[n-1], lp.free[:n-1]
			lp.conns[rc.slot] = rc
		} else {
			rc.slot = len(lp.conns)
			lp.conns = append(lp.conns, rc)
		}
		lp.awaitRequest(rc)
	}
	if closing && !lp.shut {
		lp.shut = true
		for _, rc := range lp.conns {
			if rc != nil {
				lp.abort(rc)
			}
		}
	}
}

func (lp *ringLoop) userData(rc *ringConn, op uint64) uint64 {
	return uint64(rc.slot)<<opBits | op
}

// awaitRequest serves the next request buffered, or reads on.
func (lp *ringLoop) awaitRequest(rc *ringConn) {
	if rc.closing {
		return
	}
	buf := rc.in[rc.off:]
	end := headEnd(buf)
	switch {
	case end > 0:
		lp.serve(rc, buf[:end])
		return
	case end < 0, len(buf) == fastHeadBytes:
		lp.handOff(rc) // unusual, or too big: the goroutine path decides
		return
	}
	if len(buf) == 0 {
		// The idle timeout bounds the wait for the next request (the
		// header timeout, the first request's head), as net/http's
		// server's do; the header timeout starts with a head's first
		// byte (clientReceived) and is not extended by the rest.
		srv := lp.l.srv
		switch {
		case !rc.first && srv.IdleTimeout > 0:
			rc.deadline = lp.now.Add(srv.IdleTimeout)
		case rc.first && !rc.deadline.IsZero():
		case srv.ReadHeaderTimeout > 0:
			rc.deadline = lp.now.Add(srv.ReadHeaderTimeout)
		default:
			rc.deadline = time.Time{}
		}
	} else if rc.deadline.IsZero() && lp.l.srv.ReadHeaderTimeout > 0 {
		// Part of a head, read ahead (pipelined, or while the client
		// was watched): the header timeout bounds the rest.
		rc.deadline = lp.now.Add(lp.l.srv.ReadHeaderTimeout)
	}
	if rc.clientOps > 0 {
		return // a receive (the last exchange's client watch) is in flight already
	}
	// Room at the end of the buffer: move what is left to its start.
	if rc.off > 0 {
		rc.in = rc.in[:copy(rc.in, buf)]
		rc.off = 0
	}
	lp.recvClient(rc)
}

func (lp *ringLoop) recvClient(rc *ringConn) {
	rc.clientOps++
	lp.queue(lp.ring.Recv(rc.fd, rc.in[len(rc.in):cap(rc.in)], lp.userData(rc, opClientRecv), false))
}

func (lp *ringLoop) clientReceived(rc *ringConn, res int32) {
	if next := rc.afterWatch; next != afterWatchNothing {
		rc.afterWatch = afterWatchNothing
		switch {
		case res > 0:
			rc.in = rc.in[:len(rc.in)+int(res)] // read ahead: a pipelined request
		case res == -int32(syscall.ECANCELED), res == -int32(syscall.EINTR): // EINTR: cancelled while running
		default:
			rc.clientGone = rc.exchanging
			lp.abort(rc)
			return
		}
		if rc.closing {
			return
		}
		if next == afterWatchHandOff {
			lp.handOff(rc)
		} else {
			lp.handOffAnswer(rc)
		}
		return
	}
	if res <= 0 {
		// The client left (or its socket was shut down: a timeout, the
		// listener closing).
		if rc.exchanging {
			rc.clientGone = true
		}
		lp.abort(rc)
		return
	}
	rc.in = rc.in[:len(rc.in)+int(res)]
	if rc.exchanging {
		// A watch read ahead: a pipelined request, served after this
		// one. The client is not watched any more.
		return
	}
	if rc.closing {
		return
	}
	// From the first byte of a head, the header timeout bounds the rest.
	if srv := lp.l.srv; !rc.first && len(rc.in)-rc.off == int(res) {
		rc.deadline = time.Time{}
		if srv.ReadHeaderTimeout > 0 {
			rc.deadline = lp.now.Add(srv.ReadHeaderTimeout)
		}
	}
	lp.awaitRequest(rc)
}

// serve starts the exchange for the request whose head is head (in rc.in).
func (lp *ringLoop) serve(rc *ringConn, head []byte) {
	fc := rc.fc
	rt, kind := fc.route(head)
	if rt == nil || rt.backendSockaddr == nil {
		lp.handOff(rc)
		return
	}
	rc.deadline = time.Time{}
	rc.exchanging, rc.rt, rc.kind, rc.headLen, rc.start = true, rt, kind, len(head), time.Now()
	rc.beFailed, rc.answered, rc.status, rc.n, rc.watching, rc.clientGone = nil, false, 0, 0, false, false
	rc.keep = false
	lp.l.p.metrics.byKind[kind].active.Inc()
	if be, ok := lp.idle.get(rt.poolAddr, lp.now); ok {
		rc.be, rc.reused = be, true
		lp.sendRequest(rc)
		return
	}
	lp.dial(rc)
}

// dial connects to the agent, for the exchange in rc.
func (lp *ringLoop) dial(rc *ringConn) {
	rc.reused = false
	sa := rc.rt.backendSockaddr
	fd, err := syscall.Socket(sa.Family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		lp.unreachable(rc, err)
		return
	}
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1)
	rc.be = &ringBackend{fd: fd, pool: rc.rt.poolAddr}
	rc.backendOps += 2
	timeout := uring.Timespec{Nsec: int64(dialTimeout)}
	lp.queue(lp.ring.Connect(fd, sa, lp.userData(rc, opBackendConnect), true))
	lp.queue(lp.ring.LinkTimeout(&timeout, lp.userData(rc, opBackendConnectTimeout)))
}

// backendProgress goes on once the agent's connection is set up, or has
// failed, when nothing is in flight on it.
func (lp *ringLoop) backendProgress(rc *ringConn) {
	if rc.backendOps > 0 || !rc.exchanging || rc.answered {
		return
	}
	if rc.beFailed != nil {
		lp.backendFailed(rc)
		return
	}
	if rc.be.buf == nil && !rc.closing {
		// Connected: the request goes out.
		lp.sendRequest(rc)
	}
}

// sendRequest writes the request to the agent, and waits for the answer.
func (lp *ringLoop) sendRequest(rc *ringConn) {
	be := rc.be
	be.buf = lp.backendBuf()
	if rc.out == nil {
		rc.out = lp.outBuf()
	}
	// The request is sent from rc.out, which the answer replaces once the
	// send is done (linked: the read starts after it).
	lp.compose(&rc.out, func(bw *bufio.Writer) { rc.fc.writeRequest(bw, rc.rt) })
	rc.backendOps += 2
	lp.queue(lp.ring.Send(be.fd, rc.out, lp.userData(rc, opBackendSend), true))
	lp.recvBackend(rc, be.buf[:cap(be.buf)])
}

// recvBackend reads more of the agent's answer into buf.
func (lp *ringLoop) recvBackend(rc *ringConn, buf []byte) {
	rc.waitingSince = lp.now
	lp.queue(lp.ring.Recv(rc.be.fd, buf, lp.userData(rc, opBackendRecv), false))
}

// compose runs write on the loop's writer into *out.
func (lp *ringLoop) compose(out *[]byte, write func(*bufio.Writer)) {
	*lp.sink.b = (*out)[:0]
	lp.w.Reset(lp.sink)
	write(lp.w)
	lp.w.Flush()
	*out = *lp.sink.b
	*lp.sink.b = nil
}

func (lp *ringLoop) backendReceived(rc *ringConn, res int32) {
	if res <= 0 && rc.beFailed == nil {
		if res == 0 {
			rc.beFailed = io.ErrUnexpectedEOF
		} else {
			rc.beFailed = syscall.Errno(-res)
		}
	}
	if rc.beFailed != nil {
		if rc.backendOps == 0 {
			lp.backendFailed(rc)
		}
		return
	}
	be := rc.be
	be.buf = be.buf[:len(be.buf)+int(res)]
	if rc.closing {
		return
	}
	if !rc.answered {
		lp.answerHead(rc)
		return
	}
	lp.passBody(rc)
}

// answerHead takes the agent's answer head in be.buf, once whole: the
// answer is passed here when parseAnswerHead takes it, and by the
// goroutine path otherwise.
func (lp *ringLoop) answerHead(rc *ringConn) {
	be := rc.be
	end := headEnd(be.buf)
	fc := rc.fc
	isHEAD := string(fc.req.method) == http.MethodHead
	if end == 0 && len(be.buf) < cap(be.buf) {
		rc.backendOps++
		lp.recvBackend(rc, be.buf[len(be.buf):cap(be.buf)])
		return
	}
	if end <= 0 || !parseAnswerHead(be.buf[:end], isHEAD, &fc.ans) {
		lp.handOffAnswer(rc)
		return
	}
	a := &fc.ans
	rc.answered, rc.status, rc.keep = true, a.status, !a.close
	lp.compose(&rc.out, func(bw *bufio.Writer) { writeAnswerHead(bw, a) })
	rc.bodyLeft = 0
	if !isHEAD {
		rc.bodyLeft = max(a.length, 0)
	}
	body := be.buf[end:]
	if int64(len(body)) > rc.bodyLeft {
		// More than the answer: the connection is out of step.
		body, rc.keep = body[:rc.bodyLeft], false
	}
	rc.out = append(rc.out, body...)
	rc.bodyLeft -= int64(len(body))
	rc.n += int64(len(body))
	lp.sendClient(rc, rc.out)
}

// passBody passes on the body bytes just read into be.buf.
func (lp *ringLoop) passBody(rc *ringConn) {
	be := rc.be
	body := be.buf
	if int64(len(body)) > rc.bodyLeft {
		body, rc.keep = body[:rc.bodyLeft], false
	}
	rc.bodyLeft -= int64(len(body))
	rc.n += int64(len(body))
	lp.sendClient(rc, body)
}

// sendClient sends b, part of the answer, to the client; with more of the
// body to come, the next read from the agent (into be.buf, which b may be)
// is linked to it.
func (lp *ringLoop) sendClient(rc *ringConn, b []byte) {
	rc.clientOps++
	rc.sending = len(b)
	if rc.bodyLeft == 0 {
		lp.queue(lp.ring.Send(rc.fd, b, lp.userData(rc, opClientSend), false))
		return
	}
	be := rc.be
	be.buf = be.buf[:0]
	rc.backendOps++
	lp.queue(lp.ring.Send(rc.fd, b, lp.userData(rc, opClientSend), true))
	lp.recvBackend(rc, be.buf[:cap(be.buf)])
}

func (lp *ringLoop) clientSent(rc *ringConn, res int32) {
	if res < 0 {
		lp.abort(rc)
		return
	}
	// The last send of an answer is the one after which no more of it is
	// to come (sendClient).
	if rc.exchanging && rc.answered && rc.bodyLeft == 0 && !rc.closing {
		lp.finish(rc)
	}
}

// finish ends an exchange whose answer was sent whole.
func (lp *ringLoop) finish(rc *ringConn) {
	lp.endExchange(rc)
	rc.first = false
	lp.awaitRequest(rc)
}

// endExchange records the exchange, and puts the agent's connection back
// in the pool when it may serve another request (the caller has nothing in
// flight on it).
func (lp *ringLoop) endExchange(rc *ringConn) {
	lp.recordExchange(rc, rc.status)
	if be := rc.be; be != nil {
		lp.putBackendBuf(be.buf)
		be.buf = nil
		if rc.keep && rc.backendOps == 0 {
			lp.idle.put(be.pool, be, lp.now)
		} else {
			lp.closeBackend(rc)
		}
	}
	rc.be = nil
	lp.putOutBuf(rc.out)
	rc.out = nil
	rc.exchanging, rc.watching = false, false
	rc.off += rc.headLen
	if rc.off == len(rc.in) && rc.clientOps == 0 {
		rc.in, rc.off = rc.in[:0], 0
	}
}

// recordExchange counts and logs the exchange in rc, ended with status.
func (lp *ringLoop) recordExchange(rc *ringConn, status int) {
	rc.fc.record(rc.kind, status, rc.n, rc.start)
	lp.l.p.metrics.ringPath.Inc()
	lp.l.p.metrics.byKind[rc.kind].active.Dec()
}

// backendFailed handles an agent's connection that failed before its
// answer began: a kept one is replaced by a fresh one (the agent closed
// it as the request went out; a read may be sent again), else the client
// gets the 502 page.
func (lp *ringLoop) backendFailed(rc *ringConn) {
	err := rc.beFailed
	// Part of an answer read: the agent did answer, badly (as the
	// goroutine path, no second try).
	partial := rc.be != nil && len(rc.be.buf) > 0
	lp.closeBackend(rc)
	rc.beFailed = nil
	switch {
	case rc.closing:
	case rc.answered:
		lp.abort(rc) // the answer broke off: the client must see it broken
	case rc.reused && !partial:
		lp.dial(rc)
	default:
		lp.unreachable(rc, err)
	}
}

// unreachable answers the client with the handler's 502 page.
func (lp *ringLoop) unreachable(rc *ringConn, cause error) {
	fc := rc.fc
	var status int
	if rc.out == nil {
		rc.out = lp.outBuf()
	}
	lp.compose(&rc.out, func(bw *bufio.Writer) {
		fc.bw = bw
		status, rc.n, _ = fc.agentUnreachable(cause)
		fc.bw = nil
	})
	rc.answered, rc.status, rc.keep, rc.bodyLeft = true, status, false, 0
	lp.sendClient(rc, rc.out)
}

// closeBackend closes the exchange's connection to the agent, or shuts it
// down when operations are in flight on it (they complete, and settle
// closes it).
func (lp *ringLoop) closeBackend(rc *ringConn) {
	be := rc.be
	if be == nil {
		return
	}
	if rc.backendOps > 0 {
		syscall.Shutdown(be.fd, syscall.SHUT_RDWR)
		return
	}
	syscall.Close(be.fd)
	if be.buf != nil {
		lp.putBackendBuf(be.buf)
	}
	rc.be = nil
}

// abort ends the connection: its sockets are shut down, and closed once
// nothing is in flight on them (settle).
func (lp *ringLoop) abort(rc *ringConn) {
	if !rc.closing {
		rc.closing = true
		if rc.exchanging {
			status := rc.status
			if rc.clientGone && !rc.answered {
				status = statusClientClosed
			} else if status == 0 {
				status = http.StatusBadGateway
			}
			lp.recordExchange(rc, status)
			rc.exchanging = false
		}
	}
	if rc.clientOps > 0 {
		syscall.Shutdown(rc.fd, syscall.SHUT_RDWR)
	}
	if rc.be != nil && rc.backendOps > 0 {
		syscall.Shutdown(rc.be.fd, syscall.SHUT_RDWR)
	}
}

// settle closes an aborted connection once nothing is in flight on it.
func (lp *ringLoop) settle(rc *ringConn) {
	if !rc.closing || rc.clientOps > 0 || rc.backendOps > 0 || lp.conns[rc.slot] != rc {
		return
	}
	lp.closeBackend(rc)
	lp.putOutBuf(rc.out)
	rc.out = nil
	lp.release(rc)
	rc.fc.l.forget(rc.fc)
	syscall.Close(rc.fd)
}

// release frees rc's slot.
func (lp *ringLoop) release(rc *ringConn) {
	lp.conns[rc.slot] = nil
	lp.free = append(lp.free, rc.slot)
}

// handOff gives the connection, with the request it buffered, to the
// goroutine path: nothing is in flight on it.
func (lp *ringLoop) handOff(rc *ringConn) {
	if rc.clientOps > 0 {
		lp.unwatch(rc, afterWatchHandOff)
		return
	}
	if !lp.giveBack(rc) {
		return
	}
	go rc.fc.serve(rc.first)
}

// giveBack releases rc, and gives its client connection, with what is
// buffered of it, back to a goroutine; false when it could not (the
// connection is then closed).
func (lp *ringLoop) giveBack(rc *ringConn) bool {
	lp.release(rc)
	fc := rc.fc
	c, err := socketConn(rc.fd)
	if err != nil {
		lp.l.p.logger.Warn("fast path: cannot hand a connection back from io_uring", "error", err)
		lp.l.forget(fc)
		return false
	}
	fc.c = c
	// rc.in is no loop's any more: its rest is read first.
	fc.br = bufio.NewReaderSize(&prefixedConn{Conn: c, prefix: rc.in[rc.off:]}, fastHeadBytes)
	return lp.l.unring(fc)
}

// handOffAnswer gives the connection to the goroutine path mid-exchange:
// the agent's answer, as far as read, and its connection go with it, and
// the goroutine path passes the answer on (through http.ReadResponse).
func (lp *ringLoop) handOffAnswer(rc *ringConn) {
	if rc.clientOps > 0 {
		lp.unwatch(rc, afterWatchHandOffAnswer)
		return
	}
	be := rc.be
	conn, err := socketConn(be.fd)
	if err != nil {
		lp.putBackendBuf(be.buf)
		rc.be = nil // closed
		lp.backendFailedAfterAnswer(rc, err)
		return
	}
	bc := &backendConn{Conn: &prefixedConn{Conn: conn, prefix: bytes.Clone(be.buf)}, pool: be.pool}
	bc.br = bufio.NewReaderSize(bc, 8<<10)
	bc.bw = bufio.NewWriterSize(conn, 4<<10)
	bc.readLimit = maxBackendHeaderBytes
	lp.putBackendBuf(be.buf)
	be.buf = nil
	rc.be = nil
	lp.putOutBuf(rc.out)
	rc.out = nil
	kind, start := rc.kind, rc.start
	fc := rc.fc
	// fc.req points into rc.in: copied, as the goroutine path keeps it.
	fc.head = append(fc.head[:0], rc.in[rc.off:rc.off+rc.headLen]...)
	parseRequestHead(fc.head, &fc.req)
	rc.off += rc.headLen
	if !lp.giveBack(rc) {
		bc.Close()
		lp.l.p.metrics.byKind[kind].active.Dec()
		fc.record(kind, http.StatusBadGateway, 0, start) // the client gets nothing
		return
	}
	go fc.resumeAnswer(bc, kind, start)
}

// unwatch cancels the receive in flight on the client (a watch, or the
// read of the next request), and does next when it completes.
func (lp *ringLoop) unwatch(rc *ringConn, next int) {
	rc.afterWatch = next
	lp.queue(lp.ring.Cancel(lp.userData(rc, opClientRecv), lp.userData(rc, opCancel)))
}

// backendFailedAfterAnswer ends an exchange whose answer cannot be passed.
func (lp *ringLoop) backendFailedAfterAnswer(rc *ringConn, err error) {
	lp.l.p.logger.Warn("agent's answer lost", "host", string(rc.fc.req.host), "error", err)
	lp.abort(rc)
}

// checkDeadlines shuts down the connections whose request head is late,
// and starts watching the clients whose agent is slow to answer.
func (lp *ringLoop) checkDeadlines(now time.Time) {
	for _, rc := range lp.conns {
		switch {
		case rc == nil || rc.closing:
		case !rc.exchanging:
			if !rc.deadline.IsZero() && now.After(rc.deadline) && rc.clientOps > 0 {
				lp.abort(rc)
			}
		case !rc.watching && rc.backendOps > 0 && rc.clientOps == 0 && now.Sub(rc.waitingSince) >= slowAnswer && len(rc.in) < cap(rc.in):
			// The agent is slow: read the client ahead, to notice it
			// leaving.
			rc.watching = true
			lp.recvClient(rc)
		}
	}
	lp.idle.sweep(now)
}

func (lp *ringLoop) backendBuf() []byte {
	if n := len(lp.backendBufs); n > 0 {
		b := lp.backendBufs[n-1]
		lp.backendBufs = lp.backendBufs[:n-1]
		return b
	}
	return make([]byte, 0, ringBackendBytes)
}

func (lp *ringLoop) putBackendBuf(b []byte) {
	if b != nil && len(lp.backendBufs) < 64 {
		lp.backendBufs = append(lp.backendBufs, b[:0])
	}
}

func (lp *ringLoop) outBuf() []byte {
	if n := len(lp.outBufs); n > 0 {
		b := lp.outBufs[n-1]
		lp.outBufs = lp.outBufs[:n-1]
		return b
	}
	return make([]byte, 0, 4<<10)
}

func (lp *ringLoop) putOutBuf(b []byte) {
	if b != nil && cap(b) <= 64<<10 && len(lp.outBufs) < 64 {
		lp.outBufs = append(lp.outBufs, b[:0])
	}
}

// prefixedConn is a connection whose reads start with prefix.
type prefixedConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixedConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
